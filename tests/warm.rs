//! Warm standby at a chosen size against the local control plane: `warmReplicas` keeps a
//! previous revision partly warm, `status.warm` reports what standby costs, and a rollback to
//! it scales it to full size before traffic moves.

mod support;

use std::time::Duration;

use rollguard::api::{Phase, WarmStatus};
use serde_json::json;
use support::*;

const SECS_60: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_rollback_to_a_partly_warm_revision_scales_it_to_full_size_before_traffic_moves() {
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "warm").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    // A node of this test only: while it is cordoned, new pods stay Pending.
    let node = FakeNode::create(&cluster.client, &format!("warm-{}", ns.name)).await;
    let op = Operator::start_with(&ns.name, &["--resync-seconds", "1"]);
    let spec = json!({"warmRevisions": 1, "warmReplicas": 1, "template": {"spec": {
        "nodeSelector": {"rollguard.dev/test-node": node.name},
        "containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0"}]}}});
    apis.roll_out("chat", &["v1", "v2"], 4, spec).await;
    let partly = wait_object(&apis.deployments, "chat-r1", SECS_60, |d| d.spec.replicas == Some(1)).await;
    assert!(partly.is_some(), "r1 kept at 1 of 4 pods");
    let md = apis
        .wait_md("chat", "the standby in status.warm", SECS_60, |md| {
            md.status.as_ref().is_some_and(|s| s.warm.is_some())
        })
        .await;
    assert_eq!(
        md.status.and_then(|s| s.warm),
        Some(WarmStatus {
            revisions: vec![1],
            replicas: 1
        })
    );

    node.cordon(&cluster.client, true).await;
    apis.annotate("chat", "rollguard.dev/rollback-to", "previous").await;
    let md = apis
        .wait_md("chat", "RollingBack, 1 of 4 ready", SECS_60, |md| {
            md.status.as_ref().is_some_and(|s| {
                s.phase == Some(Phase::RollingBack)
                    && s.message.as_deref().is_some_and(|m| m.contains("1/4 replicas ready"))
            })
        })
        .await;
    assert_eq!(md.status.and_then(|s| s.stable_revision), Some(2));
    assert_eq!(
        apis.deployment_replicas("chat-r1").await,
        Some(4),
        "scaled to full first"
    );
    op.wait_reconciles("chat", 2).await;
    assert_eq!(
        apis.service_revision("chat").await,
        Some(2),
        "traffic waits for full size"
    );

    node.cordon(&cluster.client, false).await;
    apis.wait_md("chat", "stable r1", SECS_60, |md| {
        md.status.as_ref().is_some_and(|s| s.stable_revision == Some(1))
    })
    .await;
    assert_eq!(apis.service_revision("chat").await, Some(1));
}

#[tokio::test]
async fn with_a_route_a_rollback_to_a_partly_warm_revision_sends_it_its_ready_share_on_services() {
    ready_share(rollguard::traffic::BackendKind::Service, "warm-share").await;
}

#[tokio::test]
async fn with_a_route_a_rollback_to_a_partly_warm_revision_sends_it_its_ready_share_on_inference_pools() {
    ready_share(rollguard::traffic::BackendKind::InferencePool, "pool-warm-share").await;
}

async fn ready_share(backend: rollguard::traffic::BackendKind, prefix: &str) {
    use support::httproute::*;
    let (ns, apis, op) = with_route_to(backend, prefix, &["--resync-seconds", "1"]).await;
    let node = FakeNode::create(&apis.client, &format!("ws-{}", ns.name)).await;
    let spec = json!({"warmReplicas": 1, "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}},
        "trafficRouting": routing(&apis),
        "template": {"spec": {"nodeSelector": {"rollguard.dev/test-node": node.name},
                              "containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0"}]}}});
    apis.roll_out("chat", &["v1"], 4, spec).await;
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    wait_weight(&apis, 50).await;
    apis.annotate("chat", "rollguard.dev/promote", "full").await;
    apis.wait_healthy("chat", 2).await;
    let partly = wait_object(&apis.deployments, "chat-r1", SECS_60, |d| d.spec.replicas == Some(1)).await;
    assert!(partly.is_some(), "r1 kept at 1 of 4 pods");
    wait_weight(&apis, 0).await;

    // 1 of r1's 4 pods is ready: it gets 25% of the traffic, through the canary backend.
    node.cordon(&apis.client, true).await;
    apis.annotate("chat", "rollguard.dev/rollback-to", "1").await;
    wait_weight(&apis, 25).await;
    let md = apis
        .wait_md("chat", "RollingBack with r1's share", SECS_60, |md| {
            md.status.as_ref().is_some_and(|s| {
                s.phase == Some(Phase::RollingBack)
                    && s.message
                        .as_deref()
                        .is_some_and(|m| m.contains("1/4 replicas ready, 25% of traffic on it"))
            })
        })
        .await;
    let status = md.status.expect("status");
    assert_eq!((status.canary_revision, status.stable_revision), (Some(1), Some(2)));
    assert_eq!(apis.service_revision("chat-canary").await, Some(1));
    assert_eq!(apis.service_revision("chat").await, Some(2));
    if backend == rollguard::traffic::BackendKind::InferencePool {
        assert_pools_follow_services(&apis).await;
    }
    op.wait_reconciles("chat", 2).await;
    assert_eq!(
        route_weights(&apis).await.map(|w| w.canary),
        Some(25),
        "no more than the ready share"
    );

    node.cordon(&apis.client, false).await;
    apis.wait_md("chat", "stable r1", SECS_60, |md| {
        md.status.as_ref().is_some_and(|s| s.stable_revision == Some(1))
    })
    .await;
    wait_weight(&apis, 0).await;
    assert_eq!(apis.service_revision("chat").await, Some(1));
}
