//! Parsing of the kubectl annotations. Pure.

use crate::api::annotations::{ABORT, PROMOTE, RETRY, ROLLBACK_TO};

/// Where `rollguard.dev/rollback-to` points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RollbackTarget {
    /// `previous`: the newest restorable revision older than the one the spec asks for.
    Previous,
    /// A revision number.
    Revision(i64),
    /// `version:<label>`: the newest revision with that `model.version`.
    Version(String),
}

/// `rollguard.dev/promote`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Promote {
    /// `true`: leave the current pause.
    Step,
    /// `full`: skip all remaining steps.
    Full,
}

/// A request a person made with `kubectl annotate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `rollback-to`.
    RollbackTo(RollbackTarget),
    /// `abort: true`.
    Abort,
    /// `retry: true`.
    Retry,
    /// `promote: true|full`.
    Promote(Promote),
}

/// An annotation with a value rollguard does not understand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadValue {
    /// The annotation key.
    pub key: &'static str,
    /// The value as written.
    pub value: String,
    /// What would have been accepted.
    pub expected: &'static str,
}

impl std::fmt::Display for BadValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "annotation {}={:?} is not valid: expected {}",
            self.key, self.value, self.expected
        )
    }
}

/// Parses `rollguard.dev/rollback-to`.
///
/// ```
/// use rollguard::plan::annotations::{parse_rollback_to, RollbackTarget};
/// assert_eq!(parse_rollback_to("previous"), Ok(RollbackTarget::Previous));
/// assert_eq!(parse_rollback_to(" 3 "), Ok(RollbackTarget::Revision(3)));
/// assert_eq!(parse_rollback_to("version:2026-11-01"), Ok(RollbackTarget::Version("2026-11-01".into())));
/// assert!(parse_rollback_to("yesterday").is_err());
/// assert!(parse_rollback_to("0").is_err());
/// ```
pub fn parse_rollback_to(value: &str) -> Result<RollbackTarget, BadValue> {
    let bad = || BadValue {
        key: ROLLBACK_TO,
        value: value.to_string(),
        expected: "\"previous\", a revision number (1, 2, ...) or \"version:<label>\"",
    };
    let v = value.trim();
    if v == "previous" {
        return Ok(RollbackTarget::Previous);
    }
    if let Some(label) = v.strip_prefix("version:") {
        let label = label.trim();
        return if label.is_empty() {
            Err(bad())
        } else {
            Ok(RollbackTarget::Version(label.to_string()))
        };
    }
    match v.parse::<i64>() {
        Ok(n) if n >= 1 => Ok(RollbackTarget::Revision(n)),
        _ => Err(bad()),
    }
}

fn parse_true(key: &'static str, value: &str) -> Result<(), BadValue> {
    if value.trim() == "true" {
        Ok(())
    } else {
        Err(BadValue {
            key,
            value: value.to_string(),
            expected: "\"true\"",
        })
    }
}

/// Every rollguard annotation present, in the order they are handled: rollback-to, abort,
/// retry, promote. Each is either a request or a bad value; both are consumed.
pub fn parse_all(
    annotations: &std::collections::BTreeMap<String, String>,
) -> Vec<(&'static str, Result<Request, BadValue>)> {
    let mut out = Vec::new();
    if let Some(v) = annotations.get(ROLLBACK_TO) {
        out.push((ROLLBACK_TO, parse_rollback_to(v).map(Request::RollbackTo)));
    }
    if let Some(v) = annotations.get(ABORT) {
        out.push((ABORT, parse_true(ABORT, v).map(|_| Request::Abort)));
    }
    if let Some(v) = annotations.get(RETRY) {
        out.push((RETRY, parse_true(RETRY, v).map(|_| Request::Retry)));
    }
    if let Some(v) = annotations.get(PROMOTE) {
        let parsed = match v.trim() {
            "true" => Ok(Request::Promote(Promote::Step)),
            "full" => Ok(Request::Promote(Promote::Full)),
            _ => Err(BadValue {
                key: PROMOTE,
                value: v.clone(),
                expected: "\"true\" or \"full\"",
            }),
        };
        out.push((PROMOTE, parsed));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn all_annotations_are_parsed_in_handling_order() {
        let annotations = [
            (PROMOTE.to_string(), "full".to_string()),
            (ROLLBACK_TO.to_string(), "2".to_string()),
            (ABORT.to_string(), "yes".to_string()),
            ("other".to_string(), "x".to_string()),
        ]
        .into_iter()
        .collect();
        let parsed = parse_all(&annotations);
        let keys: Vec<_> = parsed.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, [ROLLBACK_TO, ABORT, PROMOTE]);
        assert_eq!(parsed[0].1, Ok(Request::RollbackTo(RollbackTarget::Revision(2))));
        assert!(parsed[1].1.is_err());
        assert_eq!(parsed[2].1, Ok(Request::Promote(Promote::Full)));
    }

    #[test]
    fn bad_values_name_the_annotation_and_the_value() {
        let err = parse_rollback_to("-1").expect_err("negative revision");
        let text = err.to_string();
        assert!(text.contains(ROLLBACK_TO) && text.contains("\"-1\""), "{text}");
    }

    proptest! {
        #[test]
        fn rollback_to_never_panics_and_accepts_positive_numbers(s in ".{0,40}", n in 1i64..i64::MAX) {
            let _ = parse_rollback_to(&s);
            prop_assert_eq!(parse_rollback_to(&n.to_string()), Ok(RollbackTarget::Revision(n)));
        }
    }
}
