//! Concurrent and conflicting requests, against the local control plane: one defined
//! outcome each (README, "Conflicting requests"), safety first.

mod support;

use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::watcher;
use rollguard::api::{Phase, RevisionPhase};
use serde_json::json;
use support::httproute::*;
use support::*;

const SECS_60: Duration = Duration::from_secs(60);

async fn setup(prefix: &str) -> (TestNamespace, Apis, Operator) {
    with_route(prefix, &["--resync-seconds", "1"]).await
}

/// Writes several annotations in one request, as one `kubectl annotate a=.. b=..` does.
async fn annotate_all(apis: &Apis, values: &[(&str, &str)]) {
    let annotations: serde_json::Map<String, serde_json::Value> =
        values.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    let patch = json!({"metadata": {"annotations": annotations}});
    apis.md
        .patch("chat", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("annotating");
}

/// A canary of r2 at 20% in an open pause, r1 stable.
async fn canary_paused(apis: &Apis) {
    let spec = json!({"strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}},
                      "trafficRouting": {"gatewayAPI": {"httpRoute": "chat"}}});
    apis.roll_out("chat", &["v1"], 1, spec).await;
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    apis.wait_md("chat", "paused at 20%", SECS_60, |md| {
        md.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::Paused) && s.canary_weight == Some(20))
    })
    .await;
}

async fn wait_overridden(apis: &Apis, key: &str) {
    let event = apis.wait_event("chat", "RequestOverridden", Some("Warning")).await;
    let note = event.and_then(|e| e.note).unwrap_or_default();
    assert!(note.starts_with(key), "a Warning says {key} was overridden: {note:?}");
}

#[tokio::test]
async fn a_rollback_written_with_a_promote_wins() {
    let (_ns, apis, _op) = setup("conflict-promote").await;
    canary_paused(&apis).await;
    annotate_all(
        &apis,
        &[
            ("rollguard.dev/rollback-to", "previous"),
            ("rollguard.dev/promote", "full"),
        ],
    )
    .await;
    let md = apis
        .wait_md("chat", "both consumed, r1 stable", SECS_60, |md| {
            let annotations = md.metadata.annotations.clone().unwrap_or_default();
            !annotations.keys().any(|k| k.starts_with("rollguard.dev/"))
                && md.status.as_ref().is_some_and(|s| {
                    s.stable_revision == Some(1) && s.last_rollback.as_ref().is_some_and(|r| r.completed_at.is_some())
                })
        })
        .await;
    wait_overridden(&apis, "rollguard.dev/promote").await;
    wait_weight(&apis, 0).await;
    let status = md.status.expect("status");
    let r2 = status.history.iter().find(|h| h.revision == 2).expect("r2");
    assert_eq!(r2.phase, RevisionPhase::RolledBack, "r2 was not promoted");
    assert_eq!(apis.service_revision("chat").await, Some(1));
    assert!(
        apis.events("chat", "Promoted")
            .await
            .iter()
            .all(|e| { !e.note.as_deref().unwrap_or_default().contains("revision 2") })
    );
}

#[tokio::test]
async fn an_abort_written_with_a_retry_wins() {
    let (_ns, apis, _op) = setup("conflict-retry").await;
    canary_paused(&apis).await;
    annotate_all(
        &apis,
        &[("rollguard.dev/abort", "true"), ("rollguard.dev/retry", "true")],
    )
    .await;
    let md = apis
        .wait_md("chat", "both consumed, r2 rolled back", SECS_60, |md| {
            let annotations = md.metadata.annotations.clone().unwrap_or_default();
            !annotations.keys().any(|k| k.starts_with("rollguard.dev/"))
                && md.status.as_ref().is_some_and(|s| {
                    s.phase == Some(Phase::Degraded)
                        && s.history
                            .iter()
                            .any(|h| h.revision == 2 && h.phase == RevisionPhase::RolledBack)
                })
        })
        .await;
    wait_overridden(&apis, "rollguard.dev/retry").await;
    wait_weight(&apis, 0).await;
    assert_eq!(md.status.expect("status").stable_revision, Some(1));
    assert!(apis.events("chat", "Retried").await.is_empty(), "not rolled out again");
}

#[tokio::test]
async fn two_rollback_targets_in_quick_succession_end_on_the_last_one_written() {
    let (_ns, apis, _op) = setup("conflict-twice").await;
    apis.roll_out("chat", &["v1", "v2", "v3"], 1, json!({"warmRevisions": 2}))
        .await;
    apis.annotate("chat", "rollguard.dev/rollback-to", "2").await;
    apis.annotate("chat", "rollguard.dev/rollback-to", "1").await;
    let md = apis
        .wait_md("chat", "annotation consumed, r1 stable", SECS_60, |md| {
            let consumed = !has_annotation(md, "rollguard.dev/rollback-to");
            consumed
                && md.status.as_ref().is_some_and(|s| {
                    s.stable_revision == Some(1)
                        && s.last_rollback
                            .as_ref()
                            .is_some_and(|r| r.to_revision == 1 && r.completed_at.is_some())
                })
        })
        .await;
    // Either both were seen (3 -> 2, then 2 -> 1) or only the last (3 -> 1): never is the
    // second value lost to the first one's consumption.
    let requested = apis.events("chat", "RollbackRequested").await;
    assert!(
        (1..=2).contains(&requested.len()),
        "one or two rollbacks: {requested:?}"
    );
    assert_eq!(apis.service_revision("chat").await, Some(1));
    let status = md.status.expect("status");
    let r3 = status.history.iter().find(|h| h.revision == 3).expect("r3");
    assert_eq!(r3.phase, RevisionPhase::RolledBack);
}

#[tokio::test]
async fn a_request_on_a_model_deployment_being_deleted_changes_nothing() {
    let (_ns, apis, _op) = setup("conflict-deleting").await;
    apis.roll_out("chat", &["v1", "v2"], 1, json!({})).await;
    // A finalizer of the test keeps the ModelDeployment in deletion while the garbage
    // collector removes its children.
    let hold = json!({"metadata": {"finalizers": ["test.rollguard.dev/hold"]}});
    apis.md
        .patch("chat", &PatchParams::default(), &Patch::Merge(hold))
        .await
        .expect("adding a finalizer");
    apis.md
        .delete("chat", &DeleteParams::foreground())
        .await
        .expect("deleting");
    apis.annotate("chat", "rollguard.dev/rollback-to", "previous").await;
    let owned = || watcher::Config::default().labels("rollguard.dev/model-deployment=chat");
    let children = wait_list(&apis.deployments, owned(), SECS_60, |d| d.is_empty()).await;
    assert!(
        children.is_some(),
        "its Deployments are garbage-collected, not recreated"
    );
    let services = wait_list(&apis.services, owned(), SECS_60, |s| s.is_empty()).await;
    assert!(services.is_some(), "its Services are garbage-collected, not recreated");
    let md = apis.md.get("chat").await.expect("still there, held by the finalizer");
    assert!(
        has_annotation(&md, "rollguard.dev/rollback-to"),
        "the request was not handled"
    );
    let release = json!({"metadata": {"finalizers": null}});
    apis.md
        .patch("chat", &PatchParams::default(), &Patch::Merge(release))
        .await
        .expect("removing the finalizer");
    assert!(
        wait_gone(&apis.md, "chat", SECS_60).await,
        "the ModelDeployment is gone"
    );
    assert!(
        apis.events("chat", "RollbackRequested").await.is_empty(),
        "no rollback was started"
    );
    assert_eq!(
        apis.md.get_opt("chat").await.expect("reading").map(|m| m.metadata.name),
        None
    );
}
