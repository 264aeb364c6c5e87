//! Instant rollbacks and the requests that start them.

use super::*;

#[test]
fn rollback_to_previous_on_a_warm_revision_completes_in_one_plan() {
    let mut w = World::new(md("v1", serde_json::json!({})));
    w.settle();
    w.set_version("v2");
    w.settle();
    w.annotate(ROLLBACK_TO, "previous");
    let p = w.step();
    assert_eq!(p.status.stable_revision, Some(1));
    assert_eq!(p.stable_service.map(|s| s.revision), Some(1));
    assert_eq!(p.consume, vec![ROLLBACK_TO]);
    assert_eq!(p.status.phase, Some(Phase::Degraded));
    let r = p.status.last_rollback.clone().expect("lastRollback");
    assert_eq!(
        (r.from_revision, r.to_revision, r.trigger),
        (2, 1, RollbackTrigger::Manual)
    );
    assert!(r.completed_at.is_some());
    assert_eq!(w.phase_of(2), Some(RevisionPhase::RolledBack));
    // Held: the spec still names r2, which is not deployed again.
    let p = w.settle();
    assert_eq!(p.status.stable_revision, Some(1));
    assert_eq!(p.deployments.get(&2).map(|d| d.replicas), Some(0));
}

#[test]
fn rollback_to_a_cold_revision_scales_it_up_before_moving_traffic() {
    let mut w = World::new(md("v1", serde_json::json!({"warmRevisions": 0})));
    w.settle();
    w.set_version("v2");
    w.settle();
    assert_eq!(w.deployments[&1].replicas, 0, "r1 cold");
    w.blocked.insert(1);
    w.annotate(ROLLBACK_TO, "1");
    let p = w.step();
    assert_eq!(p.status.phase, Some(Phase::RollingBack));
    assert_eq!(p.stable_service.map(|s| s.revision), Some(2));
    assert_eq!(p.deployments.get(&1).map(|d| d.replicas), Some(2));
    w.blocked.clear();
    w.step();
    let p = w.step();
    assert_eq!(p.status.stable_revision, Some(1));
    assert_eq!(p.stable_service.map(|s| s.revision), Some(1));
}

#[test]
fn bad_values_change_nothing_but_the_annotation_condition() {
    let mut w = World::new(md("v1", serde_json::json!({})));
    w.settle();
    w.set_version("v2");
    w.settle();
    let before = w.status();
    for (key, value) in [
        (ROLLBACK_TO, "x"),
        (ROLLBACK_TO, "7"),
        (ABORT, "no"),
        (PROMOTE, "soon"),
        (RETRY, "1"),
    ] {
        w.annotate(key, value);
        let p = w.step();
        assert_eq!(p.consume, vec![key]);
        assert!(
            p.events
                .iter()
                .any(|e| e.warning && e.reason == "InvalidAnnotation" && e.note.contains(value))
        );
        let s = w.status();
        assert_eq!(
            (s.stable_revision, &s.history, &s.last_rollback),
            (before.stable_revision, &before.history, &before.last_rollback)
        );
        let c = crate::conditions::find(&s.conditions, ANNOTATION_ACCEPTED).expect("condition");
        assert_eq!(c.status, "False");
    }
}

fn overridden(p: &Plan, key: &str) -> bool {
    p.events
        .iter()
        .any(|e| e.warning && e.reason == "RequestOverridden" && e.note.starts_with(key))
}

#[test]
fn a_rollback_written_with_a_promote_wins() {
    let mut w = canary_paused();
    w.annotate(ROLLBACK_TO, "previous");
    w.annotate(PROMOTE, "full");
    let p = w.step();
    assert!(
        p.consume.contains(&ROLLBACK_TO) && p.consume.contains(&PROMOTE),
        "{:?}",
        p.consume
    );
    assert!(overridden(&p, PROMOTE), "{:?}", p.events);
    let p = w.settle();
    assert_eq!(p.status.stable_revision, Some(1));
    assert_eq!(w.route, Some(0));
    assert_eq!(w.phase_of(2), Some(RevisionPhase::RolledBack));
    let r = p.status.last_rollback.expect("lastRollback");
    assert_eq!((r.from_revision, r.to_revision), (2, 1));
}

#[test]
fn an_abort_written_with_a_retry_wins() {
    let mut w = canary_paused();
    w.annotate(ABORT, "true");
    w.annotate(RETRY, "true");
    let p = w.step();
    assert!(
        p.consume.contains(&ABORT) && p.consume.contains(&RETRY),
        "{:?}",
        p.consume
    );
    assert!(overridden(&p, RETRY), "{:?}", p.events);
    let p = w.settle();
    assert_eq!(p.status.stable_revision, Some(1));
    assert_eq!(w.route, Some(0));
    assert_eq!(w.phase_of(2), Some(RevisionPhase::RolledBack), "not rolled out again");
    // A retry on its own, afterwards, rolls the revision out again.
    w.annotate(RETRY, "true");
    w.settle();
    assert_eq!(w.phase_of(2), Some(RevisionPhase::Progressing));
    assert_eq!(w.route, Some(20));
}

#[test]
fn a_promote_with_nothing_to_roll_back_is_not_overridden() {
    let mut w = canary_paused();
    w.annotate(ABORT, "true");
    w.settle();
    // Nothing to abort now: the abort does not roll back, so a promote with it is not
    // overridden (and finds nothing to promote).
    w.annotate(ABORT, "true");
    w.annotate(PROMOTE, "true");
    let p = w.step();
    assert!(!overridden(&p, PROMOTE), "{:?}", p.events);
    assert!(p.events.iter().any(|e| e.reason == "NothingToAbort"));
}

#[test]
fn a_partly_warm_revision_is_kept_at_warm_replicas_and_scaled_to_full_before_a_rollback_moves_traffic() {
    let mut w = World::new(md(
        "v1",
        serde_json::json!({"replicas": 4, "warmReplicas": 1, "warmRevisions": 1}),
    ));
    w.settle();
    assert_eq!(w.status().warm, None, "nothing to keep warm yet");
    w.set_version("v2");
    let p = w.settle();
    assert_eq!(p.deployments.get(&1).map(|d| d.replicas), Some(1), "r1 partly warm");
    assert_eq!(
        p.status.warm,
        Some(crate::api::WarmStatus {
            revisions: vec![1],
            replicas: 1
        })
    );
    w.blocked.insert(1);
    w.annotate(ROLLBACK_TO, "previous");
    let p = w.settle();
    assert_eq!(
        p.deployments.get(&1).map(|d| d.replicas),
        Some(4),
        "scaled to full first"
    );
    assert_eq!(p.status.phase, Some(Phase::RollingBack));
    assert_eq!(p.stable_service.map(|s| s.revision), Some(2), "traffic waits");
    assert_message(&p, "1/4 replicas ready");
    w.blocked.clear();
    let p = w.settle();
    assert_eq!(p.status.stable_revision, Some(1));
    assert_eq!(p.stable_service.map(|s| s.revision), Some(1));
    assert_eq!(p.status.warm, None, "r2 was rolled back: not kept warm");
}

#[test]
fn warm_replicas_above_replicas_count_as_replicas_and_zero_warm_revisions_report_no_standby() {
    let mut w = World::new(md(
        "v1",
        serde_json::json!({"replicas": 2, "warmReplicas": 9, "warmRevisions": 2}),
    ));
    w.settle();
    w.set_version("v2");
    w.settle();
    w.set_version("v3");
    let p = w.settle();
    assert_eq!(
        p.status.warm,
        Some(crate::api::WarmStatus {
            revisions: vec![2, 1],
            replicas: 4
        })
    );
    assert_eq!(p.deployments.get(&1).map(|d| d.replicas), Some(2));
    w.md.spec.warm_revisions = 0;
    let p = w.settle();
    assert_eq!(p.status.warm, None);
    assert_eq!(p.deployments.get(&2).map(|d| d.replicas), Some(0));
}

/// The sim's pods of `rev` come up one at a time: `ready` of them are ready.
fn set_ready(w: &mut World, rev: i64, ready: i32) {
    if let Some(d) = w.deployments.get_mut(&rev) {
        d.ready_replicas = ready;
        d.available = ready >= d.replicas;
    }
}

#[test]
fn with_a_route_a_rollback_to_a_partly_warm_revision_moves_traffic_as_its_pods_become_ready() {
    let mut spec = canary_spec(serde_json::json!([{"setWeight": 50}, {"pause": {}}]));
    spec["replicas"] = serde_json::json!(4);
    spec["warmReplicas"] = serde_json::json!(1);
    let mut w = World::new(md("v1", spec));
    w.settle();
    w.set_version("v2");
    w.settle();
    w.annotate(PROMOTE, "full");
    let p = w.settle();
    assert_eq!((p.status.stable_revision, w.route), (Some(2), Some(0)));
    assert_eq!(w.deployments[&1].replicas, 1, "r1 partly warm");

    w.blocked.insert(1);
    w.annotate(ROLLBACK_TO, "1");
    let p = w.settle();
    assert_eq!(p.deployments.get(&1).map(|d| d.replicas), Some(4));
    assert_eq!(
        p.canary_service.map(|s| s.revision),
        Some(1),
        "the canary Service selects r1"
    );
    assert_eq!(p.stable_service.map(|s| s.revision), Some(2));
    assert_eq!(w.route, Some(25), "1 of 4 ready: 25% of the traffic");
    assert_eq!(p.status.phase, Some(Phase::RollingBack));
    assert_eq!((p.status.canary_revision, p.status.canary_weight), (Some(1), Some(25)));
    assert_message(&p, "1/4 replicas ready, 25% of traffic on it");
    set_ready(&mut w, 1, 3);
    w.step();
    assert_eq!(w.route, Some(75));
    w.blocked.clear();
    let p = w.settle();
    assert_eq!(p.status.stable_revision, Some(1));
    assert_eq!(p.stable_service.map(|s| s.revision), Some(1));
    assert_eq!(w.route, Some(0), "all traffic on r1 through the stable Service");
    assert!(p.status.last_rollback.is_some_and(|r| r.completed_at.is_some()));
}

#[test]
fn a_rollback_during_a_canary_takes_its_weight_off_before_the_target_gets_a_share() {
    let mut spec = canary_spec(serde_json::json!([{"setWeight": 40}, {"pause": {}}]));
    spec["replicas"] = serde_json::json!(2);
    spec["warmReplicas"] = serde_json::json!(0);
    spec["warmRevisions"] = serde_json::json!(1);
    let mut w = World::new(md("v1", spec));
    w.settle();
    w.set_version("v2");
    w.settle();
    w.annotate(PROMOTE, "full");
    w.settle();
    w.set_version("v3");
    w.settle();
    assert_eq!((w.status().canary_revision, w.route), (Some(3), Some(40)));
    w.blocked.insert(1);
    w.annotate(ROLLBACK_TO, "1");
    let p = w.step();
    assert_eq!(p.route_weight, Some(0), "r3's canary weight goes first");
    assert_eq!(
        p.canary_service.map(|s| s.revision),
        Some(3),
        "the canary Service stays until then"
    );
    let p = w.step();
    assert_eq!(p.canary_service.map(|s| s.revision), Some(1));
    assert_eq!(p.route_weight, Some(0), "0 of 2 ready: no traffic yet");
    w.blocked.clear();
    let p = w.settle();
    assert_eq!(p.status.stable_revision, Some(1));
    assert_eq!(w.route, Some(0));
}
