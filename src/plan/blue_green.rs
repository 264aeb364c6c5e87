//! Rolling out the spec's revision: waiting for it, then a blue/green switch (through the
//! Services, or through the route object as one weight step) or the canary steps.

use super::planner::Planner;
use crate::api::{CanaryStep, Phase, RevisionPhase};

impl Planner<'_> {
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
        let auto = self.md.spec.strategy.blue_green.as_ref().is_none_or(|b| b.auto_promote);
        if let Some(reason) = &self.metrics_hold {
            self.message = format!("revision {t} is Available; promotion holds: metrics unavailable ({reason})");
        } else if self.md.spec.paused {
            self.phase = Phase::Paused;
            self.message = format!("revision {t} is Available; spec.paused is true");
        } else if auto || self.promote_requested.is_some() || self.switch_started(t) {
            if self.promote_requested.is_some() {
                self.consume.push(crate::api::annotations::PROMOTE);
                self.annotation_condition = Some((true, "Handled", format!("promoted revision {t}")));
            }
            if self.md.spec.traffic_routing.is_some() {
                // With a traffic-split object, the switch is the weights going 0 -> 100 in
                // one write; once read back, the Services follow and weights return to stable.
                let switch = [CanaryStep {
                    set_weight: Some(100),
                    pause: None,
                }];
                self.run_canary_steps(t, &switch);
                return;
            }
            self.promote(
                t,
                if auto {
                    "autoPromote"
                } else {
                    "promoted by rollguard.dev/promote"
                },
            );
            self.phase = Phase::Healthy;
            self.message = format!("revision {t} (version {version}) serves all traffic");
        } else {
            self.phase = Phase::Paused;
            self.message = format!(
                "revision {t} (version {version}) is Available on the preview Service; annotate rollguard.dev/promote=true to switch traffic"
            );
        }
    }

    /// Whether a blue/green switch of `t` through the traffic-split object has begun.
    pub(super) fn switch_started(&self, t: i64) -> bool {
        self.obs.deployments.get(&t).is_some_and(|d| d.canary_step.is_some())
    }
}
