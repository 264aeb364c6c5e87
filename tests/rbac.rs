//! `deploy/`: its manifests are accepted by the API server, and the operator does a whole
//! rollout, canary, rollback and policy status, with leader election, with only the
//! ServiceAccount's permissions.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use kube::api::{Api, PostParams};
use kube::config::Kubeconfig;
use rollguard::api::RollbackPolicy;
use serde_json::json;
use support::httproute::*;
use support::*;

const SECS_60: Duration = Duration::from_secs(60);

fn kubectl(args: &[&str]) -> String {
    let out = Command::new(kubectl_path())
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .expect("running kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A kubeconfig for the same API server with the ServiceAccount `rollguard`'s token.
fn service_account_kubeconfig(token: &str) -> PathBuf {
    let admin = Kubeconfig::read_from(kubeconfig_path()).expect("admin kubeconfig");
    let cluster = admin
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .expect("a cluster in the kubeconfig");
    let server = cluster.server.expect("server");
    let ca = cluster.certificate_authority.expect("certificate-authority path");
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster: {{server: '{server}', certificate-authority: '{ca}'}}\nusers:\n- name: rollguard\n  user: {{token: '{token}'}}\ncontexts:\n- name: rollguard\n  context: {{cluster: local, user: rollguard}}\ncurrent-context: rollguard\n"
    );
    let path = std::env::temp_dir().join(format!("rollguard-sa-{}.kubeconfig", std::process::id()));
    std::fs::write(&path, yaml).expect("writing the kubeconfig");
    path
}

#[tokio::test]
async fn the_operator_works_with_only_the_permissions_deploy_grants() {
    let cluster = cluster().await;
    apply_router_crds(&cluster.client).await;
    let manifest = repo_root().join("deploy/rollguard.yaml");
    let manifest = manifest.to_string_lossy().to_string();
    kubectl(&["apply", "--server-side", "--force-conflicts", "-f", &manifest]);
    let token = kubectl(&[
        "create",
        "token",
        "rollguard",
        "-n",
        "rollguard-system",
        "--duration=1h",
    ]);
    let kubeconfig = service_account_kubeconfig(token.trim());

    let ns = TestNamespace::create(&cluster.client, "rbac").await;
    // Routed to InferencePools: the canary then needs every permission Services need, and
    // those of the pools' watch and writes too.
    let apis = Apis::new(&cluster.client, &ns.name).routing_to(rollguard::traffic::BackendKind::InferencePool);
    create_route(&apis).await;
    let policy: RollbackPolicy = serde_json::from_value(json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackPolicy", "metadata": {"name": "llm"},
        "spec": {"rollback": {"mode": "Gradual", "gradual": {"steps": [20, 0], "stepDuration": "1s"}}}
    }))
    .expect("policy");
    let policies: Api<RollbackPolicy> = Api::namespaced(cluster.client.clone(), &ns.name);
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("creating the RollbackPolicy");
    let op = Operator::start_as(
        &ns.name,
        &kubeconfig,
        &[
            "--resync-seconds",
            "2",
            "--leader-elect",
            "--leader-election-namespace",
            &ns.name,
        ],
    );

    let spec = json!({"strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "1s"}}]}},
                      "trafficRouting": routing(&apis),
                      "rollbackPolicyRef": {"name": "llm"}});
    apis.roll_out("chat", &["v1", "v2"], 1, spec).await;
    assert_eq!(
        pool_revision(&apis, "chat").await,
        Some(2),
        "the stable InferencePool was written"
    );
    wait_weight(&apis, 0).await;
    apis.annotate("chat", "rollguard.dev/rollback-to", "previous").await;
    apis.wait_consumed("chat", "rollguard.dev/rollback-to").await;
    let md = apis
        .wait_md("chat", "rolled back to r1", SECS_60, |md| {
            md.status.as_ref().is_some_and(|s| {
                s.stable_revision == Some(1) && s.last_rollback.as_ref().is_some_and(|r| r.completed_at.is_some())
            })
        })
        .await;
    let record = md.status.and_then(|s| s.last_rollback).expect("lastRollback");
    assert_eq!(record.mode, rollguard::api::RollbackMode::Gradual);
    let events = apis.wait_event("chat", "RolledBack", None).await;
    assert!(events.is_some(), "Events are published");
    let valid = wait_object(&policies, "llm", SECS_60, |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.model_deployments == vec!["chat".to_string()])
    })
    .await;
    assert!(valid.is_some(), "the policy's status is written");
    let log = op.log_text();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the operator was refused something:\n{log}"
    );
    let _ = std::fs::remove_file(&kubeconfig);
}
