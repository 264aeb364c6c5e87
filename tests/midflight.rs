//! Changes mid-flight, against the local control plane: the RollbackPolicy's threshold
//! lowered or the policy deleted mid-canary and mid-gradual-rollback, and
//! `revisionHistoryLimit` lowered mid-canary, and the ModelDeployment deleted mid-canary.

mod support;

use std::time::Duration;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::watcher;
use rollguard::api::{Phase, RevisionPhase, RollbackMode, RollbackPolicy, RollbackTrigger, TRAFFIC_FINALIZER};
use rollguard::traffic::Weights;
use serde_json::json;
use support::httproute::*;
use support::slow_provider::{Answer, SlowProvider};
use support::*;

const SECS_60: Duration = Duration::from_secs(60);

/// The trigger's value: 5% errors.
const FIVE_PERCENT: &str =
    r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.7e9,"0.05"]}]}}"#;

struct Scene {
    _ns: TestNamespace,
    apis: Apis,
    policies: Api<RollbackPolicy>,
    op: Operator,
    _provider: SlowProvider,
}

/// A namespace with the HTTPRoute, a RollbackPolicy `llm` whose Critical trigger reads 5%
/// (for every revision) from a provider on loopback (threshold 10%, interval 1s), Gradual
/// rollbacks [50, 20, 0] held `hold` each (Instant when None), and the operator.
async fn scene(prefix: &str, hold: Option<&str>) -> Scene {
    let cluster = cluster().await;
    apply_router_crds(&cluster.client).await;
    let ns = TestNamespace::create(&cluster.client, prefix).await;
    let apis = Apis::new(&cluster.client, &ns.name);
    create_route(&apis).await;
    let provider = SlowProvider::start(Answer::Respond(200, FIVE_PERCENT)).await;
    let rollback = match hold {
        Some(hold) => json!({"mode": "Gradual", "gradual": {"steps": [50, 20, 0], "stepDuration": hold}}),
        None => json!({"mode": "Instant"}),
    };
    let policy: RollbackPolicy = serde_json::from_value(json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackPolicy", "metadata": {"name": "llm"},
        "spec": {
            "provider": {"prometheus": {"address": provider.address, "timeout": "2s"}},
            "interval": "1s",
            "triggers": [{"name": "error-rate", "query": "vector(0)", "operator": "Gt", "threshold": 0.1, "severity": "Critical"}],
            "rollback": rollback
        }
    }))
    .expect("policy");
    let policies: Api<RollbackPolicy> = Api::namespaced(cluster.client.clone(), &ns.name);
    policies
        .create(&Default::default(), &policy)
        .await
        .expect("creating the RollbackPolicy");
    let op = Operator::start_with(&ns.name, &["--resync-seconds", "1"]);
    Scene {
        _ns: ns,
        apis,
        policies,
        op,
        _provider: provider,
    }
}

fn canary(steps: serde_json::Value, history: i32) -> serde_json::Value {
    json!({"strategy": {"canary": {"steps": steps}},
           "trafficRouting": {"gatewayAPI": {"httpRoute": "chat"}},
           "rollbackPolicyRef": {"name": "llm"}, "revisionHistoryLimit": history})
}

/// r1 stable, r2 a canary at 60% in an open pause, judged Healthy by the trigger.
async fn canary_at_60(s: &Scene) {
    s.apis
        .roll_out("chat", &["v1"], 1, canary(json!([{"setWeight": 60}, {"pause": {}}]), 3))
        .await;
    s.apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    s.apis
        .wait_md("chat", "canary at 60%, judged healthy", SECS_60, |md| {
            md.status.as_ref().is_some_and(|st| {
                st.phase == Some(Phase::Paused)
                    && st.canary_weight == Some(60)
                    && st.analysis.iter().any(|a| a.revision == 2 && a.value == Some(0.05))
            })
        })
        .await;
}

async fn set_threshold(s: &Scene, threshold: f64) {
    let mut policy = s.policies.get("llm").await.expect("policy");
    policy.spec.triggers[0].threshold = threshold;
    policy.metadata.managed_fields = None;
    s.policies
        .replace("llm", &Default::default(), &policy)
        .await
        .expect("changing the threshold");
}

#[tokio::test]
async fn a_threshold_lowered_mid_canary_rolls_the_canary_back_by_the_new_threshold() {
    // Instant rollbacks: with Gradual ones the lowered threshold judges the target (which
    // reads 5% too) unhealthy and pauses the walk, as the next test shows.
    let s = scene("mid-threshold", None).await;
    canary_at_60(&s).await;
    set_threshold(&s, 0.01).await;
    let record = s.apis.wait_rolled_back("chat", 1, Some(RollbackTrigger::Metric)).await;
    assert_eq!((record.value, record.threshold), (Some(0.05), Some(0.01)));
    wait_weight(&s.apis, 0).await;
}

#[tokio::test]
async fn a_policy_deleted_mid_canary_leaves_the_canary_unjudged_and_it_can_be_promoted() {
    let s = scene("mid-policy-canary", Some("1s")).await;
    canary_at_60(&s).await;
    s.policies
        .delete("llm", &DeleteParams::default())
        .await
        .expect("deleting the policy");
    let md = s
        .apis
        .wait_md("chat", "PolicyResolved=False", SECS_60, |md| {
            condition(md, "PolicyResolved").is_some_and(|c| c.0 == "False")
        })
        .await;
    let status = md.status.expect("status");
    assert_eq!(
        (status.phase, status.canary_weight, status.current_step_index),
        (Some(Phase::Paused), Some(60), Some(1)),
        "the canary holds its step, paused (the first status that says the policy is gone)"
    );
    s.apis.annotate("chat", "rollguard.dev/promote", "true").await;
    let md = s.apis.wait_healthy("chat", 2).await;
    assert!(
        md.status.and_then(|st| st.last_rollback).is_none(),
        "nothing rolled back"
    );
    wait_weight(&s.apis, 0).await;
    let released = s
        .apis
        .wait_md(
            "chat",
            "no traffic finalizer once the canary has no weight",
            SECS_60,
            |md| !holds_finalizer(md),
        )
        .await;
    assert_eq!(released.metadata.deletion_timestamp, None);
}

fn holds_finalizer(md: &rollguard::api::ModelDeployment) -> bool {
    md.metadata.finalizers.iter().flatten().any(|f| f == TRAFFIC_FINALIZER)
}

#[tokio::test]
async fn a_model_deployment_deleted_mid_canary_returns_the_route_to_stable_before_it_goes() {
    let s = scene("mid-delete-orphan", None).await;
    canary_at_60(&s).await;
    let md = s.apis.md.get("chat").await.expect("reading");
    assert!(holds_finalizer(&md), "the canary has weight: the finalizer is held");
    // Orphaned children keep running: the unjudged canary must not keep its 60%.
    s.apis
        .md
        .delete("chat", &DeleteParams::orphan())
        .await
        .expect("deleting with --cascade=orphan");
    assert!(wait_gone(&s.apis.md, "chat", SECS_60).await, "the ModelDeployment goes");
    assert_eq!(
        route_weights(&s.apis).await,
        Some(Weights { stable: 100, canary: 0 }),
        "the route sends everything to stable"
    );
    assert_eq!(
        s.apis.service_revision("chat").await,
        Some(1),
        "stable is the revision that served"
    );
    assert!(
        s.apis.deployments.get_opt("chat-r2").await.expect("reading").is_some(),
        "orphaned, not deleted"
    );
    let event = s.apis.wait_event("chat", "TrafficReset", Some("Normal")).await;
    let note = event.and_then(|e| e.note).unwrap_or_default();
    assert!(note.contains("60%"), "the Event says what the canary had: {note}");
}

#[tokio::test]
async fn a_canary_deleted_while_the_operator_is_down_goes_once_it_is_back_with_the_route_on_stable() {
    let mut s = scene("mid-delete-down", None).await;
    canary_at_60(&s).await;
    s.op.kill();
    s.apis
        .md
        .delete("chat", &DeleteParams::background())
        .await
        .expect("deleting");
    let held = s.apis.md.get("chat").await.expect("held by the finalizer");
    assert!(held.metadata.deletion_timestamp.is_some() && holds_finalizer(&held));
    assert_eq!(
        route_weights(&s.apis).await.map(|w| w.canary),
        Some(60),
        "nobody reset it yet"
    );
    s.op = Operator::start_with(&s.apis.namespace, &["--resync-seconds", "1"]);
    assert!(wait_gone(&s.apis.md, "chat", SECS_60).await, "the ModelDeployment goes");
    assert_eq!(route_weights(&s.apis).await, Some(Weights { stable: 100, canary: 0 }));
    let owned = || watcher::Config::default().labels("rollguard.dev/model-deployment=chat");
    let children = wait_list(&s.apis.deployments, owned(), SECS_60, |d| d.is_empty()).await;
    assert!(children.is_some(), "its Deployments are garbage-collected");
}

#[tokio::test]
async fn a_policy_deleted_mid_gradual_rollback_finishes_the_rollback_at_once() {
    let s = scene("mid-policy-gradual", Some("1h")).await;
    canary_at_60(&s).await;
    s.apis.annotate("chat", "rollguard.dev/abort", "true").await;
    s.apis
        .wait_md("chat", "holding 50% for an hour", SECS_60, |md| {
            md.status.as_ref().is_some_and(|st| {
                st.canary_weight == Some(50)
                    && st
                        .last_rollback
                        .as_ref()
                        .is_some_and(|r| r.mode == RollbackMode::Gradual)
            })
        })
        .await;
    s.policies
        .delete("llm", &DeleteParams::default())
        .await
        .expect("deleting the policy");
    // Without a policy rollbacks run with the defaults (Instant): the walk ends now.
    let record = s.apis.wait_rolled_back("chat", 1, None).await;
    assert_eq!(record.mode, RollbackMode::Instant);
    wait_weight(&s.apis, 0).await;
    assert_eq!(s.apis.service_revision("chat").await, Some(1));
}

#[tokio::test]
async fn a_threshold_lowered_mid_gradual_rollback_pauses_the_walk_on_an_unhealthy_target() {
    let s = scene("mid-threshold-gradual", Some("5s")).await;
    canary_at_60(&s).await;
    s.apis.annotate("chat", "rollguard.dev/abort", "true").await;
    s.apis.wait_consumed("chat", "rollguard.dev/abort").await;
    // The target r1 reads 5% too: above the new threshold it is unhealthy.
    set_threshold(&s, 0.01).await;
    let md = s
        .apis
        .wait_md("chat", "gradual rollback paused", SECS_60, |md| {
            md.status.as_ref().is_some_and(|st| {
                st.phase == Some(Phase::Paused) && st.last_rollback.as_ref().is_some_and(|r| r.completed_at.is_none())
            })
        })
        .await;
    let weight = md.status.as_ref().and_then(|st| st.canary_weight).expect("weight");
    assert!(weight > 0, "paused with traffic still on r2: {weight}%");
    // Raised again: the walk goes on to the end.
    set_threshold(&s, 0.1).await;
    s.apis.wait_rolled_back("chat", 1, None).await;
    wait_weight(&s.apis, 0).await;
}

#[tokio::test]
async fn revision_history_limit_lowered_mid_canary_keeps_the_revisions_in_use() {
    let s = scene("mid-history", None).await;
    s.policies
        .delete("llm", &DeleteParams::default())
        .await
        .expect("no policy here");
    // v1..v4 blue/green (each Healthy in turn), then v5 as a canary paused at 20%.
    let spec = json!({"trafficRouting": {"gatewayAPI": {"httpRoute": "chat"}}, "revisionHistoryLimit": 10});
    s.apis.roll_out("chat", &["v1", "v2", "v3", "v4"], 1, spec).await;
    s.apis
        .patch_spec(
            "chat",
            json!({"model": {"version": "v5"}, "strategy": {"blueGreen": null, "canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}}}),
        )
        .await;
    wait_weight(&s.apis, 20).await;
    s.apis
        .md
        .patch(
            "chat",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"revisionHistoryLimit": 1}})),
        )
        .await
        .expect("lowering revisionHistoryLimit");
    // Kept: the stable r4, the canary r5 and the warm r3 (warmRevisions 1); r1 and r2 go.
    let owned = || watcher::Config::default().labels("rollguard.dev/model-deployment=chat");
    let kept = ["chat-r3", "chat-r4", "chat-r5"];
    let revisions = wait_list(&s.apis.revisions, owned(), SECS_60, |r| names(r) == kept).await;
    assert!(revisions.is_some(), "r1 and r2 pruned, the revisions in use kept");
    let deployments = wait_list(&s.apis.deployments, owned(), SECS_60, |d| names(d) == kept).await;
    assert!(deployments.is_some(), "their Deployments too");
    s.apis.annotate("chat", "rollguard.dev/promote", "true").await;
    let md = s.apis.wait_healthy("chat", 5).await;
    let status = md.status.expect("status");
    let r4 = status.history.iter().find(|h| h.revision == 4).expect("r4 in history");
    assert_eq!(r4.phase, RevisionPhase::Superseded);
    assert_eq!(route_weights(&s.apis).await.map(|w| w.canary), Some(0));
}
