//! Worked examples of `explain`, one per state.

use super::*;
use serde_json::json;

fn at(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn md(extra: serde_json::Value, status: serde_json::Value) -> ModelDeployment {
    let mut md = ModelDeployment::example("chat", "v2", 2, extra).expect("example");
    md.metadata.namespace = Some("prod".into());
    md.metadata.generation = Some(2);
    md.status = Some(serde_json::from_value(status).expect("status"));
    md
}

fn history() -> serde_json::Value {
    json!([
        {"revision": 2, "version": "v2", "hash": "b", "deployment": "chat-r2", "phase": "Progressing"},
        {"revision": 1, "version": "v1", "hash": "a", "deployment": "chat-r1", "phase": "Stable", "promotedAt": "2026-12-01T09:00:00Z"}
    ])
}

fn deployment(name: &str, labels: serde_json::Value, replicas: i32, ready: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": replicas, "selector": {}, "template": {}},
        "status": {"readyReplicas": ready}
    }))
    .expect("deployment")
}

fn policy(extra: serde_json::Value) -> RollbackPolicy {
    let mut spec = json!({"triggers": [{"name": "error-rate", "query": "x", "operator": "Gt", "threshold": 0.05, "consecutive": 3}]});
    if let (Some(o), serde_json::Value::Object(e)) = (spec.as_object_mut(), extra) {
        o.extend(e);
    }
    serde_json::from_value(json!({"apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackPolicy", "metadata": {"name": "p"}, "spec": spec}))
        .expect("policy")
}

const STEPS: &str = r#"{"strategy": {"canary": {"steps": [{"setWeight": 10}, {"pause": {"duration": "30s"}}, {"setWeight": 50}, {"pause": {}}]}}}"#;

#[test]
fn a_timed_pause_says_how_long_is_left_from_the_step_clock() {
    let md = md(
        serde_json::from_str(STEPS).expect("steps"),
        json!({"observedGeneration": 2, "phase": "Progressing", "message": "m", "currentRevision": 2, "stableRevision": 1,
               "canaryRevision": 2, "canaryWeight": 10, "currentStepIndex": 1, "history": history(),
               "analysis": [{"trigger": "error-rate", "revision": 2, "value": 0.07, "breached": true, "verdict": "Breached", "severity": "Critical", "consecutiveBreaches": 1}]}),
    );
    let started = crate::plan::CanaryStepState {
        index: 1,
        started_at: at("2026-12-01T10:00:00Z"),
    };
    let ds = [deployment("chat-r2", json!({CANARY_STEP: started.to_label()}), 2, 2)];
    let e = explain(&md, Some(&policy(json!({}))), &ds, at("2026-12-01T10:00:12Z"));
    assert_eq!(e.waiting_for.as_deref(), Some("the 30s pause to end (18s left)"));
    assert!(
        e.because
            .iter()
            .any(|b| b == "canary revision 2 is at 10%, step 2 of 4: pause 30s"),
        "{e:?}"
    );
    assert_eq!(
        e.triggers,
        vec!["error-rate on revision 2 [Critical]: 0.07, breaches when > 0.05: Breached (1 of 3 in a row to fire)"]
    );
    assert!(
        e.you_can.iter().any(|y| y.starts_with("kubectl rollguard abort chat")),
        "{e:?}"
    );
}

#[test]
fn an_open_pause_waits_for_a_promotion_and_a_weight_step_for_ready_pods() {
    let status = |index: i32| {
        json!({"observedGeneration": 2, "phase": "Paused", "currentRevision": 2, "stableRevision": 1,
               "canaryRevision": 2, "canaryWeight": 50, "currentStepIndex": index, "history": history()})
    };
    let open = md(serde_json::from_str(STEPS).expect("steps"), status(3));
    let e = explain(&open, None, &[], at("2026-12-01T10:00:00Z"));
    assert!(
        e.waiting_for
            .as_deref()
            .is_some_and(|w| w.starts_with("a promotion: kubectl rollguard promote chat"))
    );
    let weight = md(serde_json::from_str(STEPS).expect("steps"), status(2));
    let ds = [deployment("chat-r2", json!({}), 4, 1)];
    let e = explain(&weight, None, &ds, at("2026-12-01T10:00:00Z"));
    assert_eq!(e.waiting_for.as_deref(), Some("1 of 4 pods of revision 2 ready"));
}

#[test]
fn an_unobserved_generation_and_a_metrics_hold_come_first() {
    let mut m = md(
        serde_json::from_str(STEPS).expect("steps"),
        json!({"observedGeneration": 2, "phase": "Progressing", "currentRevision": 2, "stableRevision": 1, "canaryRevision": 2,
               "canaryWeight": 10, "currentStepIndex": 0, "history": history(),
               "conditions": [{"type": "MetricsAvailable", "status": "False", "reason": "ProviderUnavailable",
                               "message": "trigger error-rate on revision 2: connection refused; holding (onMetricsUnavailable: Hold)",
                               "lastTransitionTime": "2026-12-01T10:00:00Z"},
                              {"type": "Ready", "status": "False", "reason": "MetricsHold", "message": "m",
                               "lastTransitionTime": "2026-12-01T10:00:00Z"}]}),
    );
    let e = explain(&m, None, &[], at("2026-12-01T10:00:00Z"));
    assert_eq!(
        e.waiting_for.as_deref(),
        Some("the metrics provider to answer (onMetricsUnavailable: Hold)")
    );
    assert!(
        e.because[0].starts_with("metrics unavailable: trigger error-rate"),
        "{e:?}"
    );
    m.metadata.generation = Some(3);
    let e = explain(&m, None, &[], at("2026-12-01T10:00:00Z"));
    assert_eq!(e.waiting_for.as_deref(), Some("the operator to observe generation 3"));
}

#[test]
fn a_gradual_rollback_names_the_hold_and_the_next_weight() {
    let m = md(
        json!({}),
        json!({"observedGeneration": 2, "phase": "RollingBack", "currentRevision": 2, "stableRevision": 1, "canaryRevision": 2,
               "canaryWeight": 50, "history": history(),
               "lastRollback": {"fromRevision": 2, "toRevision": 1, "trigger": "Metric", "triggerName": "error-rate", "value": 0.3,
                                "threshold": 0.05, "mode": "Gradual", "startedAt": "2026-12-01T10:00:00Z"}}),
    );
    let held = crate::plan::CanaryStepState {
        index: 0,
        started_at: at("2026-12-01T10:00:00Z"),
    };
    let ds = [
        deployment("chat-r2", json!({ROLLBACK_STEP: held.to_label()}), 2, 2),
        deployment("chat-r1", json!({}), 2, 2),
    ];
    let p = policy(json!({"rollback": {"mode": "Gradual", "gradual": {"steps": [50, 20, 0], "stepDuration": "1m"}}}));
    let e = explain(&m, Some(&p), &ds, at("2026-12-01T10:00:20Z"));
    assert_eq!(
        e.waiting_for.as_deref(),
        Some("the 1m hold at 50% on revision 2 (40s left), then 20%")
    );
    assert!(
        e.because[0].contains("Metric error-rate (value 0.3, threshold 0.05), Gradual"),
        "{e:?}"
    );
}

#[test]
fn degraded_says_what_ends_it_and_healthy_names_the_guard_window() {
    let mut history = history();
    history[0]["phase"] = json!("RolledBack");
    history[0]["reason"] = json!("trigger error-rate: 0.3 > 0.05");
    let m = md(
        json!({}),
        json!({"observedGeneration": 2, "phase": "Degraded", "currentRevision": 2, "stableRevision": 1, "history": history,
               "lastRollback": {"fromRevision": 2, "toRevision": 1, "trigger": "Metric", "mode": "Instant",
                                "startedAt": "2026-12-01T10:00:00Z", "completedAt": "2026-12-01T10:00:01Z", "verification": "Pending"}}),
    );
    let e = explain(
        &m,
        Some(&policy(json!({"verification": {"window": "2m"}}))),
        &[],
        at("2026-12-01T10:01:01Z"),
    );
    assert!(
        e.because[0] == "revision 2 (v2), which the spec names, was RolledBack: trigger error-rate: 0.3 > 0.05",
        "{e:?}"
    );
    assert_eq!(
        e.waiting_for.as_deref(),
        Some("the verification of revision 1 (1m0s left)")
    );
    assert!(
        e.you_can.iter().any(|y| y.starts_with("kubectl rollguard retry chat")),
        "{e:?}"
    );

    let healthy = md(
        json!({}),
        json!({"observedGeneration": 2, "phase": "Healthy", "currentRevision": 2, "stableRevision": 2, "history": [
            {"revision": 2, "version": "v2", "hash": "b", "deployment": "chat-r2", "phase": "Stable", "promotedAt": "2026-12-01T09:00:00Z"},
            {"revision": 1, "version": "v1", "hash": "a", "deployment": "chat-r1", "phase": "Superseded"}]}),
    );
    let p = policy(json!({"guardWindow": "10m"}));
    let e = explain(&healthy, Some(&p), &[], at("2026-12-01T09:04:00Z"));
    assert!(
        e.waiting_for
            .as_deref()
            .is_some_and(|w| w.starts_with("the guard window to end (6m0s left)")),
        "{e:?}"
    );
    let e = explain(&healthy, Some(&p), &[], at("2026-12-01T09:20:00Z"));
    assert_eq!(e.waiting_for, None);
    assert!(e.render().contains("Waiting for: nothing: it is settled"));
}

#[test]
fn no_status_means_the_operator_has_not_seen_it() {
    let m = ModelDeployment::example("chat", "v1", 1, json!({})).expect("example");
    let e = explain(&m, None, &[], at("2026-12-01T10:00:00Z"));
    assert!(
        e.waiting_for.as_deref().is_some_and(|w| w.contains("first reconcile")),
        "{e:?}"
    );
}
