//! Fights over objects, against the local control plane: a GitOps tool re-applying the
//! manifest every second (server-side apply, its own field manager), and someone else
//! editing the route weights mid-canary.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::core::DynamicObject;
use rollguard::api::{ModelDeployment, Phase, RevisionPhase};
use serde_json::json;
use support::httproute::*;
use support::telemetry::{Scrape, is_write, metrics_address};
use support::*;

const SECS_60: Duration = Duration::from_secs(60);

async fn setup(prefix: &str) -> (TestNamespace, Apis, Operator, String) {
    let (ns, apis, op) = with_route(prefix, &["--resync-seconds", "1", "--metrics-address", "127.0.0.1:0"]).await;
    let address = metrics_address(&op).await;
    (ns, apis, op, address)
}

fn canary(steps: serde_json::Value, policy: bool) -> serde_json::Value {
    let mut spec = json!({"strategy": {"canary": {"steps": steps}},
                          "trafficRouting": {"gatewayAPI": {"httpRoute": "chat"}}});
    if policy {
        spec["rollbackPolicyRef"] = json!({"name": "gradual"});
    }
    spec
}

/// A GitOps controller: server-side applies `md` every second under its own field
/// manager, as Argo CD and Flux do, until dropped. Counts its applies.
struct GitOps {
    applies: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl GitOps {
    fn start(apis: &Apis, md: ModelDeployment) -> GitOps {
        let applies = Arc::new(AtomicUsize::new(0));
        let (api, count) = (apis.md.clone(), applies.clone());
        let mut manifest = serde_json::to_value(&md).expect("manifest");
        manifest["apiVersion"] = json!("rollguard.dev/v1alpha1");
        manifest["kind"] = json!("ModelDeployment");
        let task = tokio::spawn(async move {
            let params = PatchParams::apply("gitops-controller").force();
            loop {
                api.patch("chat", &params, &Patch::Apply(&manifest))
                    .await
                    .expect("the GitOps tool applies its manifest");
                count.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        GitOps { applies, task }
    }

    /// Waits until it has applied `n` more times (each apply is an event to wait for).
    async fn wait_applies(&self, n: usize) {
        let target = self.applies.load(Ordering::SeqCst) + n;
        let done = wait_for(SECS_60, || async {
            (self.applies.load(Ordering::SeqCst) >= target).then_some(())
        })
        .await;
        assert!(done.is_some(), "the GitOps tool stopped applying");
    }
}

impl Drop for GitOps {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_gitops_tool_reapplying_every_second_does_not_disturb_a_canary_a_gradual_rollback_or_a_held_rollback() {
    let (_ns, apis, _op, _address) = setup("fight-gitops").await;
    apis.create_gradual_policy(&[50, 20, 0], "2s").await;
    let steps = json!([{"setWeight": 20}, {"pause": {"duration": "2s"}}, {"setWeight": 60}, {"pause": {}}]);
    apis.roll_out("chat", &["v1"], 1, canary(steps.clone(), true)).await;

    // The Git repository now says v2; the tool applies it every second.
    let gitops = GitOps::start(&apis, model_deployment("chat", "v2", 1, canary(steps, true)));
    let log = record_weights(&apis).await;
    apis.wait_md("chat", "canary paused at 60%", SECS_60, |md| {
        md.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::Paused) && s.canary_weight == Some(60))
    })
    .await;

    // A gradual rollback under the re-applies.
    apis.annotate("chat", "rollguard.dev/abort", "true").await;
    let md = apis
        .wait_md("chat", "rolled back", SECS_60, |md| {
            md.status.as_ref().is_some_and(|s| {
                s.phase == Some(Phase::Degraded) && s.last_rollback.as_ref().is_some_and(|r| r.completed_at.is_some())
            })
        })
        .await;
    let record = md
        .status
        .as_ref()
        .and_then(|s| s.last_rollback.clone())
        .expect("lastRollback");
    let weights = weights(&log);
    assert_eq!(weights, vec![0, 20, 60, 50, 20, 0], "every step once, in order");

    // After the rollback the tool keeps applying the bad commit: r2 stays rolled back.
    gitops.wait_applies(5).await;
    let md = apis.md.get("chat").await.expect("md");
    let status = md.status.expect("status");
    assert_eq!(status.stable_revision, Some(1));
    assert_eq!(status.phase, Some(Phase::Degraded));
    assert_eq!(status.last_rollback, Some(record), "no second rollback");
    let r2 = status.history.iter().find(|h| h.revision == 2).expect("r2");
    assert_eq!(r2.phase, RevisionPhase::RolledBack, "not rolled out again");
    assert_eq!(route_weights(&apis).await.map(|w| w.canary), Some(0));
    // The spec is the tool's: rollguard never took a field of it.
    let managers: Vec<String> = md
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.subresource.is_none() && m.manager.as_deref() == Some("rollguard"))
        .filter(|m| m.fields_v1.as_ref().is_some_and(|f| f.0.get("f:spec").is_some()))
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.is_empty(), "rollguard owns spec fields: {managers:?}");
}

/// Someone else puts `canary`% on the canary backend of the HTTPRoute (the rest on stable).
async fn someone_sets_the_weight(apis: &Apis, canary: i32) {
    let mut route: DynamicObject = routes(apis).get("chat").await.expect("route");
    let rules = route.data["spec"]["rules"].as_array_mut().expect("rules");
    for backend in rules[0]["backendRefs"].as_array_mut().expect("backendRefs") {
        let to_canary = backend["name"] == "chat-canary";
        backend["weight"] = json!(if to_canary { canary } else { 100 - canary });
    }
    routes(apis)
        .replace("chat", &Default::default(), &route)
        .await
        .expect("someone else's edit");
}

/// No write loop: four more reconciles (resync 1 s) after the restore, no route write.
async fn assert_no_further_route_write(address: &str) {
    let restored = Scrape::of(address).await;
    let reconciles = restored.reconciles();
    let later = wait_for(SECS_60, || async {
        let now = Scrape::of(address).await;
        (now.reconciles() >= reconciles + 4.0).then_some(now)
    })
    .await
    .expect("four more reconciles");
    let route_writes = |s: &Scrape| s.requests(|verb, resource| is_write(verb) && resource == "httproutes");
    assert_eq!(
        route_writes(&later),
        route_writes(&restored),
        "the route is written again and again"
    );
}

#[tokio::test]
async fn a_route_weight_someone_else_edits_mid_canary_is_restored_once_with_an_event() {
    let (_ns, apis, _op, address) = setup("fight-route").await;
    let steps = json!([{"setWeight": 20}, {"pause": {}}]);
    apis.roll_out("chat", &["v1"], 1, canary(steps, false)).await;
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    apis.wait_md("chat", "canary paused at 20%", SECS_60, |md| {
        md.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::Paused) && s.canary_weight == Some(20))
    })
    .await;
    let log = record_weights(&apis).await;

    // Someone else sends 70% to the canary.
    someone_sets_the_weight(&apis, 70).await;
    let event = apis.wait_event("chat", "RouteWeightRestored", Some("Warning")).await;
    let note = event.and_then(|e| e.note).unwrap_or_default();
    assert!(note.contains("70%") && note.contains("restored 20%"), "{note}");
    wait_weight(&apis, 20).await;
    assert_no_further_route_write(&address).await;
    let weights = weights(&log);
    assert_eq!(weights, vec![20, 70, 20], "restored once");
    let md = apis.md.get("chat").await.expect("md");
    assert_eq!(
        md.status.and_then(|s| s.phase),
        Some(Phase::Paused),
        "still in the pause"
    );
}

#[tokio::test]
async fn a_route_weight_someone_else_raises_in_a_gradual_hold_is_restored_once_on_the_same_clock() {
    use rollguard::api::labels::ROLLBACK_STEP;
    let (_ns, apis, _op, address) = setup("fight-gradual-route").await;
    apis.create_gradual_policy(&[50, 20, 0], "1h").await;
    apis.roll_out(
        "chat",
        &["v1"],
        1,
        canary(json!([{"setWeight": 60}, {"pause": {}}]), true),
    )
    .await;
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    wait_weight(&apis, 60).await;
    apis.annotate("chat", "rollguard.dev/abort", "true").await;
    wait_weight(&apis, 50).await;
    let hold = wait_object(&apis.deployments, "chat-r2", SECS_60, |d| {
        step_label(d, ROLLBACK_STEP).is_some()
    })
    .await
    .and_then(|d| step_label(&d, ROLLBACK_STEP))
    .expect("the hold at 50%");
    let log = record_weights(&apis).await;

    // Someone else sends 90% back to the revision being rolled back.
    someone_sets_the_weight(&apis, 90).await;
    let event = apis.wait_event("chat", "RouteWeightRestored", Some("Warning")).await;
    let note = event.and_then(|e| e.note).unwrap_or_default();
    assert!(note.contains("90%") && note.contains("restored 50%"), "{note}");
    wait_weight(&apis, 50).await;
    assert_no_further_route_write(&address).await;
    assert_eq!(weights(&log), vec![50, 90, 50], "restored once");
    assert_eq!(
        apis.step_on("chat-r2", ROLLBACK_STEP).await,
        Some(hold),
        "the hold keeps its clock"
    );
    let md = apis.md.get("chat").await.expect("md");
    assert!(
        md.status
            .and_then(|s| s.last_rollback)
            .is_some_and(|r| r.completed_at.is_none()),
        "still rolling back"
    );
}
