//! Prometheus-driven rollback against the local control plane, a real Prometheus and the
//! simulated model servers.

mod support;

use std::time::Duration;

use kube::api::{Api, PostParams};
use rollguard::api::{Phase, RollbackPolicy, RollbackTrigger, TriggerVerdict};
use rollguard::traffic::BackendKind;
use serde_json::{Value, json};
use support::httproute::*;
use support::prometheus::PrometheusServer;
use support::sim::ModelSim;
use support::*;

const SECS_60: Duration = Duration::from_secs(60);

/// The 5xx share of the judged revision over 5 s (scrapes are every second).
const ERROR_RATE: &str = r#"sum(rate(http_requests_total{namespace="{{namespace}}",rollguard_model_deployment="{{name}}",rollguard_revision="{{revision}}",status="5xx"}[5s])) / sum(rate(http_requests_total{namespace="{{namespace}}",rollguard_model_deployment="{{name}}",rollguard_revision="{{revision}}"}[5s]))"#;

struct Setup {
    _ns: TestNamespace,
    apis: Apis,
    op: Operator,
    sim: ModelSim,
    prometheus: PrometheusServer,
}

/// A namespace with the HTTPRoute, the simulator, a Prometheus scraping revisions 1..=4 of
/// `chat`, the policy `llm` with `triggers`, and the operator.
async fn setup(prefix: &str, policy: Value) -> Setup {
    setup_to(BackendKind::Service, prefix, policy).await
}

/// [`setup`], the HTTPRoute routing to `backend`.
async fn setup_to(backend: BackendKind, prefix: &str, policy: Value) -> Setup {
    let cluster = cluster().await;
    apply_router_crds(&cluster.client).await;
    let ns = TestNamespace::create(&cluster.client, prefix).await;
    let apis = Apis::new(&cluster.client, &ns.name).routing_to(backend);
    create_route(&apis).await;
    let sim = ModelSim::start().await;
    let prometheus = sim.prometheus(&ns.name, "chat", 1..=4).await;
    let mut spec = json!({
        "provider": {"prometheus": {"address": prometheus.address, "timeout": "2s"}},
        "interval": "1s",
        "verification": {"window": "5s"},
        "guardWindow": "1m"
    });
    if let (Some(obj), Value::Object(extra)) = (spec.as_object_mut(), policy) {
        obj.extend(extra);
    }
    let policy: RollbackPolicy = serde_json::from_value(json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackPolicy", "metadata": {"name": "llm"}, "spec": spec
    }))
    .expect("policy");
    Api::<RollbackPolicy>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &policy)
        .await
        .expect("creating the RollbackPolicy");
    let op = Operator::start_with(&ns.name, &["--resync-seconds", "2"]);
    Setup {
        _ns: ns,
        apis,
        op,
        sim,
        prometheus,
    }
}

/// Waits until the trigger `trigger` of revision `rev` was evaluated at least twice more
/// (its `lastEvaluatedAt` on record 1.5 intervals on; a round that changes nothing else is
/// recorded every 5th interval): the event that proves the triggers looked again.
async fn wait_evaluated_again(s: &Setup, trigger: &str, rev: i64) {
    let at = |md: &rollguard::api::ModelDeployment| {
        md.status
            .as_ref()
            .and_then(|st| st.analysis.iter().find(|a| a.revision == rev && a.trigger == trigger))
            .and_then(|a| a.last_evaluated_at.as_ref())
            .map(|t| t.0)
    };
    let from = at(&s.apis.md.get("chat").await.expect("md")).expect("the trigger was evaluated");
    let later = from + jiff::SignedDuration::from_millis(1500);
    s.apis
        .wait_md("chat", &format!("{trigger} evaluated twice more"), SECS_60, |md| {
            at(md).is_some_and(|t| t >= later)
        })
        .await;
}

fn error_rate_trigger(severity: &str) -> Value {
    json!({"name": "error-rate", "query": ERROR_RATE, "operator": "Gt", "threshold": 0.1, "severity": severity})
}

fn canary(apis: &Apis, steps: Value) -> Value {
    json!({"strategy": {"canary": {"steps": steps}},
           "trafficRouting": routing(apis),
           "rollbackPolicyRef": {"name": "llm"}})
}

/// Rolls out v1, then v2 as a canary of `steps`, and waits for the route to carry `weight`.
async fn canary_at(s: &Setup, steps: Value, weight: i32) {
    s.apis.roll_out("chat", &["v1"], 1, canary(&s.apis, steps)).await;
    s.apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    wait_weight(&s.apis, weight).await;
}

/// Waits until `status.lastRollback` satisfies `pred`.
async fn wait_rollback<F>(apis: &Apis, what: &str, pred: F) -> rollguard::api::RollbackRecord
where
    F: Fn(&rollguard::api::RollbackRecord) -> bool,
{
    let md = apis
        .wait_md("chat", what, SECS_60, |md| {
            md.status
                .as_ref()
                .and_then(|st| st.last_rollback.as_ref())
                .is_some_and(&pred)
        })
        .await;
    md.status.and_then(|st| st.last_rollback).expect("lastRollback")
}

#[tokio::test]
async fn a_canary_breaching_a_critical_error_rate_is_rolled_back_automatically() {
    breach_rolls_back(BackendKind::Service, "metrics-rollback").await;
}

#[tokio::test]
async fn a_canary_on_inference_pools_breaching_a_critical_error_rate_is_rolled_back_automatically() {
    breach_rolls_back(BackendKind::InferencePool, "metrics-pool").await;
}

async fn breach_rolls_back(backend: BackendKind, prefix: &str) {
    let s = setup_to(backend, prefix, json!({"triggers": [error_rate_trigger("Critical")]})).await;
    let ns = s.apis.namespace.clone();
    canary_at(&s, json!([{"setWeight": 20}, {"pause": {}}]), 20).await;
    // Healthy so far: the canary holds at its open pause, judged Healthy.
    let md = s
        .apis
        .wait_md("chat", "analysis Healthy on r2", SECS_60, |md| {
            md.status.as_ref().is_some_and(|st| {
                st.analysis
                    .iter()
                    .any(|a| a.revision == 2 && a.verdict == Some(TriggerVerdict::Healthy))
            })
        })
        .await;
    assert!(md.status.and_then(|st| st.last_rollback).is_none());

    s.sim.set(&ns, "chat", 2, json!({"errorRate": 0.6})).await;
    let record = wait_rollback(&s.apis, "rolled back by error-rate", |r| {
        r.trigger == RollbackTrigger::Metric && r.completed_at.is_some()
    })
    .await;
    assert_eq!(record.trigger_name.as_deref(), Some("error-rate"));
    assert_eq!((record.from_revision, record.to_revision), (2, 1));
    assert_eq!(record.threshold, Some(0.1));
    let value = record.value.expect("the breaching value");
    assert!(value > 0.1 && value <= 1.0, "value {value}");
    assert_eq!(s.apis.service_revision("chat").await, Some(1));
    wait_weight(&s.apis, 0).await;
    let degraded = s
        .apis
        .wait_md("chat", "Degraded", SECS_60, |md| {
            md.status.as_ref().is_some_and(|st| st.phase == Some(Phase::Degraded))
        })
        .await;
    let reason = degraded
        .status
        .and_then(|st| st.history.into_iter().find(|h| h.revision == 2))
        .and_then(|h| h.reason)
        .unwrap_or_default();
    assert!(reason.contains("trigger error-rate"), "{reason}");
    let warned = s.apis.wait_event("chat", "MetricRollback", None).await;
    assert!(warned.is_some(), "a Warning Event records the rollback");
    assert_pools_follow_services(&s.apis).await;
}

#[tokio::test]
async fn a_warning_only_breach_raises_an_event_and_does_not_roll_back() {
    let ttft = json!({"name": "ttft-p95", "template": "VllmTtftP95", "operator": "Gt", "threshold": 1.0, "severity": "Warning"});
    let s = setup("metrics-warning", json!({"triggers": [ttft]})).await;
    let ns = s.apis.namespace.clone();
    s.sim.set(&ns, "chat", 2, json!({"ttftSeconds": 4.0})).await;
    canary_at(&s, json!([{"setWeight": 20}, {"pause": {}}]), 20).await;
    let md = s
        .apis
        .wait_md("chat", "MetricsWarning=True", SECS_60, |md| {
            condition(md, "MetricsWarning").is_some_and(|(st, _, _)| st == "True")
        })
        .await;
    let (_, _, message) = condition(&md, "MetricsWarning").expect("condition");
    assert!(message.contains("ttft-p95"), "{message}");
    let fired = s
        .apis
        .wait_event("chat", "TriggerFired", Some("Warning"))
        .await
        .and_then(|e| e.note)
        .expect("a Warning Event for the trigger");
    assert!(fired.contains("ttft-p95"), "{fired}");
    wait_evaluated_again(&s, "ttft-p95", 2).await;
    s.op.wait_reconciles("chat", 2).await;
    let md = s.apis.md.get("chat").await.expect("md");
    let status = md.status.expect("status");
    assert!(status.last_rollback.is_none(), "a Warning never rolls back");
    assert_eq!(status.canary_revision, Some(2));
    assert_eq!(route_weights(&s.apis).await.map(|w| w.canary), Some(20));
}

#[tokio::test]
async fn prometheus_stopped_mid_canary_holds_and_the_rollout_goes_on_once_it_is_back() {
    let mut s = setup("metrics-outage", json!({"triggers": [error_rate_trigger("Critical")]})).await;
    canary_at(
        &s,
        json!([{"setWeight": 20}, {"pause": {"duration": "3s"}}, {"setWeight": 60}, {"pause": {}}]),
        20,
    )
    .await;
    s.prometheus.stop();
    let md = s
        .apis
        .wait_md("chat", "MetricsAvailable=False", SECS_60, |md| {
            condition(md, "MetricsAvailable").is_some_and(|(st, _, _)| st == "False")
        })
        .await;
    let (_, reason, message) = condition(&md, "MetricsAvailable").expect("condition");
    assert_eq!(reason, "ProviderUnavailable");
    assert!(message.contains("Hold"), "{message}");
    // Longer than the 3 s pause, and the operator looked again since: nothing advances,
    // nothing rolls back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    s.op.wait_reconciles("chat", 2).await;
    assert_eq!(route_weights(&s.apis).await.map(|w| w.canary), Some(20));
    let md = s.apis.md.get("chat").await.expect("md");
    let status = md.status.expect("status");
    assert!(status.last_rollback.is_none());
    assert!(
        status.message.unwrap_or_default().contains("metrics unavailable"),
        "the message says why"
    );

    s.prometheus.restart().await;
    wait_weight(&s.apis, 60).await;
    // The route is written before the status of the same reconcile: wait for the status.
    s.apis
        .wait_md("chat", "MetricsAvailable=True once Prometheus is back", SECS_60, |md| {
            condition(md, "MetricsAvailable").is_some_and(|(st, _, _)| st == "True")
        })
        .await;
}

#[tokio::test]
async fn a_breach_in_the_guard_window_rolls_back_and_verification_passes() {
    let s = setup("metrics-guard", json!({"triggers": [error_rate_trigger("Critical")]})).await;
    let ns = s.apis.namespace.clone();
    let bluegreen = json!({"rollbackPolicyRef": {"name": "llm"}});
    s.apis.roll_out("chat", &["v1", "v2"], 1, bluegreen).await;
    // r2 was promoted; within its one-minute guard window it starts failing.
    s.sim.set(&ns, "chat", 2, json!({"errorRate": 0.6})).await;
    let record = wait_rollback(&s.apis, "rolled back within the guard window", |r| {
        r.trigger == RollbackTrigger::Metric && r.completed_at.is_some()
    })
    .await;
    assert_eq!((record.from_revision, record.to_revision), (2, 1));
    assert_eq!(record.trigger_name.as_deref(), Some("error-rate"));
    assert_eq!(s.apis.service_revision("chat").await, Some(1));
    // r1 is healthy through the 5 s verification window.
    let record = wait_rollback(&s.apis, "verification Passed", |r| {
        r.verification == Some(rollguard::api::Verification::Passed)
    })
    .await;
    assert_eq!(record.to_revision, 1);
}

#[tokio::test]
async fn a_restored_revision_that_breaches_fails_its_verification() {
    let s = setup(
        "metrics-verify",
        json!({"triggers": [error_rate_trigger("Critical")], "verification": {"window": "60s"}}),
    )
    .await;
    let ns = s.apis.namespace.clone();
    canary_at(&s, json!([{"setWeight": 20}, {"pause": {}}]), 20).await;
    s.apis.annotate("chat", "rollguard.dev/abort", "true").await;
    wait_rollback(&s.apis, "verification Pending", |r| {
        r.verification == Some(rollguard::api::Verification::Pending)
    })
    .await;
    s.sim.set(&ns, "chat", 1, json!({"errorRate": 0.6})).await;
    wait_rollback(&s.apis, "verification Failed", |r| {
        r.verification == Some(rollguard::api::Verification::Failed)
    })
    .await;
    let failed = s.apis.wait_event("chat", "VerificationFailed", None).await;
    assert!(failed.is_some(), "a Warning Event says the verification failed");
}

#[tokio::test]
async fn consecutive_breaches_are_needed_and_cooldown_keeps_the_trigger_quiet() {
    let warn = json!({"name": "error-rate", "query": ERROR_RATE, "operator": "Gt", "threshold": 0.1,
                      "severity": "Warning", "consecutive": 3, "cooldown": "1h"});
    let s = setup("metrics-consecutive", json!({"triggers": [warn]})).await;
    let ns = s.apis.namespace.clone();
    canary_at(&s, json!([{"setWeight": 20}, {"pause": {}}]), 20).await;
    s.sim.set(&ns, "chat", 2, json!({"errorRate": 0.6})).await;
    // Watch the analysis entry go Breached 1, Breached 2, then Fired.
    let seen: std::sync::Mutex<Vec<(TriggerVerdict, i32)>> = std::sync::Mutex::new(Vec::new());
    // On a watch: every status the operator writes is seen.
    let fired = wait_object(&s.apis.md, "chat", SECS_60, |md| {
        let analysis = md
            .status
            .as_ref()
            .and_then(|s| s.analysis.iter().find(|a| a.revision == 2));
        let Some(entry) = analysis.and_then(|a| Some((a.verdict?, a.consecutive_breaches))) else {
            return false;
        };
        let Ok(mut seen) = seen.lock() else {
            return false;
        };
        if seen.last() != Some(&entry) {
            seen.push(entry);
        }
        entry.0 == TriggerVerdict::Fired
    })
    .await;
    let seen = seen.into_inner().unwrap_or_default();
    assert!(fired.is_some(), "the trigger never fired: {seen:?}");
    let breached: Vec<i32> = seen
        .iter()
        .filter(|(v, _)| *v == TriggerVerdict::Breached)
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(breached, vec![1, 2], "two breaches in a row before it fires: {seen:?}");
    // Breaching goes on; within the 1 h cooldown the trigger stays quiet.
    let cooling = s
        .apis
        .wait_md("chat", "CoolingDown", SECS_60, |md| {
            md.status.as_ref().is_some_and(|st| {
                st.analysis
                    .iter()
                    .any(|a| a.revision == 2 && a.verdict == Some(TriggerVerdict::CoolingDown))
            })
        })
        .await;
    assert!(cooling.status.is_some());
    wait_evaluated_again(&s, "error-rate", 2).await;
    let fired_events: Vec<_> = s
        .apis
        .events("chat", "TriggerFired")
        .await
        .into_iter()
        .filter(|e| e.note.as_deref().is_some_and(|n| n.contains("error-rate")))
        .collect();
    assert_eq!(
        fired_events
            .iter()
            .map(|e| e.series.as_ref().map_or(1, |s| s.count))
            .sum::<i32>(),
        1,
        "fired once: {fired_events:?}"
    );
}

#[tokio::test]
async fn a_gradual_rollback_pauses_while_the_triggers_judge_the_target_unhealthy() {
    let gradual = json!({"mode": "Gradual", "gradual": {"steps": [50, 20, 5, 0], "stepDuration": "2s"}});
    let s = setup(
        "metrics-gradual",
        json!({"triggers": [error_rate_trigger("Critical")], "rollback": gradual}),
    )
    .await;
    let ns = s.apis.namespace.clone();
    canary_at(&s, json!([{"setWeight": 60}, {"pause": {}}]), 60).await;
    // The stable revision, the rollback's target, is failing when the rollback starts.
    s.sim.set(&ns, "chat", 1, json!({"errorRate": 0.6})).await;
    let rate = ERROR_RATE
        .replace("{{namespace}}", &ns)
        .replace("{{name}}", "chat")
        .replace("{{revision}}", "1");
    s.prometheus.wait_above(&rate, 0.1).await;
    s.apis.annotate("chat", "rollguard.dev/abort", "true").await;
    let md = s
        .apis
        .wait_md("chat", "gradual rollback paused by the triggers", SECS_60, |md| {
            md.status.as_ref().is_some_and(|st| {
                st.phase == Some(Phase::Paused) && st.last_rollback.as_ref().is_some_and(|r| r.completed_at.is_none())
            })
        })
        .await;
    let message = md.status.and_then(|st| st.message).unwrap_or_default();
    assert!(message.contains("trigger error-rate"), "{message}");
    let held = route_weights(&s.apis).await.map(|w| w.canary);
    // Past the 2 s step, and the operator looked again since.
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.op.wait_reconciles("chat", 2).await;
    assert_eq!(
        route_weights(&s.apis).await.map(|w| w.canary),
        held,
        "no step while unhealthy"
    );

    s.sim.set(&ns, "chat", 1, json!({"errorRate": 0.0})).await;
    let record = wait_rollback(&s.apis, "gradual rollback completed", |r| r.completed_at.is_some()).await;
    assert_eq!(record.mode, rollguard::api::RollbackMode::Gradual);
    wait_weight(&s.apis, 0).await;
}
