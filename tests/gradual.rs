//! Gradual rollback down a RollbackPolicy's steps on a Gateway API HTTPRoute, against the
//! local control plane.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use rollguard::api::{Phase, RevisionPhase, RollbackMode, RollbackPolicy};
use rollguard::traffic::BackendKind;
use serde_json::json;
use support::httproute::*;
use support::*;

const SECS_60: Duration = Duration::from_secs(60);
const STEP_SECONDS: u64 = 3;

async fn create_policy(apis: &Apis, on_unhealthy: &str) {
    let policy: RollbackPolicy = serde_json::from_value(json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackPolicy",
        "metadata": {"name": "gradual"},
        "spec": {"rollback": {"mode": "Gradual", "gradual": {
            "steps": [50, 20, 5, 0], "stepDuration": format!("{STEP_SECONDS}s"), "onUnhealthy": on_unhealthy}}}
    }))
    .expect("policy");
    let api: Api<RollbackPolicy> = Api::namespaced(apis.client.clone(), &apis.namespace);
    api.create(&PostParams::default(), &policy)
        .await
        .expect("creating RollbackPolicy");
}

/// A canary that stops at 60% in an open pause, with the gradual policy.
fn spec(template: Option<serde_json::Value>) -> serde_json::Value {
    spec_to(json!({"gatewayAPI": {"httpRoute": "chat"}}), template)
}

/// [`spec`] with `routing` as `spec.trafficRouting`.
fn spec_to(routing: serde_json::Value, template: Option<serde_json::Value>) -> serde_json::Value {
    let mut spec = json!({
        "strategy": {"canary": {"steps": [{"setWeight": 60}, {"pause": {}}]}},
        "trafficRouting": routing,
        "rollbackPolicyRef": {"name": "gradual"}
    });
    if let Some(t) = template {
        spec["template"] = t;
    }
    spec
}

async fn setup(prefix: &str, on_unhealthy: &str) -> (TestNamespace, Apis, Operator) {
    setup_to(BackendKind::Service, prefix, on_unhealthy).await
}

async fn setup_to(backend: BackendKind, prefix: &str, on_unhealthy: &str) -> (TestNamespace, Apis, Operator) {
    let cluster = cluster().await;
    apply_router_crds(&cluster.client).await;
    let ns = TestNamespace::create(&cluster.client, prefix).await;
    let apis = Apis::new(&cluster.client, &ns.name).routing_to(backend);
    create_route(&apis).await;
    create_policy(&apis, on_unhealthy).await;
    let op = Operator::start_with(&ns.name, &["--resync-seconds", "2"]);
    (ns, apis, op)
}

async fn wait_rolled_back(apis: &Apis) -> rollguard::api::ModelDeployment {
    apis.wait_md("chat", "rollback completed", SECS_60, |md| {
        md.status
            .as_ref()
            .and_then(|s| s.last_rollback.as_ref())
            .is_some_and(|r| r.completed_at.is_some())
    })
    .await
}

#[tokio::test]
async fn a_gradual_rollback_walks_50_20_5_0_holding_each_step() {
    gradual_walk(BackendKind::Service, "gradual").await;
}

#[tokio::test]
async fn a_gradual_rollback_on_inference_pools_walks_50_20_5_0_holding_each_step() {
    gradual_walk(BackendKind::InferencePool, "gradual-pool").await;
}

async fn gradual_walk(backend: BackendKind, prefix: &str) {
    let (_ns, apis, _op) = setup_to(backend, prefix, "Pause").await;
    apis.roll_out("chat", &["v1"], 1, spec_to(routing(&apis), None)).await;
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    wait_weight(&apis, 60).await;
    let log = record_weights(&apis).await;

    apis.annotate("chat", "rollguard.dev/abort", "true").await;
    let md = apis
        .wait_md("chat", "RollingBack with lastRollback mode Gradual", SECS_60, |md| {
            md.status.as_ref().is_some_and(|s| {
                s.phase == Some(Phase::RollingBack)
                    && s.last_rollback
                        .as_ref()
                        .is_some_and(|r| r.mode == RollbackMode::Gradual)
            })
        })
        .await;
    let status = md.status.expect("status");
    assert_eq!(
        status.canary_revision,
        Some(2),
        "the revision being left holds the canary weight"
    );
    let md = wait_rolled_back(&apis).await;

    let changes = weight_changes(&log);
    let weights: Vec<i32> = changes.iter().map(|(_, w)| *w).collect();
    assert_eq!(weights, vec![60, 50, 20, 5, 0], "the walk down the steps");
    for pair in changes.windows(2).skip(1) {
        let held = pair[1].0 - pair[0].0;
        assert!(
            held >= Duration::from_secs(STEP_SECONDS) - Duration::from_millis(300),
            "{}% held only {held:?}",
            pair[0].1
        );
        assert!(
            held < Duration::from_secs(STEP_SECONDS + 5),
            "{}% held {held:?}, far longer than stepDuration",
            pair[0].1
        );
    }

    let status = md.status.expect("status");
    let record = status.last_rollback.expect("lastRollback");
    assert_eq!(record.mode, RollbackMode::Gradual);
    assert_eq!((record.from_revision, record.to_revision), (2, 1));
    assert_eq!(status.stable_revision, Some(1));
    let r2 = status.history.iter().find(|h| h.revision == 2).expect("r2 in history");
    assert_eq!(r2.phase, RevisionPhase::RolledBack);
    assert_eq!(apis.service_revision("chat").await, Some(1));
    assert_eq!(apis.service_revision("chat-canary").await, Some(1));
    let scaled_down = wait_object(&apis.deployments, "chat-r2", SECS_60, |d| d.spec.replicas == Some(0)).await;
    assert!(
        scaled_down.is_some(),
        "the revision left is scaled down once it has no traffic"
    );
    assert_pools_follow_services(&apis).await;
}

#[tokio::test]
async fn a_gradual_rollback_pauses_while_the_stable_revision_is_unhealthy() {
    let (ns, apis, op) = setup("gradual-unhealthy", "Pause").await;
    // A node of this test only: cordoned, the stable revision's pods cannot come back.
    let node = FakeNode::create(&apis.client, &format!("gr-{}", ns.name)).await;
    let template = json!({"spec": {
        "nodeSelector": {"rollguard.dev/test-node": node.name},
        "containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0"}]}});
    apis.roll_out("chat", &["v1"], 1, spec(Some(template))).await;
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    wait_weight(&apis, 60).await;

    // The stable revision's pods die and stay Pending.
    node.cordon(&apis.client, true).await;
    let pods: Api<Pod> = Api::namespaced(apis.client.clone(), &apis.namespace);
    pods.delete_collection(
        &DeleteParams::default().grace_period(0),
        &ListParams::default().labels("rollguard.dev/revision=1"),
    )
    .await
    .expect("deleting r1's pods");
    // The rollback starts once r1's Deployment reports its pods gone (the operator sees the
    // Deployment through its watch, as it is now, not as it was a moment ago).
    let unready = wait_object(&apis.deployments, "chat-r1", SECS_60, |d| {
        d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0) == 0
    })
    .await;
    assert!(unready.is_some(), "r1's Deployment never reported its pods gone");

    apis.annotate("chat", "rollguard.dev/abort", "true").await;
    let md = apis
        .wait_md("chat", "gradual rollback paused", SECS_60, |md| {
            md.status.as_ref().is_some_and(|s| {
                s.phase == Some(Phase::Paused) && s.last_rollback.as_ref().is_some_and(|r| r.completed_at.is_none())
            })
        })
        .await;
    let message = md.status.and_then(|s| s.message).unwrap_or_default();
    assert!(
        message.contains("paused at 60%: revision 1 is not healthy"),
        "{message}"
    );
    // Past the time a step would have ended, and the operator has looked again since.
    tokio::time::sleep(Duration::from_secs(STEP_SECONDS)).await;
    op.wait_reconciles("chat", 2).await;
    assert_eq!(
        route_weights(&apis).await.map(|w| w.canary),
        Some(60),
        "no step while the stable revision is unhealthy"
    );
    let warned = apis.wait_event("chat", "GradualRollbackPaused", None).await;
    assert!(warned.is_some(), "a Warning Event says the rollback paused");

    // Record from the paused state on (the watch's first event is the weight held), then
    // let the stable revision's pods come back.
    let log = record_weights(&apis).await;
    node.cordon(&apis.client, false).await;
    let md = wait_rolled_back(&apis).await;
    let weights: Vec<i32> = weight_changes(&log).into_iter().map(|(_, w)| w).collect();
    assert_eq!(weights, vec![60, 50, 20, 5, 0], "the walk goes on once it is healthy");
    let record = md.status.and_then(|s| s.last_rollback).expect("lastRollback");
    assert_eq!(record.mode, RollbackMode::Gradual);
}

#[tokio::test]
async fn a_manual_rollback_of_a_stable_revision_runs_gradually_too() {
    let (_ns, apis, _op) = setup("gradual-manual", "Pause").await;
    let spec = json!({"strategy": {"canary": {"steps": [{"setWeight": 100}]}},
                      "trafficRouting": {"gatewayAPI": {"httpRoute": "chat"}},
                      "rollbackPolicyRef": {"name": "gradual"}});
    apis.roll_out("chat", &["v1", "v2"], 1, spec).await;
    wait_weight(&apis, 0).await;
    let log = record_weights(&apis).await;

    apis.annotate("chat", "rollguard.dev/rollback-to", "previous").await;
    let md = wait_rolled_back(&apis).await;
    let weights: Vec<i32> = weight_changes(&log).into_iter().map(|(_, w)| w).collect();
    assert_eq!(
        weights,
        vec![0, 100, 50, 20, 5, 0],
        "r2's traffic moves onto the canary Service, then walks down"
    );
    let status = md.status.expect("status");
    assert_eq!(status.stable_revision, Some(1));
    let record = status.last_rollback.expect("lastRollback");
    assert_eq!(record.mode, RollbackMode::Gradual);
    assert_eq!(record.trigger_name.as_deref(), Some("rollguard.dev/rollback-to"));
    assert_eq!(apis.service_revision("chat").await, Some(1));
}
