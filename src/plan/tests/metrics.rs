//! What the policy's triggers judge and what their verdicts do.

use super::*;

// ----- the policy's triggers -------------------------------------------------------------

fn metrics_policy(extra: serde_json::Value) -> PolicyObservation {
    let mut spec = serde_json::json!({
        "provider": {"prometheus": {"address": "http://prometheus:9090"}},
        "interval": "10s", "guardWindow": "10m", "verification": {"window": "5m"},
        "triggers": [
            {"name": "error-rate", "query": "q", "operator": "Gt", "threshold": 0.05},
            {"name": "ttft", "template": "VllmTtftP95", "operator": "Gt", "threshold": 2.5, "severity": "Warning"}
        ]
    });
    if let (Some(obj), serde_json::Value::Object(extra)) = (spec.as_object_mut(), extra) {
        obj.extend(extra);
    }
    PolicyObservation::Found(Box::new(serde_json::from_value(spec).expect("policy")))
}

/// The triggers' readings for the revision the planner judges now, as the controller would
/// evaluate them: `error` for error-rate, `ttft` for ttft (None: provider unavailable).
fn evaluate_now(w: &mut World, error: Option<f64>, ttft: Option<f64>) {
    let obs = w.observed();
    let Some(judged) = judged(&w.md, &obs) else {
        w.metrics = None;
        return;
    };
    let Some(PolicyObservation::Found(policy)) = &w.policy else {
        return;
    };
    let status = w.status();
    let outcomes = [error, ttft].map(|v| match v {
        Some(v) => Ok(crate::metrics::Reading::Value(v)),
        None => Err(crate::trigger::EvaluationError::Unavailable(
            "connection refused".into(),
        )),
    });
    let analysis: Vec<_> = policy
        .triggers
        .iter()
        .zip(&outcomes)
        .map(|(t, o)| {
            let prev = status.analysis.iter().find(|a| a.trigger == t.name);
            crate::trigger::evaluate(t, judged.revision, o, prev, w.now)
        })
        .collect();
    let (decision, notices) = crate::trigger::decide(&policy.triggers, &analysis, policy.on_metrics_unavailable);
    w.metrics = Some(MetricsObservation {
        judged,
        analysis,
        decision,
        notices,
        fresh: true,
    });
}

fn canary_with_policy(policy: PolicyObservation) -> World {
    let steps =
        serde_json::json!([{"setWeight": 20}, {"pause": {"duration": "30s"}}, {"setWeight": 60}, {"pause": {}}]);
    let mut w = World::new(md("v1", canary_spec(steps)));
    w.policy = Some(policy);
    w.settle();
    w.set_version("v2");
    w.step();
    w.step();
    w.step();
    assert_eq!(w.route, Some(20));
    w
}

#[test]
fn judged_is_the_canary_then_the_guarded_stable_then_the_verified_target() {
    let mut w = canary_with_policy(metrics_policy(serde_json::json!({})));
    let j = judged(&w.md, &w.observed()).expect("judged");
    assert_eq!((j.revision, j.purpose, j.via_canary), (2, Purpose::Rollout, true));
    w.annotate(PROMOTE, "full");
    w.settle();
    assert_eq!(w.status().stable_revision, Some(2));
    let j = judged(&w.md, &w.observed()).expect("guarded");
    assert_eq!((j.revision, j.purpose), (2, Purpose::Guard));
    w.advance(601);
    assert_eq!(judged(&w.md, &w.observed()), None, "the guard window ended");
    w.annotate(ROLLBACK_TO, "1");
    w.settle();
    let j = judged(&w.md, &w.observed()).expect("verifying");
    assert_eq!((j.revision, j.purpose), (1, Purpose::Verification));
}

#[test]
fn a_critical_breach_on_the_canary_rolls_it_back_with_the_value_and_threshold() {
    let mut w = canary_with_policy(metrics_policy(serde_json::json!({})));
    evaluate_now(&mut w, Some(0.01), Some(0.3));
    let p = w.step();
    assert_eq!(p.status.analysis.len(), 2);
    assert_eq!(p.status.stable_revision, Some(1));
    evaluate_now(&mut w, Some(0.30), Some(0.3));
    let p = w.step();
    assert_eq!(p.route_weight, Some(0), "all traffic back to stable");
    assert_eq!(p.status.phase, Some(Phase::Degraded));
    let r = p.status.last_rollback.clone().expect("lastRollback");
    assert_eq!(r.trigger, RollbackTrigger::Metric);
    assert_eq!(r.trigger_name.as_deref(), Some("error-rate"));
    assert_eq!((r.value, r.threshold), (Some(0.30), Some(0.05)));
    assert!(p.events.iter().any(|e| e.warning && e.reason == "MetricRollback"));
    assert_eq!(w.phase_of(2), Some(RevisionPhase::RolledBack));
    let reason = w
        .status()
        .history
        .iter()
        .find(|h| h.revision == 2)
        .and_then(|h| h.reason.clone());
    assert!(reason.unwrap_or_default().contains("trigger error-rate: 0.3 > 0.05"));
    let c = crate::conditions::find(&p.status.conditions, crate::conditions::types::METRICS_AVAILABLE)
        .expect("MetricsAvailable");
    assert_eq!(c.status, "True");
}

#[test]
fn a_warning_breach_raises_an_event_and_a_condition_and_no_rollback() {
    let mut w = canary_with_policy(metrics_policy(serde_json::json!({})));
    evaluate_now(&mut w, Some(0.01), Some(9.0));
    let p = w.step();
    assert!(
        p.events.iter().any(|e| e.warning && e.reason == "TriggerFired"),
        "{:?}",
        p.events
    );
    assert!(p.status.last_rollback.is_none());
    assert_eq!(p.status.canary_revision, Some(2));
    let c = crate::conditions::find(&p.status.conditions, METRICS_WARNING).expect("MetricsWarning");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "WarningTriggerFired"));
}

#[test]
fn metrics_unavailable_holds_the_canary_and_it_goes_on_when_they_are_back() {
    let mut w = canary_with_policy(metrics_policy(serde_json::json!({})));
    evaluate_now(&mut w, None, None);
    w.advance(60);
    let p = w.step();
    assert_eq!(
        p.status.current_step_index,
        Some(1),
        "the timed pause does not end while holding"
    );
    assert!(p.route_weight.is_none_or(|x| x == 20));
    assert!(p.status.last_rollback.is_none(), "nothing rolls back");
    let msg = p.status.message.clone().unwrap_or_default();
    assert!(msg.contains("metrics unavailable"), "{msg}");
    let c = crate::conditions::find(&p.status.conditions, crate::conditions::types::METRICS_AVAILABLE)
        .expect("MetricsAvailable");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "ProviderUnavailable"));
    assert!(c.message.contains("connection refused"), "{}", c.message);
    let ready = crate::conditions::find(&p.status.conditions, crate::conditions::types::READY).expect("Ready");
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "MetricsHold"));
    evaluate_now(&mut w, Some(0.0), Some(0.1));
    let p = w.step();
    assert_eq!(p.route_weight, Some(60), "the rollout goes on");
    let ready = crate::conditions::find(&p.status.conditions, crate::conditions::types::READY).expect("Ready");
    assert_ne!(ready.reason, "MetricsHold");
}

#[test]
fn metrics_unavailable_with_rollback_rolls_back_and_with_ignore_carries_on() {
    let mut w = canary_with_policy(metrics_policy(serde_json::json!({"onMetricsUnavailable": "Rollback"})));
    evaluate_now(&mut w, None, None);
    let p = w.step();
    let r = p.status.last_rollback.expect("rolled back");
    assert_eq!(r.trigger_name.as_deref(), Some("onMetricsUnavailable"));

    let mut w = canary_with_policy(metrics_policy(serde_json::json!({"onMetricsUnavailable": "Ignore"})));
    evaluate_now(&mut w, None, None);
    w.advance(60);
    let p = w.step();
    assert_eq!(p.route_weight, Some(60));
}

#[test]
fn a_breach_in_the_guard_window_rolls_back_to_the_previous_revision() {
    let mut w = canary_with_policy(metrics_policy(serde_json::json!({})));
    w.annotate(PROMOTE, "full");
    w.settle();
    assert_eq!(w.status().stable_revision, Some(2));
    w.advance(120);
    evaluate_now(&mut w, Some(0.5), Some(0.1));
    let p = w.step();
    let r = p.status.last_rollback.clone().expect("rolled back");
    assert_eq!(
        (r.from_revision, r.to_revision, r.trigger),
        (2, 1, RollbackTrigger::Metric)
    );
    w.metrics = None;
    let p = w.settle();
    assert_eq!(p.status.stable_revision, Some(1));
    assert_eq!(p.stable_service.map(|s| s.revision), Some(1));
    assert_eq!(p.status.phase, Some(Phase::Degraded), "the spec still names r2");
}

#[test]
fn verification_passes_at_the_end_of_the_window_or_fails_on_a_breach() {
    for breach in [false, true] {
        let mut w = canary_with_policy(metrics_policy(serde_json::json!({})));
        w.annotate(ABORT, "true");
        w.settle();
        let r = w.status().last_rollback.expect("rolled back");
        assert_eq!(r.verification, Some(crate::api::Verification::Pending));
        evaluate_now(&mut w, Some(if breach { 0.9 } else { 0.0 }), Some(0.1));
        let p = w.step();
        if breach {
            assert!(p.events.iter().any(|e| e.reason == "VerificationFailed"));
            assert_eq!(
                p.status.last_rollback.and_then(|r| r.verification),
                Some(crate::api::Verification::Failed)
            );
            continue;
        }
        assert!(
            p.requeue_after.is_some_and(|d| d.as_secs() > 200),
            "requeued at the window's end"
        );
        w.metrics = None;
        w.advance(300);
        let p = w.step();
        assert!(p.events.iter().any(|e| e.reason == "VerificationPassed"));
        assert_eq!(
            p.status.last_rollback.and_then(|r| r.verification),
            Some(crate::api::Verification::Passed)
        );
    }
}

#[test]
fn a_gradual_rollback_pauses_while_the_triggers_judge_the_target_unhealthy() {
    let mut policy = metrics_policy(serde_json::json!({}));
    if let (PolicyObservation::Found(p), PolicyObservation::Found(g)) = (&mut policy, gradual_policy("Pause")) {
        p.rollback = g.rollback.clone();
    }
    let mut w = canary_with_policy(policy);
    w.advance(60);
    w.settle();
    assert_eq!(w.route, Some(60));
    w.annotate(ABORT, "true");
    w.step();
    assert_eq!(w.route, Some(50));
    let j = judged(&w.md, &w.observed()).expect("judged");
    assert_eq!((j.revision, j.purpose), (1, Purpose::GradualHealth));
    w.step();
    evaluate_now(&mut w, Some(0.5), Some(0.1));
    w.advance(61);
    let p = w.step();
    assert_eq!(p.status.phase, Some(Phase::Paused));
    assert!(p.route_weight.is_none(), "holds at 50");
    let msg = p.status.message.clone().unwrap_or_default();
    assert!(msg.contains("trigger error-rate"), "{msg}");
    evaluate_now(&mut w, Some(0.0), Some(0.1));
    let p = w.step();
    assert_eq!(p.route_weight, Some(20), "goes on once the triggers are healthy");
}

#[test]
fn an_info_trigger_raises_a_normal_event_only() {
    let info = serde_json::json!({"triggers": [
        {"name": "error-rate", "query": "q", "operator": "Gt", "threshold": 0.05},
        {"name": "ttft", "template": "VllmTtftP95", "operator": "Gt", "threshold": 2.5, "severity": "Info"}
    ]});
    let mut w = canary_with_policy(metrics_policy(info));
    evaluate_now(&mut w, Some(0.0), Some(9.0));
    let p = w.step();
    let fired: Vec<_> = p.events.iter().filter(|e| e.reason == "TriggerFired").collect();
    assert_eq!(fired.len(), 1, "{:?}", p.events);
    assert!(!fired[0].warning, "Info is a Normal Event");
    assert!(p.status.last_rollback.is_none());
    let c = crate::conditions::find(&p.status.conditions, METRICS_WARNING).expect("MetricsWarning");
    assert_eq!(c.status, "False", "only Warning triggers set the condition");
}

#[test]
fn a_retry_that_switches_back_ends_the_restored_revisions_verification_and_guards_the_retried_one() {
    // Blue/green: r2 promoted (warm r1), rolled back to r1 by hand, then retried.
    let mut w = World::new(md("v1", serde_json::json!({})));
    w.policy = Some(metrics_policy(serde_json::json!({})));
    w.settle();
    w.set_version("v2");
    w.settle();
    w.annotate(ROLLBACK_TO, "previous");
    w.settle();
    let j = judged(&w.md, &w.observed()).expect("verifying r1");
    assert_eq!((j.revision, j.purpose), (1, Purpose::Verification));
    w.annotate(RETRY, "true");
    w.settle();
    assert_eq!(w.status().stable_revision, Some(2), "switched back to the warm r2");
    let j = judged(&w.md, &w.observed()).expect("guarding r2");
    assert_eq!((j.revision, j.purpose), (2, Purpose::Guard), "r1 no longer serves");
}
