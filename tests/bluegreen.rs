//! Blue/green rollouts, revisions and instant rollback against the local control plane,
//! with Deployments made Available by kwok.

mod support;

use std::time::Duration;

use kube::api::{DeleteParams, ListParams};
use kube::runtime::watcher;
use rollguard::api::{Phase, RevisionPhase, RollbackTrigger};
use serde_json::json;
use support::*;

const SECS_60: Duration = Duration::from_secs(60);

fn phase_of(md: &rollguard::api::ModelDeployment, rev: i64) -> Option<RevisionPhase> {
    md.status
        .as_ref()?
        .history
        .iter()
        .find(|h| h.revision == rev)
        .map(|h| h.phase)
}

async fn setup(prefix: &str) -> (TestNamespace, Apis, Operator) {
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, prefix).await;
    let apis = Apis::new(&cluster.client, &ns.name);
    let operator = Operator::start_with(&ns.name, &["--resync-seconds", "1"]);
    (ns, apis, operator)
}

#[tokio::test]
async fn blue_green_v1_to_v2_switches_the_stable_service_and_keeps_v1_warm() {
    let (_ns, apis, _op) = setup("bg").await;
    apis.create(&model_deployment("chat", "v1", 2, json!({}))).await;
    apis.wait_healthy("chat", 1).await;
    assert_eq!(apis.service_revision("chat").await, Some(1));

    // The Deployment carries the template, labels, env and owner.
    let d = apis.deployments.get("chat-r1").await.expect("Deployment chat-r1");
    assert_eq!(d.spec.replicas, Some(2));
    let labels = d
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .expect("pod labels");
    assert_eq!(
        labels.get("rollguard.dev/model-deployment").map(String::as_str),
        Some("chat")
    );
    assert_eq!(labels.get("rollguard.dev/revision").map(String::as_str), Some("1"));
    let container = &d.spec.template.spec.as_ref().expect("pod spec").containers[0];
    assert_eq!(container.image.as_deref(), Some("vllm/vllm-openai:v0.11.0"));
    let env: Vec<_> = container
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.value))
        .collect();
    assert!(env.contains(&("MODEL_VERSION".into(), Some("v1".into()))), "{env:?}");
    assert!(env.contains(&("MODEL_NAME".into(), Some("llama-3.1-8b-instruct".into()))));
    assert!(env.contains(&("MODEL_URI".into(), Some("hf://meta-llama/Llama-3.1-8B-Instruct".into()))));
    let owner = &d.metadata.owner_references.expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("ModelDeployment", "chat", Some(true))
    );

    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    let md = apis.wait_healthy("chat", 2).await;
    assert_eq!(apis.service_revision("chat").await, Some(2));
    assert_eq!(apis.service_revision("chat-canary").await, Some(2));
    assert_eq!(phase_of(&md, 1), Some(RevisionPhase::Superseded));
    assert_eq!(phase_of(&md, 2), Some(RevisionPhase::Stable));
    assert_eq!(
        apis.deployment_replicas("chat-r1").await,
        Some(2),
        "warmRevisions=1 keeps r1 running"
    );
    assert_eq!(condition(&md, "Ready").map(|c| c.0).as_deref(), Some("True"));
    assert_eq!(condition(&md, "Stalled").map(|c| c.0).as_deref(), Some("False"));

    // Revisions are listable by version with a label selector.
    let v1 = apis
        .revisions
        .list(&ListParams::default().labels("rollguard.dev/version=v1"))
        .await
        .expect("list");
    assert_eq!(v1.items.len(), 1);
    assert_eq!(v1.items[0].revision, Some(1));
    assert!(!apis.events("chat", "Promoted").await.is_empty());
}

#[tokio::test]
async fn rollback_to_previous_restores_r1_and_holds_r2_until_retry() {
    let (_ns, apis, op) = setup("rb-prev").await;
    let before = apis.roll_out("chat", &["v1", "v2"], 1, json!({})).await;

    apis.annotate("chat", "rollguard.dev/rollback-to", "previous").await;
    let md = apis
        .wait_md("chat", "rolled back to r1, annotation consumed", SECS_60, |md| {
            let consumed = !has_annotation(md, "rollguard.dev/rollback-to");
            consumed
                && md
                    .status
                    .as_ref()
                    .is_some_and(|s| s.stable_revision == Some(1) && s.phase == Some(Phase::Degraded))
        })
        .await;
    assert_eq!(apis.service_revision("chat").await, Some(1));
    assert_eq!(md.spec, before.spec, "the operator never writes spec");
    assert_eq!(phase_of(&md, 2), Some(RevisionPhase::RolledBack));
    assert_eq!(condition(&md, "Stalled").map(|c| c.0).as_deref(), Some("True"));
    let annotations = md.metadata.annotations.clone().unwrap_or_default();
    assert!(
        !annotations.contains_key("rollguard.dev/rollback-to"),
        "annotation consumed: {annotations:?}"
    );
    let record = md
        .status
        .as_ref()
        .and_then(|s| s.last_rollback.clone())
        .expect("lastRollback");
    assert_eq!(
        (record.from_revision, record.to_revision, record.trigger),
        (2, 1, RollbackTrigger::Manual)
    );
    assert!(record.completed_at.is_some());
    let reason = md
        .status
        .as_ref()
        .and_then(|s| s.history.iter().find(|h| h.revision == 2))
        .and_then(|h| h.reason.clone());
    assert!(reason.is_some_and(|r| r.contains("rollback-to")));

    // r2 is not deployed again over several reconciles (resync is 1s).
    op.wait_reconciles("chat", 3).await;
    let md = apis.md.get("chat").await.expect("get");
    assert_eq!(md.status.as_ref().and_then(|s| s.stable_revision), Some(1));
    assert_eq!(apis.service_revision("chat").await, Some(1));
    assert_eq!(apis.deployment_replicas("chat-r2").await, Some(0));
    assert!(
        op.log_text().matches("reconciled").count() >= 3,
        "the operator kept reconciling"
    );

    // retry rolls r2 out again.
    apis.annotate("chat", "rollguard.dev/retry", "true").await;
    let md = apis.wait_healthy("chat", 2).await;
    assert_eq!(phase_of(&md, 2), Some(RevisionPhase::Stable));
    assert_eq!(apis.service_revision("chat").await, Some(2));
}

#[tokio::test]
async fn rollback_to_a_version_label() {
    let (_ns, apis, _op) = setup("rb-version").await;
    let versions = ["2026-11-01", "2026-11-10", "2026-11-20"];
    apis.roll_out("chat", &versions, 1, json!({"warmRevisions": 2})).await;

    apis.annotate("chat", "rollguard.dev/rollback-to", "version:2026-11-01")
        .await;
    let md = apis
        .wait_md("chat", "stable r1", SECS_60, |md| {
            md.status.as_ref().is_some_and(|s| s.stable_revision == Some(1))
        })
        .await;
    assert_eq!(apis.service_revision("chat").await, Some(1));
    assert_eq!(phase_of(&md, 3), Some(RevisionPhase::RolledBack));
    assert_eq!(phase_of(&md, 2), Some(RevisionPhase::Superseded));
}

#[tokio::test]
async fn rollback_to_a_cold_revision_waits_until_it_is_available() {
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "rb-cold").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    // A node of this test only: cordoning it keeps the revision's pods Pending at will.
    let node = FakeNode::create(&cluster.client, &format!("cold-{}", ns.name)).await;
    let op = Operator::start_with(&ns.name, &["--resync-seconds", "1"]);
    let pinned = json!({"template": {"spec": {
        "nodeSelector": {"rollguard.dev/test-node": node.name},
        "containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0"}]}}});
    apis.roll_out("chat", &["v1", "v2", "v3"], 1, pinned).await;
    // warmRevisions=1: r2 is warm, r1 is cold.
    let r1_cold = wait_object(&apis.deployments, "chat-r1", SECS_60, |d| d.spec.replicas == Some(0)).await;
    assert!(r1_cold.is_some(), "r1 scaled to 0");

    node.cordon(&cluster.client, true).await;
    apis.annotate("chat", "rollguard.dev/rollback-to", "1").await;
    let md = apis
        .wait_md("chat", "RollingBack", SECS_60, |md| {
            md.status.as_ref().is_some_and(|s| s.phase == Some(Phase::RollingBack))
        })
        .await;
    let message = md.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default();
    assert!(message.contains("0/1 replicas ready"), "{message}");
    // While r1 cannot become Available, traffic stays on r3.
    op.wait_reconciles("chat", 2).await;
    assert_eq!(apis.service_revision("chat").await, Some(3));
    assert_eq!(
        apis.deployment_replicas("chat-r1").await,
        Some(1),
        "r1 is scaled up first"
    );

    node.cordon(&cluster.client, false).await;
    let md = apis
        .wait_md("chat", "stable r1", SECS_60, |md| {
            md.status.as_ref().is_some_and(|s| s.stable_revision == Some(1))
        })
        .await;
    assert_eq!(apis.service_revision("chat").await, Some(1));
    let record = md.status.and_then(|s| s.last_rollback).expect("lastRollback");
    assert_eq!((record.from_revision, record.to_revision), (3, 1));
    assert!(record.completed_at.is_some());
}

#[tokio::test]
async fn a_cold_revision_whose_deployment_was_pruned_is_restored_from_its_controller_revision() {
    let (_ns, apis, _op) = setup("rb-restore").await;
    apis.roll_out("chat", &["v1", "v2"], 1, json!({"warmRevisions": 0}))
        .await;
    apis.deployments
        .delete("chat-r1", &DeleteParams::default())
        .await
        .expect("deleting chat-r1");
    assert!(wait_gone(&apis.deployments, "chat-r1", SECS_60).await, "chat-r1 gone");

    apis.annotate("chat", "rollguard.dev/rollback-to", "previous").await;
    apis.wait_md("chat", "stable r1", SECS_60, |md| {
        md.status.as_ref().is_some_and(|s| s.stable_revision == Some(1))
    })
    .await;
    let d = apis.deployments.get("chat-r1").await.expect("chat-r1 restored");
    let env = d.spec.template.spec.expect("pod").containers[0]
        .env
        .clone()
        .unwrap_or_default();
    assert!(
        env.iter()
            .any(|e| e.name == "MODEL_VERSION" && e.value.as_deref() == Some("v1"))
    );
}

#[tokio::test]
async fn a_revision_not_available_by_the_progress_deadline_is_failed_and_rolled_back() {
    let (_ns, apis, _op) = setup("deadline").await;
    apis.create(&model_deployment(
        "chat",
        "v1",
        1,
        json!({"progressDeadlineSeconds": 30}),
    ))
    .await;
    apis.wait_healthy("chat", 1).await;
    // No node has this label: the pod cannot be scheduled.
    apis.patch_spec(
        "chat",
        json!({"model": {"version": "v2"}, "template": {"spec": {
            "nodeSelector": {"rollguard.dev/no-such-node": "true"},
            "containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0"}]}}}),
    )
    .await;
    apis.wait_md("chat", "Progressing on r2", SECS_60, |md| {
        md.status
            .as_ref()
            .is_some_and(|s| s.current_revision == Some(2) && s.phase == Some(Phase::Progressing))
    })
    .await;
    assert_eq!(apis.service_revision("chat").await, Some(1));
    assert_eq!(apis.service_revision("chat-canary").await, Some(2));
    let md = apis
        .wait_md("chat", "Degraded after the deadline", Duration::from_secs(90), |md| {
            md.status.as_ref().is_some_and(|s| s.phase == Some(Phase::Degraded))
        })
        .await;
    assert_eq!(phase_of(&md, 2), Some(RevisionPhase::Failed));
    let record = md
        .status
        .as_ref()
        .and_then(|s| s.last_rollback.clone())
        .expect("lastRollback");
    assert_eq!(
        (record.from_revision, record.to_revision, record.trigger),
        (2, 1, RollbackTrigger::ProgressDeadline)
    );
    assert_eq!(apis.service_revision("chat").await, Some(1));
    assert_eq!(apis.service_revision("chat-canary").await, Some(1));
    assert_eq!(apis.deployment_replicas("chat-r2").await, Some(0));
    assert_eq!(condition(&md, "Stalled").map(|c| c.0).as_deref(), Some("True"));
    assert!(!apis.events("chat", "ProgressDeadlineExceeded").await.is_empty());
}

#[tokio::test]
async fn bad_annotation_values_get_a_warning_and_change_nothing_else() {
    let (_ns, apis, _op) = setup("bad-annotations").await;
    let before = apis.roll_out("chat", &["v1", "v2"], 1, json!({})).await;
    let before_status = before.status.clone().expect("status");

    for (key, value) in [
        ("rollguard.dev/rollback-to", "yesterday"),
        ("rollguard.dev/rollback-to", "99"),
        ("rollguard.dev/rollback-to", "version:none-such"),
        ("rollguard.dev/abort", "maybe"),
        ("rollguard.dev/promote", "later"),
        ("rollguard.dev/retry", "please"),
    ] {
        apis.annotate("chat", key, value).await;
        apis.wait_consumed("chat", key).await;
        apis.wait_md("chat", "AnnotationAccepted=False", SECS_60, |m| {
            condition(m, "AnnotationAccepted").is_some_and(|(s, _, msg)| s == "False" && msg.contains(value))
        })
        .await;
        let now = apis.md.get("chat").await.expect("get").status.expect("status");
        assert_eq!(now.stable_revision, before_status.stable_revision, "{key}={value}");
        assert_eq!(now.history, before_status.history, "{key}={value}");
        assert_eq!(now.last_rollback, before_status.last_rollback, "{key}={value}");
        assert_eq!(now.phase, Some(Phase::Healthy));
    }
    assert_eq!(apis.service_revision("chat").await, Some(2));
    let warnings = apis.events("chat", "InvalidAnnotation").await;
    assert!(warnings.len() >= 6, "one Warning per bad value, got {}", warnings.len());
    assert!(warnings.iter().all(|e| e.type_.as_deref() == Some("Warning")));
}

#[tokio::test]
async fn promote_annotation_switches_a_waiting_blue_green_and_abort_returns_to_stable() {
    let (_ns, apis, _op) = setup("promote").await;
    let manual = json!({"strategy": {"blueGreen": {"autoPromote": false}}});
    apis.create(&model_deployment("chat", "v1", 1, manual)).await;
    apis.wait_healthy("chat", 1).await;

    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    apis.wait_md("chat", "Paused waiting for promote", SECS_60, |md| {
        md.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::Paused) && s.canary_revision == Some(2))
    })
    .await;
    assert_eq!(apis.service_revision("chat").await, Some(1));
    assert_eq!(apis.service_revision("chat-canary").await, Some(2));
    apis.annotate("chat", "rollguard.dev/promote", "true").await;
    apis.wait_healthy("chat", 2).await;
    assert_eq!(apis.service_revision("chat").await, Some(2));
    apis.wait_consumed("chat", "rollguard.dev/promote").await;

    apis.patch_spec("chat", json!({"model": {"version": "v3"}})).await;
    apis.wait_md("chat", "Paused on r3", SECS_60, |md| {
        md.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::Paused) && s.canary_revision == Some(3))
    })
    .await;
    apis.annotate("chat", "rollguard.dev/abort", "true").await;
    let md = apis
        .wait_md("chat", "Degraded after abort", SECS_60, |md| {
            md.status.as_ref().is_some_and(|s| s.phase == Some(Phase::Degraded))
        })
        .await;
    assert_eq!(phase_of(&md, 3), Some(RevisionPhase::RolledBack));
    assert_eq!(apis.service_revision("chat").await, Some(2));
    assert_eq!(apis.service_revision("chat-canary").await, Some(2));
    let record = md.status.and_then(|s| s.last_rollback).expect("lastRollback");
    assert_eq!((record.from_revision, record.to_revision), (3, 2));
}

#[tokio::test]
async fn a_git_revert_to_a_warm_revision_is_switched_at_once() {
    let (_ns, apis, _op) = setup("revert").await;
    let manual = json!({"strategy": {"blueGreen": {"autoPromote": false}}});
    apis.create(&model_deployment("chat", "v1", 1, manual)).await;
    apis.wait_healthy("chat", 1).await;
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    apis.wait_md("chat", "Paused on r2", SECS_60, |md| {
        md.status.as_ref().is_some_and(|s| s.phase == Some(Phase::Paused))
    })
    .await;
    apis.annotate("chat", "rollguard.dev/promote", "true").await;
    apis.wait_healthy("chat", 2).await;

    // The spec returns to v1 (a revert in Git): r1 is warm and takes traffic with no promote.
    apis.patch_spec("chat", json!({"model": {"version": "v1"}})).await;
    let md = apis.wait_healthy("chat", 1).await;
    let status = md.status.expect("status");
    assert_eq!(status.current_revision, Some(1), "no new revision for a known spec");
    assert_eq!(status.history.len(), 2);
    assert_eq!(apis.service_revision("chat").await, Some(1));
}

#[tokio::test]
async fn history_is_bounded_and_old_revisions_are_pruned() {
    let (_ns, apis, _op) = setup("prune").await;
    apis.roll_out("chat", &["v1", "v2", "v3", "v4"], 1, json!({"revisionHistoryLimit": 2}))
        .await;
    let md = apis
        .wait_md("chat", "history of 2", SECS_60, |md| {
            md.status.as_ref().is_some_and(|s| s.history.len() == 2)
        })
        .await;
    let revs: Vec<i64> = md.status.expect("status").history.iter().map(|h| h.revision).collect();
    assert_eq!(revs, vec![4, 3]);
    let owned = || watcher::Config::default().labels("rollguard.dev/model-deployment=chat");
    let kept = ["chat-r3", "chat-r4"];
    let revisions = wait_list(&apis.revisions, owned(), SECS_60, |r| names(r) == kept).await;
    assert!(revisions.is_some(), "r1 and r2 pruned (ControllerRevisions)");
    let deployments = wait_list(&apis.deployments, owned(), SECS_60, |d| names(d) == kept).await;
    assert!(deployments.is_some(), "r1 and r2 pruned (Deployments)");
}

#[tokio::test]
async fn deleting_the_model_deployment_deletes_all_its_children() {
    let (_ns, apis, _op) = setup("delete").await;
    apis.roll_out("chat", &["v1", "v2"], 1, json!({})).await;
    apis.md
        .delete("chat", &DeleteParams::foreground())
        .await
        .expect("deleting");
    let owned = || watcher::Config::default().labels("rollguard.dev/model-deployment=chat");
    let d = wait_list(&apis.deployments, owned(), SECS_60, |d| d.is_empty()).await;
    let s = wait_list(&apis.services, owned(), SECS_60, |s| s.is_empty()).await;
    let c = wait_list(&apis.revisions, owned(), SECS_60, |c| c.is_empty()).await;
    assert!(
        d.is_some() && s.is_some() && c.is_some(),
        "Deployments, Services and ControllerRevisions are garbage-collected"
    );
}
