//! Types shared by both custom resources.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The pattern of a Go-style duration as rollguard accepts it: one or more
/// `<number><unit>` groups, units `ms`, `s`, `m`, `h`, no sign (so never negative).
/// Examples: `30s`, `5m`, `1h30m`, `1.5s`, `250ms`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// A Go-style duration string such as `30s`, `5m` or `1h30m`.
///
/// The schema only accepts non-negative durations in `ms`, `s`, `m` and `h`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(transparent)]
pub struct Duration(pub String);

impl Duration {
    /// A duration from its string form; use in defaults and tests.
    pub fn from_static(s: &str) -> Self {
        Duration(s.to_string())
    }
}

impl std::fmt::Display for Duration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
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
            "maxLength": 64,
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
