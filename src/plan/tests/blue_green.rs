//! Blue/green rollouts, promotion and the progress deadline.

use super::*;

#[test]
fn first_revision_is_created_scaled_up_and_promoted_once_available() {
    let mut w = World::new(md("v1", serde_json::json!({})));
    let p = w.step();
    assert_eq!(p.new_revision.as_ref().map(|(n, _)| *n), Some(1));
    assert_eq!(p.deployments.get(&1).map(|d| (d.replicas, d.create)), Some((2, true)));
    assert_eq!(
        p.stable_service, None,
        "no stable traffic before the first revision is Available"
    );
    assert_eq!(p.status.phase, Some(Phase::Progressing));
    assert!(p.requeue_after.is_some(), "requeued at the progress deadline");
    let p = w.step();
    assert_eq!(p.status.stable_revision, Some(1));
    assert_eq!(p.status.phase, Some(Phase::Healthy));
    assert_eq!(p.stable_service.map(|s| s.revision), Some(1));
    assert!(p.events.iter().any(|e| e.reason == "Promoted"));
}

#[test]
fn blue_green_keeps_traffic_on_stable_until_the_new_revision_is_available() {
    let mut w = World::new(md("v1", serde_json::json!({})));
    w.settle();
    w.set_version("v2");
    w.blocked.insert(2);
    let p = w.step();
    assert_eq!(p.new_revision.as_ref().map(|(n, _)| *n), Some(2));
    assert_eq!(p.stable_service.map(|s| s.revision), Some(1));
    assert_eq!(p.canary_service.map(|s| s.revision), Some(2));
    assert_eq!(p.status.canary_revision, Some(2));
    let p = w.step();
    assert_eq!(p.status.phase, Some(Phase::Progressing));
    assert!(p.status.message.unwrap_or_default().contains("0/2 replicas ready"));
    w.blocked.clear();
    w.step();
    let p = w.step();
    assert_eq!(p.status.stable_revision, Some(2));
    assert_eq!(w.phase_of(1), Some(RevisionPhase::Superseded));
    assert_eq!(p.deployments.get(&1).map(|d| d.replicas), Some(2), "r1 stays warm");
}

#[test]
fn a_steady_state_plan_is_a_fixed_point() {
    let mut w = World::new(md("v1", serde_json::json!({})));
    w.settle();
    w.set_version("v2");
    w.settle();
    let obs = w.observed();
    let a = plan(&w.md, &obs);
    assert_eq!(w.md.status.as_ref(), Some(&a.status), "status already as planned");
    assert!(a.new_revision.is_none() && a.prune.is_empty() && a.consume.is_empty() && a.events.is_empty());
    for (rev, d) in &a.deployments {
        let o = &obs.deployments[rev];
        assert_eq!(
            (o.replicas, o.progress_started_at),
            (d.replicas, d.progress_started_at),
            "r{rev}"
        );
    }
    assert_eq!(a.stable_service, obs.stable_service);
    assert_eq!(a.canary_service, obs.canary_service);
}

#[test]
fn the_progress_deadline_fails_the_revision_and_keeps_stable() {
    let mut w = World::new(md("v1", serde_json::json!({"progressDeadlineSeconds": 30})));
    w.settle();
    w.set_version("v2");
    w.blocked.insert(2);
    let mut p = w.step();
    for _ in 0..10 {
        p = w.step();
    }
    assert_eq!(p.status.phase, Some(Phase::Degraded));
    assert_eq!(w.phase_of(2), Some(RevisionPhase::Failed));
    let r = p.status.last_rollback.clone().expect("lastRollback");
    assert_eq!(
        (r.from_revision, r.to_revision, r.trigger),
        (2, 1, RollbackTrigger::ProgressDeadline)
    );
    assert_eq!(p.deployments.get(&2).map(|d| d.replicas), Some(0));
    assert_eq!(p.canary_service.map(|s| s.revision), Some(1));
    // retry restarts the clock and rolls it out again.
    w.blocked.clear();
    w.annotate(RETRY, "true");
    w.settle();
    assert_eq!(w.status().stable_revision, Some(2));
}

#[test]
fn manual_promotion_waits_for_the_annotation_and_a_git_revert_needs_none() {
    let mut w = World::new(md(
        "v1",
        serde_json::json!({"strategy": {"blueGreen": {"autoPromote": false}}}),
    ));
    w.settle();
    w.set_version("v2");
    let p = w.settle();
    assert_eq!(p.status.phase, Some(Phase::Paused));
    assert_eq!(p.status.stable_revision, Some(1));
    w.annotate(PROMOTE, "true");
    let p = w.step();
    assert_eq!(p.status.stable_revision, Some(2));
    assert_eq!(p.consume, vec![PROMOTE]);
    w.set_version("v1");
    let p = w.step();
    assert_eq!(
        p.status.stable_revision,
        Some(1),
        "a revert to a warm revision switches at once"
    );
    assert!(p.new_revision.is_none());
}
