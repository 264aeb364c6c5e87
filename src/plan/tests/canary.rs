//! Canary steps on a route object.

use super::*;

#[test]
fn canary_walks_its_steps_pauses_and_promotes_at_the_end() {
    let steps = serde_json::json!([
        {"setWeight": 10}, {"pause": {"duration": "5m"}}, {"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]);
    let mut w = World::new(md("v1", canary_spec(steps)));
    w.settle();
    assert_eq!(w.route, Some(0), "all traffic on stable");
    w.set_version("v2");
    w.blocked.insert(2);
    let p = w.step();
    assert_eq!(p.route_weight, None, "no weight before the canary is Available");
    w.blocked.clear();
    w.step();
    let p = w.step();
    assert_eq!(p.route_weight, Some(10));
    let p = w.step();
    assert_eq!(p.status.phase, Some(Phase::Paused), "timed pause");
    assert_eq!(p.status.canary_weight, Some(10));
    assert_eq!(p.status.current_step_index, Some(1));
    assert!(
        p.requeue_after.is_some_and(|d| d.as_secs() > 200),
        "requeued at the end of the pause"
    );
    w.advance(300);
    let p = w.step();
    assert_eq!(p.route_weight, Some(50));
    let p = w.step();
    assert_eq!(p.status.current_step_index, Some(3));
    assert!(
        p.status
            .message
            .clone()
            .unwrap_or_default()
            .contains("canary revision 2 at 50% (step 4 of 5)"),
        "{:?}",
        p.status.message
    );
    let p = w.settle();
    assert_eq!(p.status.phase, Some(Phase::Paused), "an open pause holds");
    assert_eq!(p.status.stable_revision, Some(1));
    w.annotate(PROMOTE, "true");
    let p = w.step();
    assert_eq!(p.route_weight, Some(100));
    assert!(p.consume.contains(&PROMOTE));
    let p = w.step();
    assert_eq!(p.status.stable_revision, Some(2), "promoted at the end of the steps");
    assert_eq!(p.stable_service.map(|s| s.revision), Some(2));
    assert_eq!(p.route_weight, Some(0), "weights return to stable");
    assert_eq!(
        p.deployments.get(&1).map(|d| d.replicas),
        Some(2),
        "the old revision stays warm"
    );
    assert_eq!(
        p.deployments.get(&2).and_then(|d| d.canary_step),
        None,
        "the step annotation is dropped"
    );
}

#[test]
fn promote_full_skips_the_remaining_steps_and_abort_returns_all_traffic() {
    let steps = serde_json::json!([{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]);
    let mut w = World::new(md("v1", canary_spec(steps)));
    w.settle();
    w.set_version("v2");
    w.settle();
    assert_eq!(w.route, Some(10));
    w.annotate(PROMOTE, "full");
    w.step();
    assert_eq!(w.status().stable_revision, Some(2));
    assert_eq!(w.route, Some(0));

    w.set_version("v3");
    w.settle();
    assert_eq!(w.route, Some(10));
    w.annotate(ABORT, "true");
    let p = w.step();
    assert_eq!(p.route_weight, Some(0), "abort sets the canary weight to 0 at once");
    assert_eq!(p.status.phase, Some(Phase::Degraded));
    assert_eq!(w.phase_of(3), Some(RevisionPhase::RolledBack));
}

#[test]
fn a_route_fault_holds_the_canary_and_says_why() {
    let steps = serde_json::json!([{"setWeight": 10}]);
    let mut w = World::new(md("v1", canary_spec(steps)));
    w.settle();
    w.set_version("v2");
    w.step();
    w.step();
    let mut obs = w.observed();
    obs.route = Some(RouteObservation::Fault {
        reason: "RouteNotFound",
        message: "HTTPRoute llm/chat not found".into(),
    });
    let p = plan(&w.md, &obs);
    assert_eq!(p.status.stable_revision, Some(1));
    assert!(
        p.status
            .message
            .clone()
            .unwrap_or_default()
            .contains("HTTPRoute llm/chat not found")
    );
    let c = crate::conditions::find(&p.status.conditions, TRAFFIC_ROUTED).expect("TrafficRouted");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "RouteNotFound"));
}

#[test]
fn blue_green_with_a_router_switches_the_weights_0_to_100_in_one_write() {
    let mut w = World::new(md(
        "v1",
        serde_json::json!({"strategy": {"blueGreen": {"autoPromote": false}}, "trafficRouting": {"istio": {"virtualService": "chat"}}}),
    ));
    w.settle();
    w.set_version("v2");
    let p = w.settle();
    assert_eq!(p.status.phase, Some(Phase::Paused));
    assert_eq!(w.route, Some(0));
    w.annotate(PROMOTE, "true");
    let p = w.step();
    assert_eq!(p.route_weight, Some(100), "one write to 100");
    assert_eq!(p.stable_service.map(|s| s.revision), Some(1));
    let p = w.step();
    assert_eq!(p.status.stable_revision, Some(2));
    assert_eq!(p.stable_service.map(|s| s.revision), Some(2));
    assert_eq!(p.route_weight, Some(0));
}

#[test]
fn a_weight_someone_else_wrote_during_a_hold_is_put_back_once() {
    let mut w = canary_paused();
    let quiet = w.step();
    assert_eq!(quiet.route_weight, None, "a hold writes nothing");
    // Someone else edits the route.
    w.route = Some(70);
    let p = w.step();
    assert_eq!(p.route_weight, Some(20), "the hold's weight is written back");
    assert!(
        p.events
            .iter()
            .any(|e| e.warning && e.reason == "RouteWeightRestored" && e.note.contains("70%")),
        "{:?}",
        p.events
    );
    assert_eq!(p.status.phase, Some(Phase::Paused), "still in the pause");
    let p = w.step();
    assert_eq!(p.route_weight, None, "no write loop");
    assert!(p.events.iter().all(|e| e.reason != "RouteWeightRestored"));
}
