//! Traffic routers against the local control plane, with the upstream CRDs installed.

mod support;

use kube::api::{Api, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use rollguard::traffic::gateway_api::GatewayApiRouter;
use rollguard::traffic::{Backends, RouterError, TrafficRouter, Weights, api_served};
use serde_json::{Value, json};
use support::*;

fn httproutes(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, "httproutes"),
    )
}

fn backends() -> Backends {
    Backends {
        stable: "chat".into(),
        canary: "chat-canary".into(),
    }
}

async fn create_route(client: &kube::Client, ns: &str, name: &str, rules: Value) -> DynamicObject {
    let route: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "labels": {"team": "llm"}, "annotations": {"owner": "sre"}},
        "spec": {"parentRefs": [{"name": "gateway", "sectionName": "https"}],
                 "hostnames": ["llm.example.com"], "rules": rules}
    }))
    .expect("route");
    httproutes(client, ns)
        .create(&PostParams::default(), &route)
        .await
        .expect("creating HTTPRoute")
}

#[tokio::test]
async fn router_crds_from_the_upstream_go_modules_are_established() {
    let cluster = cluster().await;
    apply_router_crds(&cluster.client).await;
    let c = &cluster.client;
    for (group, version, kind, plural) in [
        ("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"),
        ("split.smi-spec.io", "v1alpha4", "TrafficSplit", "trafficsplits"),
        ("networking.istio.io", "v1", "VirtualService", "virtualservices"),
    ] {
        assert!(
            api_served(c, &GroupVersionKind::gvk(group, version, kind), plural).await,
            "{kind} {version} served"
        );
    }
    let missing = GroupVersionKind::gvk("nothing.rollguard.dev", "v1", "Nothing");
    assert!(!api_served(c, &missing, "nothings").await);
}

#[tokio::test]
async fn gateway_api_weights_follow_each_step_and_user_fields_survive() {
    let cluster = cluster().await;
    apply_router_crds(&cluster.client).await;
    let ns = TestNamespace::create(&cluster.client, "httproute").await;
    let user_rule = json!({"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
        "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x-team", "value": "llm"}]}}],
        "backendRefs": [{"name": "chat", "port": 8000}]});
    let other_rule = json!({"matches": [{"path": {"type": "PathPrefix", "value": "/other"}}],
        "backendRefs": [{"name": "other", "port": 80}]});
    let before = create_route(&cluster.client, &ns.name, "chat", json!([user_rule, other_rule])).await;
    let router = GatewayApiRouter::new(cluster.client.clone(), &ns.name, "chat", backends());

    for step in [0, 10, 25, 50, 100, 0] {
        let read_back = router.set_weight(step).await.expect("set_weight");
        assert_eq!(read_back, Weights::canary_at(step));
        let route =
            serde_json::to_value(httproutes(&cluster.client, &ns.name).get("chat").await.expect("get")).expect("json");
        let refs = &route["spec"]["rules"][0]["backendRefs"];
        assert_eq!(
            refs[0],
            json!({"group": "", "kind": "Service", "name": "chat", "port": 8000, "weight": 100 - step})
        );
        assert_eq!(
            refs[1],
            json!({"group": "", "kind": "Service", "name": "chat-canary", "port": 8000, "weight": step})
        );
        // Everything else the user wrote stays.
        let b = serde_json::to_value(&before).expect("json");
        assert_eq!(route["spec"]["parentRefs"], b["spec"]["parentRefs"]);
        assert_eq!(route["spec"]["hostnames"], b["spec"]["hostnames"]);
        assert_eq!(route["spec"]["rules"][0]["matches"], b["spec"]["rules"][0]["matches"]);
        assert_eq!(route["spec"]["rules"][0]["filters"], b["spec"]["rules"][0]["filters"]);
        assert_eq!(route["spec"]["rules"][1], b["spec"]["rules"][1]);
        assert_eq!(route["metadata"]["labels"], b["metadata"]["labels"]);
        assert_eq!(route["metadata"]["annotations"], b["metadata"]["annotations"]);
    }
}

#[tokio::test]
async fn gateway_api_faults_name_the_problem_and_change_nothing() {
    let cluster = cluster().await;
    apply_router_crds(&cluster.client).await;
    let ns = TestNamespace::create(&cluster.client, "httproute-faults").await;

    let missing = GatewayApiRouter::new(cluster.client.clone(), &ns.name, "absent", backends());
    let err = missing.set_weight(10).await.expect_err("missing route");
    assert!(matches!(err, RouterError::NotFound { .. }), "{err}");
    assert_eq!(err.reason(), "RouteNotFound");

    let unrelated = create_route(
        &cluster.client,
        &ns.name,
        "other",
        json!([{"backendRefs": [{"name": "other", "port": 80}]}]),
    )
    .await;
    let router = GatewayApiRouter::new(cluster.client.clone(), &ns.name, "other", backends());
    let err = router.set_weight(10).await.expect_err("route without our Services");
    assert!(matches!(err, RouterError::NotReferenced { .. }), "{err}");
    assert!(err.to_string().contains("does not reference the Service chat"), "{err}");
    let after = httproutes(&cluster.client, &ns.name).get("other").await.expect("get");
    assert_eq!(
        after.metadata.resource_version, unrelated.metadata.resource_version,
        "nothing written"
    );
}
