//! The canary steps: set a weight, hold for a time or until promoted.

use std::time::Duration;

use super::annotations::Promote;
use super::planner::Planner;
use super::steps::{Gate, Outcome, Step, advance};
use super::{CanaryStepState, RouteObservation};
use crate::api::{CanaryStep, Phase};

impl Planner<'_> {
    /// Runs the canary steps of `t` (Available) against the stable revision: one reconcile moves as far
    /// as the steps allow, and the step and its start time go onto the canary Deployment.
    ///
    /// Worked example: steps [setWeight 10, pause 5m, setWeight 100]. At step 0 the plan
    /// asks for weight 10; once the route reads 10, step 1 starts and the phase is Paused
    /// until 5m have passed; step 2 asks for 100; once read back, the steps are done: the
    /// stable Service moves to `t`, the weights return to 100/0 on stable and `t` is promoted.
    pub(super) fn run_canary_steps(&mut self, t: i64, steps: &[CanaryStep]) {
        let total = steps.len();
        let observed_step = self.obs.deployments.get(&t).and_then(|d| d.canary_step);
        let mut state = observed_step.unwrap_or(CanaryStepState {
            index: 0,
            started_at: self.now,
        });
        let current = match &self.obs.route {
            Some(RouteObservation::Weights(w)) => Some(w.canary),
            _ => None,
        };
        if let Some(RouteObservation::Fault { message, .. }) = &self.obs.route {
            self.canary_step = Some(state);
            self.phase = Phase::Progressing;
            self.message = format!("canary revision {t} waits: {message}");
            return;
        }
        if let Some(reason) = &self.metrics_hold {
            let at = current.unwrap_or(0);
            self.canary_step = Some(state);
            self.message = format!("canary revision {t} at {at}% holds: metrics unavailable ({reason})");
            return;
        }
        if self.promote_requested == Some(Promote::Full) {
            self.consume.push(crate::api::annotations::PROMOTE);
            self.annotation_condition = Some((true, "Handled", format!("promoted revision {t} fully")));
            state = CanaryStepState {
                index: total as i32,
                started_at: self.now,
            };
        }
        let schedule: Vec<Step> = steps
            .iter()
            .map(|s| match (s.set_weight, &s.pause) {
                (Some(weight), _) => Step::Weight(weight),
                (None, pause) => Step::Hold(pause.as_ref().and_then(|p| p.duration.as_ref()).map(|d| d.signed())),
            })
            .collect();
        let gate = Gate {
            paused: self.md.spec.paused,
            promote: self.promote_requested == Some(Promote::Step),
        };
        let advanced = advance(&schedule, state, current, self.now, gate);
        let label = |s: CanaryStepState| format!("step {} of {total}", s.index + 1);
        if let Some(index) = advanced.promoted {
            self.consume.push(crate::api::annotations::PROMOTE);
            let step = label(CanaryStepState {
                index,
                started_at: self.now,
            });
            self.annotation_condition = Some((true, "Handled", format!("{step} promoted")));
        }
        let at = current.unwrap_or(0);
        match advanced.outcome {
            Outcome::SetWeight { at: step, weight } => {
                self.canary_weight = Some(weight);
                self.phase = Phase::Progressing;
                self.message = format!("canary revision {t} at {at}%, setting {weight}% ({})", label(step));
                self.requeue_after = Some(Duration::from_millis(200));
                self.canary_step = Some(step);
            }
            Outcome::Paused { at: step } => {
                self.phase = Phase::Paused;
                self.message = format!("canary revision {t} at {at}% ({}); spec.paused is true", label(step));
                self.canary_step = Some(step);
            }
            Outcome::Hold {
                at: step,
                until: Some(ends),
                ..
            } => {
                if self.now < ends {
                    let left = self.now.duration_until(ends).unsigned_abs();
                    self.requeue_after = Some(left + Duration::from_millis(200));
                }
                self.phase = Phase::Paused;
                self.message = format!("canary revision {t} at {at}% ({}), paused until {ends}", label(step));
                self.canary_step = Some(step);
            }
            Outcome::Hold {
                at: step, until: None, ..
            } => {
                self.phase = Phase::Paused;
                self.message = format!(
                    "canary revision {t} at {at}% ({}), paused: annotate rollguard.dev/promote=true to go on",
                    label(step)
                );
                self.canary_step = Some(step);
            }
            Outcome::Done => self.complete_canary(t),
        }
    }

    /// All steps done: the stable Service moves to `t`, then the weights return to stable.
    fn complete_canary(&mut self, t: i64) {
        let version = self.version_of(t);
        self.promote(t, "canary steps completed");
        self.phase = Phase::Healthy;
        self.message = format!("revision {t} (version {version}) serves all traffic");
    }
}
