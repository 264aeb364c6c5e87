//! Canary scale against the local control plane: `setCanaryScale` sizes the canary's
//! Deployment with its weight, a weight waits for the ready replicas it takes, promotion
//! comes at full size, and an autoscaler writing the scale subresource resizes the canary
//! with its weight. Run on both backends of the HTTPRoute: Services and InferencePools.

mod support;

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use rollguard::api::Phase;
use rollguard::traffic::BackendKind;
use serde_json::json;
use support::httproute::*;
use support::*;

const SECS_60: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_canary_scales_with_its_weight_on_services() {
    scales_with_its_weight(BackendKind::Service, "canary-scale").await;
}

#[tokio::test]
async fn a_canary_scales_with_its_weight_on_inference_pools() {
    scales_with_its_weight(BackendKind::InferencePool, "pool-canary-scale").await;
}

/// Waits until the Deployment `name` asks for `replicas`.
async fn wait_replicas(apis: &Apis, name: &str, replicas: i32) {
    let seen = wait_object(&apis.deployments, name, SECS_60, |d| d.spec.replicas == Some(replicas)).await;
    assert!(seen.is_some(), "Deployment {name} never asked for {replicas} replicas");
}

/// What an HPA or KEDA does: writes `replicas` through the scale subresource.
async fn scale_to(apis: &Apis, replicas: i32) {
    let patch = json!({"spec": {"replicas": replicas}});
    apis.md
        .patch_scale("chat", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("patching the scale subresource");
}

/// Waits until the ModelDeployment's message contains `words`.
async fn wait_message(apis: &Apis, words: &str) -> rollguard::api::ModelDeployment {
    apis.wait_md("chat", &format!("a message with {words:?}"), SECS_60, |md| {
        md.status
            .as_ref()
            .and_then(|s| s.message.as_deref())
            .is_some_and(|m| m.contains(words))
    })
    .await
}

async fn wait_paused_at(apis: &Apis, index: i32) {
    apis.wait_md("chat", &format!("paused at step index {index}"), SECS_60, |md| {
        md.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::Paused) && s.current_step_index == Some(index))
    })
    .await;
}

async fn scales_with_its_weight(backend: BackendKind, prefix: &str) {
    let (ns, apis, op) = with_route_to(backend, prefix, &["--resync-seconds", "2"]).await;
    // A node of this test only: while it is cordoned, new canary pods stay Pending.
    let node = FakeNode::create(&apis.client, &format!("cs-{}", ns.name)).await;
    let steps = json!([{"setCanaryScale": {"matchTrafficWeight": true}}, {"setWeight": 25}, {"pause": {}},
                       {"setWeight": 75}, {"pause": {}}]);
    let spec = json!({"strategy": {"canary": {"steps": steps}}, "trafficRouting": routing(&apis),
        "template": {"spec": {"nodeSelector": {"rollguard.dev/test-node": node.name},
                              "containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0"}]}}});
    apis.roll_out("chat", &["v1"], 4, spec).await;
    let log = record_weights(&apis).await;

    // 25% of 4 replicas takes 1: the canary runs 1 pod, not 4.
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    wait_paused_at(&apis, 2).await;
    assert_eq!(route_weights(&apis).await.map(|w| w.canary), Some(25));
    assert_eq!(apis.deployment_replicas("chat-r2").await, Some(1));
    assert_eq!(
        apis.deployment_replicas("chat-r1").await,
        Some(4),
        "the stable stays at full size"
    );
    if backend == BackendKind::InferencePool {
        assert_pools_follow_services(&apis).await;
    }

    // 75% takes 3: the canary scales first; while 2 of its pods cannot start, the weight waits.
    node.cordon(&apis.client, true).await;
    apis.annotate("chat", "rollguard.dev/promote", "true").await;
    wait_replicas(&apis, "chat-r2", 3).await;
    let md = wait_message(&apis, "waits for 3 ready replicas (1/3 ready)").await;
    assert_eq!(md.status.as_ref().and_then(|s| s.phase), Some(Phase::Progressing));
    op.wait_reconciles("chat", 2).await;
    assert_eq!(
        route_weights(&apis).await.map(|w| w.canary),
        Some(25),
        "no more weight than 1 ready pod takes"
    );
    node.cordon(&apis.client, false).await;
    wait_paused_at(&apis, 4).await;
    assert_eq!(route_weights(&apis).await.map(|w| w.canary), Some(75));

    // Promotion: the canary goes to full size while the old stable still serves.
    node.cordon(&apis.client, true).await;
    apis.annotate("chat", "rollguard.dev/promote", "true").await;
    wait_replicas(&apis, "chat-r2", 4).await;
    let md = wait_message(&apis, "waits for 4 ready replicas before promotion (3/4 ready)").await;
    assert_eq!(md.status.as_ref().and_then(|s| s.stable_revision), Some(1));
    op.wait_reconciles("chat", 2).await;
    assert_eq!(
        apis.service_revision("chat").await,
        Some(1),
        "the old stable serves until then"
    );
    assert_eq!(route_weights(&apis).await.map(|w| w.canary), Some(75));
    node.cordon(&apis.client, false).await;
    apis.wait_healthy("chat", 2).await;
    assert_eq!(apis.service_revision("chat").await, Some(2));
    assert_eq!(apis.deployment_replicas("chat-r2").await, Some(4));
    if backend == BackendKind::InferencePool {
        assert_pools_follow_services(&apis).await;
    }
    assert_eq!(weights(&log), vec![0, 25, 75, 0], "each weight once, in order");
}

#[tokio::test]
async fn an_autoscaler_on_the_scale_subresource_resizes_the_canary_with_its_weight() {
    let (_ns, apis, _op) = with_route("canary-hpa", &["--resync-seconds", "2"]).await;
    let steps = json!([{"setCanaryScale": {"matchTrafficWeight": true}}, {"setWeight": 25}, {"pause": {}}]);
    let spec = json!({"strategy": {"canary": {"steps": steps}}, "trafficRouting": routing(&apis)});
    apis.roll_out("chat", &["v1"], 4, spec).await;
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    wait_paused_at(&apis, 2).await;
    assert_eq!(apis.deployment_replicas("chat-r2").await, Some(1));

    scale_to(&apis, 12).await;
    wait_replicas(&apis, "chat-r1", 12).await;
    wait_replicas(&apis, "chat-r2", 3).await;
    wait_paused_at(&apis, 2).await;
    assert_eq!(route_weights(&apis).await.map(|w| w.canary), Some(25));

    scale_to(&apis, 2).await;
    wait_replicas(&apis, "chat-r1", 2).await;
    wait_replicas(&apis, "chat-r2", 1).await;
    let md = apis.md.get("chat").await.expect("md");
    let status = md.status.expect("status");
    assert_eq!(
        status.history.len(),
        2,
        "a scale change is no new revision: {:?}",
        status.history
    );
    assert_eq!(status.current_revision, Some(2));
}
