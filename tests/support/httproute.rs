//! The Gateway API HTTPRoute `chat` of the canary and gradual-rollback tests.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Api, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use rollguard::traffic::{Weights, gateway_api};
use serde_json::json;

use super::{Apis, route_target, wait_for, wait_object};

/// A namespace of its own with the router CRDs, the HTTPRoute `chat` and the operator,
/// started with `args`.
pub async fn with_route(prefix: &str, args: &[&str]) -> (super::TestNamespace, Apis, super::Operator) {
    let cluster = super::cluster().await;
    super::apply_router_crds(&cluster.client).await;
    let ns = super::TestNamespace::create(&cluster.client, prefix).await;
    let apis = Apis::new(&cluster.client, &ns.name);
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

/// Creates the HTTPRoute `chat`: one rule to the Service `chat`, plus fields of the user's.
pub async fn create_route(apis: &Apis) {
    let route: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "chat"},
        "spec": {"parentRefs": [{"name": "gateway"}], "hostnames": ["llm.example.com"],
                 "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                            "backendRefs": [{"name": "chat", "port": 8000}]}]}
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
    let target = route_target(&apis.namespace, "chat");
    (gateway_api::ROUTE_KIND.read)(&obj, &target)
}

/// Waits until the HTTPRoute carries canary weight `canary`; when it was seen.
pub async fn wait_weight(apis: &Apis, canary: i32) -> Instant {
    let target = route_target(&apis.namespace, "chat");
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
    let target = route_target(&apis.namespace, "chat");
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
