//! The scale subresource of ModelDeployment (what a HorizontalPodAutoscaler or KEDA drives),
//! through the real API server: the stable revision follows, and a scale change is never a
//! new revision.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;
use support::*;

#[tokio::test]
async fn scaling_through_the_scale_subresource_resizes_the_stable_revision_only() {
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "scale").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    let _op = Operator::start_with(&ns.name, &["--resync-seconds", "2"]);
    apis.roll_out("chat", &["v1"], 2, json!({})).await;

    let selector = "rollguard.dev/model-deployment=chat,rollguard.dev/revision=1";
    let scale = wait_for(Duration::from_secs(60), || async {
        let s = apis.md.get_scale("chat").await.ok()?;
        let status = s.status.clone()?;
        (status.replicas == 2 && status.selector.as_deref() == Some(selector)).then_some(s)
    })
    .await;
    let scale = scale.unwrap_or_else(|| panic!("the scale subresource reports 2 replicas of {selector}"));
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(2));

    // An autoscaler writes the scale subresource.
    let patch = json!({"spec": {"replicas": 4}});
    apis.md
        .patch_scale("chat", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patching the scale subresource");
    assert_eq!(
        apis.md.get("chat").await.expect("md").spec.replicas,
        4,
        "spec.replicas follows"
    );
    let grown = wait_for(Duration::from_secs(60), || async {
        let s = apis.md.get_scale("chat").await.ok()?;
        (s.status?.replicas == 4).then_some(())
    })
    .await;
    assert!(grown.is_some(), "the scale subresource reports 4 ready replicas");
    assert_eq!(apis.deployment_replicas("chat-r1").await, Some(4));

    // The selector it reports finds exactly those pods.
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns.name);
    let selected = pods
        .list(&ListParams::default().labels(selector))
        .await
        .expect("listing pods");
    let running = selected
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count();
    assert_eq!(running, 4, "the selector matches the stable revision's pods");

    // Not a new revision: one revision, no RevisionCreated beyond the first.
    let md = apis.wait_healthy("chat", 1).await;
    let status = md.status.expect("status");
    assert_eq!(status.history.len(), 1, "{:?}", status.history);
    assert_eq!(status.current_revision, Some(1));
    assert_eq!(apis.events("chat", "RevisionCreated").await.len(), 1);
    assert_eq!(
        apis.revisions
            .list(&ListParams::default())
            .await
            .expect("revisions")
            .items
            .len(),
        1
    );

    // kubectl scale works the same way.
    let out = std::process::Command::new(kubectl_path())
        .args(["--kubeconfig", &kubeconfig_path().display().to_string(), "-n", &ns.name])
        .args(["scale", "modeldeployment/chat", "--replicas", "1"])
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl scale: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shrunk = wait_for(Duration::from_secs(60), || async {
        (apis.deployment_replicas("chat-r1").await == Some(1)).then_some(())
    })
    .await;
    assert!(shrunk.is_some(), "kubectl scale --replicas 1 resized chat-r1");
}

#[tokio::test]
async fn a_horizontal_pod_autoscaler_reads_the_scale_subresource() {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "hpa").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    let _op = Operator::start_with(&ns.name, &["--resync-seconds", "2"]);
    apis.roll_out("chat", &["v1"], 1, json!({})).await;
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "chat"},
        "spec": {"scaleTargetRef": {"apiVersion": "rollguard.dev/v1alpha1", "kind": "ModelDeployment", "name": "chat"},
                 "minReplicas": 2, "maxReplicas": 8,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}]}
    }))
    .expect("an HPA");
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(cluster.client.clone(), &ns.name);
    hpas.create(&Default::default(), &hpa).await.expect("creating the HPA");
    // The control plane's HPA controller gets the scale (no metrics server here, so it
    // cannot compute utilization) and holds the ModelDeployment at minReplicas.
    let able = wait_object(&hpas, "chat", Duration::from_secs(90), |h| {
        h.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "AbleToScale" && c.status == "True"))
    })
    .await;
    let able = able.unwrap_or_else(|| panic!("the HPA never got the scale subresource"));
    let conditions = able.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(
        conditions.iter().any(|c| c.type_ == "AbleToScale"
            && matches!(c.reason.as_deref(), Some("SucceededGetScale" | "SucceededRescale"))),
        "{conditions:?}"
    );
    let grown = wait_for(Duration::from_secs(90), || async {
        (apis.deployment_replicas("chat-r1").await == Some(2)).then_some(())
    })
    .await;
    assert!(
        grown.is_some(),
        "the HPA raised the ModelDeployment to minReplicas 2 and chat-r1 followed"
    );
    let md = apis.md.get("chat").await.expect("md");
    assert_eq!(md.spec.replicas, 2);
    assert_eq!(md.status.map(|s| s.history.len()), Some(1), "still one revision");
}
