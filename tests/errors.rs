//! Failures a user must act on reach `kubectl describe`, against the local control plane.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::ResourceQuota;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use support::*;

/// A namespace whose quota allows no Service: the operator cannot apply the stable Service.
/// The failure is a Warning Event on the ModelDeployment naming the API server's answer, and
/// the ModelDeployment goes on once the quota is lifted.
#[tokio::test]
async fn a_failing_reconcile_is_a_warning_event_with_its_cause() {
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "errors").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    let quotas: Api<ResourceQuota> = Api::namespaced(cluster.client.clone(), &ns.name);
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "no-services"}, "spec": {"hard": {"services": "0"}}
    }))
    .expect("quota");
    quotas
        .create(&PostParams::default(), &quota)
        .await
        .expect("creating the quota");
    // The quota is enforced once the quota controller has filled in its status.
    let enforced = wait_object(&quotas, "no-services", Duration::from_secs(30), |q| {
        let hard = q.status.as_ref().and_then(|s| s.hard.as_ref());
        hard.is_some_and(|h| h.contains_key("services"))
    })
    .await;
    assert!(enforced.is_some(), "the quota was never enforced");

    let _op = Operator::start(&ns.name);
    apis.create(&model_deployment("chat", "v1", 1, json!({}))).await;
    let event = apis
        .wait_event("chat", "ApplyServiceFailed", Some("Warning"))
        .await
        .expect("a Warning Event ApplyServiceFailed on the ModelDeployment");
    let note = event.note.unwrap_or_default();
    assert!(note.contains("failed to apply Service"), "{note}");
    assert!(note.contains("exceeded quota"), "the cause is in the Event: {note}");

    quotas
        .delete("no-services", &DeleteParams::default())
        .await
        .expect("lifting the quota");
    apis.wait_healthy("chat", 1).await;
}
