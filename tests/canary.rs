//! Canary steps on a Gateway API HTTPRoute, against the local control plane. The scenarios
//! of steps, abort, blue/green and a restart mid-step run twice: with the route's backends
//! the Services, and with them the InferencePools of the Inference Extension.

mod support;

use std::time::Duration;

use kube::api::PostParams;
use kube::core::DynamicObject;
use rollguard::api::{Phase, RevisionPhase};
use rollguard::traffic::{BackendKind, Weights};
use serde_json::json;
use support::httproute::*;
use support::*;

const SECS_60: Duration = Duration::from_secs(60);

/// Waits until the canary is paused at step `index`.
async fn wait_paused_at(apis: &Apis, index: i32) -> rollguard::api::ModelDeployment {
    apis.wait_md("chat", &format!("paused at step index {index}"), SECS_60, |md| {
        md.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::Paused) && s.current_step_index == Some(index))
    })
    .await
}

fn canary_spec(apis: &Apis, steps: serde_json::Value) -> serde_json::Value {
    json!({"strategy": {"canary": {"steps": steps}}, "trafficRouting": routing(apis)})
}

async fn setup(prefix: &str) -> (TestNamespace, Apis, Operator) {
    setup_to(BackendKind::Service, prefix).await
}

async fn setup_to(backend: BackendKind, prefix: &str) -> (TestNamespace, Apis, Operator) {
    with_route_to(backend, prefix, &["--resync-seconds", "2"]).await
}

#[tokio::test]
async fn canary_weights_on_the_httproute_follow_the_steps() {
    weights_follow_the_steps(BackendKind::Service, "canary").await;
}

#[tokio::test]
async fn canary_weights_on_inference_pools_follow_the_steps() {
    weights_follow_the_steps(BackendKind::InferencePool, "pool-canary").await;
}

async fn weights_follow_the_steps(backend: BackendKind, prefix: &str) {
    let (_ns, apis, op) = setup_to(backend, prefix).await;
    let steps =
        json!([{"setWeight": 10}, {"pause": {"duration": "3s"}}, {"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]);
    apis.roll_out("chat", &["v1"], 1, canary_spec(&apis, steps)).await;
    assert_pools_follow_services(&apis).await;

    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    let at_10 = wait_weight(&apis, 10).await;
    let at_50 = wait_weight(&apis, 50).await;
    assert!(
        at_50 - at_10 >= Duration::from_secs(2),
        "the 3s pause was held ({:?})",
        at_50 - at_10
    );
    let md = wait_paused_at(&apis, 3).await;
    let status = md.status.expect("status");
    assert_eq!(status.canary_weight, Some(50));
    assert_eq!(status.canary_revision, Some(2));
    assert!(
        status
            .message
            .clone()
            .unwrap_or_default()
            .contains("canary revision 2 at 50% (step 4 of 5)"),
        "{:?}",
        status.message
    );
    // The open pause holds: the operator looks again, twice, and moves nothing.
    op.wait_reconciles("chat", 2).await;
    assert_eq!(route_weights(&apis).await.map(|w| w.canary), Some(50));
    assert_eq!(apis.service_revision("chat").await, Some(1));
    assert_pools_follow_services(&apis).await;

    apis.annotate("chat", "rollguard.dev/promote", "true").await;
    let md = apis.wait_healthy("chat", 2).await;
    assert_eq!(apis.service_revision("chat").await, Some(2));
    wait_weight(&apis, 0).await;
    assert_pools_follow_services(&apis).await;
    assert_eq!(route_weights(&apis).await, Some(Weights { stable: 100, canary: 0 }));
    assert_eq!(
        md.status
            .as_ref()
            .and_then(|s| s.history.iter().find(|h| h.revision == 1))
            .map(|h| h.phase),
        Some(RevisionPhase::Superseded)
    );
    assert_eq!(
        apis.deployment_replicas("chat-r1").await,
        Some(1),
        "the old revision stays warm"
    );
}

#[tokio::test]
async fn promote_full_skips_the_steps_and_abort_sets_the_weight_to_zero() {
    promote_full_and_abort(BackendKind::Service, "canary-abort").await;
}

#[tokio::test]
async fn promote_full_and_abort_on_inference_pools() {
    promote_full_and_abort(BackendKind::InferencePool, "pool-abort").await;
}

async fn promote_full_and_abort(backend: BackendKind, prefix: &str) {
    let (_ns, apis, _op) = setup_to(backend, prefix).await;
    let steps = json!([{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}]);
    apis.roll_out("chat", &["v1"], 1, canary_spec(&apis, steps)).await;

    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    wait_weight(&apis, 20).await;
    apis.annotate("chat", "rollguard.dev/promote", "full").await;
    apis.wait_healthy("chat", 2).await;
    wait_weight(&apis, 0).await;

    apis.patch_spec("chat", json!({"model": {"version": "v3"}})).await;
    wait_weight(&apis, 20).await;
    apis.annotate("chat", "rollguard.dev/abort", "true").await;
    wait_weight(&apis, 0).await;
    let md = apis
        .wait_md("chat", "Degraded after abort", SECS_60, |md| {
            md.status.as_ref().is_some_and(|s| s.phase == Some(Phase::Degraded))
        })
        .await;
    let status = md.status.expect("status");
    assert_eq!(status.stable_revision, Some(2));
    assert_eq!(apis.service_revision("chat").await, Some(2));
    assert_pools_follow_services(&apis).await;
}

#[tokio::test]
async fn a_missing_route_gets_a_condition_and_a_warning_and_traffic_stays() {
    let cluster = cluster().await;
    apply_router_crds(&cluster.client).await;
    let ns = TestNamespace::create(&cluster.client, "canary-fault").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    let _op = Operator::start_with(&ns.name, &["--resync-seconds", "2"]);
    let spec = json!({"strategy": {"canary": {"steps": [{"setWeight": 10}]}}, "trafficRouting": {"gatewayAPI": {"httpRoute": "absent"}}});
    apis.create(&model_deployment("chat", "v1", 1, spec)).await;
    let md = apis
        .wait_md("chat", "TrafficRouted=False", SECS_60, |md| {
            condition(md, "TrafficRouted").is_some_and(|(s, r, _)| s == "False" && r == "RouteNotFound")
        })
        .await;
    let (_, _, message) = condition(&md, "TrafficRouted").expect("condition");
    assert!(message.contains("absent"), "{message}");
    let warned = apis.wait_event("chat", "RouteNotFound", Some("Warning")).await;
    assert!(warned.is_some(), "a Warning Event RouteNotFound");
    // The first revision needs no weights: it serves through the stable Service.
    apis.wait_md("chat", "stable r1", SECS_60, |md| {
        md.status.as_ref().is_some_and(|s| s.stable_revision == Some(1))
    })
    .await;
    assert_eq!(apis.service_revision("chat").await, Some(1));
}

#[tokio::test]
async fn blue_green_with_a_router_switches_the_weights_in_one_write() {
    blue_green_switch(BackendKind::Service, "bg-router").await;
}

#[tokio::test]
async fn blue_green_on_inference_pools_switches_the_weights_in_one_write() {
    blue_green_switch(BackendKind::InferencePool, "pool-bg").await;
}

async fn blue_green_switch(backend: BackendKind, prefix: &str) {
    let (_ns, apis, _op) = setup_to(backend, prefix).await;
    let spec = json!({"strategy": {"blueGreen": {"autoPromote": true}}, "trafficRouting": routing(&apis)});
    apis.roll_out("chat", &["v1"], 1, spec).await;
    let seen = record_weights(&apis).await;
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    apis.wait_healthy("chat", 2).await;
    wait_weight(&apis, 0).await;
    assert_eq!(apis.service_revision("chat").await, Some(2));
    let changes: Vec<i32> = weight_changes(&seen).into_iter().map(|(_, w)| w).collect();
    assert_eq!(
        changes.iter().skip_while(|w| **w == 0).copied().collect::<Vec<_>>(),
        vec![100, 0],
        "weights went 0 -> 100 in one write, then back to stable: {changes:?}"
    );
    let history = routes(&apis)
        .get("chat")
        .await
        .expect("route")
        .metadata
        .managed_fields
        .unwrap_or_default();
    assert!(history.iter().any(|m| m.manager.as_deref() == Some("rollguard")));
    assert_pools_follow_services(&apis).await;
}

#[tokio::test]
async fn an_operator_restart_in_the_middle_of_a_step_resumes_it() {
    restart_mid_step(BackendKind::Service, "canary-restart").await;
}

#[tokio::test]
async fn an_operator_restart_in_the_middle_of_a_step_on_inference_pools_resumes_it() {
    restart_mid_step(BackendKind::InferencePool, "pool-restart").await;
}

async fn restart_mid_step(backend: BackendKind, prefix: &str) {
    let cluster = cluster().await;
    apply_router_crds(&cluster.client).await;
    let ns = TestNamespace::create(&cluster.client, prefix).await;
    let apis = Apis::new(&cluster.client, &ns.name).routing_to(backend);
    create_route(&apis).await;
    let start = || Operator::start_with(&ns.name, &["--resync-seconds", "2"]);
    let mut op = start();
    let steps = json!([{"setWeight": 10}, {"pause": {"duration": "4s"}}, {"setWeight": 50}, {"pause": {}}]);
    apis.roll_out("chat", &["v1"], 1, canary_spec(&apis, steps)).await;
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    let at_10 = wait_weight(&apis, 10).await;
    // Killed during the timed pause, down for a second.
    tokio::time::sleep(Duration::from_millis(500)).await;
    op.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(route_weights(&apis).await.map(|w| w.canary), Some(10));
    op = start();
    let at_50 = wait_weight(&apis, 50).await;
    assert!(
        at_50 - at_10 >= Duration::from_secs(3),
        "the pause was not skipped ({:?})",
        at_50 - at_10
    );
    let md = wait_paused_at(&apis, 3).await;
    let revs: Vec<i64> = md.status.expect("status").history.iter().map(|h| h.revision).collect();
    assert_eq!(revs, vec![2, 1]);
    assert_pools_follow_services(&apis).await;
    drop(op);
}

#[tokio::test]
async fn a_route_that_does_not_reference_our_services_holds_the_canary_and_is_left_alone() {
    let (_ns, apis, op) = setup("canary-unrelated").await;
    // The route "chat" of setup() references the Service chat; this one does not.
    let other: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "unrelated"},
        "spec": {"rules": [{"backendRefs": [{"name": "someone-else", "port": 80}]}]}
    }))
    .expect("route");
    let created = routes(&apis)
        .create(&PostParams::default(), &other)
        .await
        .expect("creating HTTPRoute");
    let spec = json!({"strategy": {"canary": {"steps": [{"setWeight": 10}]}}, "trafficRouting": {"gatewayAPI": {"httpRoute": "unrelated"}}});
    apis.roll_out("chat", &["v1"], 1, spec).await;
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    let md = apis
        .wait_md("chat", "TrafficRouted=False", SECS_60, |md| {
            md.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "TrafficRouted" && c.reason == "RouteNotReferencingServices")
            })
        })
        .await;
    let status = md.status.expect("status");
    assert_eq!(status.stable_revision, Some(1), "traffic stays on stable");
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "TrafficRouted")
        .expect("TrafficRouted");
    assert!(
        condition.message.contains("does not reference the Service chat"),
        "{}",
        condition.message
    );
    let warned = apis
        .wait_event("chat", "RouteNotReferencingServices", Some("Warning"))
        .await;
    assert!(warned.is_some(), "a Warning Event");
    // Retried with backoff, and the route is never written.
    op.wait_reconciles("chat", 2).await;
    let after = routes(&apis).get("unrelated").await.expect("get");
    assert_eq!(after.metadata.resource_version, created.metadata.resource_version);
    assert_eq!(apis.service_revision("chat").await, Some(1));
}

/// The step number in a canary status message ("... (step 4 of 6) ...").
fn step_in(message: &str) -> Option<u32> {
    let rest = &message[message.find("(step ")? + "(step ".len()..];
    rest.split(' ').next()?.parse().ok()
}

#[tokio::test]
async fn a_canary_walking_its_steps_never_flaps() {
    let (_ns, apis, _op) = setup("canary-flap").await;
    let steps = json!([{"setWeight": 20}, {"pause": {"duration": "1s"}}, {"setWeight": 50}, {"pause": {}},
                       {"setWeight": 80}, {"pause": {"duration": "1s"}}]);
    apis.roll_out("chat", &["v1"], 1, canary_spec(&apis, steps)).await;
    let log = record_statuses(&apis.md, "chat").await;

    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    wait_paused_at(&apis, 3).await;
    apis.annotate("chat", "rollguard.dev/promote", "true").await;
    apis.wait_healthy("chat", 2).await;
    // The recording watch delivers the Healthy status too (it may trail the one that waited).
    let healthy = wait_for(SECS_60, || async {
        (statuses(&log).last().and_then(|(p, _)| *p) == Some(Phase::Healthy)).then_some(())
    })
    .await;
    assert!(
        healthy.is_some(),
        "the recorded statuses never reached Healthy: {:#?}",
        statuses(&log)
    );

    // Every status the operator wrote, seen through the watch: once the canary revision is
    // Available and walking its steps, no status goes back to "starting", no step is
    // revisited, and only the pauses report Paused.
    let seen = statuses(&log);
    let walking = seen
        .iter()
        .position(|(_, m)| m.starts_with("canary revision 2"))
        .unwrap_or_else(|| panic!("the canary never walked: {seen:#?}"));
    let mut last_step = 0;
    for (phase, message) in &seen[walking..] {
        assert!(!message.contains("starting"), "flapped back to starting: {seen:#?}");
        if let Some(step) = step_in(message) {
            assert!(step >= last_step, "step {step} after step {last_step}: {seen:#?}");
            last_step = step;
            if *phase == Some(Phase::Paused) {
                assert!(
                    [2, 4, 6].contains(&step),
                    "Paused outside a pause, at step {step}: {seen:#?}"
                );
            }
        }
    }
    assert_eq!(last_step, 6, "every step was reported: {seen:#?}");
}
