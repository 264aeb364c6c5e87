//! Gradual rollbacks.

use super::*;

/// Steps until the route carries `weight`, returning the seconds it took.
fn seconds_until_weight(w: &mut World, weight: i32) -> i64 {
    let start = w.now;
    for _ in 0..100 {
        if w.route == Some(weight) {
            return start.duration_until(w.now).as_secs();
        }
        w.step();
    }
    panic!("the route never carried {weight}: {:?}", w.status().message);
}

#[test]
fn gradual_rollback_walks_the_steps_below_the_weight_holding_each() {
    let mut w = canary_at_60("Pause");
    w.annotate(ABORT, "true");
    let p = w.step();
    assert_eq!(p.route_weight, Some(50), "the first step below 60");
    assert_eq!(
        p.canary_service.map(|s| s.revision),
        Some(2),
        "the canary keeps its share"
    );
    assert_eq!(p.status.phase, Some(Phase::RollingBack));
    let record = p.status.last_rollback.clone().expect("lastRollback");
    assert_eq!(record.mode, crate::api::RollbackMode::Gradual);
    assert_eq!((record.from_revision, record.to_revision), (2, 1));
    assert!(record.completed_at.is_none());
    for (from, to) in [(50, 20), (20, 5), (5, 0)] {
        let p = w.step();
        assert_eq!(p.status.canary_weight, Some(from));
        let index = [50, 20, 5, 0].iter().position(|s| *s == from).map(|i| i as i32);
        assert_eq!(
            p.deployments.get(&2).and_then(|d| d.rollback_step).map(|s| s.index),
            index,
            "the held step is kept on the Deployment being left"
        );
        assert_eq!(p.deployments.get(&2).map(|d| d.replicas), Some(2), "still serving");
        let held = seconds_until_weight(&mut w, to);
        assert!((60..=70).contains(&held), "{from}% held {held}s before {to}%");
    }
    let p = w.step();
    assert_eq!(p.status.phase, Some(Phase::Degraded));
    assert_eq!(p.status.stable_revision, Some(1));
    assert_eq!(p.canary_service.map(|s| s.revision), Some(1));
    assert_eq!(
        p.deployments.get(&2).map(|d| d.replicas),
        Some(0),
        "left revision scaled down"
    );
    let record = p.status.last_rollback.expect("lastRollback");
    assert_eq!(record.mode, crate::api::RollbackMode::Gradual);
    assert!(record.completed_at.is_some());
}

#[test]
fn gradual_rollback_pauses_while_the_stable_revision_is_unhealthy() {
    let mut w = canary_at_60("Pause");
    w.blocked.insert(1);
    if let Some(d) = w.deployments.get_mut(&1) {
        d.available = false;
        d.ready_replicas = 0;
    }
    w.annotate(ABORT, "true");
    let p = w.step();
    assert_eq!(p.status.phase, Some(Phase::Paused));
    assert_eq!(p.route_weight, None, "traffic stays");
    assert!(
        p.events
            .iter()
            .any(|e| e.warning && e.reason == "GradualRollbackPaused")
    );
    let message = p.status.message.clone().unwrap_or_default();
    assert!(
        message.contains("paused at 60%: revision 1 is not healthy (0/2 replicas ready)"),
        "{message}"
    );
    w.advance(600);
    let p = w.step();
    assert_eq!(p.route_weight, None, "still paused");
    assert!(p.events.is_empty(), "one Event per pause: {:?}", p.events);
    w.blocked.clear();
    w.step();
    let p = w.step();
    assert_eq!(p.route_weight, Some(50), "goes on once stable is healthy");
}

#[test]
fn gradual_rollback_with_on_unhealthy_instant_jumps_to_zero() {
    let mut w = canary_at_60("Instant");
    w.annotate(ABORT, "true");
    w.step();
    assert_eq!(w.route, Some(50));
    w.step();
    w.blocked.insert(1);
    if let Some(d) = w.deployments.get_mut(&1) {
        d.available = false;
    }
    w.advance(60);
    let p = w.step();
    assert_eq!(p.route_weight, Some(0), "jumps to 0");
    assert!(p.events.iter().any(|e| e.reason == "GradualRollbackJumped"));
    let record = p.status.last_rollback.expect("lastRollback");
    assert!(record.completed_at.is_some());
    assert_eq!(record.mode, crate::api::RollbackMode::Gradual);
}

#[test]
fn a_manual_gradual_rollback_from_stable_moves_traffic_to_the_canary_service_first() {
    let mut w = World::new(md(
        "v1",
        serde_json::json!({"trafficRouting": {"gatewayAPI": {"httpRoute": "chat"}}}),
    ));
    w.policy = Some(gradual_policy("Pause"));
    w.settle();
    w.set_version("v2");
    w.settle();
    assert_eq!(w.status().stable_revision, Some(2));
    w.annotate(ROLLBACK_TO, "1");
    let p = w.step();
    assert_eq!(p.route_weight, Some(100), "r2's traffic onto the canary Service");
    assert_eq!(p.canary_service.map(|s| s.revision), Some(2));
    assert_eq!(p.stable_service.map(|s| s.revision), Some(2), "stable not moved yet");
    let p = w.step();
    assert_eq!(
        p.stable_service.map(|s| s.revision),
        Some(1),
        "then r1 takes the stable Service"
    );
    assert_eq!(p.route_weight, None);
    let p = w.step();
    assert_eq!(p.route_weight, Some(50));
    assert_eq!(p.status.canary_revision, Some(2));
    for weight in [20, 5, 0] {
        seconds_until_weight(&mut w, weight);
    }
    let p = w.step();
    assert_eq!(p.status.stable_revision, Some(1));
    assert_eq!(p.status.phase, Some(Phase::Degraded), "the spec still names r2");
    assert_eq!(w.phase_of(2), Some(RevisionPhase::RolledBack));
}

#[test]
fn abort_during_a_gradual_rollback_finishes_it_at_once() {
    let mut w = canary_at_60("Pause");
    w.annotate(ABORT, "true");
    w.step();
    assert_eq!(w.route, Some(50));
    w.annotate(ABORT, "true");
    let p = w.step();
    assert_eq!(p.route_weight, Some(0));
    assert!(p.consume.contains(&ABORT));
    let record = p.status.last_rollback.expect("lastRollback");
    assert!(record.completed_at.is_some());
    assert_eq!(record.mode, crate::api::RollbackMode::Instant, "it ended instantly");
}

#[test]
fn a_gradual_policy_without_a_router_rolls_back_instantly_and_says_so() {
    let mut w = World::new(md("v1", serde_json::json!({})));
    w.policy = Some(gradual_policy("Pause"));
    w.settle();
    w.set_version("v2");
    w.settle();
    w.annotate(ROLLBACK_TO, "1");
    let p = w.step();
    assert_eq!(p.stable_service.map(|s| s.revision), Some(1));
    assert!(p.events.iter().any(|e| e.reason == "GradualRollbackUnavailable"));
    let record = p.status.last_rollback.expect("lastRollback");
    assert_eq!(record.mode, crate::api::RollbackMode::Instant);
}

#[test]
fn a_weight_someone_else_raises_in_a_hold_is_restored_on_the_same_clock_and_a_lower_one_is_taken() {
    let mut w = canary_at_60("Pause");
    w.annotate(ABORT, "true");
    w.step();
    let p = w.step();
    assert_eq!(p.status.canary_weight, Some(50));
    let hold = p
        .deployments
        .get(&2)
        .and_then(|d| d.rollback_step)
        .expect("the hold at 50%");

    // Someone sends 90% back to the revision being left.
    w.route = Some(90);
    let p = w.step();
    assert_eq!(p.route_weight, Some(50), "the held step's weight goes back");
    assert_eq!(
        p.deployments.get(&2).and_then(|d| d.rollback_step),
        Some(hold),
        "on the hold's own clock"
    );
    assert!(
        p.events.iter().any(|e| e.warning
            && e.reason == "RouteWeightRestored"
            && e.note.contains("90%")
            && e.note.contains("restored 50%")),
        "{:?}",
        p.events
    );
    let p = w.step();
    assert!(p.events.iter().all(|e| e.reason != "RouteWeightRestored"), "once");
    assert_eq!(p.deployments.get(&2).and_then(|d| d.rollback_step), Some(hold));

    // Someone lowers it to 10%: taken, and the walk goes on from there (to 5%).
    w.route = Some(10);
    let p = w.step();
    assert!(p.events.iter().all(|e| e.reason != "RouteWeightRestored"));
    assert_eq!(p.route_weight, Some(5), "the next step below 10%");
}

#[test]
fn a_canary_sized_by_its_weight_keeps_its_pods_while_a_gradual_rollback_walks_it_down() {
    let steps = serde_json::json!([{"setCanaryScale": {"matchTrafficWeight": true}}, {"setWeight": 60}, {"pause": {}}]);
    let mut spec = canary_spec(steps);
    spec["replicas"] = serde_json::json!(10);
    let mut w = World::new(md("v1", spec));
    w.policy = Some(gradual_policy("Pause"));
    w.settle();
    w.set_version("v2");
    let p = w.settle();
    assert_eq!(
        (w.route, p.deployments.get(&2).map(|d| d.replicas)),
        (Some(60), Some(6))
    );
    w.annotate(ABORT, "true");
    for _ in 0..3 {
        let p = w.step();
        assert_eq!(p.status.phase, Some(Phase::RollingBack));
        assert_eq!(
            p.deployments.get(&2).map(|d| d.replicas),
            Some(6),
            "not scaled up on its way out"
        );
        w.advance(60);
    }
}
