//! `kubectl rollguard status`: the verdict a CI pipeline gates on.
//!
//! A status only counts once it describes the spec as it is now: right after `kubectl apply`
//! of a new version the status still says Healthy for the previous generation, and a gate
//! that believed it would let a bad version through. The same holds right after
//! `kubectl rollguard rollback` (or `abort`, `retry`, `promote`): the request is an
//! annotation, which moves no generation, and the status is that of before it until the
//! operator has handled it and removed the annotation.

use crate::api::annotations::{ABORT, PROMOTE, RETRY, ROLLBACK_TO};
use crate::api::{ModelDeployment, Phase};

/// Exit codes of `kubectl rollguard status` (and, for 0 and 3, of every command).
pub mod exit {
    /// Healthy: the revision the spec names serves all traffic.
    pub const HEALTHY: u8 = 0;
    /// Degraded: the revision the spec names was rolled back or failed.
    pub const DEGRADED: u8 = 1;
    /// `--timeout` passed while it was still progressing, paused or rolling back.
    pub const TIMED_OUT: u8 = 2;
    /// The command could not run: bad arguments, no such ModelDeployment, the API refused.
    pub const ERROR: u8 = 3;
}

/// Where a ModelDeployment stands for a gate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Done and serving the spec's revision.
    Healthy,
    /// Done, and the spec's revision is not served.
    Degraded,
    /// Not done: the phase (or why it cannot be trusted yet).
    Waiting,
}

/// The verdict on `md`, with a line that says why.
///
/// ```
/// use rollguard::api::{ModelDeployment, ModelDeploymentStatus, Phase};
/// use rollguard::kubectl::gate::{verdict, Verdict};
/// let mut md = ModelDeployment::example("chat", "v2", 1, serde_json::json!({})).unwrap();
/// md.metadata.generation = Some(2);
/// md.status = Some(ModelDeploymentStatus { observed_generation: Some(1), phase: Some(Phase::Healthy), ..Default::default() });
/// assert_eq!(verdict(&md).0, Verdict::Waiting); // the Healthy is of generation 1
/// md.status.as_mut().unwrap().observed_generation = Some(2);
/// assert_eq!(verdict(&md).0, Verdict::Healthy);
/// ```
pub fn verdict(md: &ModelDeployment) -> (Verdict, String) {
    let Some(status) = md.status.as_ref() else {
        return (Verdict::Waiting, "no status yet".into());
    };
    let message = status.message.clone().unwrap_or_default();
    if let Some(g) = md.metadata.generation
        && status.observed_generation.is_none_or(|o| o < g)
    {
        return (
            Verdict::Waiting,
            format!(
                "generation {g} not observed yet (status of {})",
                status
                    .observed_generation
                    .map(|o| o.to_string())
                    .unwrap_or_else(|| "none".into())
            ),
        );
    }
    // The operator removes a request's annotation once handled (a bad value too), after
    // the status write that answers it.
    let annotations = md.metadata.annotations.as_ref();
    if let Some(key) = [ROLLBACK_TO, ABORT, RETRY, PROMOTE]
        .into_iter()
        .find(|k| annotations.is_some_and(|a| a.contains_key(*k)))
    {
        return (Verdict::Waiting, format!("request {key} not handled yet"));
    }
    match status.phase {
        Some(Phase::Healthy) => (Verdict::Healthy, format!("Healthy: {message}")),
        Some(Phase::Degraded) => (Verdict::Degraded, format!("Degraded: {message}")),
        Some(p) => (Verdict::Waiting, format!("{p:?}: {message}")),
        None => (Verdict::Waiting, "no phase yet".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ModelDeploymentStatus;

    fn md(generation: i64, observed: Option<i64>, phase: Option<Phase>) -> ModelDeployment {
        let mut md = ModelDeployment::example("chat", "v1", 1, serde_json::json!({})).expect("example");
        md.metadata.generation = Some(generation);
        md.status = Some(ModelDeploymentStatus {
            observed_generation: observed,
            phase,
            message: Some("m".into()),
            ..Default::default()
        });
        md
    }

    #[test]
    fn only_an_observed_healthy_or_degraded_ends_the_wait() {
        assert_eq!(
            verdict(&md(3, Some(3), Some(Phase::Healthy))),
            (Verdict::Healthy, "Healthy: m".into())
        );
        assert_eq!(verdict(&md(3, Some(3), Some(Phase::Degraded))).0, Verdict::Degraded);
        for phase in [Phase::Progressing, Phase::Paused, Phase::RollingBack] {
            assert_eq!(verdict(&md(3, Some(3), Some(phase))).0, Verdict::Waiting, "{phase:?}");
        }
        assert_eq!(verdict(&md(3, Some(2), Some(Phase::Degraded))).0, Verdict::Waiting);
        assert_eq!(verdict(&md(3, None, Some(Phase::Healthy))).0, Verdict::Waiting);
        let mut none = md(1, None, None);
        none.status = None;
        assert_eq!(verdict(&none).0, Verdict::Waiting);
    }

    #[test]
    fn a_request_not_handled_yet_holds_the_verdict_back() {
        for key in [ROLLBACK_TO, ABORT, RETRY, PROMOTE] {
            for phase in [Phase::Healthy, Phase::Degraded] {
                let mut m = md(3, Some(3), Some(phase));
                m.metadata
                    .annotations
                    .get_or_insert_default()
                    .insert(key.to_string(), "true".into());
                assert_eq!(
                    verdict(&m),
                    (Verdict::Waiting, format!("request {key} not handled yet")),
                    "{key} on {phase:?}"
                );
            }
        }
        // Other annotations do not count.
        let mut m = md(3, Some(3), Some(Phase::Healthy));
        m.metadata
            .annotations
            .get_or_insert_default()
            .insert("example.com/owner".into(), "team".into());
        assert_eq!(verdict(&m).0, Verdict::Healthy);
    }
}
