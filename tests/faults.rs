//! The operator killed (SIGKILL) at exact points of a rollout and of a rollback, against the
//! local control plane. A proxy between the operator and the API server
//! ([`support::fault_proxy`]) kills it right after the API server carried out a chosen write
//! and before the operator heard the answer; a new operator takes over. The same proxy also
//! holds back what a watch delivers, as a congested or half-dead connection would.
//!
//! Afterwards: no step repeated or skipped, holds not restarted from zero, the same
//! `lastRollback` (`startedAt` unchanged), history intact, no duplicate revision, no second
//! rollback.

mod support;

use std::time::Duration;

use kube::ResourceExt;
use kube::api::ListParams;
use rollguard::api::labels::{CANARY_STEP, ROLLBACK_STEP};
use rollguard::api::{ModelDeployment, Phase, RevisionPhase};
use rollguard::plan::CanaryStepState;
use serde_json::json;
use support::fault_proxy::{FaultProxy, Seen};
use support::httproute::*;
use support::*;

const SECS_60: Duration = Duration::from_secs(60);

struct Scene {
    _ns: TestNamespace,
    apis: Apis,
    proxy: FaultProxy,
    namespace: String,
}

impl Scene {
    async fn new(prefix: &str) -> Scene {
        let cluster = cluster().await;
        apply_router_crds(&cluster.client).await;
        let ns = TestNamespace::create(&cluster.client, prefix).await;
        let apis = Apis::new(&cluster.client, &ns.name);
        create_route(&apis).await;
        let proxy = FaultProxy::start(&cluster.client).await;
        let namespace = ns.name.clone();
        Scene {
            _ns: ns,
            apis,
            proxy,
            namespace,
        }
    }

    /// An operator whose requests pass through the proxy.
    fn operator_behind_proxy(&self) -> Operator {
        Operator::start_as(&self.namespace, &self.proxy.kubeconfig, &["--resync-seconds", "2"])
    }

    /// An operator behind the proxy, and chat's canary (revision 2) paused at 60% with the
    /// gradual policy (50%, 20%, 0%, each held `hold` seconds).
    async fn paused_at_60_with_a_gradual_policy(&self, hold: u64) -> Operator {
        self.apis.create_gradual_policy(&[50, 20, 0], &format!("{hold}s")).await;
        let mut spec = canary(json!([{"setWeight": 60}, {"pause": {}}]));
        spec["rollbackPolicyRef"] = json!({"name": "gradual"});
        let op = self.operator_behind_proxy();
        self.apis.roll_out("chat", &["v1"], 1, spec).await;
        self.apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
        wait_weight(&self.apis, 60).await;
        op
    }

    /// An operator that talks to the API server directly: the one that takes over.
    fn operator(&self) -> Operator {
        Operator::start_with(&self.namespace, &["--resync-seconds", "2"])
    }

    /// With no operator running, waits until half of the `secs`-long hold `step` has
    /// passed, starts the operator that takes over, and checks that the hold ends (the
    /// route reads `next`) on its first clock: not before `secs`, and well before a hold
    /// restarted from zero would (`secs` more than half of it later).
    async fn take_over_halfway(&self, step: &CanaryStepState, secs: u64, next: i32) -> Operator {
        wait_halfway(step, secs).await;
        let op = self.operator();
        self.assert_held(step, secs, next).await;
        op
    }

    /// Checks that the `secs`-long hold `step` ended (the route reads `next`) on its first
    /// clock (see [`Scene::take_over_halfway`]).
    async fn assert_held(&self, step: &CanaryStepState, secs: u64, next: i32) {
        let started = started(step);
        let seen = wait_weight(&self.apis, next).await;
        let seen = std::time::SystemTime::now() - seen.elapsed();
        let held = seen.duration_since(started).unwrap_or_default();
        assert!(
            held >= Duration::from_secs(secs) - Duration::from_millis(300),
            "the hold was cut short: {held:?}"
        );
        assert!(
            held < Duration::from_secs(secs + secs / 2 - 4),
            "the hold was restarted from zero: {held:?} instead of {secs}s"
        );
    }

    /// Waits (90 s at most) until `lastRollback` has completed; returns the ModelDeployment.
    async fn wait_rollback_completed(&self) -> ModelDeployment {
        self.apis
            .wait_md("chat", "the rollback completed", Duration::from_secs(90), |md| {
                md.status
                    .as_ref()
                    .and_then(|st| st.last_rollback.as_ref())
                    .is_some_and(|r| r.completed_at.is_some())
            })
            .await
    }

    async fn md(&self) -> ModelDeployment {
        self.apis.md.get("chat").await.expect("reading the ModelDeployment")
    }

    /// History and ControllerRevisions: one per revision, no duplicate number.
    async fn assert_history(&self, md: &ModelDeployment, revisions: &[i64]) {
        let status = md.status.as_ref().expect("status");
        let mut history: Vec<i64> = status.history.iter().map(|h| h.revision).collect();
        history.sort();
        assert_eq!(history, revisions, "history intact, no duplicate revision");
        let selector = ListParams::default().labels("rollguard.dev/model-deployment=chat");
        let mut numbers: Vec<i64> = self
            .apis
            .revisions
            .list(&selector)
            .await
            .expect("listing ControllerRevisions")
            .items
            .iter()
            .filter_map(|c| c.revision)
            .collect();
        numbers.sort();
        assert_eq!(numbers, revisions, "one ControllerRevision per revision");
    }
}

/// Waits until half of the `secs`-long hold `step` has passed.
async fn wait_halfway(step: &CanaryStepState, secs: u64) {
    let half = started(step) + Duration::from_secs(secs / 2);
    if let Ok(left) = half.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
}

fn canary(steps: serde_json::Value) -> serde_json::Value {
    json!({"strategy": {"canary": {"steps": steps}}, "trafficRouting": {"gatewayAPI": {"httpRoute": "chat"}}})
}

/// A route write that puts `weight` on the canary backend (the stable one gets the rest).
fn route_write_of(weight: i32) -> impl Fn(&Seen<'_>) -> bool + Send + Sync + 'static {
    move |s| s.write_to("/httproutes/chat") && s.body.contains(&format!("\"weight\":{weight}"))
}

/// A status write of the ModelDeployment whose body contains `text`.
fn status_write_with(text: &'static str) -> impl Fn(&Seen<'_>) -> bool + Send + Sync + 'static {
    move |s| s.write_to("/modeldeployments/chat/status") && s.body.contains(text)
}

#[tokio::test]
async fn killed_between_a_canary_weight_write_and_its_status_write_no_step_is_repeated_or_skipped() {
    let s = Scene::new("fault-weight").await;
    let steps = json!([{"setWeight": 10}, {"setWeight": 30}, {"pause": {}}]);
    let mut op = s.operator_behind_proxy();
    s.apis.roll_out("chat", &["v1"], 1, canary(steps)).await;
    let log = record_weights(&s.apis).await;

    let request = s
        .proxy
        .kill_during(&mut op, route_write_of(30), async {
            s.apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
        })
        .await;
    // The exact point: the route carries 30, the status does not know it yet.
    assert_eq!(route_weights(&s.apis).await.map(|w| w.canary), Some(30), "{request}");
    let before = s.md().await.status.expect("status");
    assert_ne!(before.canary_weight, Some(30), "killed before the status write");

    let _op = s.operator();
    let md = s
        .apis
        .wait_md("chat", "paused at step 3 with 30%", SECS_60, |md| {
            md.status.as_ref().is_some_and(|st| {
                st.phase == Some(Phase::Paused) && st.current_step_index == Some(2) && st.canary_weight == Some(30)
            })
        })
        .await;
    let weights = weights(&log);
    assert_eq!(weights, vec![0, 10, 30], "each step once, in order");
    s.assert_history(&md, &[1, 2]).await;
    let step = s
        .apis
        .step_on("chat-r2", CANARY_STEP)
        .await
        .expect("the step on chat-r2");
    assert_eq!(step.index, 2, "the pause is the step being run");
}

#[tokio::test]
async fn killed_in_a_timed_pause_the_pause_is_not_restarted_from_zero() {
    const PAUSE: u64 = 20;
    let s = Scene::new("fault-pause").await;
    let steps =
        json!([{"setWeight": 10}, {"pause": {"duration": format!("{PAUSE}s")}}, {"setWeight": 50}, {"pause": {}}]);
    let mut op = s.operator_behind_proxy();
    s.apis.roll_out("chat", &["v1"], 1, canary(steps)).await;
    let log = record_weights(&s.apis).await;

    s.proxy
        .kill_during(&mut op, status_write_with("\"Paused\""), async {
            s.apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
        })
        .await;
    let paused = s
        .apis
        .step_on("chat-r2", CANARY_STEP)
        .await
        .expect("the pause step on chat-r2");
    assert_eq!(paused.index, 1, "killed in the pause");
    let _op = s.take_over_halfway(&paused, PAUSE, 50).await;
    let next = wait_object(&s.apis.deployments, "chat-r2", SECS_60, |d| {
        step_label(d, CANARY_STEP).is_some_and(|st| st.index == 3)
    })
    .await;
    assert!(next.is_some(), "the open pause after 50% is the step being run");
    let weights = weights(&log);
    assert_eq!(weights, vec![0, 10, 50], "each step once, in order");
    let md = s.md().await;
    s.assert_history(&md, &[1, 2]).await;
}

/// Events are queued off the reconcile path; one killed before it reached them would lose
/// them for good (its successor reads a status that already records the abort). So the
/// status write after the abort's waits for the abort's Events: held back by the proxy, the
/// Aborted Event keeps that write (where the operator is killed) from happening.
#[tokio::test]
async fn killed_at_the_status_write_after_an_abort_the_aborts_events_are_out() {
    let s = Scene::new("fault-events").await;
    let mut op = s.paused_at_60_with_a_gradual_policy(20).await;

    let mut event = s.proxy.hold(|r| {
        r.method == http::Method::POST && r.path.contains("/events") && r.body.contains("\"reason\":\"Aborted\"")
    });
    let killed = s
        .proxy
        .kill_after(op.child.id(), 1, status_write_with("at 50% (step 1 of 3)"));
    tokio::pin!(killed);
    s.apis.annotate("chat", "rollguard.dev/abort", "true").await;
    event.arrived().await;
    // The abort's reconcile is done (its Events go out after its status write); the next
    // one, recording the hold at 50%, would write at once. It waits for the Event (up to 5 s).
    assert!(
        tokio::time::timeout(Duration::from_secs(3), &mut killed).await.is_err(),
        "the status moved on while the abort's Event was still held back"
    );
    event.release();
    tokio::time::timeout(SECS_60, &mut killed)
        .await
        .expect("killed at the status write that records the hold at 50%")
        .expect("the proxy reports the kill");
    op.kill();
    assert_eq!(
        s.apis.events("chat", "Aborted").await.len(),
        1,
        "the abort's Event is out"
    );
    let status = s.md().await.status.expect("status");
    assert!(status.last_rollback.is_some(), "the abort is recorded");
}

#[tokio::test]
async fn killed_in_a_gradual_rollback_hold_the_hold_and_the_record_are_kept() {
    const HOLD: u64 = 20;
    let s = Scene::new("fault-gradual").await;
    let mut op = s.paused_at_60_with_a_gradual_policy(HOLD).await;
    let log = record_weights(&s.apis).await;

    // Killed after the status write that records the hold at 50% (step 1 of 3).
    s.proxy
        .kill_during(&mut op, status_write_with("at 50% (step 1 of 3)"), async {
            s.apis.annotate("chat", "rollguard.dev/abort", "true").await;
        })
        .await;
    let before = s.md().await.status.expect("status");
    let record = before.last_rollback.clone().expect("lastRollback");
    let hold = s
        .apis
        .step_on("chat-r2", ROLLBACK_STEP)
        .await
        .expect("the hold on chat-r2");
    assert_eq!(hold.index, 0, "killed in the hold at 50%");
    // The one that takes over (behind the proxy too) is killed in the next hold, at 20%.
    wait_halfway(&hold, HOLD).await;
    let mut op = s.operator_behind_proxy();
    let killed = s
        .proxy
        .kill_after(op.child.id(), 1, status_write_with("at 20% (step 2 of 3)"));
    s.assert_held(&hold, HOLD, 20).await;
    tokio::time::timeout(SECS_60, killed)
        .await
        .expect("killed in the hold at 20%")
        .expect("the proxy reports the kill");
    op.kill();
    let second = s
        .apis
        .step_on("chat-r2", ROLLBACK_STEP)
        .await
        .expect("the hold on chat-r2");
    assert_eq!(second.index, 1, "killed in the hold at 20%");
    let _op = s.take_over_halfway(&second, HOLD, 0).await;
    let md = s.wait_rollback_completed().await;
    let status = md.status.clone().expect("status");
    let after = status.last_rollback.clone().expect("lastRollback");
    assert_eq!(
        after.started_at, record.started_at,
        "the same rollback, not a second one"
    );
    assert_eq!(
        (after.from_revision, after.to_revision, after.trigger, after.mode),
        (record.from_revision, record.to_revision, record.trigger, record.mode)
    );
    let weights = weights(&log);
    assert_eq!(weights, vec![60, 50, 20, 0], "each step of the walk once");
    s.assert_history(&md, &[1, 2]).await;
    let r2 = status.history.iter().find(|h| h.revision == 2).expect("r2 in history");
    assert_eq!(r2.phase, RevisionPhase::RolledBack);
    assert_eq!(s.apis.events("chat", "Aborted").await.len(), 1, "one abort handled");
}

#[tokio::test]
async fn killed_while_a_cold_rollback_target_scales_up_the_rollback_is_not_started_twice() {
    let s = Scene::new("fault-cold").await;
    let cluster = cluster().await;
    // A node of this test only: while it is cordoned, r1's pods cannot start.
    let node = FakeNode::create(&cluster.client, &format!("cold-{}", s.namespace)).await;
    let pinned = json!({"warmRevisions": 0, "template": {"spec": {
        "nodeSelector": {"rollguard.dev/test-node": node.name},
        "containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0"}]}}});
    let mut op = s.operator_behind_proxy();
    s.apis.roll_out("chat", &["v1", "v2"], 1, pinned).await;
    let cold = wait_object(&s.apis.deployments, "chat-r1", SECS_60, |d| d.spec.replicas == Some(0)).await;
    assert!(cold.is_some(), "r1 is cold");
    node.cordon(&cluster.client, true).await;

    s.proxy
        .kill_during(&mut op, status_write_with("\"RollingBack\""), async {
            s.apis.annotate("chat", "rollguard.dev/rollback-to", "previous").await;
        })
        .await;
    let before = s.md().await;
    let record = before
        .status
        .as_ref()
        .and_then(|st| st.last_rollback.clone())
        .expect("lastRollback recorded before the kill");
    assert!(record.completed_at.is_none(), "killed while the target scales up");
    assert!(
        has_annotation(&before, "rollguard.dev/rollback-to"),
        "killed before the annotation was consumed"
    );

    let _op = s.operator();
    s.apis.wait_consumed("chat", "rollguard.dev/rollback-to").await;
    node.cordon(&cluster.client, false).await;
    let md = s
        .apis
        .wait_md("chat", "rolled back to r1", SECS_60, |md| {
            md.status.as_ref().is_some_and(|st| {
                st.stable_revision == Some(1) && st.last_rollback.as_ref().is_some_and(|r| r.completed_at.is_some())
            })
        })
        .await;
    let after = md
        .status
        .as_ref()
        .and_then(|st| st.last_rollback.clone())
        .expect("lastRollback");
    assert_eq!(
        after.started_at, record.started_at,
        "the same rollback, not a second one"
    );
    assert_eq!((after.from_revision, after.to_revision), (2, 1));
    // The killed operator died before its Events went out (they follow the status write
    // and the annotations); the one that took over found the rollback under way.
    assert!(
        s.apis.events("chat", "RollbackRequested").await.is_empty(),
        "no second rollback requested"
    );
    let replayed = s.apis.wait_event("chat", "AlreadyRollingBack", None).await;
    assert!(
        replayed.is_some(),
        "the replayed request says the rollback is under way"
    );
    assert_eq!(
        s.apis.events("chat", "AlreadyRollingBack").await.len(),
        1,
        "the replayed request said so"
    );
    s.assert_history(&md, &[1, 2]).await;
    assert_eq!(s.apis.service_revision("chat").await, Some(1));
}

/// A provider on loopback reading `value` for every query, and a RollbackPolicy `llm` whose
/// Critical trigger breaches above 0.1, judged every second, with a guard window and a
/// verification window of `window`.
async fn judged_by(s: &Scene, window: &str) -> support::slow_provider::SlowProvider {
    use support::slow_provider::{Answer, SlowProvider};
    let provider = SlowProvider::start(Answer::Now).await;
    s.apis
        .create_policy(
            "llm",
            json!({"provider": {"prometheus": {"address": provider.address, "timeout": "2s"}},
                   "interval": "1s", "guardWindow": window, "verification": {"window": window},
                   "triggers": [{"name": "error-rate", "query": "vector(0)", "operator": "Gt",
                                 "threshold": 0.1, "severity": "Critical"}]}),
        )
        .await;
    provider
}

const BREACH: &str =
    r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.7e9,"0.5"]}]}}"#;

#[tokio::test]
async fn killed_in_the_guard_window_the_window_is_kept_and_a_breach_still_rolls_back() {
    use support::slow_provider::Answer;
    let s = Scene::new("fault-guard").await;
    let provider = judged_by(&s, "1h").await;
    let mut op = s.operator_behind_proxy();
    s.apis
        .roll_out("chat", &["v1"], 1, json!({"rollbackPolicyRef": {"name": "llm"}}))
        .await;
    // Killed after the status write that records r2's promotion (its guard window opens).
    s.proxy
        .kill_during(
            &mut op,
            status_write_with("revision 2 (version v2) serves all traffic"),
            async {
                s.apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
            },
        )
        .await;
    let promoted = |md: &ModelDeployment| {
        md.status
            .as_ref()
            .and_then(|st| st.history.iter().find(|h| h.revision == 2))
            .and_then(|h| h.promoted_at.clone())
    };
    let before = promoted(&s.md().await);
    let _op = s.operator();
    let md = s.apis.wait_healthy("chat", 2).await;
    assert!(before.is_some(), "killed after r2's promotion was recorded");
    assert_eq!(promoted(&md), before, "the guard window keeps its start");
    provider.set(Answer::Respond(200, BREACH));
    let record = s
        .apis
        .wait_rolled_back("chat", 1, Some(rollguard::api::RollbackTrigger::Metric))
        .await;
    assert_eq!((record.from_revision, record.to_revision), (2, 1));
    let md = s.md().await;
    s.assert_history(&md, &[1, 2]).await;
}

#[tokio::test]
async fn killed_during_verification_the_window_keeps_its_start_and_passes_once() {
    const WINDOW: u64 = 16;
    let s = Scene::new("fault-verify").await;
    let _provider = judged_by(&s, &format!("{WINDOW}s")).await;
    let mut op = s.operator_behind_proxy();
    s.apis
        .roll_out("chat", &["v1", "v2"], 1, json!({"rollbackPolicyRef": {"name": "llm"}}))
        .await;
    // Killed after the status write that completes the rollback with verification Pending.
    s.proxy
        .kill_during(&mut op, status_write_with("\"verification\":\"Pending\""), async {
            s.apis.annotate("chat", "rollguard.dev/rollback-to", "previous").await;
        })
        .await;
    let record = s
        .md()
        .await
        .status
        .and_then(|st| st.last_rollback)
        .expect("lastRollback recorded before the kill");
    let completed = record.completed_at.clone().expect("completed");
    // Down for half the window: a window restarted from zero would end 8 s later than due.
    let half = completed.0 + jiff::SignedDuration::from_secs((WINDOW / 2) as i64);
    let left = jiff::Timestamp::now().duration_until(half);
    if left.is_positive() {
        tokio::time::sleep(left.unsigned_abs()).await;
    }
    let _op = s.operator();
    let md = s
        .apis
        .wait_md("chat", "verification Passed", SECS_60, |md| {
            md.status
                .as_ref()
                .and_then(|st| st.last_rollback.as_ref())
                .is_some_and(|r| r.verification == Some(rollguard::api::Verification::Passed))
        })
        .await;
    let after = md.status.and_then(|st| st.last_rollback).expect("lastRollback");
    assert_eq!(after.started_at, record.started_at, "the same rollback");
    assert_eq!(after.completed_at, Some(completed.clone()), "completed once");
    let ended = jiff::Timestamp::now().duration_since(completed.0);
    assert!(
        ended < jiff::SignedDuration::from_secs((WINDOW + WINDOW / 2 - 3) as i64),
        "the verification window was restarted: it ended {ended} after the rollback ({WINDOW}s)"
    );
    // Events follow the status write that records them.
    let passed = s.apis.wait_event("chat", "VerificationPassed", None).await;
    assert!(passed.is_some(), "a VerificationPassed Event");
    assert_eq!(
        s.apis.events("chat", "VerificationPassed").await.len(),
        1,
        "passed once"
    );
}

/// A watch that stops delivering (the API server restarting, a congested connection) leaves
/// the operator's cache without its own writes for as long as that lasts. The record of the
/// gradual rollback's hold at 50% is written to chat-r2 while the Deployment watch delivers
/// nothing for longer than the hold: the hold still ends on its first clock (it is not
/// started again from the cache's older copy), and each step of the walk is written once.
#[tokio::test]
async fn a_deployment_watch_that_delivers_nothing_does_not_restart_a_rollback_hold() {
    const HOLD: u64 = 20;
    let s = Scene::new("fault-stalled-watch").await;
    s.apis.create_gradual_policy(&[50, 20, 0], &format!("{HOLD}s")).await;
    let mut spec = canary(json!([{"setWeight": 60}, {"pause": {}}]));
    spec["rollbackPolicyRef"] = json!({"name": "gradual"});
    let _op = s.operator_behind_proxy();
    s.apis.roll_out("chat", &["v1"], 1, spec).await;
    s.apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    s.apis
        .wait_md("chat", "paused at 60%", SECS_60, |md| {
            md.status
                .as_ref()
                .is_some_and(|st| st.phase == Some(Phase::Paused) && st.canary_weight == Some(60))
        })
        .await;
    let log = record_weights(&s.apis).await;

    let stall = s.proxy.stall_watches("/deployments?");
    s.apis.annotate("chat", "rollguard.dev/abort", "true").await;
    let hold = wait_for(SECS_60, || async { s.apis.step_on("chat-r2", ROLLBACK_STEP).await })
        .await
        .expect("the hold recorded on chat-r2");
    assert_eq!(hold.index, 0, "the hold at 50%");
    s.assert_held(&hold, HOLD, 20).await;
    assert!(
        stall.held_back() > 0,
        "the Deployment watch was held back while the hold ran"
    );
    drop(stall);
    let md = s.wait_rollback_completed().await;
    assert_eq!(weights(&log), vec![60, 50, 20, 0], "each step of the walk once");
    s.assert_history(&md, &[1, 2]).await;
    assert_eq!(s.apis.events("chat", "Aborted").await.len(), 1, "one abort handled");
}

/// Rolls `chat` out with `spec` (canary steps 20%, pause, 50%, pause) through the proxy, to
/// v2 paused at 20%; then holds the Deployment write of the reconcile that a `promote`
/// starts (it plans 50% and writes the canary's step before the weight), so that reconcile
/// stays under way. Returns the route's weights from then on, the hold and the held request.
async fn promote_held(s: &Scene, mut spec: serde_json::Value) -> (WeightLog, support::fault_proxy::Hold, String) {
    let steps = json!([{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]);
    spec["strategy"] = json!({"canary": {"steps": steps}});
    spec["trafficRouting"] = json!({"gatewayAPI": {"httpRoute": "chat"}});
    s.apis.roll_out("chat", &["v1"], 1, spec).await;
    s.apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    wait_weight(&s.apis, 20).await;
    s.apis
        .wait_md("chat", "paused at 20%", SECS_60, |md| {
            md.status
                .as_ref()
                .is_some_and(|st| st.phase == Some(Phase::Paused) && st.canary_weight == Some(20))
        })
        .await;
    let log = record_weights(&s.apis).await;
    let mut held = s.proxy.hold(|r| r.write_to("/deployments/chat-r2"));
    s.apis.annotate("chat", "rollguard.dev/promote", "true").await;
    let request = held.arrived().await;
    (log, held, request)
}

/// Waits for 100% on stable and checks that the reconcile is still held at its Deployment
/// write (the canary's step there is still the pause at 20%).
async fn assert_stable_while_held(s: &Scene, request: &str) {
    wait_weight(&s.apis, 0).await;
    assert_eq!(
        s.apis.step_on("chat-r2", CANARY_STEP).await.map(|st| st.index),
        Some(1),
        "the reconcile is still held at its Deployment write ({request}) when the weight is 0"
    );
}

#[tokio::test]
async fn an_abort_takes_the_weight_off_while_a_reconcile_of_the_same_model_deployment_hangs() {
    let s = Scene::new("fault-lane").await;
    let _op = s.operator_behind_proxy();
    let (log, held, request) = promote_held(&s, json!({})).await;

    // The abort does not wait for it.
    s.apis.annotate("chat", "rollguard.dev/abort", "true").await;
    assert_stable_while_held(&s, &request).await;

    // Once its write goes through, the reconcile planned before the abort writes no weight.
    held.release();
    let md = s
        .apis
        .wait_md("chat", "Degraded after the abort, the abort handled", SECS_60, |md| {
            let handled = !md.annotations().contains_key("rollguard.dev/abort");
            handled
                && md
                    .status
                    .as_ref()
                    .is_some_and(|st| st.phase == Some(Phase::Degraded) && st.canary_weight.unwrap_or(0) == 0)
        })
        .await;
    let status = md.status.expect("status");
    assert_eq!(status.stable_revision, Some(1));
    assert_eq!(route_weights(&s.apis).await.map(|w| w.canary), Some(0));
    assert_eq!(
        weights(&log),
        vec![20, 0],
        "the canary never got 50%, not even for a moment"
    );
}

#[tokio::test]
async fn a_breach_takes_the_weight_off_while_a_reconcile_of_the_same_model_deployment_hangs() {
    use support::slow_provider::Answer;
    let s = Scene::new("fault-lane-breach").await;
    let provider = judged_by(&s, "1h").await;
    let _op = s.operator_behind_proxy();
    let (log, held, request) = promote_held(&s, json!({"rollbackPolicyRef": {"name": "llm"}})).await;

    // The canary's Critical trigger fires: the rollback does not wait for the reconcile.
    provider.set(Answer::Respond(200, BREACH));
    assert_stable_while_held(&s, &request).await;

    held.release();
    let record = s
        .apis
        .wait_rolled_back("chat", 1, Some(rollguard::api::RollbackTrigger::Metric))
        .await;
    assert_eq!((record.from_revision, record.to_revision), (2, 1));
    assert_eq!(route_weights(&s.apis).await.map(|w| w.canary), Some(0));
    assert_eq!(
        weights(&log),
        vec![20, 0],
        "the canary never got 50%, not even for a moment"
    );
}
