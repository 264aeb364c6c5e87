//! `kubectl rollguard explain`: why a ModelDeployment is where it is — which step, which
//! trigger with which value and threshold, what rolled it back — and what it waits for.
//!
//! Read from the status, the RollbackPolicy and the revisions' Deployments (the step clocks
//! rollguard keeps in their labels); nothing here asks the operator.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use serde::Serialize;

use super::view::{rollback_words, step_words};
use super::{age, number};
use crate::api::labels::{CANARY_STEP, ROLLBACK_STEP};
use crate::api::{
    ModelDeployment, ModelDeploymentStatus, Phase, RollbackMode, RollbackPolicy, TriggerVerdict, Verification,
};
use crate::conditions::{find, reasons, types};
use crate::plan::{ANNOTATION_ACCEPTED, CanaryStepState};

/// The explanation, for a person (`render`) or a script (`-o json|yaml`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// The ModelDeployment.
    pub name: String,
    /// Its phase, when it has a status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Where it is, in one sentence.
    pub state: String,
    /// Why: the facts behind the state, most important first.
    pub because: Vec<String>,
    /// What has to happen for it to move on; absent when it is settled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// Each trigger's latest evaluation against its threshold.
    pub triggers: Vec<String>,
    /// What a person can do from here.
    pub you_can: Vec<String>,
}

/// Explains `md` at `now`. `policy` is its RollbackPolicy when it could be read;
/// `deployments` are the Deployments of its revisions (the step clocks are on them).
pub fn explain(
    md: &ModelDeployment,
    policy: Option<&RollbackPolicy>,
    deployments: &[Deployment],
    now: Timestamp,
) -> Explanation {
    let name = md.metadata.name.clone().unwrap_or_default();
    let mut e = Explanation {
        name: name.clone(),
        phase: md.status.as_ref().and_then(|s| s.phase),
        state: String::new(),
        because: Vec::new(),
        waiting_for: None,
        triggers: Vec::new(),
        you_can: Vec::new(),
    };
    let Some(status) = md.status.as_ref().filter(|s| s.phase.is_some()) else {
        e.state = "rollguard has not written a status yet".into();
        e.waiting_for = Some(format!(
            "the operator's first reconcile (is rollguard running and watching namespace {}?)",
            md.metadata.namespace.as_deref().unwrap_or("default")
        ));
        return e;
    };
    let x = Facts {
        md,
        status,
        policy,
        deployments,
        now,
    };
    e.state = status.message.clone().unwrap_or_else(|| format!("{:?}", status.phase));
    if let (Some(g), o) = (md.metadata.generation, status.observed_generation)
        && o.is_none_or(|o| o < g)
    {
        e.because.push(format!(
            "generation {g} of the spec is not observed yet (the status describes {}): the latest change has not been acted on",
            o.map(|o| o.to_string()).unwrap_or_else(|| "none".into())
        ));
        e.waiting_for = Some(format!("the operator to observe generation {g}"));
    }
    if md.spec.paused {
        e.because.push("spec.paused is true: nothing moves forward".into());
        e.waiting_for
            .get_or_insert_with(|| "spec.paused to be set to false".into());
    }
    if let Some(hold) = find(&status.conditions, types::METRICS_AVAILABLE).filter(|c| c.status == "False") {
        e.because.push(format!("metrics unavailable: {}", hold.message));
        let holding = find(&status.conditions, types::READY).is_some_and(|c| c.reason == reasons::METRICS_HOLD);
        if holding {
            e.waiting_for
                .get_or_insert_with(|| "the metrics provider to answer (onMetricsUnavailable: Hold)".into());
        }
    }
    if let Some(c) = find(&status.conditions, types::STALLED).filter(|c| c.status == "True") {
        e.because.push(format!("stalled ({}): {}", c.reason, c.message));
    }
    if let Some(c) = find(&status.conditions, ANNOTATION_ACCEPTED).filter(|c| c.status == "False") {
        e.because
            .push(format!("the last annotation was refused: {}", c.message));
    }
    let (because, waiting) = match status.phase {
        Some(Phase::Progressing | Phase::Paused) => x.rolling_out(),
        Some(Phase::RollingBack) => x.rolling_back(),
        Some(Phase::Degraded) => x.degraded(),
        Some(Phase::Healthy) | None => x.healthy(),
    };
    e.because.extend(because);
    if e.waiting_for.is_none() {
        e.waiting_for = waiting;
    }
    e.triggers = x.triggers();
    e.you_can = x.you_can();
    e
}

impl Explanation {
    /// The text `explain` prints.
    pub fn render(&self) -> String {
        let mut out = format!("{}: {}\n", self.name, self.state);
        if let Some(p) = self.phase {
            out.push_str(&format!("Phase: {p:?}\n"));
        }
        let list = |out: &mut String, title: &str, items: &[String]| {
            if !items.is_empty() {
                out.push_str(&format!("\n{title}:\n"));
                for i in items {
                    out.push_str(&format!("  - {i}\n"));
                }
            }
        };
        list(&mut out, "Because", &self.because);
        out.push_str(&format!(
            "\nWaiting for: {}\n",
            self.waiting_for.as_deref().unwrap_or("nothing: it is settled")
        ));
        list(&mut out, "Triggers", &self.triggers);
        list(&mut out, "You can", &self.you_can);
        out
    }
}

struct Facts<'a> {
    md: &'a ModelDeployment,
    status: &'a ModelDeploymentStatus,
    policy: Option<&'a RollbackPolicy>,
    deployments: &'a [Deployment],
    now: Timestamp,
}

impl Facts<'_> {
    fn name(&self) -> &str {
        self.md.metadata.name.as_deref().unwrap_or_default()
    }

    fn version(&self, rev: i64) -> String {
        self.status
            .history
            .iter()
            .find(|h| h.revision == rev)
            .map(|h| h.version.clone())
            .unwrap_or_else(|| "?".into())
    }

    fn deployment(&self, rev: i64) -> Option<&Deployment> {
        let name = &self.status.history.iter().find(|h| h.revision == rev)?.deployment;
        self.deployments.iter().find(|d| d.metadata.name.as_ref() == Some(name))
    }

    fn step_label(&self, rev: i64, key: &str) -> Option<CanaryStepState> {
        let labels = self.deployment(rev)?.metadata.labels.as_ref()?;
        CanaryStepState::from_label(labels.get(key)?)
    }

    /// `3 of 4 pods ready` for revision `rev`'s Deployment, and whether all are.
    fn readiness(&self, rev: i64) -> Option<(String, bool)> {
        let d = self.deployment(rev)?;
        let want = d.spec.replicas.unwrap_or(1);
        let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
        Some((format!("{ready} of {want} pods of revision {rev} ready"), ready >= want))
    }

    fn rolling_out(&self) -> (Vec<String>, Option<String>) {
        let s = self.status;
        let mut because = Vec::new();
        let target = s.current_revision.unwrap_or_default();
        let stable = s.stable_revision;
        match stable {
            Some(st) if st != target => because.push(format!(
                "the spec asks for revision {target} ({}); revision {st} ({}) is stable",
                self.version(target),
                self.version(st)
            )),
            _ => because.push(format!(
                "the spec asks for revision {target} ({})",
                self.version(target)
            )),
        }
        let ready = self.readiness(target);
        if let Some((words, false)) = &ready {
            because.push(words.clone());
        }
        let steps = self.md.spec.strategy.canary_steps();
        let Some(canary) = s.canary_revision else {
            // Blue/green, or a first revision.
            return match (&ready, self.md.spec.strategy.blue_green.as_ref()) {
                (Some((words, false)), _) => (because, Some(words.clone())),
                (_, Some(bg)) if !bg.auto_promote && s.phase == Some(Phase::Paused) => (
                    because,
                    Some(format!("a promotion: kubectl rollguard promote {}", self.name())),
                ),
                _ => (because, Some("the traffic switch to the new revision".into())),
            };
        };
        let index = s.current_step_index.unwrap_or(0);
        let Some(step) = usize::try_from(index).ok().and_then(|i| steps.get(i)) else {
            return (because, Some(format!("revision {canary} to become stable")));
        };
        because.push(format!(
            "canary revision {canary} is at {}%, step {} of {}: {}",
            s.canary_weight.unwrap_or(0),
            index + 1,
            steps.len(),
            step_words(step)
        ));
        let waiting = match (&step.set_weight, &step.pause) {
            (Some(_), _) => match &ready {
                Some((words, false)) => words.clone(),
                _ => "the next step".into(),
            },
            (None, Some(p)) => match &p.duration {
                None => format!(
                    "a promotion: kubectl rollguard promote {} (--full skips the remaining steps)",
                    self.name()
                ),
                Some(d) => {
                    let started = self
                        .step_label(canary, CANARY_STEP)
                        .filter(|st| st.index == index)
                        .map(|st| st.started_at);
                    match started.and_then(|t| t.checked_add(d.signed()).ok()) {
                        Some(ends) => format!("the {d} pause to end ({} left)", age(ends.duration_since(self.now))),
                        None => format!("the {d} pause to end"),
                    }
                }
            },
            (None, None) => match &ready {
                Some((words, false)) => words.clone(),
                _ => "the canary's replicas to be ready".into(),
            },
        };
        (because, Some(waiting))
    }

    fn rolling_back(&self) -> (Vec<String>, Option<String>) {
        let mut because = Vec::new();
        let Some(r) = &self.status.last_rollback else {
            return (because, Some("traffic to return to the stable revision".into()));
        };
        because.push(format!("rollback: {}", rollback_words(r, self.now)));
        if let Some((words, false)) = self.readiness(r.to_revision) {
            because.push(words.clone());
            return (because, Some(words));
        }
        let gradual = self.policy.and_then(|p| p.spec.rollback.gradual.as_ref());
        let waiting = match (r.mode, gradual) {
            (RollbackMode::Gradual, Some(g)) => {
                let weight = self.status.canary_weight.unwrap_or(0);
                let next = g.steps.iter().find(|w| **w < weight);
                let held = self.step_label(r.from_revision, ROLLBACK_STEP).map(|st| st.started_at);
                let left = held
                    .and_then(|t| t.checked_add(g.step_duration.signed()).ok())
                    .map(|ends| format!(" ({} left)", age(ends.duration_since(self.now))))
                    .unwrap_or_default();
                match next {
                    Some(n) => format!(
                        "the {} hold at {weight}% on revision {}{left}, then {n}%",
                        g.step_duration, r.from_revision
                    ),
                    None => format!("the last {} hold at {weight}%{left}", g.step_duration),
                }
            }
            _ => format!("all traffic on revision {}", r.to_revision),
        };
        (because, Some(waiting))
    }

    fn degraded(&self) -> (Vec<String>, Option<String>) {
        let s = self.status;
        let mut because = Vec::new();
        let target = s.current_revision.unwrap_or_default();
        let record = s.history.iter().find(|h| h.revision == target);
        because.push(format!(
            "revision {target} ({}), which the spec names, was {}: {}",
            self.version(target),
            record
                .map(|h| format!("{:?}", h.phase))
                .unwrap_or_else(|| "rolled back".into()),
            record
                .and_then(|h| h.reason.clone())
                .unwrap_or_else(|| "no reason recorded".into())
        ));
        if let Some(r) = &s.last_rollback {
            because.push(format!("rollback: {}", rollback_words(r, self.now)));
        }
        if let Some(st) = s.stable_revision {
            because.push(format!("revision {st} ({}) serves all traffic", self.version(st)));
        }
        because.push(format!(
            "revision {target} is not deployed again until the spec changes (a new version, or a revert in Git) or it is retried"
        ));
        (because, self.verification())
    }

    fn healthy(&self) -> (Vec<String>, Option<String>) {
        let s = self.status;
        let mut because = Vec::new();
        if let Some(st) = s.stable_revision {
            because.push(format!("revision {st} ({}) serves all traffic", self.version(st)));
        }
        if let Some(w) = self.verification() {
            return (because, Some(w));
        }
        let guard = (|| {
            let p = self.policy?;
            let st = s.stable_revision?;
            let h = s.history.iter().find(|h| h.revision == st)?;
            // As the planner has it: no guard for a revision a rollback restored, or with
            // nothing older to return to.
            let older = s
                .history
                .iter()
                .any(|o| o.revision < st && crate::revision::restorable(o.phase));
            if h.reason.as_deref() == Some(crate::plan::RESTORED) || !older {
                return None;
            }
            let ends = h
                .promoted_at
                .as_ref()?
                .0
                .checked_add(p.spec.guard_window.signed())
                .ok()?;
            (ends > self.now && !p.spec.triggers.is_empty()).then(|| {
                format!(
                    "the guard window to end ({} left): until then a Critical breach on revision {st} still rolls back",
                    age(ends.duration_since(self.now))
                )
            })
        })();
        (because, guard)
    }

    /// The verification of the restored revision, while it runs.
    fn verification(&self) -> Option<String> {
        let r = self.status.last_rollback.as_ref()?;
        if r.verification != Some(Verification::Pending) {
            return None;
        }
        let window = self.policy.map(|p| p.spec.verification.window.clone());
        let ends = r
            .completed_at
            .as_ref()
            .zip(window.as_ref())
            .and_then(|(t, w)| t.0.checked_add(w.signed()).ok());
        Some(match ends {
            Some(ends) => format!(
                "the verification of revision {} ({} left)",
                r.to_revision,
                age(ends.duration_since(self.now))
            ),
            None => format!("the verification of revision {}", r.to_revision),
        })
    }

    fn triggers(&self) -> Vec<String> {
        let defined = self.policy.map(|p| p.spec.triggers.as_slice()).unwrap_or_default();
        self.status
            .analysis
            .iter()
            .map(|a| {
                let t = defined.iter().find(|t| t.name == a.trigger);
                let value = a
                    .value
                    .map(number)
                    .unwrap_or_else(|| a.message.clone().unwrap_or_else(|| "no value".into()));
                let threshold = t
                    .map(|t| format!(", breaches when {} {}", t.operator.symbol(), number(t.threshold)))
                    .unwrap_or_default();
                let verdict = match a.verdict {
                    Some(TriggerVerdict::Breached) => match t {
                        Some(t) => format!(
                            "Breached ({} of {} in a row to fire)",
                            a.consecutive_breaches, t.consecutive
                        ),
                        None => format!("Breached ({} in a row)", a.consecutive_breaches),
                    },
                    Some(v @ (TriggerVerdict::Unavailable | TriggerVerdict::Invalid)) => {
                        format!("{v:?}: {}", a.message.clone().unwrap_or_default())
                    }
                    Some(v) => format!("{v:?}"),
                    None => "not evaluated".into(),
                };
                let severity = a.severity.map(|s| format!(" [{s:?}]")).unwrap_or_default();
                format!(
                    "{} on revision {}{severity}: {value}{threshold}: {verdict}",
                    a.trigger, a.revision
                )
            })
            .collect()
    }

    fn you_can(&self) -> Vec<String> {
        let n = self.name();
        let s = self.status;
        let mut out = Vec::new();
        match s.phase {
            Some(Phase::Progressing | Phase::Paused)
                if s.canary_revision.is_some() || s.phase == Some(Phase::Paused) =>
            {
                out.push(format!(
                    "kubectl rollguard promote {n} [--full]: go on to the next step (or the end)"
                ));
                out.push(format!(
                    "kubectl rollguard abort {n}: stop, all traffic back to the stable revision"
                ));
            }
            Some(Phase::Degraded) => {
                out.push(format!(
                    "kubectl rollguard retry {n}: roll the rolled-back revision out again"
                ));
            }
            _ => {}
        }
        if s.history.len() > 1 && s.phase != Some(Phase::RollingBack) {
            out.push(format!(
                "kubectl rollguard rollback {n} [--to previous|N|version:<label>]: roll back now"
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests;
