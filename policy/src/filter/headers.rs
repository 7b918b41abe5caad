//! `RequestHeaderModifier` and `ResponseHeaderModifier`.

use super::{FilterError, HeaderModifier, HeaderValue};
use http::{HeaderMap, HeaderName, header};

impl HeaderModifier {
    /// Checks every name and value, so the controller can refuse the filter
    /// up front. [`Self::apply`] checks the same before touching anything.
    pub fn validate(&self) -> Result<(), FilterError> {
        for h in self.set.iter().chain(&self.add) {
            check_name(&h.name)?;
            if !valid_value(&h.value) {
                return Err(FilterError::InvalidHeaderValue {
                    name: h.name.clone(),
                    value: h.value.clone(),
                });
            }
        }
        for name in &self.remove {
            check_name(name)?;
        }
        Ok(())
    }

    /// Applies the modifier: `remove`, then `set`, then `add` (removing
    /// first, as Envoy does; a name both set and added ends with the set
    /// value followed by the added one). Names compare case-insensitively;
    /// of several `set` (or `add`) entries with an equivalent name only the
    /// first counts, as the spec requires.
    ///
    /// `add` appends to the existing values by joining them with `,` into
    /// one field (`x: a` + add `b` → `x: a,b`, what the upstream conformance
    /// suite expects), except for `Set-Cookie`, whose values cannot be
    /// joined (RFC 9110 §5.3) and which gets another field instead.
    ///
    /// An invalid name or value fails the whole modifier before any change,
    /// so the caller answers 500 rather than forward a half-filtered
    /// message.
    pub fn apply(&self, headers: &mut HeaderMap) -> Result<(), FilterError> {
        self.validate()?;
        for name in &self.remove {
            headers.remove(parse_name(name)?);
        }
        for (i, h) in self.set.iter().enumerate() {
            if !shadowed(&self.set[..i], &h.name) {
                headers.insert(parse_name(&h.name)?, parse_value(h)?);
            }
        }
        for (i, h) in self.add.iter().enumerate() {
            if !shadowed(&self.add[..i], &h.name) {
                add(headers, parse_name(&h.name)?, h)?;
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

fn add(headers: &mut HeaderMap, name: HeaderName, h: &HeaderValue) -> Result<(), FilterError> {
    if name == header::SET_COOKIE || !headers.contains_key(&name) {
        headers.append(name, parse_value(h)?);
        return Ok(());
    }
    let mut joined = Vec::new();
    for v in headers.get_all(&name).iter().filter(|v| !v.is_empty()) {
        joined.extend_from_slice(v.as_bytes());
        joined.push(b',');
    }
    joined.extend_from_slice(h.value.as_bytes());
    let value = http::HeaderValue::from_bytes(&joined).map_err(|_| invalid_value(h))?;
    headers.insert(name, value);
    Ok(())
}

fn shadowed(earlier: &[HeaderValue], name: &str) -> bool {
    earlier.iter().any(|e| e.name.eq_ignore_ascii_case(name))
}

fn check_name(name: &str) -> Result<(), FilterError> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(FilterError::InvalidHeaderName(name.to_string()));
    }
    Ok(())
}

/// Visible ASCII, spaces and tabs: what `http::HeaderValue::from_str`
/// accepts, so a value that passes cannot fail later.
fn valid_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

fn parse_name(name: &str) -> Result<HeaderName, FilterError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| FilterError::InvalidHeaderName(name.to_string()))
}

fn parse_value(h: &HeaderValue) -> Result<http::HeaderValue, FilterError> {
    http::HeaderValue::from_str(&h.value).map_err(|_| invalid_value(h))
}

fn invalid_value(h: &HeaderValue) -> FilterError {
    FilterError::InvalidHeaderValue {
        name: h.name.clone(),
        value: h.value.clone(),
    }
}
