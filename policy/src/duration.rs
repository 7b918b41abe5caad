//! Gateway API durations (GEP-2257): one to four `<number><unit>` parts with
//! units `h`, `m`, `s` and `ms`, each number at most five digits, e.g. `1h`,
//! `500ms`, `1m30s`. Zero (`0s`) is valid and means "no timeout" where the spec
//! says so.

use std::time::Duration;

/// A string that is not a Gateway API duration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {value:?}: {reason}")]
pub struct InvalidDuration {
    pub value: String,
    pub reason: &'static str,
}

/// Parses a GEP-2257 duration.
pub fn parse(value: &str) -> Result<Duration, InvalidDuration> {
    let err = |reason| InvalidDuration {
        value: value.to_string(),
        reason,
    };
    if value.is_empty() {
        return Err(err("empty"));
    }
    let bytes = value.as_bytes();
    let mut total = Duration::ZERO;
    let mut parts = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &value[start..i];
        if digits.is_empty() {
            return Err(err("expected a number"));
        }
        if digits.len() > 5 {
            return Err(err("a number has more than five digits"));
        }
        let n: u64 = digits.parse().map_err(|_| err("bad number"))?;
        let unit = if value[i..].starts_with("ms") {
            i += 2;
            Duration::from_millis(n)
        } else {
            let unit = match bytes.get(i) {
                Some(b'h') => Duration::from_secs(n * 3600),
                Some(b'm') => Duration::from_secs(n * 60),
                Some(b's') => Duration::from_secs(n),
                Some(_) => return Err(err("unit is not h, m, s or ms")),
                None => return Err(err("missing unit")),
            };
            i += 1;
            unit
        };
        total += unit;
        parts += 1;
        if parts > 4 {
            return Err(err("more than four parts"));
        }
    }
    Ok(total)
}

/// Formats a duration in the shortest GEP-2257 form (`0s` for zero).
pub fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    let mut ms = d.as_millis();
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        let n = ms / size;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push_str(unit);
            ms -= n * size;
        }
    }
    out
}

/// Serde for `Duration` fields as GEP-2257 strings.
pub mod serde_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Serde for `Option<Duration>` fields as GEP-2257 strings.
pub mod serde_opt_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::format(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| super::parse(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gep_2257() {
        let ok = [
            ("0s", 0),
            ("0h", 0),
            ("1h", 3_600_000),
            ("500ms", 500),
            ("1m30s", 90_000),
            ("1h2m3s4ms", 3_723_004),
            ("99999s", 99_999_000),
            ("10s", 10_000),
        ];
        for (s, ms) in ok {
            assert_eq!(parse(s), Ok(Duration::from_millis(ms)), "{s}");
        }
        for bad in [
            "",
            "1",
            "s",
            "1d",
            "1.5s",
            "-1s",
            "100000s",
            "1h1m1s1ms1h",
            " 1s",
            "1S",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn formats_round_trip() {
        for ms in [0u64, 1, 999, 1000, 1500, 60_000, 3_723_004, 7_200_000] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse(&format(d)), Ok(d), "{ms}ms");
        }
        assert_eq!(format(Duration::from_millis(1500)), "1s500ms");
    }
}
