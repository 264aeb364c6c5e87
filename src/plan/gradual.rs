//! The gradual rollback: walking the canary weight of the revision being left down the
//! policy's steps, holding each step, pausing while the target is unhealthy.

use std::time::Duration;

use super::planner::{Planner, Traffic};
use super::steps::{Capacity, Gate, Outcome, Step, advance};
use super::{CanaryStepState, RouteObservation};
use crate::api::{GradualRollback, OnUnhealthy, Phase, RollbackMode};

/// The outcome of one reconcile of a gradual rollback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Walk {
    /// Traffic is still being walked down.
    InFlight,
    /// The revision being left carries no traffic: complete the rollback.
    Done,
    /// The walk cannot go on: finish as an instant rollback does.
    GaveWay,
}

/// Where traffic stays during one reconcile of a gradual rollback.
#[derive(Clone, Copy, Debug)]
pub(super) struct GradualTraffic {
    /// The revision being left; it holds the canary weight.
    pub(super) from: i64,
    /// What the stable Service selects (None: leave it).
    pub(super) stable: Option<i64>,
    /// What the canary Service selects.
    pub(super) canary: i64,
    /// The canary weight to write (None: leave it).
    pub(super) weight: Option<i32>,
    /// The step being held, persisted on the Deployment of `from`.
    pub(super) step: Option<CanaryStepState>,
}

/// What one reconcile of a gradual rollback wants.
#[derive(Clone, Debug)]
pub(super) enum GradualIntent {
    /// Traffic is still walked down.
    InFlight {
        /// Where traffic stays.
        traffic: GradualTraffic,
        /// RollingBack, or Paused while the target is unhealthy.
        phase: Phase,
        /// The message.
        message: String,
        /// When to look again.
        requeue: Option<Duration>,
        /// The target takes the stable Service now.
        take_stable: bool,
        /// The walk has just paused: a Warning Event says so.
        paused_now: bool,
        /// Someone else raised the weight of the revision being left; the held step's
        /// weight is written back, and a Warning Event says so (this note).
        restored: Option<String>,
    },
    /// The revision being left carries no traffic (or `onUnhealthy: Instant` jumped, with
    /// the Warning to publish): complete the rollback.
    Done {
        /// Why the walk jumped to the end, for a Warning Event.
        jumped: Option<String>,
    },
    /// The walk cannot go on, and why: finish as an instant rollback does.
    GaveWay(String),
}

impl Planner<'_> {
    /// One reconcile of a gradual rollback from `from` to `to`: what the walk wants, followed.
    pub(super) fn walk_gradual(&mut self, from: i64, to: i64, g: &GradualRollback) -> Walk {
        match self.gradual_intent(from, to, g) {
            GradualIntent::GaveWay(why) => {
                self.gradual_gives_way(from, to, &why);
                Walk::GaveWay
            }
            GradualIntent::Done { jumped } => {
                self.phase = Phase::RollingBack;
                if let Some(note) = jumped {
                    self.event(true, "GradualRollbackJumped", note);
                }
                Walk::Done
            }
            GradualIntent::InFlight {
                traffic,
                phase,
                message,
                requeue,
                take_stable,
                paused_now,
                restored,
            } => {
                if take_stable {
                    self.take_stable(to);
                }
                if paused_now {
                    self.event(true, "GradualRollbackPaused", message.clone());
                }
                if let Some(note) = restored {
                    self.event(true, "RouteWeightRestored", note);
                }
                if requeue.is_some() {
                    self.requeue_after = requeue;
                }
                self.phase = phase;
                self.message = message;
                self.traffic = Some(Traffic::Gradual(traffic));
                Walk::InFlight
            }
        }
    }

    /// What one reconcile of a gradual rollback from `from` to `to` wants. Reads the planner,
    /// changes nothing.
    ///
    /// Worked example: steps [50, 20, 5, 0], `from` = canary r4 at 60%, `to` = stable r3.
    /// The weight goes to 50 (the first step below 60); once read back, 50 is held for
    /// `stepDuration`, then, if r3's Deployment is Available, 20, and so on; 0 ends it. When
    /// `from` served all traffic through the stable Service, the canary Service takes it
    /// first (weight 100 on `from`), then the stable Service moves to `to`, then the walk.
    fn gradual_intent(&self, from: i64, to: i64, g: &GradualRollback) -> GradualIntent {
        let weight = match &self.obs.route {
            Some(RouteObservation::Weights(w)) => w.canary,
            Some(RouteObservation::Fault { message, .. }) => {
                return GradualIntent::GaveWay(format!("the traffic-split object cannot be used ({message})"));
            }
            None => return GradualIntent::GaveWay("the traffic-split object was not read".into()),
        };
        if self.finish_gradual_now {
            return GradualIntent::GaveWay("rollguard.dev/abort asked to finish it at once".into());
        }
        let stable = self.obs.stable_service.map(|s| s.revision);
        let canary = self.obs.canary_service.map(|s| s.revision);
        let healthy = self.available(to) && self.gradual_unhealthy().is_none();
        let what = format!("rolling back gradually from revision {from} to revision {to}");
        let mut traffic = GradualTraffic {
            from,
            stable,
            canary: canary.unwrap_or(from),
            weight: None,
            step: None,
        };
        let in_flight = |traffic, message, requeue: Option<Duration>, take_stable| GradualIntent::InFlight {
            traffic,
            phase: Phase::RollingBack,
            message,
            requeue,
            take_stable,
            paused_now: false,
            restored: None,
        };
        let soon = Some(Duration::from_millis(200));
        if stable != Some(to) {
            if !healthy {
                let message = format!("{what}: waiting for revision {to} ({})", self.readiness(to));
                return in_flight(traffic, message, None, false);
            }
            if stable == Some(from) && (weight != 100 || canary != Some(from)) {
                // All traffic is on `from` through the stable Service: the canary Service
                // carries it first, so moving the stable Service shifts nothing yet.
                traffic.canary = from;
                traffic.weight = Some(100);
                let message = format!("{what}: moving revision {from}'s traffic onto the canary Service");
                return in_flight(traffic, message, soon, false);
            }
            traffic.stable = Some(to);
            let message = format!("{what}: revision {to} takes the stable Service");
            return in_flight(traffic, message, soon, true);
        }
        if canary != Some(from) || weight <= 0 {
            return GradualIntent::Done { jumped: None };
        }
        let total = g.steps.len();
        // A weight above the step being held is someone else's edit: a rollback never gives
        // the revision being left more traffic. The step's weight goes back, on its own clock
        // (a lower weight is taken as it is: the walk goes on from there).
        if let Some((step, held_weight)) = self.held_rollback_step(from, g).filter(|(_, w)| weight > *w) {
            traffic.weight = Some(held_weight);
            traffic.step = Some(step);
            let index = step.index + 1;
            return GradualIntent::InFlight {
                traffic,
                phase: Phase::RollingBack,
                message: format!(
                    "{what}: revision {from} at {weight}%, restoring {held_weight}% (step {index} of {total})"
                ),
                requeue: soon,
                take_stable: false,
                paused_now: false,
                restored: Some(format!(
                    "someone else set the canary weight of revision {from} to {weight}% during its gradual rollback; rollguard restored {held_weight}% (step {index} of {total})"
                )),
            };
        }
        let held = g.steps.iter().position(|s| *s == weight).map(|i| {
            let index = i32::try_from(i).unwrap_or(i32::MAX);
            let observed = self.obs.deployments.get(&from).and_then(|d| d.rollback_step);
            observed.filter(|s| s.index == index).unwrap_or(CanaryStepState {
                index,
                started_at: self.now,
            })
        });
        traffic.step = held;
        let at = match held {
            Some(s) => format!("revision {from} at {weight}% (step {} of {total})", s.index + 1),
            None => format!("revision {from} at {weight}%"),
        };
        // The rest of the walk from here, for the step engine: the hold of the step traffic is
        // at (when it is one of the policy's), then each lower step and its hold, down to 0.
        let hold = Step::Hold(Some(g.step_duration.signed()));
        let mut schedule: Vec<Step> = held.map(|_| hold).into_iter().collect();
        let mut current = weight;
        while current > 0 {
            let next = g.steps.iter().copied().find(|s| *s < current).unwrap_or(0).max(0);
            schedule.push(Step::Weight(next));
            if next > 0 {
                schedule.push(hold);
            }
            current = next;
        }
        let start = CanaryStepState {
            index: 0,
            started_at: held.map_or(self.now, |s| s.started_at),
        };
        let gate = Gate {
            blocked: !healthy,
            ..Gate::default()
        };
        match advance(&schedule, start, Some(weight), Capacity::UNBOUNDED, self.now, gate).outcome {
            Outcome::Hold { until: Some(ends), .. } => {
                let left = self.now.duration_until(ends).unsigned_abs();
                let message = format!("{what}: {at}, next step at {ends}");
                in_flight(traffic, message, Some(left + Duration::from_millis(200)), false)
            }
            Outcome::SetWeight { weight: next, .. } => {
                traffic.weight = Some(next);
                in_flight(traffic, format!("{what}: {at}, setting {next}%"), soon, false)
            }
            Outcome::Blocked { .. }
            | Outcome::Paused { .. }
            | Outcome::Scaling { .. }
            | Outcome::Hold { until: None, .. } => self.unhealthy_intent(to, weight, &what, g, traffic),
            Outcome::Done => GradualIntent::Done { jumped: None },
        }
    }

    /// The walk cannot take its next step: `to` is not healthy. `onUnhealthy: Instant` jumps
    /// to it; `Pause` holds the weight (a Warning Event when the pause begins).
    fn unhealthy_intent(
        &self,
        to: i64,
        weight: i32,
        what: &str,
        g: &GradualRollback,
        traffic: GradualTraffic,
    ) -> GradualIntent {
        let why = match self.gradual_unhealthy() {
            Some(reason) if self.available(to) => format!("revision {to} is not healthy ({reason})"),
            _ => format!("revision {to} is not healthy ({})", self.readiness(to)),
        };
        if g.on_unhealthy == OnUnhealthy::Instant {
            // The policy prefers the stable revision, healthy or not, to the one left.
            return GradualIntent::Done {
                jumped: Some(format!(
                    "{what}: {why}; onUnhealthy is Instant, so all traffic goes to revision {to} now"
                )),
            };
        }
        let before = self.md.status.as_ref();
        let was_paused = before.and_then(|s| s.phase) == Some(Phase::Paused)
            && before
                .and_then(|s| s.last_rollback.as_ref())
                .is_some_and(|r| r.completed_at.is_none() && r.mode == RollbackMode::Gradual);
        GradualIntent::InFlight {
            traffic,
            phase: Phase::Paused,
            message: format!("{what}: paused at {weight}%: {why}"),
            requeue: None,
            take_stable: false,
            paused_now: !was_paused,
            restored: None,
        }
    }

    /// The step of this gradual rollback being held on the Deployment of `from` (written
    /// since the rollback started), and its weight.
    fn held_rollback_step(&self, from: i64, g: &GradualRollback) -> Option<(CanaryStepState, i32)> {
        let started = self.last_rollback.as_ref()?.started_at.as_ref()?.0;
        let step = self.obs.deployments.get(&from)?.rollback_step?;
        let weight = *g.steps.get(usize::try_from(step.index).ok()?)?;
        (step.started_at >= started).then_some((step, weight))
    }

    /// A gradual rollback that cannot (or should not) go on finishes at once.
    pub(super) fn gradual_gives_way(&mut self, from: i64, to: i64, why: &str) {
        if let Some(r) = self.last_rollback.as_mut() {
            r.mode = RollbackMode::Instant;
        }
        self.event(
            true,
            "GradualRollbackFinishedAtOnce",
            format!("rollback from revision {from} to revision {to} finished at once: {why}"),
        );
    }
}
