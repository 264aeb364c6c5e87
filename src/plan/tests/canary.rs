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
    assert_message(&p, "canary revision 2 at 50% (step 4 of 5)");
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

/// The canary's desired replicas in the last plan.
fn canary_replicas(p: &Plan, rev: i64) -> Option<i32> {
    p.deployments.get(&rev).map(|d| d.replicas)
}

#[test]
fn a_canary_that_matches_its_weight_scales_before_each_weight_and_to_full_before_promotion() {
    let steps = serde_json::json!([
        {"setCanaryScale": {"matchTrafficWeight": true}}, {"setWeight": 10}, {"pause": {}},
        {"setWeight": 50}, {"pause": {}}]);
    let mut spec = canary_spec(steps);
    spec["replicas"] = serde_json::json!(10);
    let mut w = World::new(md("v1", spec));
    w.settle();
    w.set_version("v2");
    w.blocked.insert(2);
    let p = w.settle();
    assert_eq!(canary_replicas(&p, 2), Some(1), "10% of 10 replicas takes 1");
    assert_eq!(w.route, Some(0), "no weight before that replica is ready");
    assert_message(&p, "waits for 1 ready replicas (0/1 ready)");
    w.blocked.clear();
    let p = w.settle();
    assert_eq!((w.route, p.status.phase), (Some(10), Some(Phase::Paused)));
    assert_eq!(canary_replicas(&p, 2), Some(1), "the canary costs one replica at 10%");

    // The next weight needs 5: the canary scales first and the weight waits for them.
    w.blocked.insert(2);
    w.annotate(PROMOTE, "true");
    let p = w.settle();
    assert_eq!(canary_replicas(&p, 2), Some(5));
    assert_eq!(w.route, Some(10), "traffic stays at 10% while 1 of 5 is ready");
    assert_eq!(p.status.phase, Some(Phase::Progressing));
    assert_message(
        &p,
        "canary revision 2 at 10% (step 4 of 5) waits for 5 ready replicas (1/5 ready)",
    );
    w.blocked.clear();
    let p = w.settle();
    assert_eq!((w.route, p.status.phase), (Some(50), Some(Phase::Paused)));

    // Promotion: the canary goes to full size before the stable Service moves.
    w.blocked.insert(2);
    w.annotate(PROMOTE, "true");
    let p = w.settle();
    assert_eq!(canary_replicas(&p, 2), Some(10));
    assert_eq!(p.status.stable_revision, Some(1), "not promoted at 5 of 10");
    assert_eq!(w.route, Some(50));
    assert_message(&p, "waits for 10 ready replicas before promotion");
    w.blocked.clear();
    let p = w.settle();
    assert_eq!(p.status.stable_revision, Some(2));
    assert_eq!((w.route, canary_replicas(&p, 2)), (Some(0), Some(10)));
}

#[test]
fn a_fixed_canary_scale_is_raised_to_what_its_weight_takes_and_never_above_full() {
    let steps = serde_json::json!([
        {"setCanaryScale": {"replicas": 1}}, {"setWeight": 50}, {"pause": {}},
        {"setCanaryScale": {"replicas": 40}}, {"pause": {}}]);
    let mut spec = canary_spec(steps);
    spec["replicas"] = serde_json::json!(4);
    let mut w = World::new(md("v1", spec));
    w.settle();
    w.set_version("v2");
    let p = w.settle();
    assert_eq!(w.route, Some(50));
    assert_eq!(
        canary_replicas(&p, 2),
        Some(2),
        "50% of 4 takes 2, more than the 1 asked for"
    );
    w.annotate(PROMOTE, "true");
    let p = w.settle();
    assert_eq!(canary_replicas(&p, 2), Some(4), "40 asked for, 4 is full size");
    assert_eq!(p.status.current_step_index, Some(4));
}

#[test]
fn an_autoscaled_replicas_count_resizes_the_canary_with_its_weight_and_is_no_new_revision() {
    let steps = serde_json::json!([{"setCanaryScale": {"matchTrafficWeight": true}}, {"setWeight": 25}, {"pause": {}}]);
    let mut spec = canary_spec(steps);
    spec["replicas"] = serde_json::json!(4);
    let mut w = World::new(md("v1", spec));
    w.settle();
    w.set_version("v2");
    let p = w.settle();
    assert_eq!(
        (w.route, canary_replicas(&p, 2), canary_replicas(&p, 1)),
        (Some(25), Some(1), Some(4))
    );
    // The scale subresource writes spec.replicas (the generation moves, the revision does not).
    w.md.spec.replicas = 12;
    w.md.metadata.generation = Some(w.md.metadata.generation.unwrap_or(0) + 1);
    let p = w.settle();
    assert_eq!(canary_replicas(&p, 2), Some(3), "25% of 12");
    assert_eq!(canary_replicas(&p, 1), Some(12), "the stable follows");
    assert_eq!(p.new_revision, None);
    assert_eq!(w.status().history.len(), 2);
    assert_eq!((w.route, p.status.phase), (Some(25), Some(Phase::Paused)));
}

#[test]
fn a_paused_spec_takes_the_size_of_its_step_but_scales_for_no_weight() {
    let steps = serde_json::json!([{"setCanaryScale": {"replicas": 1}}, {"setWeight": 50}, {"pause": {}}]);
    let mut spec = canary_spec(steps);
    spec["replicas"] = serde_json::json!(4);
    let mut w = World::new(md("v1", spec));
    w.settle();
    w.md.spec.paused = true;
    w.set_version("v2");
    let p = w.settle();
    assert_eq!(canary_replicas(&p, 2), Some(1), "the first step's size, not full size");
    assert_eq!((w.route, p.status.phase), (Some(0), Some(Phase::Paused)));
    w.md.spec.paused = false;
    let p = w.settle();
    assert_eq!((w.route, canary_replicas(&p, 2)), (Some(50), Some(2)));
}

fn any_step() -> impl Strategy<Value = crate::api::CanaryStep> {
    use crate::api::{CanaryScale, CanaryStep, PauseStep};
    prop_oneof![
        (0i32..=100).prop_map(|w| CanaryStep {
            set_weight: Some(w),
            ..CanaryStep::default()
        }),
        Just(CanaryStep {
            pause: Some(PauseStep { duration: None }),
            ..CanaryStep::default()
        }),
        (0i32..30).prop_map(|n| CanaryStep {
            set_canary_scale: Some(CanaryScale {
                replicas: Some(n),
                match_traffic_weight: None
            }),
            ..CanaryStep::default()
        }),
        Just(CanaryStep {
            set_canary_scale: Some(CanaryScale {
                replicas: None,
                match_traffic_weight: Some(true)
            }),
            ..CanaryStep::default()
        }),
    ]
}

proptest! {
    /// The canary's size stays within full size, never below what the traffic on it takes,
    /// is full size once the steps are done, and full size when no step scales it.
    #[test]
    fn the_canary_size_stays_between_what_its_traffic_takes_and_full_size(
        steps in proptest::collection::vec(any_step(), 1..8), index in 0i32..10, route in 0i32..=100,
        full in 0i32..20, paused in any::<bool>(),
    ) {
        let size = crate::plan::canary::canary_size(&steps, index, route, full, paused);
        prop_assert!(size <= full && size >= crate::plan::steps::replicas_for(full, route), "{size} of {full} at {route}%");
        let scaled = steps.iter().take(usize::try_from(index).unwrap_or(0) + 1).any(|s| s.set_canary_scale.is_some());
        if usize::try_from(index).is_ok_and(|i| i >= steps.len()) || !scaled {
            prop_assert_eq!(size, full);
        }
    }
}

#[test]
fn a_weight_step_and_the_pause_after_it_take_one_plan() {
    let steps = serde_json::json!([
        {"setWeight": 25}, {"pause": {"duration": "30s"}}, {"setWeight": 50}, {"setWeight": 75},
        {"pause": {}}, {"setWeight": 100}]);
    let mut w = World::new(md("v1", canary_spec(steps)));
    w.settle();
    w.set_version("v2");
    let mut p = w.step();
    for _ in 0..6 {
        if p.route_weight == Some(25) {
            break;
        }
        p = w.step();
    }
    assert_eq!(p.route_weight, Some(25));
    assert_eq!(p.status.phase, Some(Phase::Paused), "the pause starts in the same plan");
    assert_eq!(
        p.status.canary_weight,
        Some(25),
        "the weight the route carries once written"
    );
    assert_eq!(p.status.current_step_index, Some(1));
    let started = p.deployments.get(&2).and_then(|d| d.canary_step);
    assert_eq!(started.map(|s| s.index), Some(1), "the pause is the step on the canary");
    assert!(
        p.requeue_after.is_some_and(|d| d.as_secs() >= 29 && d.as_secs() <= 31),
        "looked at again when the pause ends: {:?}",
        p.requeue_after
    );
    let quiet = w.step();
    assert_eq!(quiet.route_weight, None, "the next reconcile writes no weight");
    assert_eq!(quiet.status.current_step_index, Some(1));
    assert_eq!(
        quiet.deployments.get(&2).and_then(|d| d.canary_step),
        started,
        "the pause keeps its start"
    );

    // Two weight steps in a row: the second waits until the route reads the first.
    w.advance(30);
    let p = w.step();
    assert_eq!(p.route_weight, Some(50));
    assert_eq!(p.status.phase, Some(Phase::Progressing));
    assert_message(&p, "canary revision 2 at 25%, setting 50% (step 3 of 6)");
    let p = w.step();
    assert_eq!(p.route_weight, Some(75));
    assert_eq!(p.status.phase, Some(Phase::Paused));
    assert_message(&p, "canary revision 2 at 75% (step 5 of 6), paused");

    // A promote handled by the plan is not gone past: the annotation is removed once.
    w.annotate(PROMOTE, "true");
    let p = w.step();
    assert_eq!(p.route_weight, Some(100));
    assert!(p.consume.contains(&PROMOTE));
    assert_eq!(p.status.phase, Some(Phase::Progressing), "the promote is not gone past");
    let p = w.step();
    assert_eq!(p.status.stable_revision, Some(2), "promoted once the route read 100");
}
