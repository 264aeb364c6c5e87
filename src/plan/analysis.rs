//! What the policy's triggers judge, and what their verdicts do: roll a canary or a guarded
//! revision back, fail a verification, pause a gradual rollback, hold a rollout.

use std::time::Duration;

use jiff::Timestamp;

use super::planner::{Planner, RESTORED};
use super::{Judged, Purpose};
use crate::api::{RevisionPhase, RollbackMode, RollbackPolicySpec, RollbackTrigger, Severity, Verification};
use crate::revision;
use crate::trigger::Decision;

/// What the policy's triggers ask of one reconcile.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum MetricsAction {
    /// Nothing to do here (healthy, no data, a hold, or nothing to roll back to).
    Nothing,
    /// The restored revision breached in its verification window.
    FailVerification {
        /// The restored revision.
        revision: i64,
        /// The Warning Event's note.
        note: String,
    },
    /// Roll `from` back to `to`.
    Rollback {
        /// The revision that breached.
        from: i64,
        /// Where traffic returns.
        to: i64,
        /// The history reason of `from`.
        why: String,
        /// The trigger's name.
        trigger: String,
        /// The triggering value.
        value: Option<f64>,
        /// Its threshold.
        threshold: Option<f64>,
    },
}

impl Planner<'_> {
    pub(super) fn judged(&self, policy: &RollbackPolicySpec) -> Option<Judged> {
        let on_stable = |revision, purpose| Judged {
            revision,
            purpose,
            via_canary: false,
        };
        if let Some(r) = self.last_rollback.as_ref().filter(|r| r.completed_at.is_none()) {
            return (r.mode == RollbackMode::Gradual).then(|| on_stable(r.to_revision, Purpose::GradualHealth));
        }
        if self.rolling_out() {
            return Some(Judged {
                revision: self.target,
                purpose: Purpose::Rollout,
                via_canary: true,
            });
        }
        if let Some(r) = self.verifying(policy) {
            return Some(on_stable(r, Purpose::Verification));
        }
        let s = self.stable?;
        self.guard_ends(s, policy)
            .filter(|ends| self.now < *ends)
            .map(|_| on_stable(s, Purpose::Guard))
    }

    /// The restored revision while its verification window is open and it still serves
    /// (a `retry` that switched back to the revision left ends the judging of the restored
    /// one: the revision that serves again is judged in its guard window instead).
    pub(super) fn verifying(&self, policy: &RollbackPolicySpec) -> Option<i64> {
        let r = self
            .last_rollback
            .as_ref()
            .filter(|r| self.stable == Some(r.to_revision))?;
        let completed = r.completed_at.as_ref()?.0;
        let ends = completed.checked_add(policy.verification.window.signed()).ok()?;
        (r.verification == Some(Verification::Pending) && self.now < ends).then_some(r.to_revision)
    }

    /// When the guard window of stable revision `s` ends: None when it was restored by a
    /// rollback or has no previous revision to return to.
    pub(super) fn guard_ends(&self, s: i64, policy: &RollbackPolicySpec) -> Option<Timestamp> {
        let h = self.history.get(&s)?;
        if h.phase != RevisionPhase::Stable || h.reason.as_deref() == Some(RESTORED) {
            return None;
        }
        self.previous_of(s)?;
        let promoted = h.promoted_at.as_ref()?.0;
        promoted.checked_add(policy.guard_window.signed()).ok()
    }

    /// The newest restorable revision older than `rev`.
    pub(super) fn previous_of(&self, rev: i64) -> Option<i64> {
        self.history
            .values()
            .filter(|h| h.revision < rev && revision::restorable(h.phase))
            .map(|h| h.revision)
            .max()
    }

    /// Why the policy's triggers hold the rollout of the spec's revision (metrics
    /// unavailable): nothing advances. None when they do not.
    pub(super) fn metrics_hold(&self) -> Option<String> {
        let m = self.obs.metrics.as_ref()?;
        match &m.decision {
            Decision::Hold { reason } if m.judged.purpose == Purpose::Rollout && m.judged.revision == self.target => {
                Some(reason.clone())
            }
            _ => None,
        }
    }

    /// Why the policy's triggers judge the target of a gradual rollback unhealthy (a breach,
    /// or metrics unavailable): the walk does not step on. None when they do not.
    pub(super) fn gradual_unhealthy(&self) -> Option<String> {
        let m = self.obs.metrics.as_ref()?;
        match &m.decision {
            _ if m.judged.purpose != Purpose::GradualHealth => None,
            Decision::Hold { reason } => Some(reason.clone()),
            Decision::Rollback { trigger, detail, .. } => Some(format!("trigger {trigger}: {detail}")),
            Decision::Proceed => None,
        }
    }

    /// What the policy's triggers ask of this reconcile. Reads the planner, changes nothing.
    ///
    /// Holds and an unhealthy gradual target ask nothing here: they are read where they
    /// matter (`metrics_hold`, `gradual_unhealthy`). A Critical breach of a canary asks for a
    /// rollback to stable; of a guarded stable revision, to the previous one; of a restored
    /// revision in its verification window, for a failed verification.
    pub(super) fn metrics_action(&self) -> MetricsAction {
        let Some(m) = &self.obs.metrics else {
            return MetricsAction::Nothing;
        };
        let rev = m.judged.revision;
        let Decision::Rollback {
            trigger,
            value,
            threshold,
            detail,
        } = &m.decision
        else {
            return MetricsAction::Nothing;
        };
        let (to, how) = match m.judged.purpose {
            Purpose::GradualHealth => return MetricsAction::Nothing,
            Purpose::Verification => {
                return MetricsAction::FailVerification {
                    revision: rev,
                    note: format!(
                        "revision {rev} failed its verification after a rollback: trigger {trigger}: {detail}"
                    ),
                };
            }
            // A canary returns to stable; a guarded stable revision to the previous one.
            Purpose::Rollout if rev == self.target => (self.stable.filter(|s| *s != rev), "rolled back"),
            Purpose::Guard if self.stable == Some(rev) => {
                (self.previous_of(rev), "rolled back within its guard window")
            }
            Purpose::Rollout | Purpose::Guard => (None, ""),
        };
        match to {
            Some(to) => MetricsAction::Rollback {
                from: rev,
                to,
                why: format!("{how} by trigger {trigger}: {detail}"),
                trigger: trigger.clone(),
                value: *value,
                threshold: *threshold,
            },
            None => MetricsAction::Nothing,
        }
    }

    /// Follows [`Planner::metrics_action`], after publishing the Warning and Info triggers
    /// that fired in a fresh evaluation.
    pub(super) fn act_on_metrics(&mut self) {
        let Some(m) = &self.obs.metrics else {
            return;
        };
        if m.fresh {
            for n in &m.notices {
                let warning = n.severity == Severity::Warning;
                let note = format!(
                    "trigger {} fired on revision {}: {}",
                    n.trigger, m.judged.revision, n.message
                );
                self.event(warning, "TriggerFired", note);
            }
        }
        match self.metrics_action() {
            MetricsAction::Nothing => {}
            MetricsAction::FailVerification { revision, note } => {
                if let Some(r) = self.last_rollback.as_mut().filter(|r| r.to_revision == revision) {
                    r.verification = Some(Verification::Failed);
                }
                self.event(true, "VerificationFailed", note);
            }
            MetricsAction::Rollback {
                from,
                to,
                why,
                trigger,
                value,
                threshold,
            } => {
                self.set_phase(from, RevisionPhase::RolledBack, Some(why.clone()));
                self.event(true, "MetricRollback", format!("revision {from} {why}"));
                self.start_rollback(from, to, RollbackTrigger::Metric, &trigger);
                if let Some(r) = self.last_rollback.as_mut() {
                    r.value = value;
                    r.threshold = threshold;
                }
            }
        }
    }

    /// A verification whose window ended without a Critical breach has Passed.
    pub(super) fn end_verification(&mut self) {
        let window = self
            .policy()
            .map(|p| p.verification.window.clone())
            .unwrap_or_else(|| crate::api::VerificationSpec::default().window);
        let now = self.now;
        let Some(r) = self.last_rollback.as_mut() else {
            return;
        };
        let Some(completed) = r.completed_at.as_ref().map(|t| t.0) else {
            return;
        };
        if r.verification != Some(Verification::Pending) {
            return;
        }
        let ends = completed.checked_add(window.signed()).unwrap_or(completed);
        if now < ends {
            self.verification_requeue = Some(now.duration_until(ends).unsigned_abs() + Duration::from_millis(500));
            return;
        }
        r.verification = Some(Verification::Passed);
        let note = format!(
            "revision {} stayed healthy for the verification window ({window}) after the rollback",
            r.to_revision
        );
        self.event(false, "VerificationPassed", note);
    }
}
