//! Pure kstatus condition bookkeeping.
//!
//! Conditions are computed, never edited in place: [`merge`] takes the conditions a status
//! has and the ones the operator wants, and keeps `lastTransitionTime` of every condition
//! whose status did not change, so a steady state writes nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types.
pub mod types {
    /// kstatus: the resource is fully reconciled and serving as the spec asks.
    pub const READY: &str = "Ready";
    /// kstatus: the operator is working towards the spec.
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus: the operator cannot make progress without a change.
    pub const STALLED: &str = "Stalled";
    /// Whether the metrics provider answered.
    pub const METRICS_AVAILABLE: &str = "MetricsAvailable";
    /// RollbackPolicy: whether every trigger can be evaluated.
    pub const VALID: &str = "Valid";
}

/// Condition reasons (CamelCase constants, as Kubernetes expects).
pub mod reasons {
    /// The rollout is in progress.
    pub const PROGRESSING: &str = "Progressing";
    /// Everything is as the spec asks.
    pub const RECONCILED: &str = "Reconciled";
    /// Ready and Reconciling while a rollout holds because its triggers cannot be
    /// evaluated (`onMetricsUnavailable: Hold`).
    pub const METRICS_HOLD: &str = "MetricsHold";
}

/// `"True"`, `"False"` or `"Unknown"`.
fn status_str(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "True",
        Some(false) => "False",
        None => "Unknown",
    }
}

/// A condition the operator wants, before `lastTransitionTime` is decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// Condition type, such as `Ready`.
    pub type_: String,
    /// True, False or Unknown (None).
    pub status: Option<bool>,
    /// CamelCase reason.
    pub reason: String,
    /// Human message.
    pub message: String,
}

impl Desired {
    /// A desired condition.
    pub fn new(type_: &str, status: Option<bool>, reason: &str, message: impl Into<String>) -> Self {
        Desired {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// A status timestamp: whole seconds, as the API server stores `Time`, so a status built
/// from a re-read one compares equal. Clocks of steps and deadlines keep full precision.
pub fn stamp(t: jiff::Timestamp) -> Time {
    Time(jiff::Timestamp::from_second(t.as_second()).unwrap_or(t))
}

/// Merges desired conditions into the existing ones.
///
/// - a condition whose status is unchanged keeps its `lastTransitionTime`;
/// - a new condition, or one whose status changed, gets `now`;
/// - every returned condition gets `observed_generation`;
/// - existing conditions of other types are kept, after the desired ones, but for those of
///   the `retired` types: a condition of such a type that is no longer desired no longer
///   applies and is removed.
///
/// ```
/// use rollguard::conditions::{merge, Desired};
/// use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
/// let t0 = Time("2026-01-01T00:00:00Z".parse().unwrap());
/// let t1 = Time("2026-01-01T00:05:00Z".parse().unwrap());
/// let first = merge(&[], &[Desired::new("Ready", Some(false), "Progressing", "r2 at 10%")], &[], 1, &t0);
/// // Same status, other message: the transition time stays t0.
/// let second = merge(&first, &[Desired::new("Ready", Some(false), "Progressing", "r2 at 50%")], &[], 2, &t1);
/// assert_eq!(second[0].last_transition_time, t0);
/// assert_eq!(second[0].message, "r2 at 50%");
/// // Status flips: the transition time moves to t1.
/// let third = merge(&second, &[Desired::new("Ready", Some(true), "Reconciled", "r2 stable")], &[], 2, &t1);
/// assert_eq!(third[0].last_transition_time, t1);
/// // A retired type that is not desired any more is gone; others stay.
/// let with_policy = merge(&third, &[Desired::new("PolicyResolved", Some(false), "PolicyNotFound", "")], &[], 2, &t1);
/// assert_eq!(with_policy.len(), 2);
/// let without = merge(&with_policy, &[], &["PolicyResolved"], 3, &t1);
/// assert_eq!(without.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(), ["Ready"]);
/// ```
pub fn merge(
    existing: &[Condition],
    desired: &[Desired],
    retired: &[&str],
    observed_generation: i64,
    now: &Time,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = desired
        .iter()
        .map(|d| {
            let status = status_str(d.status).to_string();
            let last_transition_time = existing
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: d.type_.clone(),
                status,
                reason: d.reason.clone(),
                message: d.message.clone(),
                observed_generation: Some(observed_generation),
                last_transition_time,
            }
        })
        .collect();
    out.extend(
        existing
            .iter()
            .filter(|c| !desired.iter().any(|d| d.type_ == c.type_))
            .filter(|c| !retired.contains(&c.type_.as_str()))
            .cloned(),
    );
    out
}

/// The condition of the given type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        Time(s.parse().expect("valid timestamp in test"))
    }

    #[test]
    fn unchanged_status_keeps_transition_time_and_updates_message() {
        let t0 = t("2026-01-01T00:00:00Z");
        let t1 = t("2026-01-02T00:00:00Z");
        let a = merge(
            &[],
            &[Desired::new(types::READY, Some(false), reasons::PROGRESSING, "a")],
            &[],
            1,
            &t0,
        );
        let b = merge(
            &a,
            &[Desired::new(types::READY, Some(false), reasons::PROGRESSING, "b")],
            &[],
            2,
            &t1,
        );
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].last_transition_time, t0);
        assert_eq!(b[0].message, "b");
        assert_eq!(b[0].observed_generation, Some(2));
    }

    #[test]
    fn changed_status_moves_transition_time() {
        let t0 = t("2026-01-01T00:00:00Z");
        let t1 = t("2026-01-02T00:00:00Z");
        let a = merge(
            &[],
            &[Desired::new(types::READY, None, reasons::PROGRESSING, "")],
            &[],
            1,
            &t0,
        );
        let b = merge(
            &a,
            &[Desired::new(types::READY, Some(true), reasons::RECONCILED, "")],
            &[],
            1,
            &t1,
        );
        assert_eq!(b[0].status, "True");
        assert_eq!(b[0].last_transition_time, t1);
    }

    #[test]
    fn merging_the_same_desired_twice_is_a_fixed_point() {
        let t0 = t("2026-01-01T00:00:00Z");
        let t1 = t("2026-01-03T00:00:00Z");
        let d = [
            Desired::new(types::READY, Some(false), reasons::PROGRESSING, "x"),
            Desired::new(types::RECONCILING, Some(true), reasons::PROGRESSING, "y"),
        ];
        let a = merge(&[], &d, &[], 4, &t0);
        let b = merge(&a, &d, &[], 4, &t1);
        assert_eq!(a, b);
    }

    #[test]
    fn other_condition_types_are_kept() {
        let t0 = t("2026-01-01T00:00:00Z");
        let a = merge(
            &[],
            &[Desired::new(types::METRICS_AVAILABLE, Some(true), "Answered", "")],
            &[],
            1,
            &t0,
        );
        let b = merge(
            &a,
            &[Desired::new(types::READY, Some(true), reasons::RECONCILED, "")],
            &[],
            1,
            &t0,
        );
        assert_eq!(b.len(), 2);
        assert!(find(&b, types::METRICS_AVAILABLE).is_some());
        assert_eq!(b[0].type_, types::READY);
    }
}
