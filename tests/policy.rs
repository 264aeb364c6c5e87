//! RollbackPolicy status against the local control plane: validity with the reason, the
//! ModelDeployments that use it, observedGeneration; and a ModelDeployment's view of it.

mod support;

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams, PostParams};
use rollguard::api::RollbackPolicy;
use serde_json::json;
use support::*;

const SECS_60: Duration = Duration::from_secs(60);

fn valid_condition(p: &RollbackPolicy) -> Option<(String, String, String)> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Valid")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn wait_policy<F>(api: &Api<RollbackPolicy>, what: &str, pred: F) -> RollbackPolicy
where
    F: Fn(&RollbackPolicy) -> bool,
{
    let found = wait_object(api, "llm", SECS_60, pred).await;
    match found {
        Some(p) => p,
        None => panic!(
            "RollbackPolicy llm never became {what}: {:?}",
            api.get("llm").await.ok().and_then(|p| p.status)
        ),
    }
}

#[tokio::test]
async fn policy_status_reports_validity_users_and_generation() {
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "policy").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    let _op = Operator::start_with(&ns.name, &["--resync-seconds", "2"]);
    let policies: Api<RollbackPolicy> = Api::namespaced(cluster.client.clone(), &ns.name);
    let policy: RollbackPolicy = serde_json::from_value(json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackPolicy", "metadata": {"name": "llm"},
        "spec": {"provider": {"prometheus": {"address": "http://127.0.0.1:9"}},
                 "triggers": [{"name": "errors", "query": "sum(x{r=\"{{revison}}\"})", "operator": "Gt", "threshold": 0.05}]}
    }))
    .expect("policy");
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("create policy");
    apis.create(&model_deployment(
        "chat",
        "v1",
        1,
        json!({"rollbackPolicyRef": {"name": "llm"}}),
    ))
    .await;

    let p = wait_policy(&policies, "Valid=False listing chat", |p| {
        valid_condition(p).is_some_and(|(s, _, _)| s == "False")
            && p.status
                .as_ref()
                .is_some_and(|s| s.model_deployments == vec!["chat".to_string()])
    })
    .await;
    let (_, reason, message) = valid_condition(&p).expect("Valid");
    assert_eq!(reason, "InvalidQuery");
    assert!(
        message.contains("spec.triggers[0] (errors): unknown variable {{revison}}"),
        "{message}"
    );
    assert_eq!(
        p.status.as_ref().and_then(|s| s.observed_generation),
        p.metadata.generation
    );

    policies
        .patch(
            "llm",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"triggers": [
                {"name": "errors", "template": "VllmErrorRate", "operator": "Gt", "threshold": 0.05}]}})),
        )
        .await
        .expect("fixing the policy");
    let p = wait_policy(&policies, "Valid=True at the new generation", |p| {
        valid_condition(p).is_some_and(|(s, _, _)| s == "True")
            && p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation
    })
    .await;
    assert_eq!(p.metadata.generation, Some(2));

    let md = apis
        .wait_md("chat", "PolicyResolved=True", SECS_60, |md| {
            md.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "PolicyResolved" && c.status == "True")
            })
        })
        .await;
    assert!(md.status.is_some());
}

#[tokio::test]
async fn a_missing_policy_is_reported_on_the_model_deployment() {
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "policy-missing").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    // No resync within the test: only the policy's creation can wake the ModelDeployment.
    let _op = Operator::start_with(&ns.name, &["--resync-seconds", "3600"]);
    apis.create(&model_deployment(
        "chat",
        "v1",
        1,
        json!({"rollbackPolicyRef": {"name": "absent"}}),
    ))
    .await;
    let md = apis
        .wait_md("chat", "PolicyResolved=False", SECS_60, |md| {
            condition(md, "PolicyResolved").is_some_and(|(s, r, _)| s == "False" && r == "PolicyNotFound")
        })
        .await;
    let (_, _, message) = condition(&md, "PolicyResolved").expect("condition");
    assert!(message.contains("spec.rollbackPolicyRef.name"), "{message}");
    assert!(message.contains("\"absent\""), "{message}");
    // The model server still rolls out.
    apis.wait_healthy("chat", 1).await;

    // The policy appears: its users look at it at once.
    let policies: Api<RollbackPolicy> = Api::namespaced(cluster.client.clone(), &ns.name);
    let policy: RollbackPolicy = serde_json::from_value(json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackPolicy", "metadata": {"name": "absent"},
        "spec": {"triggers": []}
    }))
    .expect("policy");
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("creating the policy");
    apis.wait_md("chat", "PolicyResolved=True once the policy exists", SECS_60, |md| {
        condition(md, "PolicyResolved").is_some_and(|(s, _, _)| s == "True")
    })
    .await;
}

/// Conditions about a policy and its metrics stop applying when the ModelDeployment no longer
/// references a policy: they are removed, not left at their last value.
#[tokio::test]
async fn conditions_that_no_longer_apply_are_removed() {
    use support::slow_provider::{Answer, SlowProvider};
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "stale-conditions").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    let provider = SlowProvider::start(Answer::Hang).await;
    let policy: RollbackPolicy = serde_json::from_value(json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackPolicy", "metadata": {"name": "llm"},
        "spec": {
            "provider": {"prometheus": {"address": provider.address, "timeout": "1s"}},
            "interval": "1s", "guardWindow": "1h", "onMetricsUnavailable": "Ignore",
            "triggers": [{"name": "error-rate", "query": "vector(0)", "operator": "Gt", "threshold": 0.1}]
        }
    }))
    .expect("policy");
    Api::<RollbackPolicy>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &policy)
        .await
        .expect("creating the policy");
    let _op = Operator::start(&ns.name);
    apis.roll_out("chat", &["v1", "v2"], 1, json!({"rollbackPolicyRef": {"name": "llm"}}))
        .await;
    // r2 is judged in its guard window by a provider that never answers.
    apis.wait_md("chat", "MetricsAvailable=False, PolicyResolved=True", SECS_60, |md| {
        condition(md, "MetricsAvailable").is_some_and(|(s, r, _)| s == "False" && r == "ProviderUnavailable")
            && condition(md, "PolicyResolved").is_some_and(|(s, _, _)| s == "True")
            && condition(md, "MetricsWarning").is_some()
    })
    .await;

    apis.patch_spec("chat", json!({"rollbackPolicyRef": null})).await;
    let md = apis
        .wait_md("chat", "no policy or metrics condition", SECS_60, |md| {
            md.status
                .as_ref()
                .is_some_and(|s| s.observed_generation == md.metadata.generation)
                && ["MetricsAvailable", "MetricsWarning", "PolicyResolved"]
                    .iter()
                    .all(|t| condition(md, t).is_none())
        })
        .await;
    assert!(condition(&md, "Ready").is_some(), "the other conditions stay");
}
