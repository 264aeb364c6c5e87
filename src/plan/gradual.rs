//! The gradual rollback: walking the canary weight of the revision being left down the
//! policy's steps, holding each step, pausing while the target is unhealthy.

use std::time::Duration;

use super::planner::Planner;
use super::steps::{Gate, Outcome, Step, advance};
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

impl Planner<'_> {
    /// One reconcile of a gradual rollback from `from` to `to`.
    ///
    /// Worked example: steps [50, 20, 5, 0], `from` = canary r4 at 60%, `to` = stable r3.
    /// The weight goes to 50 (the first step below 60); once read back, 50 is held for
    /// `stepDuration`, then, if r3's Deployment is Available, 20, and so on; 0 ends it. When
    /// `from` served all traffic through the stable Service, the canary Service takes it
    /// first (weight 100 on `from`), then the stable Service moves to `to`, then the walk.
    pub(super) fn walk_gradual(&mut self, from: i64, to: i64, g: &GradualRollback) -> Walk {
        let weight = match &self.obs.route {
            Some(RouteObservation::Weights(w)) => w.canary,
            Some(RouteObservation::Fault { message, .. }) => {
                let why = format!("the traffic-split object cannot be used ({message})");
                self.gradual_gives_way(from, to, &why);
                return Walk::GaveWay;
            }
            None => {
                self.gradual_gives_way(from, to, "the traffic-split object was not read");
                return Walk::GaveWay;
            }
        };
        if self.finish_gradual_now {
            self.gradual_gives_way(from, to, "rollguard.dev/abort asked to finish it at once");
            return Walk::GaveWay;
        }
        let stable = self.obs.stable_service.map(|s| s.revision);
        let canary = self.obs.canary_service.map(|s| s.revision);
        let healthy = self.available(to) && self.gradual_unhealthy.is_none();
        let what = format!("rolling back gradually from revision {from} to revision {to}");
        let mut traffic = GradualTraffic {
            from,
            stable,
            canary: canary.unwrap_or(from),
            weight: None,
            step: None,
        };
        self.phase = Phase::RollingBack;
        if stable != Some(to) {
            if !healthy {
                self.message = format!("{what}: waiting for revision {to} ({})", self.readiness(to));
            } else if stable == Some(from) && (weight != 100 || canary != Some(from)) {
                // All traffic is on `from` through the stable Service: the canary Service
                // carries it first, so moving the stable Service shifts nothing yet.
                traffic.canary = from;
                traffic.weight = Some(100);
                self.message = format!("{what}: moving revision {from}'s traffic onto the canary Service");
                self.requeue_after = Some(Duration::from_millis(200));
            } else {
                traffic.stable = Some(to);
                self.take_stable(to);
                self.message = format!("{what}: revision {to} takes the stable Service");
                self.requeue_after = Some(Duration::from_millis(200));
            }
            self.gradual = Some(traffic);
            return Walk::InFlight;
        }
        if canary != Some(from) || weight <= 0 {
            return Walk::Done;
        }
        let total = g.steps.len();
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
        match advance(&schedule, start, Some(weight), self.now, gate).outcome {
            Outcome::Hold { until: Some(ends), .. } => {
                let left = self.now.duration_until(ends).unsigned_abs();
                self.requeue_after = Some(left + Duration::from_millis(200));
                self.message = format!("{what}: {at}, next step at {ends}");
                self.gradual = Some(traffic);
                Walk::InFlight
            }
            Outcome::SetWeight { weight: next, .. } => {
                traffic.weight = Some(next);
                self.message = format!("{what}: {at}, setting {next}%");
                self.requeue_after = Some(Duration::from_millis(200));
                self.gradual = Some(traffic);
                Walk::InFlight
            }
            Outcome::Blocked { .. } | Outcome::Paused { .. } | Outcome::Hold { until: None, .. } => {
                self.gradual_unhealthy_at(to, weight, &what, g, traffic)
            }
            Outcome::Done => Walk::Done,
        }
    }

    /// The walk cannot take its next step: `to` is not healthy. `onUnhealthy: Instant` jumps
    /// to it; `Pause` holds the weight (a Warning Event when the pause begins).
    fn gradual_unhealthy_at(
        &mut self,
        to: i64,
        weight: i32,
        what: &str,
        g: &GradualRollback,
        traffic: GradualTraffic,
    ) -> Walk {
        let why = match &self.gradual_unhealthy {
            Some(reason) if self.available(to) => format!("revision {to} is not healthy ({reason})"),
            _ => format!("revision {to} is not healthy ({})", self.readiness(to)),
        };
        if g.on_unhealthy == OnUnhealthy::Instant {
            // The policy prefers the stable revision, healthy or not, to the one left.
            self.event(
                true,
                "GradualRollbackJumped",
                format!("{what}: {why}; onUnhealthy is Instant, so all traffic goes to revision {to} now"),
            );
            return Walk::Done;
        }
        self.phase = Phase::Paused;
        self.message = format!("{what}: paused at {weight}%: {why}");
        let before = self.md.status.as_ref();
        let was_paused = before.and_then(|s| s.phase) == Some(Phase::Paused)
            && before
                .and_then(|s| s.last_rollback.as_ref())
                .is_some_and(|r| r.completed_at.is_none() && r.mode == RollbackMode::Gradual);
        if !was_paused {
            self.event(true, "GradualRollbackPaused", self.message.clone());
        }
        self.gradual = Some(traffic);
        Walk::InFlight
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
