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
    wait_for(Duration::from_secs(20), || async {
        let md = api.get(name).await.ok()?;
        let status = md.status.as_ref()?;
        let reconciling = status.conditions.iter().any(|c| c.type_ == "Reconciling");
        (status.observed_generation == Some(generation) && reconciling).then_some(md)
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
