//! Two operators split a fleet by a label selector on ModelDeployments (`--selector`),
//! through the real API server: each reconciles only its own, and the RollbackPolicy they
//! share lists the users of both shards. A selector the API server rejects stops the
//! operator at once with a message naming the flag and the value.

mod support;

use std::time::Duration;

use kube::Api;
use rollguard::api::RollbackPolicy;
use serde_json::json;
use support::watch::wait_object;
use support::*;

fn labelled(name: &str, fleet: &str) -> rollguard::api::ModelDeployment {
    let mut md = model_deployment(name, "v1", 1, json!({"rollbackPolicyRef": {"name": "shared"}}));
    md.metadata.labels = Some([("fleet".to_string(), fleet.to_string())].into());
    md
}

/// Waits until the policy lists exactly `names` (sorted).
async fn wait_users(policies: &Api<RollbackPolicy>, names: &[&str]) {
    let want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let listed = |p: &RollbackPolicy| {
        let mut users = p
            .status
            .as_ref()
            .map(|s| s.model_deployments.clone())
            .unwrap_or_default();
        users.sort();
        users == want
    };
    if wait_object(policies, "shared", Duration::from_secs(60), listed)
        .await
        .is_none()
    {
        let p = policies.get("shared").await.ok();
        let status = p.as_ref().map(|p| (&p.status, &p.metadata.managed_fields));
        panic!("the policy lists {want:?}: {status:#?}");
    }
}

#[tokio::test]
async fn two_operators_split_a_fleet_by_label_and_share_a_policy() {
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "shard").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    let policies: Api<RollbackPolicy> = Api::namespaced(cluster.client.clone(), &ns.name);
    apis.create_policy("shared", json!({})).await;
    apis.create(&labelled("chat-a", "a")).await;
    apis.create(&labelled("chat-b", "b")).await;

    let a = Operator::start_with(
        &ns.name,
        &["--selector", "fleet=a", "--concurrency", "1", "--resync-seconds", "1"],
    );
    apis.wait_healthy("chat-a", 1).await;
    wait_users(&policies, &["chat-a"]).await;
    // Operator a has looked at its fleet again since; chat-b is not its own: untouched.
    a.wait_reconciles("chat-a", 2).await;
    let b_md = apis.md.get("chat-b").await.expect("chat-b");
    assert!(
        b_md.status.is_none(),
        "operator a wrote chat-b's status: {:?}",
        b_md.status
    );
    assert!(
        apis.deployments.get_opt("chat-b-r1").await.expect("get").is_none(),
        "operator a created chat-b's Deployment"
    );

    let b = Operator::start_with(&ns.name, &["--selector", "fleet in (b)", "--resync-seconds", "1"]);
    apis.wait_healthy("chat-b", 1).await;
    // Each shard applies its own names to the set list: the policy lists both.
    wait_users(&policies, &["chat-a", "chat-b"]).await;
    let managers: Vec<String> = policies
        .get("shared")
        .await
        .expect("policy")
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f.subresource.as_deref() == Some("status"))
        .filter_map(|f| f.manager)
        .collect();
    assert!(
        managers.contains(&"rollguard:fleet=a".to_string()) && managers.contains(&"rollguard:fleet in (b)".to_string()),
        "each shard writes the policy status as its own field manager: {managers:?}"
    );

    // A ModelDeployment of shard a that is deleted leaves the list; b's name stays.
    apis.md
        .delete("chat-a", &Default::default())
        .await
        .expect("deleting chat-a");
    wait_users(&policies, &["chat-b"]).await;
    // Both operators keep looking (several resyncs) and the list stays as it is.
    b.wait_reconciles("chat-b", 3).await;
    wait_users(&policies, &["chat-b"]).await;
    assert_eq!(
        a.reconciles("chat-b"),
        0,
        "operator a reconciled chat-b:\n{}",
        a.log_text()
    );
}

#[tokio::test]
async fn a_selector_the_api_server_rejects_stops_the_operator_naming_it() {
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "shard-bad").await;
    let mut op = Operator::start_with(&ns.name, &["--selector", "fleet in (a"]);
    let pid = op.child.id();
    let exited = wait_for(Duration::from_secs(30), || async {
        // The process is gone or a zombie once it exited.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        (stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z")).then_some(())
    })
    .await;
    assert!(exited.is_some(), "the operator kept running:\n{}", op.log_text());
    let status = op.child.wait().expect("the operator's exit status");
    assert!(!status.success());
    let log = op.log_text();
    assert!(
        log.contains(r#"--selector "fleet in (a" is not a label selector the API server accepts"#),
        "{log}"
    );
}
