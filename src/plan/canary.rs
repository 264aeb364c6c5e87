//! The canary steps: set a weight, hold for a time or until promoted.
//!
//! The strategy says what it wants ([`CanaryIntent`], from the step engine's outcome) and the
//! planner follows it; the strategy itself reads the planner and changes nothing.

use std::time::Duration;

use super::annotations::Promote;
use super::planner::{Planner, Traffic};
use super::steps::{Capacity, Gate, Outcome, Step, advance, replicas_for};
use super::{CanaryStepState, RouteObservation};
use crate::api::{CanaryScale, CanaryStep, Phase};

/// The replicas a canary runs at step `index` of `steps`, with `route` percent of the traffic
/// on it, of a full size of `full`: full size until a `setCanaryScale` step at or before it
/// says otherwise, and full size once the steps are done (promotion comes at full size). A
/// scale step never takes the canary below what the traffic on it, or the weight of the step
/// about to be written, takes; nor above `full`. With `paused`, the weight of the step at
/// `index` is not about to be written and does not count.
pub(super) fn canary_size(steps: &[CanaryStep], index: i32, route: i32, full: i32, paused: bool) -> i32 {
    let full = full.max(0);
    let index = usize::try_from(index).unwrap_or(0);
    let Some(current) = steps.get(index) else {
        return full;
    };
    let scale = steps[..=index].iter().rev().find_map(|s| s.set_canary_scale.as_ref());
    let upcoming = if paused { None } else { current.set_weight };
    let needs = replicas_for(full, route.max(upcoming.unwrap_or(0)));
    match scale {
        None => full,
        Some(CanaryScale { replicas: Some(n), .. }) => (*n).clamp(0, full).max(needs),
        Some(_) => needs,
    }
}

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
    /// `weight` is a weight step's: once the route reads it, the steps go on.
    pub(super) step_weight: bool,
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
            step_weight: false,
        }
    }
}

/// What a canary that waits for ready replicas says: `canary revision 2 at 10% (step 3 of 5)
/// waits for 3 ready replicas (1/3 ready)`; past the last of `total` steps, `(steps done)
/// waits for 4 ready replicas before promotion`.
fn waits_for(t: i64, at: i32, index: i32, total: usize, replicas: i32, ready: i32) -> String {
    let (step, before) = if usize::try_from(index).is_ok_and(|i| i >= total) {
        ("steps done".to_string(), " before promotion")
    } else {
        (format!("step {} of {total}", index + 1), "")
    };
    format!(
        "canary revision {t} at {at}% ({step}) waits for {replicas} ready replicas{before} ({ready}/{replicas} ready)"
    )
}

impl Planner<'_> {
    /// What the canary `t` says while its Deployment is not Available mid-steps (scaling up
    /// for a step, or a pod lost): None before its steps began.
    pub(super) fn canary_waits(&self, t: i64) -> Option<String> {
        let size = self.canary_replicas(t)?;
        let d = self.obs.deployments.get(&t)?;
        let step = d.canary_step?;
        let total = self.md.spec.strategy.canary_steps().len();
        let at = match &self.obs.route {
            Some(RouteObservation::Weights(w)) => w.canary,
            _ => 0,
        };
        Some(waits_for(t, at, step.index, total, size, d.ready_replicas))
    }

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
        self.step_weight = intent.step_weight;
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
        let full = self.replicas;
        let schedule: Vec<Step> = steps
            .iter()
            .enumerate()
            .map(|(i, s)| match (s.set_weight, &s.pause) {
                (Some(weight), _) => Step::Weight(weight),
                (None, Some(pause)) => Step::Hold(pause.duration.as_ref().map(|d| d.signed())),
                (None, None) => Step::Scale(canary_size(
                    steps,
                    i32::try_from(i).unwrap_or(i32::MAX),
                    at,
                    full,
                    false,
                )),
            })
            .collect();
        let gate = Gate {
            paused: self.md.spec.paused,
            promote: self.promote_requested == Some(Promote::Step),
            blocked: false,
        };
        let ready = self.ready_of(t);
        let capacity = Capacity { ready, full };
        let advanced = advance(&schedule, state, current, capacity, self.now, gate);
        let label = |index: i32| format!("step {} of {total}", index + 1);
        if let Some(index) = advanced.promoted {
            promoted = Some(format!("{} promoted", label(index)));
        }
        let mut intent = match advanced.outcome {
            Outcome::SetWeight { at: step, weight } => CanaryIntent {
                weight: Some(weight),
                step_weight: true,
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
            Outcome::Scaling { at: step, replicas } => CanaryIntent {
                requeue: Some(Duration::from_secs(1)),
                ..CanaryIntent::at(
                    step,
                    Phase::Progressing,
                    waits_for(t, at, step.index, total, replicas, ready),
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
            // Promotion comes at full size: the canary scales up first, traffic where it is.
            Outcome::Done if ready < full => CanaryIntent {
                requeue: Some(Duration::from_secs(1)),
                ..CanaryIntent::at(
                    if usize::try_from(state.index).is_ok_and(|i| i >= total) {
                        state
                    } else {
                        CanaryStepState {
                            index: i32::try_from(total).unwrap_or(i32::MAX),
                            started_at: self.now,
                        }
                    },
                    Phase::Progressing,
                    waits_for(t, at, i32::try_from(total).unwrap_or(i32::MAX), total, full, ready),
                )
            },
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
                    Step::Hold(_) | Step::Scale(_) => None,
                })
                .unwrap_or(0);
            if seen != held {
                intent.weight = Some(held);
                intent.restored = Some(format!(
                    "the route carried {seen}% for canary revision {t} during {} (someone else set it, or rollguard stopped before its own write); rollguard restored {held}%",
                    label(step.index)
                ));
            }
        }
        intent
    }
}
