//! The Gateway API HTTPRoute `chat` of the canary and gradual-rollback tests, routing to the
//! Services `chat` and `chat-canary`, or (with [`Apis::routing_to`]) to the InferencePools of
//! those names.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Api, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use rollguard::traffic::inference_pool::InferencePool;
use rollguard::traffic::{BackendKind, Weights, gateway_api};
use serde_json::json;

use super::{Apis, route_target_to, wait_for, wait_object};

/// A namespace of its own with the router CRDs, the HTTPRoute `chat` and the operator,
/// started with `args`.
pub async fn with_route(prefix: &str, args: &[&str]) -> (super::TestNamespace, Apis, super::Operator) {
    with_route_to(BackendKind::Service, prefix, args).await
}

/// [`with_route`], the HTTPRoute routing to `backend`.
pub async fn with_route_to(
    backend: BackendKind,
    prefix: &str,
    args: &[&str],
) -> (super::TestNamespace, Apis, super::Operator) {
    let cluster = super::cluster().await;
    super::apply_router_crds(&cluster.client).await;
    let ns = super::TestNamespace::create(&cluster.client, prefix).await;
    let apis = Apis::new(&cluster.client, &ns.name).routing_to(backend);
    create_route(&apis).await;
    let op = super::Operator::start_with(&ns.name, args);
    (ns, apis, op)
}

/// The HTTPRoutes of the test namespace.
pub fn routes(apis: &Apis) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    Api::namespaced_with(
        apis.client.clone(),
        &apis.namespace,
        &ApiResource::from_gvk_with_plural(&gvk, "httproutes"),
    )
}

/// `spec.trafficRouting` of the ModelDeployment `chat`: the HTTPRoute `chat`, to the
/// InferencePools when `apis` routes to them (with an Endpoint Picker Service each).
pub fn routing(apis: &Apis) -> serde_json::Value {
    match apis.backend {
        BackendKind::Service => json!({"gatewayAPI": {"httpRoute": "chat"}}),
        BackendKind::InferencePool => json!({"gatewayAPI": {"httpRoute": "chat", "inferencePool": {
            "endpointPickerRef": {"name": "chat-epp", "port": {"number": 9002}},
            "canaryEndpointPickerRef": {"name": "chat-canary-epp", "port": {"number": 9002}, "failureMode": "FailOpen"}}}}),
    }
}

/// The backendRef of the HTTPRoute `chat` to the stable backend `chat`.
fn stable_backend_ref(apis: &Apis) -> serde_json::Value {
    match apis.backend {
        BackendKind::Service => json!({"name": "chat", "port": 8000}),
        BackendKind::InferencePool => {
            json!({"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "chat"})
        }
    }
}

/// Creates the HTTPRoute `chat`: one rule to the backend `chat`, plus fields of the user's.
pub async fn create_route(apis: &Apis) {
    let route: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "chat"},
        "spec": {"parentRefs": [{"name": "gateway"}], "hostnames": ["llm.example.com"],
                 "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                            "backendRefs": [stable_backend_ref(apis)]}]}
    }))
    .expect("route");
    routes(apis)
        .create(&PostParams::default(), &route)
        .await
        .expect("creating HTTPRoute");
}

/// The weights on the HTTPRoute `chat`.
pub async fn route_weights(apis: &Apis) -> Option<Weights> {
    let obj = serde_json::to_value(routes(apis).get("chat").await.ok()?).ok()?;
    let target = route_target_to(&apis.namespace, "chat", apis.backend);
    (gateway_api::ROUTE_KIND.read)(&obj, &target)
}

/// Waits until the HTTPRoute carries canary weight `canary`; when it was seen.
pub async fn wait_weight(apis: &Apis, canary: i32) -> Instant {
    let target = route_target_to(&apis.namespace, "chat", apis.backend);
    let carries = |obj: &DynamicObject| {
        let value = serde_json::to_value(obj).unwrap_or_default();
        (gateway_api::ROUTE_KIND.read)(&value, &target).is_some_and(|w| w.canary == canary)
    };
    let seen = wait_object(&routes(apis), "chat", Duration::from_secs(60), carries).await;
    assert!(seen.is_some(), "the HTTPRoute never carried canary weight {canary}");
    Instant::now()
}

/// Every canary weight the HTTPRoute carries, with when it was seen, from a watch.
pub type WeightLog = Arc<Mutex<Vec<(Instant, i32)>>>;

/// Starts recording the canary weights of the HTTPRoute `chat`, and returns once the first
/// (current) weight is recorded, so nothing done afterwards is missed.
pub async fn record_weights(apis: &Apis) -> WeightLog {
    let log = start_recording(apis);
    let first = wait_for(Duration::from_secs(60), || async {
        (!log.lock().map(|v| v.is_empty()).unwrap_or(true)).then_some(())
    })
    .await;
    assert!(first.is_some(), "the HTTPRoute watch delivered nothing");
    log
}

fn start_recording(apis: &Apis) -> WeightLog {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let seen: WeightLog = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let target = route_target_to(&apis.namespace, "chat", apis.backend);
    // With backoff, the watch outlives an API server restart.
    let stream = watcher(routes(apis), watcher::Config::default().fields("metadata.name=chat"))
        .default_backoff()
        .applied_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            let Ok(obj) = item else {
                continue;
            };
            let value = serde_json::to_value(obj).unwrap_or_default();
            if let (Some(w), Ok(mut v)) = ((gateway_api::ROUTE_KIND.read)(&value, &target), sink.lock()) {
                v.push((Instant::now(), w.canary));
            }
        }
    });
    seen
}

/// The canary weights recorded so far, one entry per change.
pub fn weights(log: &WeightLog) -> Vec<i32> {
    weight_changes(log).iter().map(|(_, w)| *w).collect()
}

/// The weights recorded so far, one entry per change: `(first seen, weight)`.
pub fn weight_changes(log: &WeightLog) -> Vec<(Instant, i32)> {
    let mut changes: Vec<(Instant, i32)> = Vec::new();
    for (at, w) in log.lock().map(|v| v.clone()).unwrap_or_default() {
        if changes.last().is_none_or(|(_, last)| *last != w) {
            changes.push((at, w));
        }
    }
    changes
}

/// The InferencePools of the test namespace.
pub fn pools(apis: &Apis) -> Api<InferencePool> {
    Api::namespaced(apis.client.clone(), &apis.namespace)
}

/// The revision the InferencePool `name` selects, if it exists and selects one.
pub async fn pool_revision(apis: &Apis, name: &str) -> Option<i64> {
    let pool = pools(apis).get_opt(name).await.expect("reading an InferencePool")?;
    rollguard::controller::resources::pool_revision("chat", &pool)
}

/// Asserts that both InferencePools select what the Services of the same names select,
/// whenever `apis` routes to InferencePools (a no-op otherwise).
pub async fn assert_pools_follow_services(apis: &Apis) {
    if apis.backend != BackendKind::InferencePool {
        return;
    }
    for name in ["chat", "chat-canary"] {
        let service = apis.services.get_opt(name).await.expect("reading a Service");
        let selects = service.and_then(|s| s.spec?.selector?.get("rollguard.dev/revision")?.parse::<i64>().ok());
        assert_eq!(
            pool_revision(apis, name).await,
            selects,
            "InferencePool {name} selects what Service {name} does"
        );
    }
}
