//! Durations written the way operators write them: `500ms`, `30s`, `5m`.

use std::time::Duration;

/// Parses `500ms`, `30s`, `1m30s`, `2h`. A bare number is refused: the unit
/// is what makes a config readable.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.chars().all(|c| c.is_ascii_digit()) && !t.is_empty() {
        return Err(format!(
            "`{t}` has no unit: write for example `{t}s` or `{t}ms`"
        ));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("`{t}` is not a duration like `500ms`, `30s` or `5m`: {e}"))
}

/// Formats a duration compactly (`1m 30s`).
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Serde helpers for `Duration` fields written as text.
pub mod serde_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Deserializes a duration from text such as `30s`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse(&text).map_err(serde::de::Error::custom)
    }

    /// Serializes a duration as text such as `30s`.
    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*v))
    }
}

/// Serde helpers for `Option<Duration>` fields written as text.
pub mod serde_text_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Deserializes an optional duration from text such as `30s`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => super::parse(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }

    /// Serializes an optional duration as text.
    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_str(&super::format(*d)),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let ok = [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1m30s", Duration::from_secs(90)),
            (" 2h ", Duration::from_secs(7200)),
        ];
        for (text, want) in ok {
            assert_eq!(parse(text).unwrap(), want, "{text}");
        }
        for bad in ["", "30", "abc", "-1s", "5 parsecs"] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains('`'), "{bad}: {err}");
        }
    }
}
