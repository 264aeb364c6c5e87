//! Pure trigger verdicts: operator, threshold, `consecutive`, `cooldown` and severity.
//!
//! Each trigger's state (breaches in a row, when it last fired) is its entry in
//! `status.analysis`, so a restarted operator goes on counting where it stopped. The state
//! belongs to one revision: when the revision being judged changes, counting starts again.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

use crate::conditions::stamp;

use crate::api::{OnMetricsUnavailable, Operator, Severity, Trigger, TriggerAnalysis, TriggerVerdict};
use crate::metrics::{MetricsError, Reading};

/// The longest `status.analysis[].message`, in bytes: a provider's error text is not bounded,
/// and status must stay well under the API server's object size limit.
pub const MESSAGE_MAX: usize = 1024;

/// Whether `value` breaches `threshold` under `op`. NaN never breaches.
///
/// ```
/// use rollguard::api::Operator;
/// use rollguard::trigger::breaches;
/// assert!(breaches(Operator::Gt, 0.07, 0.05));
/// assert!(!breaches(Operator::Gt, 0.05, 0.05));
/// assert!(breaches(Operator::Ge, 0.05, 0.05));
/// assert!(breaches(Operator::Gt, f64::INFINITY, 2.5));
/// ```
pub fn breaches(op: Operator, value: f64, threshold: f64) -> bool {
    match op {
        Operator::Gt => value > threshold,
        Operator::Ge => value >= threshold,
        Operator::Lt => value < threshold,
        Operator::Le => value <= threshold,
        Operator::Eq => value == threshold,
        Operator::Ne => !value.is_nan() && value != threshold,
    }
}

/// Whether a trigger evaluated at `last` (on the same revision) is due again at `now`.
pub fn due(previous: Option<&TriggerAnalysis>, revision: i64, interval: SignedDuration, now: Timestamp) -> bool {
    let last = previous
        .filter(|p| p.revision == revision)
        .and_then(|p| p.last_evaluated_at.as_ref())
        .map(|t| t.0);
    match last {
        None => true,
        Some(last) => now >= last.checked_add(interval).unwrap_or(last),
    }
}

/// What a query gave for one evaluation: a reading, or why there is none.
pub type Outcome = Result<Reading, EvaluationError>;

/// Why an evaluation has no reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EvaluationError {
    /// The provider could not be asked.
    Unavailable(String),
    /// The query cannot be built, or the provider refused it.
    Invalid(String),
}

impl From<MetricsError> for EvaluationError {
    fn from(e: MetricsError) -> Self {
        match e {
            MetricsError::Unavailable { .. } => EvaluationError::Unavailable(e.to_string()),
            MetricsError::Query { .. } | MetricsError::Ambiguous { .. } => EvaluationError::Invalid(e.to_string()),
        }
    }
}

/// Evaluates `trigger` on `revision` with the query's `outcome`, given its previous entry
/// in `status.analysis`. Returns the new entry.
///
/// Worked example: `Gt 0.05, consecutive 2, cooldown 5m`. Readings 0.07, 0.08 give
/// Breached (1 in a row), then Fired (2 in a row; counting restarts, lastFiredAt = now).
/// A breach within 5 minutes is CoolingDown; a reading of 0.01 is Healthy and resets the
/// count. No data and an unavailable provider leave the count as it was.
pub fn evaluate(
    trigger: &Trigger,
    revision: i64,
    outcome: &Outcome,
    previous: Option<&TriggerAnalysis>,
    now: Timestamp,
) -> TriggerAnalysis {
    let previous = previous.filter(|p| p.revision == revision && p.trigger == trigger.name);
    let count = previous.map(|p| p.consecutive_breaches).unwrap_or(0);
    let last_fired = previous.and_then(|p| p.last_fired_at.clone());
    let mut entry = TriggerAnalysis {
        trigger: trigger.name.clone(),
        revision,
        value: None,
        breached: false,
        verdict: None,
        severity: Some(trigger.severity),
        message: None,
        consecutive_breaches: count,
        last_evaluated_at: Some(MicroTime(
            Timestamp::from_microsecond(now.as_microsecond()).unwrap_or(now),
        )),
        last_fired_at: last_fired.clone(),
    };
    let value = match outcome {
        Ok(Reading::Value(v)) => *v,
        Ok(Reading::NoData) => {
            entry.verdict = Some(TriggerVerdict::NoData);
            entry.message = Some("no data (no series, or NaN)".into());
            return entry;
        }
        // What a provider answers is not bounded: status keeps the first MESSAGE_MAX bytes.
        Err(EvaluationError::Unavailable(why)) => {
            entry.verdict = Some(TriggerVerdict::Unavailable);
            entry.message = Some(crate::truncate(why, MESSAGE_MAX));
            return entry;
        }
        Err(EvaluationError::Invalid(why)) => {
            entry.verdict = Some(TriggerVerdict::Invalid);
            entry.message = Some(crate::truncate(why, MESSAGE_MAX));
            return entry;
        }
    };
    // JSON has no infinities: the value field holds finite values, the message all.
    entry.value = value.is_finite().then_some(value);
    let op = trigger.operator.symbol();
    if !breaches(trigger.operator, value, trigger.threshold) {
        entry.consecutive_breaches = 0;
        entry.verdict = Some(TriggerVerdict::Healthy);
        entry.message = Some(format!("{value} (breach when {op} {})", trigger.threshold));
        return entry;
    }
    entry.breached = true;
    entry.consecutive_breaches = count.saturating_add(1);
    let needed = trigger.consecutive.max(1);
    let cooldown = trigger.cooldown.signed();
    let quiet_until = last_fired.map(|t| t.0.checked_add(cooldown).unwrap_or(t.0));
    let breach = format!("{value} {op} {}", trigger.threshold);
    if let Some(until) = quiet_until.filter(|until| now < *until) {
        entry.verdict = Some(TriggerVerdict::CoolingDown);
        entry.message = Some(format!("{breach}; fired recently, quiet until {until}"));
    } else if entry.consecutive_breaches >= needed {
        entry.verdict = Some(TriggerVerdict::Fired);
        entry.message = Some(format!("{breach}, {} in a row", entry.consecutive_breaches));
        entry.consecutive_breaches = 0;
        entry.last_fired_at = Some(stamp(now));
    } else {
        entry.verdict = Some(TriggerVerdict::Breached);
        entry.message = Some(format!("{breach}, {} of {needed} in a row", entry.consecutive_breaches));
    }
    entry
}

/// What the evaluations of a revision's triggers ask for.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Nothing fired; go on.
    Proceed,
    /// A Critical trigger fired (or metrics are unavailable and the policy says Rollback):
    /// roll back.
    Rollback {
        /// The trigger, or `onMetricsUnavailable`.
        trigger: String,
        /// Its value, when finite.
        value: Option<f64>,
        /// Its threshold.
        threshold: Option<f64>,
        /// What was seen, for the Event and the history reason.
        detail: String,
    },
    /// Metrics are unavailable and the policy says Hold: neither advance nor roll back.
    Hold {
        /// Why, for `MetricsAvailable=False`.
        reason: String,
    },
}

/// A trigger that fired with a lower severity: an Event (and, for Warning, a condition).
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    /// Warning or Info.
    pub severity: Severity,
    /// The trigger.
    pub trigger: String,
    /// What it saw.
    pub message: String,
}

/// Combines this round's entries into a decision and the notices to publish.
///
/// A Critical trigger that fired (or keeps breaching within its cooldown) rolls back. Otherwise, an entry that is Unavailable (or a query
/// that cannot run) follows `onMetricsUnavailable`: Hold holds, Rollback rolls back, Ignore
/// proceeds.
pub fn decide(
    triggers: &[Trigger],
    entries: &[TriggerAnalysis],
    on_unavailable: OnMetricsUnavailable,
) -> (Decision, Vec<Notice>) {
    let mut notices = Vec::new();
    let mut unavailable: Option<String> = None;
    for t in triggers {
        let Some(e) = entries.iter().find(|e| e.trigger == t.name) else {
            continue;
        };
        let message = e.message.clone().unwrap_or_default();
        match e.verdict {
            // A Critical trigger that keeps breaching on the revision it fired on is never
            // quieted: cooldown spaces out the Events of Warning and Info triggers.
            Some(TriggerVerdict::Fired | TriggerVerdict::CoolingDown) if t.severity == Severity::Critical => {
                return (
                    Decision::Rollback {
                        trigger: t.name.clone(),
                        value: e.value,
                        threshold: Some(t.threshold),
                        detail: message,
                    },
                    notices,
                );
            }
            Some(TriggerVerdict::Fired) => notices.push(Notice {
                severity: t.severity,
                trigger: t.name.clone(),
                message,
            }),
            Some(TriggerVerdict::Unavailable | TriggerVerdict::Invalid) => {
                unavailable.get_or_insert(format!("trigger {}: {message}", t.name));
            }
            _ => {}
        }
    }
    let decision = match (unavailable, on_unavailable) {
        (None, _) | (Some(_), OnMetricsUnavailable::Ignore) => Decision::Proceed,
        (Some(reason), OnMetricsUnavailable::Hold) => Decision::Hold { reason },
        (Some(detail), OnMetricsUnavailable::Rollback) => Decision::Rollback {
            trigger: "onMetricsUnavailable".into(),
            value: None,
            threshold: None,
            detail,
        },
    };
    (decision, notices)
}

/// One round of judging a revision: the new `status.analysis` entries, what they ask for,
/// and the lower-severity triggers that fired in it.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    /// One entry per trigger.
    pub analysis: Vec<TriggerAnalysis>,
    /// What they ask for.
    pub decision: Decision,
    /// Warning and Info triggers that fired in this round.
    pub notices: Vec<Notice>,
}

/// Judges `revision` on the query `outcomes` (one per trigger, in order), carrying each
/// trigger's count and cooldown over from its `previous` entry.
pub fn judge(
    triggers: &[Trigger],
    revision: i64,
    outcomes: &[Outcome],
    previous: &[TriggerAnalysis],
    on_unavailable: OnMetricsUnavailable,
    now: Timestamp,
) -> Judgement {
    let analysis: Vec<TriggerAnalysis> = triggers
        .iter()
        .zip(outcomes)
        .map(|(t, outcome)| {
            let before = previous.iter().find(|p| p.trigger == t.name);
            evaluate(t, revision, outcome, before, now)
        })
        .collect();
    let (decision, notices) = decide(triggers, &analysis, on_unavailable);
    Judgement {
        analysis,
        decision,
        notices,
    }
}

/// The standing judgement of `revision` from entries recorded earlier (such as
/// `status.analysis` after a restart), when every trigger has one; it announces nothing.
pub fn standing(
    triggers: &[Trigger],
    revision: i64,
    recorded: &[TriggerAnalysis],
    on_unavailable: OnMetricsUnavailable,
) -> Option<Judgement> {
    let analysis: Vec<TriggerAnalysis> = triggers
        .iter()
        .map(|t| {
            recorded
                .iter()
                .find(|a| a.trigger == t.name && a.revision == revision)
                .cloned()
        })
        .collect::<Option<_>>()?;
    let (decision, _) = decide(triggers, &analysis, on_unavailable);
    Some(Judgement {
        analysis,
        decision,
        notices: Vec::new(),
    })
}

/// When the triggers of `revision` are next due, given their recorded entries: None when
/// one of them is due now (never evaluated on this revision, or its interval has passed).
pub fn next_due(
    triggers: &[Trigger],
    recorded: &[TriggerAnalysis],
    revision: i64,
    interval: SignedDuration,
    now: Timestamp,
) -> Option<Timestamp> {
    let mut next: Option<Timestamp> = None;
    for t in triggers {
        let previous = recorded.iter().find(|a| a.trigger == t.name);
        if due(previous, revision, interval, now) {
            return None;
        }
        let at = previous
            .and_then(|p| p.last_evaluated_at.as_ref())
            .map(|l| l.0.checked_add(interval).unwrap_or(l.0))?;
        next = Some(next.map_or(at, |n| n.min(at)));
    }
    next
}

/// Every how many evaluations `status.analysis` shows a new value and `lastEvaluatedAt`
/// while no verdict, breach count or firing changes.
pub const REFRESH_EVALUATIONS: i32 = 5;

/// What `status.analysis` holds after a round that gave `latest`, when it holds `recorded`:
/// `latest` when what a decision (or a restarted operator) rests on changed in any entry (its
/// trigger, revision, verdict, breach, severity, breaches in a row, last firing), or when the
/// record's newest evaluation is `refresh` old; otherwise `recorded`, so a round that changed
/// only a value or a time writes no status. A trigger's time on the record is then at most
/// `refresh` behind: a restarted operator evaluates at once, as it would after `refresh`.
pub fn to_record(
    recorded: &[TriggerAnalysis],
    latest: &[TriggerAnalysis],
    refresh: SignedDuration,
    now: Timestamp,
) -> Vec<TriggerAnalysis> {
    let decisive = |a: &TriggerAnalysis| {
        (
            a.trigger.clone(),
            a.revision,
            a.verdict,
            a.breached,
            a.severity,
            a.consecutive_breaches,
            a.last_fired_at.clone(),
        )
    };
    let same = recorded.len() == latest.len() && recorded.iter().zip(latest).all(|(r, l)| decisive(r) == decisive(l));
    let newest = recorded
        .iter()
        .filter_map(|a| a.last_evaluated_at.as_ref().map(|t| t.0))
        .max();
    let fresh = newest.is_some_and(|at| now < at.checked_add(refresh).unwrap_or(at));
    if same && fresh {
        recorded.to_vec()
    } else {
        latest.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn trigger(consecutive: i32, severity: &str) -> Trigger {
        serde_json::from_value(serde_json::json!({
            "name": "error-rate", "query": "q", "operator": "Gt", "threshold": 0.05,
            "severity": severity, "cooldown": "5m", "consecutive": consecutive
        }))
        .expect("trigger")
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_795_000_000 + secs).expect("time")
    }

    /// Runs readings 30 s apart; returns the verdicts.
    fn run(t: &Trigger, readings: &[Outcome]) -> Vec<TriggerVerdict> {
        let mut prev: Option<TriggerAnalysis> = None;
        let mut out = Vec::new();
        for (i, r) in readings.iter().enumerate() {
            let e = evaluate(t, 4, r, prev.as_ref(), at(30 * i as i64));
            out.push(e.verdict.expect("verdict"));
            prev = Some(e);
        }
        out
    }

    fn v(x: f64) -> Outcome {
        Ok(Reading::Value(x))
    }

    #[test]
    fn consecutive_breaches_fire_and_a_healthy_reading_resets_the_count() {
        use TriggerVerdict::*;
        let t = trigger(2, "Critical");
        assert_eq!(run(&t, &[v(0.07), v(0.08)]), vec![Breached, Fired]);
        assert_eq!(
            run(&t, &[v(0.07), v(0.01), v(0.07), v(0.07)]),
            vec![Breached, Healthy, Breached, Fired]
        );
    }

    #[test]
    fn no_data_and_an_outage_neither_count_nor_reset() {
        use TriggerVerdict::*;
        let t = trigger(2, "Critical");
        let down = Err(EvaluationError::Unavailable("connection refused".into()));
        assert_eq!(
            run(&t, &[v(0.07), Ok(Reading::NoData), down, v(0.07)]),
            vec![Breached, NoData, Unavailable, Fired]
        );
    }

    #[test]
    fn cooldown_keeps_a_fired_trigger_quiet() {
        use TriggerVerdict::*;
        let t = trigger(1, "Warning");
        // Fired at 0 s; 30 s..270 s are within 5 m; 300 s fires again.
        let readings: Vec<Outcome> = (0..11).map(|_| v(0.2)).collect();
        let verdicts = run(&t, &readings);
        assert_eq!(verdicts[0], Fired);
        assert!(verdicts[1..10].iter().all(|v| *v == CoolingDown), "{verdicts:?}");
        assert_eq!(verdicts[10], Fired);
    }

    #[test]
    fn a_new_revision_starts_counting_again() {
        let t = trigger(2, "Critical");
        let first = evaluate(&t, 4, &v(0.07), None, at(0));
        assert_eq!(first.consecutive_breaches, 1);
        let other = evaluate(&t, 5, &v(0.07), Some(&first), at(30));
        assert_eq!(
            other.verdict,
            Some(TriggerVerdict::Breached),
            "not fired: r5 breached once"
        );
    }

    #[test]
    fn infinity_breaches_and_is_kept_out_of_the_value_field() {
        let t = trigger(1, "Critical");
        let e = evaluate(&t, 4, &v(f64::INFINITY), None, at(0));
        assert_eq!(e.verdict, Some(TriggerVerdict::Fired));
        assert_eq!(e.value, None);
        assert!(e.message.unwrap_or_default().starts_with("inf > 0.05"));
    }

    #[test]
    fn decisions_follow_severity_and_on_metrics_unavailable() {
        let critical = trigger(1, "Critical");
        let mut warning = trigger(1, "Warning");
        warning.name = "ttft".into();
        let fired = evaluate(&critical, 4, &v(0.2), None, at(0));
        let (d, _) = decide(std::slice::from_ref(&critical), &[fired], OnMetricsUnavailable::Hold);
        assert!(
            matches!(&d, Decision::Rollback { trigger, value: Some(v), threshold: Some(t), detail }
                if trigger == "error-rate" && *v == 0.2 && *t == 0.05 && detail.contains("0.2 > 0.05")),
            "{d:?}"
        );
        let warned = evaluate(&warning, 4, &v(9.0), None, at(0));
        let (d, notices) = decide(std::slice::from_ref(&warning), &[warned], OnMetricsUnavailable::Hold);
        assert_eq!(d, Decision::Proceed, "a Warning never rolls back");
        assert_eq!(notices.len(), 1);
        assert_eq!(notices[0].severity, Severity::Warning);

        let down = evaluate(
            &critical,
            4,
            &Err(EvaluationError::Unavailable("connection refused".into())),
            None,
            at(0),
        );
        let entries = [down];
        let hold = decide(std::slice::from_ref(&critical), &entries, OnMetricsUnavailable::Hold).0;
        assert!(matches!(hold, Decision::Hold { reason } if reason.contains("connection refused")));
        let rollback = decide(
            std::slice::from_ref(&critical),
            &entries,
            OnMetricsUnavailable::Rollback,
        )
        .0;
        assert!(matches!(rollback, Decision::Rollback { trigger, detail, .. }
            if trigger == "onMetricsUnavailable" && detail.contains("connection refused")));
        let ignore = decide(std::slice::from_ref(&critical), &entries, OnMetricsUnavailable::Ignore).0;
        assert_eq!(ignore, Decision::Proceed);
    }

    #[test]
    fn judging_carries_counts_and_standing_needs_every_trigger() {
        let t = trigger(2, "Critical");
        let first = judge(
            std::slice::from_ref(&t),
            4,
            &[v(0.07)],
            &[],
            OnMetricsUnavailable::Hold,
            at(0),
        );
        assert_eq!(first.analysis[0].verdict, Some(TriggerVerdict::Breached));
        assert_eq!(first.decision, Decision::Proceed);
        let second = judge(
            std::slice::from_ref(&t),
            4,
            &[v(0.08)],
            &first.analysis,
            OnMetricsUnavailable::Hold,
            at(30),
        );
        assert_eq!(second.analysis[0].verdict, Some(TriggerVerdict::Fired));
        assert!(matches!(second.decision, Decision::Rollback { .. }));
        let standing_now = standing(
            std::slice::from_ref(&t),
            4,
            &second.analysis,
            OnMetricsUnavailable::Hold,
        );
        assert_eq!(standing_now.map(|j| j.decision), Some(second.decision.clone()));
        // Recorded on another revision, or a trigger without an entry: nothing stands.
        assert_eq!(
            standing(
                std::slice::from_ref(&t),
                5,
                &second.analysis,
                OnMetricsUnavailable::Hold
            ),
            None
        );
        let other = trigger(1, "Warning");
        let mut both = vec![t.clone(), other];
        both[1].name = "latency".into();
        assert_eq!(standing(&both, 4, &second.analysis, OnMetricsUnavailable::Hold), None);
    }

    #[test]
    fn next_due_is_the_earliest_interval_end_or_now() {
        let t = trigger(1, "Critical");
        let interval = SignedDuration::from_secs(30);
        let done = judge(
            std::slice::from_ref(&t),
            4,
            &[v(0.01)],
            &[],
            OnMetricsUnavailable::Hold,
            at(10),
        );
        assert_eq!(
            next_due(std::slice::from_ref(&t), &done.analysis, 4, interval, at(20)),
            Some(at(40))
        );
        assert_eq!(
            next_due(std::slice::from_ref(&t), &done.analysis, 4, interval, at(40)),
            None
        );
        assert_eq!(
            next_due(std::slice::from_ref(&t), &done.analysis, 5, interval, at(20)),
            None
        );
        assert_eq!(next_due(std::slice::from_ref(&t), &[], 4, interval, at(20)), None);
    }

    #[test]
    fn due_once_per_interval_on_the_same_revision() {
        let t = trigger(1, "Critical");
        let e = evaluate(&t, 4, &v(0.01), None, at(0));
        let interval = SignedDuration::from_secs(30);
        assert!(!due(Some(&e), 4, interval, at(10)));
        assert!(due(Some(&e), 4, interval, at(30)));
        assert!(
            due(Some(&e), 5, interval, at(10)),
            "a new revision is evaluated at once"
        );
        assert!(due(None, 4, interval, at(0)));
    }

    #[test]
    fn a_round_that_changes_only_a_value_or_a_time_is_not_recorded_until_the_refresh() {
        let t = trigger(2, "Critical");
        let refresh = SignedDuration::from_secs(150);
        let first = vec![evaluate(&t, 4, &v(0.01), None, at(0))];
        // Another healthy value 30 s later: the record stands.
        let second = vec![evaluate(&t, 4, &v(0.02), first.first(), at(30))];
        assert_eq!(to_record(&first, &second, refresh, at(30)), first);
        // The same once the record is `refresh` old: recorded anew.
        let late = vec![evaluate(&t, 4, &v(0.02), first.first(), at(150))];
        assert_eq!(to_record(&first, &late, refresh, at(150)), late);
        // A breach (one in a row) is recorded at once; so is a firing, and a new revision.
        let breach = vec![evaluate(&t, 4, &v(0.2), first.first(), at(30))];
        assert_eq!(to_record(&first, &breach, refresh, at(30)), breach);
        let fired = vec![evaluate(&t, 4, &v(0.3), breach.first(), at(60))];
        assert_eq!(fired[0].verdict, Some(TriggerVerdict::Fired));
        assert_eq!(to_record(&breach, &fired, refresh, at(60)), fired);
        let next = vec![evaluate(&t, 5, &v(0.01), None, at(30))];
        assert_eq!(to_record(&first, &next, refresh, at(30)), next);
        // No data after a value: another verdict, recorded at once.
        let none = vec![evaluate(&t, 4, &Ok(Reading::NoData), first.first(), at(30))];
        assert_eq!(to_record(&first, &none, refresh, at(30)), none);
        // Nothing recorded yet, or a trigger more or less: recorded.
        assert_eq!(to_record(&[], &first, refresh, at(0)), first);
        let two = vec![
            first[0].clone(),
            TriggerAnalysis {
                trigger: "ttft".into(),
                ..first[0].clone()
            },
        ];
        assert_eq!(to_record(&first, &two, refresh, at(30)), two);
    }

    proptest! {
        /// Whatever the readings, a trigger never fires twice within its cooldown, and fires
        /// only after `consecutive` breaches in a row.
        #[test]
        fn never_fires_within_cooldown_nor_before_enough_breaches(
            consecutive in 1i32..4,
            readings in proptest::collection::vec(prop_oneof![Just(0.0), Just(0.2), Just(f64::NAN)], 1..60),
        ) {
            let t = trigger(consecutive, "Critical");
            let mut prev: Option<TriggerAnalysis> = None;
            let mut last_fired: Option<i64> = None;
            let mut row = 0;
            for (i, x) in readings.iter().enumerate() {
                let now = 30 * i as i64;
                let reading = if x.is_nan() { Ok(Reading::NoData) } else { v(*x) };
                let e = evaluate(&t, 4, &reading, prev.as_ref(), at(now));
                if *x > 0.05 { row += 1 } else if !x.is_nan() { row = 0 }
                if e.verdict == Some(TriggerVerdict::Fired) {
                    prop_assert!(last_fired.is_none_or(|f| now - f >= 300), "fired at {now} after {last_fired:?}");
                    prop_assert!(row >= consecutive, "fired after {row} breaches in a row");
                    last_fired = Some(now);
                    row = 0;
                }
                prev = Some(e);
            }
        }

        /// An operator that restarts after any round, judging from what the status recorded
        /// ([`to_record`]) instead of what it last computed, reaches the same verdicts, counts
        /// and firings on every later reading; and the record is never `refresh` behind.
        #[test]
        fn judging_from_the_record_is_judging_from_the_last_round(
            consecutive in 1i32..4,
            readings in proptest::collection::vec(prop_oneof![Just(0.0), Just(0.01), Just(0.2), Just(0.3), Just(f64::NAN)], 1..60),
        ) {
            let t = trigger(consecutive, "Critical");
            let refresh = SignedDuration::from_secs(150);
            let mut latest: Option<TriggerAnalysis> = None;
            let mut recorded: Vec<TriggerAnalysis> = Vec::new();
            for (i, x) in readings.iter().enumerate() {
                let now = at(30 * i as i64);
                let reading = if x.is_nan() { Ok(Reading::NoData) } else { v(*x) };
                let from_memory = evaluate(&t, 4, &reading, latest.as_ref(), now);
                let from_record = evaluate(&t, 4, &reading, recorded.first(), now);
                let decisive = |a: &TriggerAnalysis| (a.verdict, a.breached, a.consecutive_breaches, a.last_fired_at.clone());
                prop_assert_eq!(decisive(&from_memory), decisive(&from_record), "reading {}", i);
                recorded = to_record(&recorded, std::slice::from_ref(&from_memory), refresh, now);
                let on_record = recorded.first().and_then(|a| a.last_evaluated_at.as_ref()).map(|t| t.0);
                prop_assert!(on_record.is_some_and(|r| now.duration_since(r) < refresh), "the record is too old");
                latest = Some(from_memory);
            }
        }
    }
}
