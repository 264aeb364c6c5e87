//! Unit and property tests of the planner, on a small simulated cluster.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use proptest::prelude::*;

use super::*;
use crate::api::annotations::{ABORT, PROMOTE, RETRY, ROLLBACK_TO};
use crate::api::{ModelDeployment, Phase, RevisionPhase, RollbackTrigger};

fn md(version: &str, extra: serde_json::Value) -> ModelDeployment {
    let mut spec = serde_json::json!({
        "model": {"name": "llama", "version": version},
        "replicas": 2, "port": 8000,
        "template": {"spec": {"containers": [{"name": "s", "image": "vllm"}]}},
        "strategy": {"blueGreen": {"autoPromote": true}},
        "revisionHistoryLimit": 3, "warmRevisions": 1, "progressDeadlineSeconds": 600
    });
    if let (Some(obj), serde_json::Value::Object(extra)) = (spec.as_object_mut(), extra) {
        obj.extend(extra);
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "chat", "namespace": "llm", "generation": 1, "uid": "u"}, "spec": spec
    }))
    .expect("valid ModelDeployment")
}

/// A tiny cluster: applies plans the way the controller does, and makes Deployments
/// Available one step after they are scaled up, unless their revision is blocked.
struct World {
    md: ModelDeployment,
    now: Timestamp,
    revisions: Vec<ObservedRevision>,
    deployments: BTreeMap<i64, ObservedDeployment>,
    stable_service: Option<ServiceTarget>,
    canary_service: Option<ServiceTarget>,
    blocked: BTreeSet<i64>,
    last_plan: Option<Plan>,
    /// The canary weight on the route object, when the ModelDeployment has one.
    route: Option<i32>,
    /// The referenced RollbackPolicy.
    policy: Option<PolicyObservation>,
    /// What the triggers say, as the controller would observe it.
    metrics: Option<MetricsObservation>,
}

impl World {
    fn new(md: ModelDeployment) -> World {
        World {
            md,
            now: "2026-11-23T00:00:00Z".parse().expect("time"),
            revisions: Vec::new(),
            deployments: BTreeMap::new(),
            stable_service: None,
            canary_service: None,
            blocked: BTreeSet::new(),
            last_plan: None,
            route: None,
            policy: None,
            metrics: None,
        }
    }

    fn observed(&self) -> Observed {
        Observed {
            now: self.now,
            revisions: self.revisions.clone(),
            deployments: self.deployments.clone(),
            stable_service: self.stable_service,
            canary_service: self.canary_service,
            route: self
                .md
                .spec
                .traffic_routing
                .as_ref()
                .map(|_| RouteObservation::Weights(crate::traffic::Weights::canary_at(self.route.unwrap_or(0)))),
            policy: self.policy.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// One reconcile, then time passes and pods start.
    fn step(&mut self) -> Plan {
        let obs = self.observed();
        let p = plan(&self.md, &obs);
        // Invariant: traffic never moves to a revision that is not Available.
        if let Some(target) = p.stable_service.filter(|t| Some(*t) != obs.stable_service) {
            let d = obs.deployments.get(&target.revision);
            assert!(
                d.is_some_and(|d| d.available),
                "stable Service moved to r{} which is not Available",
                target.revision
            );
        }
        if let Some((n, snap)) = &p.new_revision {
            assert!(
                self.revisions.iter().all(|r| r.number < *n),
                "revision numbers increase"
            );
            self.revisions.push(ObservedRevision {
                number: *n,
                hash: snap.hash(),
                snapshot: snap.clone(),
            });
        }
        for (rev, want) in &p.deployments {
            let exists = self.deployments.contains_key(rev);
            if !exists && !want.create {
                continue;
            }
            let d = self.deployments.entry(*rev).or_insert(ObservedDeployment {
                replicas: 0,
                ready_replicas: 0,
                available: false,
                progress_started_at: None,
                canary_step: None,
                rollback_step: None,
                template_drifted: false,
                generation: 1,
            });
            if d.replicas != want.replicas {
                d.available = want.replicas == 0;
                d.ready_replicas = 0;
            }
            d.replicas = want.replicas;
            d.progress_started_at = want.progress_started_at;
            d.canary_step = want.canary_step;
            d.rollback_step = want.rollback_step;
        }
        for rev in &p.prune {
            self.deployments.remove(rev);
            self.revisions.retain(|r| r.number != *rev);
        }
        // Invariant: canary weight only grows on an Available revision (or on the one the
        // stable Service selects, when a gradual rollback moves its traffic onto the canary
        // Service: no request changes revision).
        if let (Some(w), Some(canary)) = (p.route_weight, p.status.canary_revision)
            && w > self.route.unwrap_or(0)
            && obs.stable_service.map(|s| s.revision) != Some(canary)
        {
            assert!(
                obs.deployments.get(&canary).is_some_and(|d| d.available),
                "weight {w} on unavailable r{canary}"
            );
        }
        if let Some(w) = p.route_weight {
            self.route = Some(w);
        }
        self.stable_service = p.stable_service.or(self.stable_service);
        self.canary_service = p.canary_service.or(self.canary_service);
        self.md.status = Some(p.status.clone());
        let annotations = self.md.metadata.annotations.get_or_insert_with(Default::default);
        for key in &p.consume {
            annotations.remove(*key);
        }
        // Time passes; pods of unblocked revisions become ready.
        self.now = self.now.checked_add(jiff::SignedDuration::from_secs(5)).expect("time");
        for (rev, d) in self.deployments.iter_mut() {
            if d.replicas > 0 && !self.blocked.contains(rev) {
                d.ready_replicas = d.replicas;
                d.available = true;
            }
        }
        self.last_plan = Some(p.clone());
        p
    }

    fn settle(&mut self) -> Plan {
        let mut p = self.step();
        for _ in 0..6 {
            p = self.step();
        }
        p
    }

    fn set_version(&mut self, version: &str) {
        self.md.spec.model.version = version.to_string();
        self.md.metadata.generation = Some(self.md.metadata.generation.unwrap_or(0) + 1);
    }

    fn annotate(&mut self, key: &str, value: &str) {
        self.md
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(key.into(), value.into());
    }

    fn advance(&mut self, secs: i64) {
        self.now = self
            .now
            .checked_add(jiff::SignedDuration::from_secs(secs))
            .expect("time");
    }

    fn status(&self) -> crate::api::ModelDeploymentStatus {
        self.md.status.clone().unwrap_or_default()
    }

    fn phase_of(&self, rev: i64) -> Option<RevisionPhase> {
        self.status()
            .history
            .iter()
            .find(|h| h.revision == rev)
            .map(|h| h.phase)
    }
}

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

fn canary(steps: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "strategy": {"canary": {"steps": steps}},
        "trafficRouting": {"gatewayAPI": {"httpRoute": "chat"}}
    })
}

#[test]
fn canary_walks_its_steps_pauses_and_promotes_at_the_end() {
    let steps = serde_json::json!([
        {"setWeight": 10}, {"pause": {"duration": "5m"}}, {"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]);
    let mut w = World::new(md("v1", canary(steps)));
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
    let mut w = World::new(md("v1", canary(steps)));
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
    let mut w = World::new(md("v1", canary(steps)));
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

fn gradual_policy(on_unhealthy: &str) -> PolicyObservation {
    PolicyObservation::Found(Box::new(
        serde_json::from_value(serde_json::json!({
            "rollback": {"mode": "Gradual", "gradual": {"steps": [50, 20, 5, 0], "stepDuration": "60s", "onUnhealthy": on_unhealthy}}
        }))
        .expect("policy"),
    ))
}

/// A canary at 60% (then an open pause), with a gradual rollback policy.
fn canary_at_60(on_unhealthy: &str) -> World {
    let steps = serde_json::json!([{"setWeight": 60}, {"pause": {}}]);
    let mut w = World::new(md("v1", canary(steps)));
    w.policy = Some(gradual_policy(on_unhealthy));
    w.settle();
    w.set_version("v2");
    w.settle();
    assert_eq!(w.route, Some(60));
    w
}

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
fn a_missing_policy_is_a_condition_and_rollbacks_run_instantly() {
    let mut w = canary_at_60("Pause");
    w.policy = Some(PolicyObservation::NotFound(
        "spec.rollbackPolicyRef.name: RollbackPolicy \"llm\" not found in namespace llm".into(),
    ));
    w.annotate(ABORT, "true");
    let p = w.step();
    assert_eq!(p.route_weight, Some(0));
    let c = crate::conditions::find(&p.status.conditions, POLICY_RESOLVED).expect("PolicyResolved");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "PolicyNotFound"));
    assert!(c.message.contains("RollbackPolicy \"llm\" not found"), "{}", c.message);
}

#[derive(Clone, Debug)]
enum Action {
    Version(u8),
    RollbackPrevious,
    RollbackTo(i64),
    RollbackGarbage,
    Abort,
    Retry,
    Promote,
    Block(i64),
    Fail(i64),
    Unblock,
    Tick,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0u8..5).prop_map(Action::Version),
        1 => Just(Action::RollbackPrevious),
        1 => (1i64..8).prop_map(Action::RollbackTo),
        1 => Just(Action::RollbackGarbage),
        1 => Just(Action::Abort),
        1 => Just(Action::Retry),
        1 => Just(Action::Promote),
        1 => (1i64..8).prop_map(Action::Block),
        1 => (1i64..8).prop_map(Action::Fail),
        1 => Just(Action::Unblock),
        3 => Just(Action::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200), ..ProptestConfig::default() })]

    /// Whatever a person and the cluster do, traffic never moves to an unavailable revision
    /// (asserted in `World::step`), revision numbers only grow, history stays bounded and
    /// unique, and a settled world is a fixed point.
    #[test]
    fn invariants_hold_for_any_sequence(actions in proptest::collection::vec(action(), 1..40), auto in any::<bool>(), warm in 0i32..3, mode in 0u8..3, gradual in any::<bool>()) {
        let mut extra = serde_json::json!({
            "strategy": {"blueGreen": {"autoPromote": auto}}, "warmRevisions": warm, "progressDeadlineSeconds": 30});
        if mode == 2 {
            extra["trafficRouting"] = serde_json::json!({"gatewayAPI": {"httpRoute": "chat"}});
        }
        if mode == 1 {
            extra["strategy"] = serde_json::json!({"canary": {"steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}, {"pause": {"duration": "10s"}}]}});
            extra["trafficRouting"] = serde_json::json!({"smi": {"trafficSplit": "chat"}});
        }
        let mut w = World::new(md("v0", extra));
        if gradual {
            w.policy = Some(gradual_policy(if warm == 1 { "Instant" } else { "Pause" }));
        }
        for a in actions {
            match a {
                Action::Version(v) => w.set_version(&format!("v{v}")),
                Action::RollbackPrevious => w.annotate(ROLLBACK_TO, "previous"),
                Action::RollbackTo(n) => w.annotate(ROLLBACK_TO, &n.to_string()),
                Action::RollbackGarbage => w.annotate(ROLLBACK_TO, "yesterday"),
                Action::Abort => w.annotate(ABORT, "true"),
                Action::Retry => w.annotate(RETRY, "true"),
                Action::Promote => w.annotate(PROMOTE, "true"),
                Action::Block(r) => { w.blocked.insert(r); }
                Action::Fail(r) => {
                    // Its pods die and cannot come back until unblocked.
                    w.blocked.insert(r);
                    if let Some(d) = w.deployments.get_mut(&r) {
                        d.available = d.replicas == 0;
                        d.ready_replicas = 0;
                    }
                }
                Action::Unblock => w.blocked.clear(),
                Action::Tick => {}
            }
            w.step();
            let s = w.status();
            let revs: Vec<i64> = s.history.iter().map(|h| h.revision).collect();
            let mut sorted = revs.clone();
            sorted.sort_unstable_by(|a, b| b.cmp(a));
            sorted.dedup();
            prop_assert_eq!(&revs, &sorted, "history newest first, no duplicates");
            prop_assert!(revs.len() <= 3 + 3, "history bounded: {:?}", revs);
            if let Some(stable) = s.stable_revision {
                prop_assert!(revs.contains(&stable), "the stable revision is never pruned");
            }
            prop_assert!(s.current_revision.is_some_and(|c| revs.contains(&c)));
            let progressing: Vec<i64> = s.history.iter().filter(|h| h.phase == RevisionPhase::Progressing).map(|h| h.revision).collect();
            prop_assert!(progressing.iter().all(|r| Some(*r) == s.current_revision), "only the spec's revision progresses: {:?}", progressing);
        }
        w.blocked.clear();
        w.annotate(PROMOTE, "full");
        w.settle();
        // A gradual rollback takes four held steps of 60s.
        for _ in 0..4 {
            w.advance(60);
            w.settle();
        }
        let obs = w.observed();
        let again = plan(&w.md, &obs);
        prop_assert_eq!(Some(&again.status), w.md.status.as_ref(), "settled world is a fixed point");
        if mode > 0 && w.status().canary_revision.is_none() {
            prop_assert_eq!(w.route, Some(0), "no canary: all traffic on stable");
        }
    }
}

// ----- the policy's triggers -------------------------------------------------------------

fn metrics_policy(extra: serde_json::Value) -> PolicyObservation {
    let mut spec = serde_json::json!({
        "provider": {"prometheus": {"address": "http://prometheus:9090"}},
        "interval": "10s", "guardWindow": "10m", "verification": {"window": "5m"},
        "triggers": [
            {"name": "error-rate", "query": "q", "operator": "Gt", "threshold": 0.05},
            {"name": "ttft", "template": "VllmTtftP95", "operator": "Gt", "threshold": 2.5, "severity": "Warning"}
        ]
    });
    if let (Some(obj), serde_json::Value::Object(extra)) = (spec.as_object_mut(), extra) {
        obj.extend(extra);
    }
    PolicyObservation::Found(Box::new(serde_json::from_value(spec).expect("policy")))
}

/// The triggers' readings for the revision the planner judges now, as the controller would
/// evaluate them: `error` for error-rate, `ttft` for ttft (None: provider unavailable).
fn evaluate_now(w: &mut World, error: Option<f64>, ttft: Option<f64>) {
    let obs = w.observed();
    let Some(judged) = judged(&w.md, &obs) else {
        w.metrics = None;
        return;
    };
    let Some(PolicyObservation::Found(policy)) = &w.policy else {
        return;
    };
    let status = w.status();
    let outcomes = [error, ttft].map(|v| match v {
        Some(v) => Ok(crate::metrics::Reading::Value(v)),
        None => Err(crate::trigger::EvaluationError::Unavailable(
            "connection refused".into(),
        )),
    });
    let analysis: Vec<_> = policy
        .triggers
        .iter()
        .zip(&outcomes)
        .map(|(t, o)| {
            let prev = status.analysis.iter().find(|a| a.trigger == t.name);
            crate::trigger::evaluate(t, judged.revision, o, prev, w.now)
        })
        .collect();
    let (decision, notices) = crate::trigger::decide(&policy.triggers, &analysis, policy.on_metrics_unavailable);
    w.metrics = Some(MetricsObservation {
        judged,
        analysis,
        decision,
        notices,
        fresh: true,
    });
}

fn canary_with_policy(policy: PolicyObservation) -> World {
    let steps =
        serde_json::json!([{"setWeight": 20}, {"pause": {"duration": "30s"}}, {"setWeight": 60}, {"pause": {}}]);
    let mut w = World::new(md("v1", canary(steps)));
    w.policy = Some(policy);
    w.settle();
    w.set_version("v2");
    w.step();
    w.step();
    w.step();
    assert_eq!(w.route, Some(20));
    w
}

#[test]
fn judged_is_the_canary_then_the_guarded_stable_then_the_verified_target() {
    let mut w = canary_with_policy(metrics_policy(serde_json::json!({})));
    let j = judged(&w.md, &w.observed()).expect("judged");
    assert_eq!((j.revision, j.purpose, j.via_canary), (2, Purpose::Rollout, true));
    w.annotate(PROMOTE, "full");
    w.settle();
    assert_eq!(w.status().stable_revision, Some(2));
    let j = judged(&w.md, &w.observed()).expect("guarded");
    assert_eq!((j.revision, j.purpose), (2, Purpose::Guard));
    w.advance(601);
    assert_eq!(judged(&w.md, &w.observed()), None, "the guard window ended");
    w.annotate(ROLLBACK_TO, "1");
    w.settle();
    let j = judged(&w.md, &w.observed()).expect("verifying");
    assert_eq!((j.revision, j.purpose), (1, Purpose::Verification));
}

#[test]
fn a_critical_breach_on_the_canary_rolls_it_back_with_the_value_and_threshold() {
    let mut w = canary_with_policy(metrics_policy(serde_json::json!({})));
    evaluate_now(&mut w, Some(0.01), Some(0.3));
    let p = w.step();
    assert_eq!(p.status.analysis.len(), 2);
    assert_eq!(p.status.stable_revision, Some(1));
    evaluate_now(&mut w, Some(0.30), Some(0.3));
    let p = w.step();
    assert_eq!(p.route_weight, Some(0), "all traffic back to stable");
    assert_eq!(p.status.phase, Some(Phase::Degraded));
    let r = p.status.last_rollback.clone().expect("lastRollback");
    assert_eq!(r.trigger, RollbackTrigger::Metric);
    assert_eq!(r.trigger_name.as_deref(), Some("error-rate"));
    assert_eq!((r.value, r.threshold), (Some(0.30), Some(0.05)));
    assert!(p.events.iter().any(|e| e.warning && e.reason == "MetricRollback"));
    assert_eq!(w.phase_of(2), Some(RevisionPhase::RolledBack));
    let reason = w
        .status()
        .history
        .iter()
        .find(|h| h.revision == 2)
        .and_then(|h| h.reason.clone());
    assert!(reason.unwrap_or_default().contains("trigger error-rate: 0.3 > 0.05"));
    let c = crate::conditions::find(&p.status.conditions, crate::conditions::types::METRICS_AVAILABLE)
        .expect("MetricsAvailable");
    assert_eq!(c.status, "True");
}

#[test]
fn a_warning_breach_raises_an_event_and_a_condition_and_no_rollback() {
    let mut w = canary_with_policy(metrics_policy(serde_json::json!({})));
    evaluate_now(&mut w, Some(0.01), Some(9.0));
    let p = w.step();
    assert!(
        p.events.iter().any(|e| e.warning && e.reason == "TriggerFired"),
        "{:?}",
        p.events
    );
    assert!(p.status.last_rollback.is_none());
    assert_eq!(p.status.canary_revision, Some(2));
    let c = crate::conditions::find(&p.status.conditions, METRICS_WARNING).expect("MetricsWarning");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "WarningTriggerFired"));
}

#[test]
fn metrics_unavailable_holds_the_canary_and_it_goes_on_when_they_are_back() {
    let mut w = canary_with_policy(metrics_policy(serde_json::json!({})));
    evaluate_now(&mut w, None, None);
    w.advance(60);
    let p = w.step();
    assert_eq!(
        p.status.current_step_index,
        Some(1),
        "the timed pause does not end while holding"
    );
    assert!(p.route_weight.is_none_or(|x| x == 20));
    assert!(p.status.last_rollback.is_none(), "nothing rolls back");
    let msg = p.status.message.clone().unwrap_or_default();
    assert!(msg.contains("metrics unavailable"), "{msg}");
    let c = crate::conditions::find(&p.status.conditions, crate::conditions::types::METRICS_AVAILABLE)
        .expect("MetricsAvailable");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "ProviderUnavailable"));
    assert!(c.message.contains("connection refused"), "{}", c.message);
    evaluate_now(&mut w, Some(0.0), Some(0.1));
    let p = w.step();
    assert_eq!(p.route_weight, Some(60), "the rollout goes on");
}

#[test]
fn metrics_unavailable_with_rollback_rolls_back_and_with_ignore_carries_on() {
    let mut w = canary_with_policy(metrics_policy(serde_json::json!({"onMetricsUnavailable": "Rollback"})));
    evaluate_now(&mut w, None, None);
    let p = w.step();
    let r = p.status.last_rollback.expect("rolled back");
    assert_eq!(r.trigger_name.as_deref(), Some("onMetricsUnavailable"));

    let mut w = canary_with_policy(metrics_policy(serde_json::json!({"onMetricsUnavailable": "Ignore"})));
    evaluate_now(&mut w, None, None);
    w.advance(60);
    let p = w.step();
    assert_eq!(p.route_weight, Some(60));
}

#[test]
fn a_breach_in_the_guard_window_rolls_back_to_the_previous_revision() {
    let mut w = canary_with_policy(metrics_policy(serde_json::json!({})));
    w.annotate(PROMOTE, "full");
    w.settle();
    assert_eq!(w.status().stable_revision, Some(2));
    w.advance(120);
    evaluate_now(&mut w, Some(0.5), Some(0.1));
    let p = w.step();
    let r = p.status.last_rollback.clone().expect("rolled back");
    assert_eq!(
        (r.from_revision, r.to_revision, r.trigger),
        (2, 1, RollbackTrigger::Metric)
    );
    w.metrics = None;
    let p = w.settle();
    assert_eq!(p.status.stable_revision, Some(1));
    assert_eq!(p.stable_service.map(|s| s.revision), Some(1));
    assert_eq!(p.status.phase, Some(Phase::Degraded), "the spec still names r2");
}

#[test]
fn verification_passes_at_the_end_of_the_window_or_fails_on_a_breach() {
    for breach in [false, true] {
        let mut w = canary_with_policy(metrics_policy(serde_json::json!({})));
        w.annotate(ABORT, "true");
        w.settle();
        let r = w.status().last_rollback.expect("rolled back");
        assert_eq!(r.verification, Some(crate::api::Verification::Pending));
        evaluate_now(&mut w, Some(if breach { 0.9 } else { 0.0 }), Some(0.1));
        let p = w.step();
        if breach {
            assert!(p.events.iter().any(|e| e.reason == "VerificationFailed"));
            assert_eq!(
                p.status.last_rollback.and_then(|r| r.verification),
                Some(crate::api::Verification::Failed)
            );
            continue;
        }
        assert!(
            p.requeue_after.is_some_and(|d| d.as_secs() > 200),
            "requeued at the window's end"
        );
        w.metrics = None;
        w.advance(300);
        let p = w.step();
        assert!(p.events.iter().any(|e| e.reason == "VerificationPassed"));
        assert_eq!(
            p.status.last_rollback.and_then(|r| r.verification),
            Some(crate::api::Verification::Passed)
        );
    }
}

#[test]
fn a_gradual_rollback_pauses_while_the_triggers_judge_the_target_unhealthy() {
    let mut policy = metrics_policy(serde_json::json!({}));
    if let (PolicyObservation::Found(p), PolicyObservation::Found(g)) = (&mut policy, gradual_policy("Pause")) {
        p.rollback = g.rollback.clone();
    }
    let mut w = canary_with_policy(policy);
    w.advance(60);
    w.settle();
    assert_eq!(w.route, Some(60));
    w.annotate(ABORT, "true");
    w.step();
    assert_eq!(w.route, Some(50));
    let j = judged(&w.md, &w.observed()).expect("judged");
    assert_eq!((j.revision, j.purpose), (1, Purpose::GradualHealth));
    w.step();
    evaluate_now(&mut w, Some(0.5), Some(0.1));
    w.advance(61);
    let p = w.step();
    assert_eq!(p.status.phase, Some(Phase::Paused));
    assert!(p.route_weight.is_none(), "holds at 50");
    let msg = p.status.message.clone().unwrap_or_default();
    assert!(msg.contains("trigger error-rate"), "{msg}");
    evaluate_now(&mut w, Some(0.0), Some(0.1));
    let p = w.step();
    assert_eq!(p.route_weight, Some(20), "goes on once the triggers are healthy");
}

#[test]
fn an_info_trigger_raises_a_normal_event_only() {
    let info = serde_json::json!({"triggers": [
        {"name": "error-rate", "query": "q", "operator": "Gt", "threshold": 0.05},
        {"name": "ttft", "template": "VllmTtftP95", "operator": "Gt", "threshold": 2.5, "severity": "Info"}
    ]});
    let mut w = canary_with_policy(metrics_policy(info));
    evaluate_now(&mut w, Some(0.0), Some(9.0));
    let p = w.step();
    let fired: Vec<_> = p.events.iter().filter(|e| e.reason == "TriggerFired").collect();
    assert_eq!(fired.len(), 1, "{:?}", p.events);
    assert!(!fired[0].warning, "Info is a Normal Event");
    assert!(p.status.last_rollback.is_none());
    let c = crate::conditions::find(&p.status.conditions, METRICS_WARNING).expect("MetricsWarning");
    assert_eq!(c.status, "False", "only Warning triggers set the condition");
}
