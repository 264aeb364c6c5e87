//! A ModelDeployment whose router CRD is not installed, against the local control plane.
//!
//! These tests delete the cluster-wide TrafficSplit and InferencePool CRDs, so they live in a
//! test binary of their own: `cargo test` runs test binaries one after another, and every
//! other binary installs the router CRDs again before it uses them. Each test here installs
//! only its own CRD again.

mod support;

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use rollguard::api::Phase;
use serde_json::json;
use support::*;

const SECS_60: Duration = Duration::from_secs(60);
const CRD: &str = "trafficsplits.split.smi-spec.io";
const POOL_CRD: &str = "inferencepools.inference.networking.k8s.io";

/// The tests here run one at a time: each deletes a CRD that the other's setup installs.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn traffic_splits(apis: &Apis) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("split.smi-spec.io", "v1alpha4", "TrafficSplit");
    Api::namespaced_with(
        apis.client.clone(),
        &apis.namespace,
        &ApiResource::from_gvk_with_plural(&gvk, "trafficsplits"),
    )
}

/// Deletes the CRD `name` and waits until it is gone.
async fn delete_crd(client: &kube::Client, name: &str) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    if crds.get_opt(name).await.expect("reading CRDs").is_some() {
        crds.delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting the CRD {name}: {e}"));
    }
    assert!(wait_gone(&crds, name, SECS_60).await, "the CRD {name} was not deleted");
}

#[tokio::test]
async fn a_router_crd_that_is_not_installed_holds_traffic_warns_and_is_retried() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let cluster = cluster().await;
    delete_crd(&cluster.client, CRD).await;

    let ns = TestNamespace::create(&cluster.client, "router-missing").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    let op = Operator::start_with(&ns.name, &["--resync-seconds", "2"]);
    let spec = json!({"strategy": {"canary": {"steps": [{"setWeight": 10}, {"pause": {}}]}},
                      "trafficRouting": {"smi": {"trafficSplit": "chat"}}});
    apis.roll_out("chat", &["v1"], 1, spec).await;
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;

    let md = apis
        .wait_md("chat", "TrafficRouted=False (RouterNotInstalled)", SECS_60, |md| {
            condition(md, "TrafficRouted")
                .is_some_and(|(status, reason, _)| status == "False" && reason == "RouterNotInstalled")
        })
        .await;
    let (_, _, message) = condition(&md, "TrafficRouted").expect("condition");
    assert!(message.contains("split.smi-spec.io/v1alpha4"), "{message}");
    let warned = apis.wait_event("chat", "RouterNotInstalled", None).await;
    assert!(warned.is_some(), "a Warning Event names the missing CRD");
    // Traffic stays on stable and the operator keeps running, retrying.
    op.wait_reconciles("chat", 2).await;
    assert_eq!(apis.service_revision("chat").await, Some(1));
    let status = apis.md.get("chat").await.expect("md").status.expect("status");
    assert_eq!(status.stable_revision, Some(1));
    assert_ne!(status.phase, Some(Phase::Healthy));
    assert!(
        !op.log_text().contains("panicked"),
        "the operator did not crash: {}",
        op.log_text()
    );

    // Once the CRD and the object exist, the retried canary goes on.
    apply_upstream_router_crds(&cluster.client).await;
    let split: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "split.smi-spec.io/v1alpha4", "kind": "TrafficSplit", "metadata": {"name": "chat"},
        "spec": {"service": "chat-apex", "backends": [{"service": "chat", "weight": 100}]}
    }))
    .expect("TrafficSplit");
    traffic_splits(&apis)
        .create(&PostParams::default(), &split)
        .await
        .expect("creating TrafficSplit");
    let md = apis
        .wait_md("chat", "canary at 10% after the CRD is installed", SECS_60, |md| {
            md.status
                .as_ref()
                .is_some_and(|s| s.phase == Some(Phase::Paused) && s.canary_weight == Some(10))
        })
        .await;
    let (status, reason, _) = condition(&md, "TrafficRouted").expect("condition");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "RouteReady"));
}

#[tokio::test]
async fn inference_pools_without_their_crd_hold_traffic_warn_and_start_once_it_is_installed() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let cluster = cluster().await;
    apply_upstream_router_crds(&cluster.client).await;
    delete_crd(&cluster.client, POOL_CRD).await;

    let ns = TestNamespace::create(&cluster.client, "pool-missing").await;
    let apis = Apis::new(&cluster.client, &ns.name).routing_to(rollguard::traffic::BackendKind::InferencePool);
    httproute::create_route(&apis).await;
    let op = Operator::start_with(&ns.name, &["--resync-seconds", "2"]);
    let spec = json!({"strategy": {"canary": {"steps": [{"setWeight": 10}, {"pause": {}}]}},
                      "trafficRouting": httproute::routing(&apis)});
    apis.create(&model_deployment("chat", "v1", 1, spec)).await;
    let md = apis
        .wait_md("chat", "TrafficRouted=False (RouterNotInstalled)", SECS_60, |md| {
            condition(md, "TrafficRouted")
                .is_some_and(|(status, reason, _)| status == "False" && reason == "RouterNotInstalled")
        })
        .await;
    let (_, _, message) = condition(&md, "TrafficRouted").expect("condition");
    assert!(
        message.contains("InferencePool API (inference.networking.k8s.io/v1)"),
        "{message}"
    );
    let warned = apis.wait_event("chat", "RouterNotInstalled", Some("Warning")).await;
    assert!(warned.is_some(), "a Warning Event names the missing CRD");
    // The first revision serves through the stable Service meanwhile.
    apis.wait_md("chat", "stable r1", SECS_60, |md| {
        md.status.as_ref().is_some_and(|s| s.stable_revision == Some(1))
    })
    .await;
    op.wait_reconciles("chat", 2).await;
    assert!(!op.log_text().contains("panicked"), "{}", op.log_text());

    // Installed later: the same operator starts watching the pools, creates them and rolls on.
    apply_inference_pool_crd(&cluster.client).await;
    let created = wait_object(&httproute::pools(&apis), "chat", SECS_60, |p| {
        rollguard::controller::resources::pool_revision("chat", p) == Some(1)
    })
    .await;
    assert!(created.is_some(), "the stable InferencePool selects revision 1");
    apis.wait_healthy("chat", 1).await;
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    httproute::wait_weight(&apis, 10).await;
    httproute::assert_pools_follow_services(&apis).await;
    let md = apis.md.get("chat").await.expect("md");
    let (status, reason, _) = condition(&md, "TrafficRouted").expect("condition");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "RouteReady"));
}
