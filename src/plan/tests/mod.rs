//! Unit and property tests of the planner, on a small simulated cluster.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use proptest::prelude::*;

use super::*;
use crate::api::annotations::{ABORT, PROMOTE, RETRY, ROLLBACK_TO};
use crate::api::{ModelDeployment, Phase, RevisionPhase, RollbackTrigger};

/// The shared example ModelDeployment `chat` (2 replicas) in namespace `llm`, as the API
/// server would hand it over (generation and uid set).
fn md(version: &str, extra: serde_json::Value) -> ModelDeployment {
    let mut md = ModelDeployment::example("chat", version, 2, extra).expect("valid ModelDeployment");
    md.metadata.namespace = Some("llm".into());
    md.metadata.generation = Some(1);
    md.metadata.uid = Some("u".into());
    md
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
        // Invariant: traffic never moves to a revision that is not Available at full size.
        let full = self.md.spec.replicas;
        if let Some(target) = p.stable_service.filter(|t| Some(*t) != obs.stable_service) {
            let d = obs.deployments.get(&target.revision);
            assert!(
                d.is_some_and(|d| d.available && d.ready_replicas >= full),
                "stable Service moved to r{} which is not Available at {full} replicas: {d:?}",
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
            // A scale-up keeps the pods that are ready; a scale-down keeps as many of them.
            if want.replicas > d.replicas {
                d.available = false;
            }
            d.ready_replicas = d.ready_replicas.min(want.replicas);
            if want.replicas == 0 {
                d.available = true;
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
            let needs = super::steps::replicas_for(full, w);
            // A rollback's target still scaling up takes the share its ready pods take.
            let rollback_target = p
                .status
                .last_rollback
                .as_ref()
                .is_some_and(|r| r.completed_at.is_none() && r.to_revision == canary);
            assert!(
                obs.deployments
                    .get(&canary)
                    .is_some_and(|d| (d.available || rollback_target) && d.ready_replicas >= needs),
                "weight {w} on r{canary} without the {needs} ready replicas it takes: {:?}",
                obs.deployments.get(&canary)
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

/// Asserts that the status message of `p` contains `words`.
fn assert_message(p: &Plan, words: &str) {
    let message = p.status.message.clone().unwrap_or_default();
    assert!(message.contains(words), "{words:?} not in {message:?}");
}

fn canary_spec(steps: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "strategy": {"canary": {"steps": steps}},
        "trafficRouting": {"gatewayAPI": {"httpRoute": "chat"}}
    })
}

fn gradual_policy(on_unhealthy: &str) -> PolicyObservation {
    PolicyObservation::Found(Box::new(
        serde_json::from_value(serde_json::json!({
            "rollback": {"mode": "Gradual", "gradual": {"steps": [50, 20, 5, 0], "stepDuration": "60s", "onUnhealthy": on_unhealthy}}
        }))
        .expect("policy"),
    ))
}

/// A canary of r2 at 20% in an open pause, r1 stable.
fn canary_paused() -> World {
    let steps = serde_json::json!([{"setWeight": 20}, {"pause": {}}]);
    let mut w = World::new(md("v1", canary_spec(steps)));
    w.settle();
    w.set_version("v2");
    w.settle();
    assert_eq!((w.route, w.status().phase), (Some(20), Some(Phase::Paused)));
    w
}

/// A canary at 60% (then an open pause), with a gradual rollback policy.
fn canary_at_60(on_unhealthy: &str) -> World {
    let steps = serde_json::json!([{"setWeight": 60}, {"pause": {}}]);
    let mut w = World::new(md("v1", canary_spec(steps)));
    w.policy = Some(gradual_policy(on_unhealthy));
    w.settle();
    w.set_version("v2");
    w.settle();
    assert_eq!(w.route, Some(60));
    w
}

mod blue_green;
mod canary;
mod gradual;
mod invariants;
mod limits;
mod metrics;
mod policy;
mod rollback;
