//! Idempotence and restarts of the operator, against the local control plane.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::ListParams;
use rollguard::api::Phase;
use serde_json::json;
use support::*;

/// Everything rollguard writes, as versions: a change means a write happened.
async fn written_versions(apis: &Apis) -> BTreeMap<String, String> {
    let selector = ListParams::default().labels("rollguard.dev/model-deployment=chat");
    let mut out = BTreeMap::new();
    let md = apis.md.get("chat").await.expect("md");
    out.insert("ModelDeployment/chat".into(), md.resource_version().unwrap_or_default());
    for s in apis.services.list(&selector).await.expect("services") {
        out.insert(
            format!("Service/{}", s.name_any()),
            s.resource_version().unwrap_or_default(),
        );
    }
    for c in apis.revisions.list(&selector).await.expect("revisions") {
        out.insert(
            format!("ControllerRevision/{}", c.name_any()),
            c.resource_version().unwrap_or_default(),
        );
    }
    for d in apis.deployments.list(&selector).await.expect("deployments") {
        // The Deployment controller updates status; rollguard's writes show in the spec
        // generation and in the time of its managed-fields entry.
        let ours = d
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter(|m| m.manager.as_deref() == Some("rollguard"))
            .map(|m| format!("{:?}", m.time))
            .collect::<Vec<_>>()
            .join(",");
        out.insert(
            format!("Deployment/{}", d.name_any()),
            format!("gen {:?} rollguard {ours}", d.metadata.generation),
        );
    }
    out
}

#[tokio::test]
async fn a_steady_state_makes_no_writes_over_several_resync_periods() {
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "steady").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    let op = Operator::start_with(&ns.name, &["--resync-seconds", "1"]);
    apis.roll_out("chat", &["v1", "v2"], 2, json!({})).await;
    // Let the Deployment controller and kwok settle: every Deployment's status is current,
    // with as many replicas as it wants, all available.
    let settled = |d: &k8s_openapi::api::apps::v1::Deployment| {
        let want = d.spec.replicas.unwrap_or(1);
        d.status.as_ref().is_some_and(|s| {
            s.observed_generation == d.metadata.generation
                && s.replicas.unwrap_or(0) == want
                && s.updated_replicas.unwrap_or(0) == want
                && s.available_replicas.unwrap_or(0) == want
        })
    };
    let owned = kube::runtime::watcher::Config::default().labels("rollguard.dev/model-deployment=chat");
    let all_settled = wait_list(&apis.deployments, owned, Duration::from_secs(60), |ds| {
        ds.len() == 2 && ds.iter().all(|d| settled(d))
    })
    .await;
    assert!(all_settled.is_some(), "the Deployments never settled");
    op.wait_reconciles("chat", 1).await;

    let before = written_versions(&apis).await;
    let log_before = op.log_text();
    // Several resync periods (1 s): the operator looks again five times.
    op.wait_reconciles("chat", 5).await;
    let after = written_versions(&apis).await;
    let log_after = op.log_text();

    assert_eq!(before, after, "objects changed in a steady state");
    let new_log = &log_after[log_before.len().min(log_after.len())..];
    let reconciles = new_log.lines().filter(|l| l.contains("reconciled")).count();
    let writes = new_log.lines().filter(|l| l.contains("writes=")).count();
    assert!(
        reconciles >= 4,
        "expected five reconciles, saw {reconciles}:\n{new_log}"
    );
    assert_eq!(writes, 0, "a steady state made writes:\n{new_log}");
}

#[tokio::test]
async fn an_operator_killed_at_any_point_of_a_rollout_converges_with_history_intact() {
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "restart").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    let start = || Operator::start_with(&ns.name, &["--resync-seconds", "1"]);

    // Killed right after it saw the new ModelDeployment, several times.
    let mut op = start();
    apis.create(&model_deployment(
        "chat",
        "v1",
        2,
        json!({"strategy": {"blueGreen": {"autoPromote": false}}}),
    ))
    .await;
    for delay_ms in [50, 150, 300] {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        op.kill();
        op = start();
    }
    apis.wait_healthy("chat", 1).await;

    // Killed mid-rollout, while waiting for promotion; the promote arrives while it is down.
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    op.kill();
    op = start();
    apis.wait_md("chat", "Paused on r2", Duration::from_secs(60), |md| {
        md.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::Paused) && s.canary_revision == Some(2))
    })
    .await;
    op.kill();
    apis.annotate("chat", "rollguard.dev/promote", "true").await;
    op = start();
    apis.wait_healthy("chat", 2).await;

    // Killed at several points of a rollback.
    apis.annotate("chat", "rollguard.dev/rollback-to", "previous").await;
    for delay_ms in [0, 100, 200] {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        op.kill();
        op = start();
    }
    let md = apis
        .wait_md("chat", "rolled back to r1", Duration::from_secs(60), |md| {
            md.status
                .as_ref()
                .is_some_and(|s| s.stable_revision == Some(1) && s.phase == Some(Phase::Degraded))
        })
        .await;
    let _keep = op;

    let status = md.status.expect("status");
    let revs: Vec<i64> = status.history.iter().map(|h| h.revision).collect();
    assert_eq!(revs, vec![2, 1], "history intact, no duplicate numbers");
    let selector = ListParams::default().labels("rollguard.dev/model-deployment=chat");
    let mut numbers: Vec<i64> = apis
        .revisions
        .list(&selector)
        .await
        .expect("list")
        .items
        .iter()
        .filter_map(|c| c.revision)
        .collect();
    numbers.sort();
    assert_eq!(numbers, vec![1, 2], "one ControllerRevision per revision");
    let record = status.last_rollback.expect("lastRollback");
    assert_eq!((record.from_revision, record.to_revision), (2, 1));
    assert_eq!(apis.service_revision("chat").await, Some(1));
}
