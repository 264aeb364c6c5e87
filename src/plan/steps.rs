//! The step engine: a schedule of weights, holds and scale steps, walked as far as the route,
//! the clock, the ready replicas and the gate allow in one reconcile. Pure; the strategies
//! feed it and word its outcome.

use jiff::{SignedDuration, Timestamp};

use super::CanaryStepState;

/// One step of a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this percentage of traffic to the revision being moved to; done once the route
    /// reads it back.
    Weight(i32),
    /// Hold where traffic is: for this long, or (None) until promoted.
    Hold(Option<SignedDuration>),
    /// Wait until the revision being moved to has this many ready replicas.
    Scale(i32),
}

/// The ready replicas of the revision being moved to, and the full size its traffic share is
/// reckoned against: a weight `w` is written only once `ceil(full × w / 100)` are ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Its ready replicas.
    pub ready: i32,
    /// The size that takes all traffic.
    pub full: i32,
}

impl Capacity {
    /// No limit: every weight can be written (a rollback's target, sized in full).
    pub const UNBOUNDED: Capacity = Capacity {
        ready: i32::MAX,
        full: 0,
    };

    /// The ready replicas `weight` percent of the traffic takes.
    pub fn needs(self, weight: i32) -> i32 {
        replicas_for(self.full, weight)
    }
}

/// `ceil(full × weight / 100)`: the replicas that take `weight` percent of what `full`
/// replicas take; 0 for a weight of 0 or less, `full` for 100 or more.
pub fn replicas_for(full: i32, weight: i32) -> i32 {
    let (full, weight) = (i64::from(full.max(0)), i64::from(weight.clamp(0, 100)));
    i32::try_from((full * weight + 99) / 100).unwrap_or(i32::MAX)
}

/// What may move a schedule on besides the clock and the route.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gate {
    /// `spec.paused`: no step is taken, no hold ends.
    pub paused: bool,
    /// A promotion was asked for: it ends one open-ended hold.
    pub promote: bool,
    /// Something the strategy checks (the health of a rollback's target) keeps weight steps
    /// from being written; holds still run their time.
    pub blocked: bool,
}

/// Where a walk of the schedule stopped in this reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Write `weight` and wait for the route to read it back, at step `at`.
    SetWeight {
        /// The step.
        at: CanaryStepState,
        /// The weight to write.
        weight: i32,
    },
    /// `spec.paused` keeps the weight of step `at` from being written.
    Paused {
        /// The step.
        at: CanaryStepState,
    },
    /// The gate is blocked: the weight of step `at` is not written.
    Blocked {
        /// The step.
        at: CanaryStepState,
    },
    /// Step `at` waits for `replicas` ready replicas of the revision being moved to: its
    /// weight is not written before they are.
    Scaling {
        /// The step.
        at: CanaryStepState,
        /// The ready replicas it waits for.
        replicas: i32,
    },
    /// Holding at step `at`: until `until` (None: until promoted); `paused` when
    /// `spec.paused` keeps a hold whose time is up from ending.
    Hold {
        /// The step.
        at: CanaryStepState,
        /// When the hold ends; None for an open-ended one.
        until: Option<Timestamp>,
        /// Whether `spec.paused` holds it.
        paused: bool,
    },
    /// Every step is done.
    Done,
}

/// The result of [`advance`]: where it stopped, and which hold the promotion ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advance {
    /// Where it stopped.
    pub outcome: Outcome,
    /// The index of the open-ended hold the gate's promotion ended (the request is handled).
    pub promoted: Option<i32>,
}

/// Walks `steps` from `state` (the step being run and when it started) as far as it can at
/// `now`: a weight step is done once the route reads its weight (`observed_weight`) and is
/// written only once `capacity` has the ready replicas it takes, a timed hold is done once its
/// time is up, an open-ended hold once promoted (one promotion ends one hold), a scale step
/// once its replicas are ready. Each step that is done starts the next one at `now`.
///
/// Worked examples (steps `[Weight 10, Hold 5m, Weight 50, Hold ∞]`, started at t0, with
/// 4 of 4 replicas ready unless the gate column says otherwise):
///
/// | state (index, since) | route | now      | gate     | outcome                          |
/// |----------------------|-------|----------|----------|----------------------------------|
/// | (0, t0)              | 0     | t0       |          | SetWeight 10 at (0, t0)          |
/// | (0, t0)              | 10    | t0+1s    |          | Hold until t0+5m1s at (1, t0+1s) |
/// | (1, t0+1s)           | 10    | t0+5m1s  |          | SetWeight 50 at (2, t0+5m1s)     |
/// | (1, t0+1s)           | 10    | t0+5m1s  | paused   | Hold (paused) until t0+5m1s      |
/// | (2, t0)              | 50    | t0       |          | Hold until promoted at (3, t0)   |
/// | (3, t0)              | 50    | t0       | promote  | Done, step 3 promoted            |
/// | (0, t0)              | 0     | t0       | paused   | Paused at (0, t0)                |
/// | (1, t0+1s)           | 10    | t0+5m1s  | blocked  | Blocked at (2, t0+5m1s)          |
/// | (1, t0+1s)           | 10    | t0+2s    | blocked  | Hold until t0+5m1s at (1, t0+1s) |
/// | (1, t0+1s)           | 10    | t0+5m1s  | 1 ready  | Scaling to 2 at (2, t0+5m1s)     |
pub fn advance(
    steps: &[Step],
    state: CanaryStepState,
    observed_weight: Option<i32>,
    capacity: Capacity,
    now: Timestamp,
    gate: Gate,
) -> Advance {
    let mut at = state;
    let mut promoted = None;
    let next = |at: CanaryStepState| CanaryStepState {
        index: at.index.saturating_add(1),
        started_at: now,
    };
    while let Some(step) = usize::try_from(at.index).ok().and_then(|i| steps.get(i)) {
        let outcome = match *step {
            Step::Weight(weight) if observed_weight == Some(weight) => {
                at = next(at);
                continue;
            }
            Step::Weight(_) if gate.paused => Outcome::Paused { at },
            Step::Weight(_) if gate.blocked => Outcome::Blocked { at },
            Step::Weight(weight) if capacity.ready < capacity.needs(weight) => Outcome::Scaling {
                at,
                replicas: capacity.needs(weight),
            },
            Step::Weight(weight) => Outcome::SetWeight { at, weight },
            Step::Scale(replicas) if capacity.ready >= replicas => {
                at = next(at);
                continue;
            }
            Step::Scale(_) if gate.paused => Outcome::Paused { at },
            Step::Scale(_) if gate.blocked => Outcome::Blocked { at },
            Step::Scale(replicas) => Outcome::Scaling { at, replicas },
            Step::Hold(Some(duration)) => {
                let until = at.started_at.checked_add(duration).unwrap_or(at.started_at);
                if now >= until && !gate.paused {
                    at = next(at);
                    continue;
                }
                Outcome::Hold {
                    at,
                    until: Some(until),
                    paused: gate.paused,
                }
            }
            Step::Hold(None) if gate.promote && !gate.paused && promoted.is_none() => {
                promoted = Some(at.index);
                at = next(at);
                continue;
            }
            Step::Hold(None) => Outcome::Hold {
                at,
                until: None,
                paused: gate.paused,
            },
        };
        return Advance { outcome, promoted };
    }
    Advance {
        outcome: Outcome::Done,
        promoted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_795_000_000 + secs).expect("time")
    }

    fn at(index: i32, since: i64) -> CanaryStepState {
        CanaryStepState {
            index,
            started_at: t(since),
        }
    }

    /// State, route weight, ready replicas (of 4), now (seconds after t0), gate; the outcome
    /// and the promoted step.
    type Row = (CanaryStepState, Option<i32>, i32, i64, Gate, Outcome, Option<i32>);

    fn ready(ready: i32) -> Capacity {
        Capacity { ready, full: 4 }
    }

    /// The worked examples of [`advance`]'s doc comment, row by row.
    #[test]
    fn the_worked_examples_hold() {
        let steps = [
            Step::Weight(10),
            Step::Hold(Some(SignedDuration::from_mins(5))),
            Step::Weight(50),
            Step::Hold(None),
        ];
        let none = Gate::default();
        let paused = Gate {
            paused: true,
            ..Gate::default()
        };
        let promote = Gate {
            promote: true,
            ..Gate::default()
        };
        let blocked = Gate {
            blocked: true,
            ..Gate::default()
        };
        let five_min_one = 301;
        #[rustfmt::skip]
        let table: [Row; 10] = [
            (at(0, 0), Some(0), 4, 0, none, Outcome::SetWeight { at: at(0, 0), weight: 10 }, None),
            (at(0, 0), Some(10), 4, 1, none, Outcome::Hold { at: at(1, 1), until: Some(t(five_min_one)), paused: false }, None),
            (at(1, 1), Some(10), 4, five_min_one, none, Outcome::SetWeight { at: at(2, five_min_one), weight: 50 }, None),
            (at(1, 1), Some(10), 4, five_min_one, paused, Outcome::Hold { at: at(1, 1), until: Some(t(five_min_one)), paused: true }, None),
            (at(2, 0), Some(50), 4, 0, none, Outcome::Hold { at: at(3, 0), until: None, paused: false }, None),
            (at(3, 0), Some(50), 4, 0, promote, Outcome::Done, Some(3)),
            (at(0, 0), Some(0), 4, 0, paused, Outcome::Paused { at: at(0, 0) }, None),
            (at(1, 1), Some(10), 4, five_min_one, blocked, Outcome::Blocked { at: at(2, five_min_one) }, None),
            (at(1, 1), Some(10), 4, 2, blocked, Outcome::Hold { at: at(1, 1), until: Some(t(five_min_one)), paused: false }, None),
            (at(1, 1), Some(10), 1, five_min_one, none, Outcome::Scaling { at: at(2, five_min_one), replicas: 2 }, None),
        ];
        for (i, (state, route, ready_now, now, gate, outcome, promoted)) in table.into_iter().enumerate() {
            let got = advance(&steps, state, route, ready(ready_now), t(now), gate);
            assert_eq!(got, Advance { outcome, promoted }, "row {i}");
        }
    }

    #[test]
    fn one_promotion_ends_one_open_ended_hold() {
        let steps = [Step::Hold(None), Step::Hold(None)];
        let gate = Gate {
            promote: true,
            ..Gate::default()
        };
        let got = advance(&steps, at(0, 0), None, Capacity::UNBOUNDED, t(5), gate);
        assert_eq!(
            got,
            Advance {
                outcome: Outcome::Hold {
                    at: at(1, 5),
                    until: None,
                    paused: false
                },
                promoted: Some(0)
            }
        );
    }

    #[test]
    fn an_unread_route_never_completes_a_weight_step() {
        let got = advance(
            &[Step::Weight(0)],
            at(0, 0),
            None,
            Capacity::UNBOUNDED,
            t(0),
            Gate::default(),
        );
        assert_eq!(
            got.outcome,
            Outcome::SetWeight {
                at: at(0, 0),
                weight: 0
            }
        );
    }

    #[test]
    fn a_scale_step_waits_for_its_ready_replicas_and_paused_stops_it() {
        let steps = [Step::Scale(2), Step::Weight(50)];
        let got = advance(&steps, at(0, 0), Some(0), ready(1), t(3), Gate::default());
        assert_eq!(
            got.outcome,
            Outcome::Scaling {
                at: at(0, 0),
                replicas: 2
            }
        );
        let paused = Gate {
            paused: true,
            ..Gate::default()
        };
        let got = advance(&steps, at(0, 0), Some(0), ready(1), t(3), paused);
        assert_eq!(got.outcome, Outcome::Paused { at: at(0, 0) });
        // Ready: done, and the weight it sized for is written.
        let got = advance(&steps, at(0, 0), Some(0), ready(2), t(3), Gate::default());
        assert_eq!(
            got.outcome,
            Outcome::SetWeight {
                at: at(1, 3),
                weight: 50
            }
        );
    }

    #[test]
    fn replicas_for_rounds_up_and_stays_in_range() {
        assert_eq!(replicas_for(16, 10), 2);
        assert_eq!(replicas_for(16, 0), 0);
        assert_eq!(replicas_for(16, 100), 16);
        assert_eq!(replicas_for(3, 34), 2);
        assert_eq!(replicas_for(3, 150), 3);
        assert_eq!(replicas_for(-1, 50), 0);
        assert_eq!(replicas_for(i32::MAX, 100), i32::MAX);
    }

    proptest::proptest! {
        /// A weight is written only when the ready replicas can take it, and a weight the
        /// ready replicas can take is never held back for capacity.
        #[test]
        fn a_weight_is_written_only_with_the_replicas_it_takes(
            weight in 0i32..=100, ready_now in 0i32..=20, full in 0i32..=20, route in 0i32..=100,
        ) {
            let capacity = Capacity { ready: ready_now, full };
            let got = advance(&[Step::Weight(weight)], at(0, 0), Some(route), capacity, t(0), Gate::default());
            match got.outcome {
                Outcome::SetWeight { weight: w, .. } => {
                    proptest::prop_assert!(ready_now * 100 >= full * w);
                }
                Outcome::Scaling { replicas, .. } => {
                    proptest::prop_assert!(ready_now < replicas && replicas <= full && route != weight);
                    proptest::prop_assert!(i64::from(replicas - 1) * 100 < i64::from(full) * i64::from(weight));
                }
                Outcome::Done => proptest::prop_assert_eq!(route, weight),
                other => proptest::prop_assert!(false, "{:?}", other),
            }
        }
    }
}
