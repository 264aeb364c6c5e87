//! Types shared by both custom resources.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The pattern of a Go-style duration as rollguard accepts it: one or more
/// `<number><unit>` groups, units `ms`, `s`, `m`, `h`, no sign (so never negative).
/// Examples: `30s`, `5m`, `1h30m`, `1.5s`, `250ms`.
const DURATION_PATTERN: &str = r"^([0-9]{1,12}(\.[0-9]+)?(ms|s|m|h))+$";

/// The longest duration text accepted (the schema's `maxLength`).
const DURATION_MAX_LEN: usize = 64;

/// Digits allowed before the point of one number: `999999999999h` is some 114 million years,
/// and no sum of such numbers within [`DURATION_MAX_LEN`] characters overflows (kube's parser
/// panics on an overflow, and on a negative number after the first).
const DURATION_MAX_DIGITS: usize = 12;

/// Checks `text` against [`DURATION_PATTERN`] (with its length and digit bounds) before it
/// reaches kube's parser, which panics on some text the Go grammar refuses.
fn duration_grammar(text: &str) -> Result<(), String> {
    if text.len() > DURATION_MAX_LEN {
        return Err(format!("longer than {DURATION_MAX_LEN} characters"));
    }
    let mut rest = text;
    if rest.is_empty() {
        return Err("empty".into());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(if rest.starts_with('-') {
                "negative".into()
            } else {
                format!("expected a number at {rest:?}")
            });
        }
        if digits > DURATION_MAX_DIGITS {
            return Err(format!("a number of more than {DURATION_MAX_DIGITS} digits"));
        }
        rest = &rest[digits..];
        if let Some(fraction) = rest.strip_prefix('.') {
            let digits = fraction.find(|c: char| !c.is_ascii_digit()).unwrap_or(fraction.len());
            if digits == 0 {
                return Err("expected digits after the decimal point".into());
            }
            rest = &fraction[digits..];
        }
        let unit = ["ms", "s", "m", "h"].into_iter().find(|u| rest.starts_with(u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return Err(format!("expected a unit (ms, s, m, h) at {rest:?}")),
        }
    }
    Ok(())
}

/// A Go-style duration such as `30s`, `5m` or `1h30m`, parsed once when the object is read
/// (by kube's `metav1.Duration` parser) and kept with the text the user wrote.
///
/// The schema only accepts non-negative durations in `ms`, `s`, `m` and `h`, with at most 12
/// digits in a number and 64 characters in all; the parser accepts exactly the same.
///
/// ```
/// use rollguard::api::Duration;
/// let d: Duration = "1h30m".parse().unwrap();
/// assert_eq!(d.get().as_secs(), 5400);
/// assert_eq!(d.to_string(), "1h30m");
/// assert_eq!("250ms".parse::<Duration>().unwrap().get().as_millis(), 250);
/// let err = "5 minutes".parse::<Duration>().unwrap_err();
/// assert!(err.to_string().contains("\"5 minutes\""), "{err}");
/// assert!("-5s".parse::<Duration>().is_err());
/// // Numbers of more than 12 digits are refused (kube's parser would overflow and panic).
/// assert!("20000000000000000000s".parse::<Duration>().is_err());
/// assert!("1s-5s".parse::<Duration>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Duration {
    text: String,
    value: std::time::Duration,
}

/// A duration that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid duration {text:?}: {reason} (expected a Go-style duration such as 30s, 5m or 1h30m)")]
pub struct DurationError {
    text: String,
    reason: String,
}

impl Duration {
    /// `secs` seconds, written `<secs>s`.
    pub fn from_secs(secs: u64) -> Self {
        Duration {
            text: format!("{secs}s"),
            value: std::time::Duration::from_secs(secs),
        }
    }

    /// `mins` minutes, written `<mins>m`.
    pub fn from_mins(mins: u64) -> Self {
        Duration {
            text: format!("{mins}m"),
            value: std::time::Duration::from_secs(mins.saturating_mul(60)),
        }
    }

    /// The duration.
    pub fn get(&self) -> std::time::Duration {
        self.value
    }

    /// The duration, for time arithmetic (saturating at the largest signed duration).
    pub fn signed(&self) -> jiff::SignedDuration {
        jiff::SignedDuration::try_from(self.value).unwrap_or(jiff::SignedDuration::MAX)
    }

    /// As the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::str::FromStr for Duration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = |reason: String| DurationError {
            text: text.to_string(),
            reason,
        };
        duration_grammar(text).map_err(error)?;
        let parsed: kube::core::Duration = text
            .parse()
            .map_err(|e: kube::core::duration::ParseError| error(e.to_string()))?;
        if parsed.is_negative() {
            return Err(error("negative".into()));
        }
        Ok(Duration {
            text: text.to_string(),
            value: parsed.into(),
        })
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Duration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": DURATION_MAX_LEN,
        })
    }
}

/// A reference to an object by name in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct LocalObjectReference {
    /// Name of the object, in the same namespace as the referring one.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}
