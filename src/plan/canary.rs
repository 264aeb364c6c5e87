//! The canary steps: set a weight, hold for a time or until promoted.
//!
//! The strategy says what it wants ([`CanaryIntent`], from the step engine's outcome) and the
//! planner follows it; the strategy itself reads the planner and changes nothing.

use std::time::Duration;

use super::annotations::Promote;
use super::planner::{Planner, Traffic};
use super::steps::{Gate, Outcome, Step, advance};
use super::{CanaryStepState, RouteObservation};
use crate::api::{CanaryStep, Phase};

/// What the canary strategy wants from this reconcile.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct CanaryIntent {
    /// The phase of the ModelDeployment.
    pub(super) phase: Phase,
    /// The message.
    pub(super) message: String,
    /// The canary weight to write (None: leave it).
    pub(super) weight: Option<i32>,
    /// The step to persist on the canary Deployment (None once every step is done).
    pub(super) step: Option<CanaryStepState>,
    /// When to look again.
    pub(super) requeue: Option<Duration>,
    /// A `promote` request this reconcile handled, with what `AnnotationAccepted` says.
    pub(super) promoted: Option<String>,
    /// Every step is done: the revision becomes stable.
    pub(super) done: bool,
    /// Someone else changed the weight during a hold: the Warning Event that says rollguard
    /// put its weight back.
    pub(super) restored: Option<String>,
}

impl CanaryIntent {
    fn at(step: CanaryStepState, phase: Phase, message: String) -> Self {
        CanaryIntent {
            phase,
            message,
            weight: None,
            step: Some(step),
            requeue: None,
            promoted: None,
            done: false,
            restored: None,
        }
    }
}

impl Planner<'_> {
    /// Runs the canary steps of `t` (Available) against the stable revision: one reconcile moves as far
    /// as the steps allow, and the step and its start time go onto the canary Deployment.
    ///
    /// Worked example: steps [setWeight 10, pause 5m, setWeight 100]. At step 0 the plan
    /// asks for weight 10; once the route reads 10, step 1 starts and the phase is Paused
    /// until 5m have passed; step 2 asks for 100; once read back, the steps are done: the
    /// stable Service moves to `t`, the weights return to 100/0 on stable and `t` is promoted.
    pub(super) fn run_canary_steps(&mut self, t: i64, steps: &[CanaryStep]) {
        let intent = self.canary_intent(t, steps);
        if let Some(note) = &intent.promoted {
            self.consume.push(crate::api::annotations::PROMOTE);
            self.annotation_condition = Some((true, "Handled", note.clone()));
        }
        self.traffic = Some(Traffic::Canary {
            weight: intent.weight,
            step: intent.step,
        });
        if intent.requeue.is_some() {
            self.requeue_after = intent.requeue;
        }
        if let Some(note) = intent.restored.clone() {
            self.event(true, "RouteWeightRestored", note);
        }
        if intent.done {
            let version = self.version_of(t);
            self.promote(t, "canary steps completed");
            self.message = format!("revision {t} (version {version}) serves all traffic");
        } else {
            self.message = intent.message;
        }
        self.phase = intent.phase;
    }

    /// What the canary steps of `t` want now. Reads the planner, changes nothing.
    fn canary_intent(&self, t: i64, steps: &[CanaryStep]) -> CanaryIntent {
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
        let at = current.unwrap_or(0);
        if let Some(RouteObservation::Fault { message, .. }) = &self.obs.route {
            return CanaryIntent::at(
                state,
                Phase::Progressing,
                format!("canary revision {t} waits: {message}"),
            );
        }
        if let Some(reason) = self.metrics_hold() {
            // The phase stays as it is: holding is not a step of the rollout.
            return CanaryIntent::at(
                state,
                self.phase,
                format!("canary revision {t} at {at}% holds: metrics unavailable ({reason})"),
            );
        }
        let mut promoted = None;
        if self.promote_requested == Some(Promote::Full) {
            promoted = Some(format!("promoted revision {t} fully"));
            state = CanaryStepState {
                index: i32::try_from(total).unwrap_or(i32::MAX),
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
            blocked: false,
        };
        let advanced = advance(&schedule, state, current, self.now, gate);
        let label = |index: i32| format!("step {} of {total}", index + 1);
        if let Some(index) = advanced.promoted {
            promoted = Some(format!("{} promoted", label(index)));
        }
        let mut intent = match advanced.outcome {
            Outcome::SetWeight { at: step, weight } => CanaryIntent {
                weight: Some(weight),
                requeue: Some(Duration::from_millis(200)),
                ..CanaryIntent::at(
                    step,
                    Phase::Progressing,
                    format!(
                        "canary revision {t} at {at}%, setting {weight}% ({})",
                        label(step.index)
                    ),
                )
            },
            Outcome::Paused { at: step } | Outcome::Blocked { at: step } => CanaryIntent::at(
                step,
                Phase::Paused,
                format!(
                    "canary revision {t} at {at}% ({}); spec.paused is true",
                    label(step.index)
                ),
            ),
            Outcome::Hold {
                at: step,
                until: Some(ends),
                ..
            } => CanaryIntent {
                requeue: (self.now < ends)
                    .then(|| self.now.duration_until(ends).unsigned_abs() + Duration::from_millis(200)),
                ..CanaryIntent::at(
                    step,
                    Phase::Paused,
                    format!(
                        "canary revision {t} at {at}% ({}), paused until {ends}",
                        label(step.index)
                    ),
                )
            },
            Outcome::Hold {
                at: step, until: None, ..
            } => CanaryIntent::at(
                step,
                Phase::Paused,
                format!(
                    "canary revision {t} at {at}% ({}), paused: annotate rollguard.dev/promote=true to go on",
                    label(step.index)
                ),
            ),
            // The stable Service moves to `t`, then the weights return to stable.
            Outcome::Done => CanaryIntent {
                step: None,
                done: true,
                ..CanaryIntent::at(state, Phase::Healthy, String::new())
            },
        };
        intent.promoted = promoted;
        // A hold keeps the weight of the last weight step before it: an edit by someone else
        // is put back (once: the next reconcile reads the weight it wrote).
        if let (Outcome::Hold { at: step, .. }, Some(seen)) = (advanced.outcome, current) {
            let before = usize::try_from(step.index).unwrap_or(0).min(schedule.len());
            let held = schedule[..before]
                .iter()
                .rev()
                .find_map(|s| match s {
                    Step::Weight(w) => Some(*w),
                    Step::Hold(_) => None,
                })
                .unwrap_or(0);
            if seen != held {
                intent.weight = Some(held);
                intent.restored = Some(format!(
                    "someone else set the canary weight of revision {t} to {seen}% during {}; rollguard restored {held}%",
                    label(step.index)
                ));
            }
        }
        intent
    }
}
