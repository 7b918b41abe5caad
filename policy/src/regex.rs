//! Regular expressions of route matches. Gateway API leaves the dialect to
//! the implementation; Trellis uses RE2 syntax (the `regex` crate) and, like
//! Envoy, requires the whole value to match.

use serde::{Deserialize, Serialize};
use std::{fmt, hash::Hash};

/// A compiled, fully anchored regular expression that compares, hashes and
/// serializes as its source text.
#[derive(Clone)]
pub struct Regex {
    source: String,
    compiled: ::regex::Regex,
}

/// A pattern the `regex` crate refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid regular expression {pattern:?}: {reason}")]
pub struct InvalidRegex {
    pub pattern: String,
    pub reason: String,
}

impl Regex {
    pub fn new(pattern: &str) -> Result<Self, InvalidRegex> {
        let compiled = ::regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(1 << 20)
            .build()
            .map_err(|e| InvalidRegex {
                pattern: pattern.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            source: pattern.to_string(),
            compiled,
        })
    }

    /// Whether the whole of `value` matches.
    pub fn is_match(&self, value: &str) -> bool {
        self.compiled.is_match(value)
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for Regex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Regex({:?})", self.source)
    }
}

impl PartialEq for Regex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Regex {}

impl Hash for Regex {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.source.hash(state)
    }
}

impl Serialize for Regex {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Regex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Regex::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::Regex;

    #[test]
    fn whole_value_must_match() {
        let re = Regex::new("/v[0-9]+").unwrap();
        assert!(re.is_match("/v2"));
        assert!(!re.is_match("/v2/x"));
        assert!(!re.is_match("x/v2"));
        let alt = Regex::new("a|b").unwrap();
        assert!(alt.is_match("a") && alt.is_match("b") && !alt.is_match("ab"));
        assert!(Regex::new("(").is_err());
    }
}
