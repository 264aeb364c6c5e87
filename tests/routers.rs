//! Traffic routers against the local control plane, with the upstream CRDs installed.

mod support;

use kube::api::{Api, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use rollguard::traffic::{
    RouteKind, Router, RouterError, Target, TrafficRouter, Weights, api_served, gateway_api, istio, smi,
};
use serde_json::{Value, json};
use support::*;

fn api_for(client: &kube::Client, ns: &str, kind: &RouteKind) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(kind.group, kind.version, kind.kind);
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, kind.plural),
    )
}

fn target(ns: &str, name: &str) -> Target {
    route_target(ns, name)
}

async fn create(client: &kube::Client, ns: &str, kind: &RouteKind, name: &str, spec: Value) -> Value {
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": kind.api_version, "kind": kind.kind,
        "metadata": {"name": name, "labels": {"team": "llm"}, "annotations": {"owner": "sre"}},
        "spec": spec
    }))
    .expect("object");
    let created = api_for(client, ns, kind)
        .create(&PostParams::default(), &obj)
        .await
        .expect("creating route object");
    serde_json::to_value(created).expect("json")
}

/// The user's object of each kind: our Services in one place, user fields around them, and
/// an unrelated route.
fn user_objects() -> Vec<(&'static RouteKind, Value, &'static str)> {
    vec![
        (
            &gateway_api::ROUTE_KIND,
            json!({"parentRefs": [{"name": "gateway", "sectionName": "https"}], "hostnames": ["llm.example.com"],
                   "rules": [
                       {"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                        "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x-team", "value": "llm"}]}}],
                        "backendRefs": [{"name": "chat", "port": 8000}]},
                       {"matches": [{"path": {"type": "PathPrefix", "value": "/other"}}], "backendRefs": [{"name": "other", "port": 80}]}]}),
            "rules",
        ),
        (
            &smi::ROUTE_KIND,
            json!({"service": "chat-apex", "matches": [{"kind": "HTTPRouteGroup", "name": "llm-routes"}],
                   "backends": [{"service": "chat", "weight": 100}, {"service": "mirror", "weight": 0}]}),
            "backends",
        ),
        (
            &istio::ROUTE_KIND,
            json!({"hosts": ["chat.example.com"], "gateways": ["llm-gateway"],
                   "http": [
                       {"name": "primary", "match": [{"uri": {"prefix": "/v1"}}], "timeout": "30s",
                        "retries": {"attempts": 2, "perTryTimeout": "10s"},
                        "route": [{"destination": {"host": "chat", "port": {"number": 8000}}}]},
                       {"name": "other", "route": [{"destination": {"host": "other"}}]}]}),
            "http",
        ),
    ]
}

#[tokio::test]
async fn router_crds_from_the_upstream_go_modules_are_established() {
    let cluster = cluster().await;
    apply_router_crds(&cluster.client).await;
    for kind in [&gateway_api::ROUTE_KIND, &smi::ROUTE_KIND, &istio::ROUTE_KIND] {
        let gvk = GroupVersionKind::gvk(kind.group, kind.version, kind.kind);
        assert!(
            api_served(&cluster.client, &gvk, kind.plural).await,
            "{} served",
            kind.api_version
        );
    }
}

#[tokio::test]
async fn each_router_sets_the_weights_of_each_step_and_user_fields_survive() {
    let cluster = cluster().await;
    apply_router_crds(&cluster.client).await;
    let ns = TestNamespace::create(&cluster.client, "routers").await;
    for (kind, spec, field) in user_objects() {
        let name = format!("chat-{}", kind.plural);
        let before = create(&cluster.client, &ns.name, kind, &name, spec).await;
        let router = Router::new(cluster.client.clone(), kind, target(&ns.name, &name));
        assert_eq!(router.weights().await.expect("weights").canary, 0, "{}", kind.kind);
        for step in [10, 25, 50, 100, 0] {
            let read_back = router
                .set_weight(step)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", kind.kind));
            assert_eq!(read_back, Weights::canary_at(step), "{}", kind.kind);
            let after = serde_json::to_value(api_for(&cluster.client, &ns.name, kind).get(&name).await.expect("get"))
                .expect("json");
            // Read independently of the router: the object holds the step's weights.
            assert_eq!(
                (kind.read)(&after, &target(&ns.name, &name)),
                Some(Weights::canary_at(step)),
                "{}",
                kind.kind
            );
            // Every other field the user wrote stays.
            for (key, value) in before["spec"].as_object().expect("spec") {
                if key != field {
                    assert_eq!(&after["spec"][key], value, "{}: spec.{key} changed", kind.kind);
                }
            }
            assert_eq!(after["metadata"]["labels"], before["metadata"]["labels"]);
            assert_eq!(after["metadata"]["annotations"], before["metadata"]["annotations"]);
            // Rules and HTTP routes keep their number and their own fields; for a
            // TrafficSplit the list is the backends themselves (the canary one is added).
            if kind.kind != "TrafficSplit" {
                let old = before["spec"][field].as_array().expect("list");
                let new = after["spec"][field].as_array().expect("list");
                assert_eq!(old.len(), new.len(), "{}: entries added or removed", kind.kind);
                for (o, n) in old.iter().zip(new) {
                    for (key, value) in o.as_object().expect("entry") {
                        if !["backendRefs", "route"].contains(&key.as_str()) {
                            assert_eq!(&n[key], value, "{}: {field}[].{key} changed", kind.kind);
                        }
                    }
                }
            }
        }
        // rollguard's writes are recorded under its own field manager.
        let after = api_for(&cluster.client, &ns.name, kind).get(&name).await.expect("get");
        assert!(
            after
                .metadata
                .managed_fields
                .iter()
                .flatten()
                .any(|m| m.manager.as_deref() == Some("rollguard"))
        );
    }
}

static NOT_INSTALLED: RouteKind = RouteKind {
    kind: "Nothing",
    group: "nothing.rollguard.dev",
    version: "v1",
    api_version: "nothing.rollguard.dev/v1",
    plural: "nothings",
    field: "rules",
    edit: |_, _, _| None,
    read: |_, _| None,
};

#[tokio::test]
async fn faults_name_the_problem_and_write_nothing() {
    let cluster = cluster().await;
    apply_router_crds(&cluster.client).await;
    let ns = TestNamespace::create(&cluster.client, "router-faults").await;
    let unrelated = [
        json!({"rules": [{"backendRefs": [{"name": "other", "port": 80}]}]}),
        json!({"service": "apex", "backends": [{"service": "other", "weight": 100}]}),
        json!({"hosts": ["x"], "http": [{"route": [{"destination": {"host": "other"}}]}]}),
    ];
    for (kind, spec) in [&gateway_api::ROUTE_KIND, &smi::ROUTE_KIND, &istio::ROUTE_KIND]
        .into_iter()
        .zip(unrelated)
    {
        let missing = Router::new(cluster.client.clone(), kind, target(&ns.name, "absent"));
        let err = missing.set_weight(10).await.expect_err("missing object");
        assert!(matches!(err, RouterError::NotFound { .. }), "{}: {err}", kind.kind);
        assert!(err.to_string().contains("absent"), "{err}");

        let name = format!("unrelated-{}", kind.plural);
        let before = create(&cluster.client, &ns.name, kind, &name, spec).await;
        let router = Router::new(cluster.client.clone(), kind, target(&ns.name, &name));
        let err = router.set_weight(10).await.expect_err("object without our Services");
        assert_eq!(err.reason(), "RouteNotReferencingServices", "{}: {err}", kind.kind);
        let after = api_for(&cluster.client, &ns.name, kind).get(&name).await.expect("get");
        assert_eq!(
            Some(before["metadata"]["resourceVersion"].as_str().unwrap_or_default()),
            after.metadata.resource_version.as_deref(),
            "{}: nothing written",
            kind.kind
        );
    }
    let err = Router::new(cluster.client.clone(), &NOT_INSTALLED, target(&ns.name, "x"))
        .set_weight(10)
        .await
        .expect_err("CRD not installed");
    assert_eq!(err.reason(), "RouterNotInstalled");
    assert!(err.to_string().contains("nothing.rollguard.dev/v1"), "{err}");
}

/// Someone else edits the route between rollguard's read and its write: the write is refused
/// (its resourceVersion is stale), the route is read again and the weights are set on what
/// it is now, so their edit survives.
#[tokio::test]
async fn a_weight_write_keeps_an_edit_made_after_the_route_was_read() {
    let cluster = cluster().await;
    apply_router_crds(&cluster.client).await;
    let ns = TestNamespace::create(&cluster.client, "router-race").await;
    let kind = &gateway_api::ROUTE_KIND;
    let (_, spec, _) = user_objects().into_iter().next().expect("an HTTPRoute");
    create(&cluster.client, &ns.name, kind, "chat", spec).await;
    let router = Router::new(cluster.client.clone(), kind, target(&ns.name, "chat"));
    let read = router.read().await.expect("reading the route");
    assert_eq!(read.weights.canary, 0);

    // Their edit, inside the list rollguard writes whole: a timeout on our rule.
    let api = api_for(&cluster.client, &ns.name, kind);
    let mut theirs = serde_json::to_value(api.get("chat").await.expect("route")).expect("json");
    theirs["spec"]["rules"][0]["timeouts"] = json!({"request": "30s"});
    let theirs: DynamicObject = serde_json::from_value(theirs).expect("object");
    api.replace("chat", &PostParams::default(), &theirs)
        .await
        .expect("their edit");

    let written = router.write(read, 30).await.expect("writing weights").weights;
    assert_eq!(written, Weights { stable: 70, canary: 30 });
    let now = serde_json::to_value(api.get("chat").await.expect("route")).expect("json");
    assert_eq!(
        now["spec"]["rules"][0]["timeouts"],
        json!({"request": "30s"}),
        "their edit was overwritten: {now}"
    );
    assert_eq!(router.weights().await.expect("weights").canary, 30);
}
