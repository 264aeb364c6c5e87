//! Rolling out the spec's revision: waiting for it, then a blue/green switch (through the
//! Services, or through the route object as one weight step) or the canary steps.

use super::planner::Planner;
use crate::api::{CanaryStep, Phase, RevisionPhase};

/// What the blue/green strategy wants for an Available new revision.
#[derive(Clone, Debug, PartialEq, Eq)]
enum BlueGreen {
    /// The policy's triggers hold the promotion (metrics unavailable); the phase stays.
    Hold(String),
    /// Paused: `spec.paused`, or waiting for `rollguard.dev/promote`.
    Wait(String),
    /// Switch traffic to it: `how` for the history, and the `promote` request it handles.
    Switch {
        /// Why it is promoted, for the history.
        how: &'static str,
        /// What `AnnotationAccepted` says when a `promote` request is handled.
        handled: Option<String>,
    },
}

impl Planner<'_> {
    /// Rolls out the spec's revision: the revision-level cases (already stable, held after a
    /// rollback, the first revision, a return to a warm revision, not Available yet), then
    /// the strategy: canary steps, or the blue/green switch.
    pub(super) fn progress(&mut self) {
        let t = self.target;
        let version = self.version_of(t);
        if self.stable == Some(t) {
            if self.phase_of(t) != Some(RevisionPhase::Stable) {
                self.set_phase(t, RevisionPhase::Stable, None);
            }
            self.phase = Phase::Healthy;
            self.message = format!("revision {t} (version {version}) serves all traffic");
            return;
        }
        if self.held(t) {
            let reason = self.history.get(&t).and_then(|h| h.reason.clone()).unwrap_or_default();
            let serving = self
                .stable
                .map(|s| format!("revision {s} serves"))
                .unwrap_or_else(|| "nothing serves".into());
            self.phase = Phase::Degraded;
            self.stalled_reason = if self.phase_of(t) == Some(RevisionPhase::Failed) {
                "ProgressDeadlineExceeded"
            } else {
                "RolledBack"
            };
            self.message = format!(
                "revision {t} (version {version}) was rolled back ({reason}); {serving}. Change the spec, or annotate rollguard.dev/retry=true to roll it out again"
            );
            return;
        }
        if self.stable.is_none() {
            // The first revision: nothing to protect, promote once Available.
            if self.available(t) {
                self.promote(t, "first revision");
                self.phase = Phase::Healthy;
                self.message = format!("revision {t} (version {version}) serves all traffic");
            } else {
                self.wait_or_fail(t);
            }
            return;
        }
        // A spec that returns to a warm revision that served before (a Git revert).
        let served_before = self.history.get(&t).is_some_and(|h| h.promoted_at.is_some());
        if served_before && self.available(t) {
            self.promote(t, "warm revision, switched at once");
            self.phase = Phase::Healthy;
            self.message = format!("revision {t} (version {version}) serves all traffic");
            return;
        }
        if !self.available(t) {
            self.wait_or_fail(t);
            return;
        }
        if let Some(canary) = &self.md.spec.strategy.canary {
            let steps = canary.steps.clone();
            self.run_canary_steps(t, &steps);
            return;
        }
        match self.blue_green_intent(t) {
            BlueGreen::Hold(message) => self.message = message,
            BlueGreen::Wait(message) => {
                self.phase = Phase::Paused;
                self.message = message;
            }
            BlueGreen::Switch { how, handled } => {
                if let Some(note) = handled {
                    self.consume.push(crate::api::annotations::PROMOTE);
                    self.annotation_condition = Some((true, "Handled", note));
                }
                if self.md.spec.traffic_routing.is_some() {
                    // With a traffic-split object, the switch is the weights going 0 -> 100 in
                    // one write; once read back, the Services follow and weights return to stable.
                    let switch = [CanaryStep {
                        set_weight: Some(100),
                        ..CanaryStep::default()
                    }];
                    self.run_canary_steps(t, &switch);
                    return;
                }
                self.promote(t, how);
                self.phase = Phase::Healthy;
                self.message = format!("revision {t} (version {version}) serves all traffic");
            }
        }
    }

    /// What the blue/green strategy wants for `t`, Available on the preview Service. Reads the
    /// planner, changes nothing.
    fn blue_green_intent(&self, t: i64) -> BlueGreen {
        let version = self.version_of(t);
        let auto = self.md.spec.strategy.blue_green.as_ref().is_none_or(|b| b.auto_promote);
        if let Some(reason) = self.metrics_hold() {
            return BlueGreen::Hold(format!(
                "revision {t} is Available; promotion holds: metrics unavailable ({reason})"
            ));
        }
        if self.md.spec.paused {
            return BlueGreen::Wait(format!("revision {t} is Available; spec.paused is true"));
        }
        if auto || self.promote_requested.is_some() || self.switch_started(t) {
            return BlueGreen::Switch {
                how: if auto {
                    "autoPromote"
                } else {
                    "promoted by rollguard.dev/promote"
                },
                handled: self
                    .promote_requested
                    .is_some()
                    .then(|| format!("promoted revision {t}")),
            };
        }
        BlueGreen::Wait(format!(
            "revision {t} (version {version}) is Available on the preview Service; annotate rollguard.dev/promote=true to switch traffic"
        ))
    }

    /// Whether a blue/green switch of `t` through the traffic-split object has begun.
    pub(super) fn switch_started(&self, t: i64) -> bool {
        self.obs.deployments.get(&t).is_some_and(|d| d.canary_step.is_some())
    }
}
