//! `rollguard run` against the local control plane.

mod support;

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams, PostParams};
use rollguard::api::ModelDeployment;
use support::*;

fn example_model_deployment() -> ModelDeployment {
    let docs = read_yaml_documents(&repo_root().join("examples/bluegreen.yaml"));
    serde_json::from_value(docs[0].clone()).expect("examples/bluegreen.yaml is a ModelDeployment")
}

/// Waits until the status describes `generation` and has a Reconciling condition.
async fn wait_for_observed(api: &Api<ModelDeployment>, name: &str, generation: i64) -> Option<ModelDeployment> {
    wait_object(api, name, Duration::from_secs(20), |md| {
        md.status.as_ref().is_some_and(|status| {
            let reconciling = status.conditions.iter().any(|c| c.type_ == "Reconciling");
            status.observed_generation == Some(generation) && reconciling
        })
    })
    .await
}

#[tokio::test]
async fn run_sets_observed_generation_and_reconciling_condition() {
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "run").await;
    let _operator = Operator::start(&ns.name);
    let api: Api<ModelDeployment> = Api::namespaced(cluster.client.clone(), &ns.name);
    let created = api
        .create(&PostParams::default(), &example_model_deployment())
        .await
        .expect("creating the example ModelDeployment");
    let generation = created.metadata.generation.expect("generation set by the API server");

    let md = wait_for_observed(&api, "chat", generation)
        .await
        .expect("status.observedGeneration and a Reconciling condition within 20s");
    let status = md.status.expect("status");
    let reconciling = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Reconciling")
        .expect("Reconciling");
    assert_eq!(reconciling.observed_generation, Some(generation));
    assert_eq!(md.spec, created.spec, "the operator never writes spec");

    // A spec change is a new generation, and the status follows it.
    api.patch(
        "chat",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})),
    )
    .await
    .expect("patching spec");
    wait_for_observed(&api, "chat", generation + 1)
        .await
        .expect("observedGeneration follows the new generation");
}

#[tokio::test]
async fn run_stops_cleanly_on_sigterm() {
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "sigterm").await;
    let mut operator = Operator::start(&ns.name);
    let api: Api<ModelDeployment> = Api::namespaced(cluster.client.clone(), &ns.name);
    api.create(&PostParams::default(), &example_model_deployment())
        .await
        .expect("creating the example ModelDeployment");
    wait_for_observed(&api, "chat", 1)
        .await
        .expect("operator is reconciling");

    let pid = operator.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("running kill");
    assert!(killed.success());
    let exited = wait_for(Duration::from_secs(15), || {
        let status = operator.child.try_wait().ok().flatten();
        async move { status }
    })
    .await
    .expect("the operator exits within 15s of SIGTERM");
    assert!(exited.success(), "exit status after SIGTERM: {exited}");
}

/// Someone edits the image of a child Deployment: rollguard restores its revision's template
/// and says so in a Warning Event. Fields it does not set (an annotation someone adds) and
/// values the API server normalizes (cpu `0.5` stored as `500m`) cause no write.
#[tokio::test]
async fn an_edited_child_deployment_is_restored_without_a_write_loop() {
    use support::telemetry::{Scrape, metrics_address};
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "restore").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    let op = Operator::start_with(&ns.name, &["--metrics-address", "127.0.0.1:0", "--resync-seconds", "1"]);
    let address = metrics_address(&op).await;
    let template = serde_json::json!({"spec": {"containers": [{
        "name": "vllm", "image": "vllm/vllm-openai:v0.11.0",
        "resources": {"requests": {"cpu": "0.5"}}}]}});
    apis.roll_out("chat", &["v1"], 1, serde_json::json!({"template": template}))
        .await;
    let image = |d: &k8s_openapi::api::apps::v1::Deployment| {
        d.spec
            .template
            .spec
            .as_ref()
            .and_then(|p| p.containers.first())
            .and_then(|c| c.image.clone())
    };
    let theirs = PatchParams::default();
    let edit = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "vllm", "image": "someone/else:latest"}]}}}});
    apis.deployments
        .patch("chat-r1", &theirs, &Patch::Strategic(edit))
        .await
        .expect("their edit");
    let restored = wait_object(&apis.deployments, "chat-r1", Duration::from_secs(30), |d| {
        image(d).as_deref() == Some("vllm/vllm-openai:v0.11.0")
    })
    .await;
    assert!(restored.is_some(), "the image someone else wrote was never restored");
    let event = apis.wait_event("chat", "DeploymentRestored", Some("Warning")).await;
    assert!(event.is_some(), "a Warning Event says the template was restored");

    // Their annotation on the pod template is not rollguard's: it stays, and nothing loops.
    let extra = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {"sidecar.example.com/inject": "true"}}}}});
    apis.deployments
        .patch("chat-r1", &theirs, &Patch::Merge(extra))
        .await
        .expect("their annotation");
    let deployment_writes = |s: &Scrape| s.requests(|verb, resource| verb == "patch" && resource == "deployments");
    let start = Scrape::of(&address).await;
    let end = wait_for(Duration::from_secs(30), || async {
        let now = Scrape::of(&address).await;
        (now.reconciles() - start.reconciles() >= 4.0).then_some(now)
    })
    .await
    .expect("four resync reconciles");
    assert_eq!(
        deployment_writes(&end),
        deployment_writes(&start),
        "Deployments written again and again:\n{}",
        end.0
    );
    let d = apis.deployments.get("chat-r1").await.expect("Deployment");
    let annotations = d.spec.template.metadata.and_then(|m| m.annotations).unwrap_or_default();
    assert_eq!(
        annotations.get("sidecar.example.com/inject").map(String::as_str),
        Some("true")
    );
}
