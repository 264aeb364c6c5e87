//! The abort lane: a request that takes the weight off the canary (`abort`, `rollback-to`)
//! is written onto the traffic-split object as soon as the ModelDeployment's watch shows it,
//! and a rollback the triggers decide as soon as it is published, not after a reconcile of
//! the same ModelDeployment under way (the controller never runs two at once) or behind the
//! reconciles of a whole fleet queued before it.
//!
//! The lane plans from the caches as a reconcile does and, when the plan takes all weight
//! off the canary while the stable Service keeps what it selects (the write a reconcile
//! makes first, see [`super::apply`]), writes that weight and nothing else. A gradual
//! rollback's first step is left to the reconcile, which records the hold with it. Status, Events
//! and the request's annotation are left to the reconcile that follows, which finds the
//! weight written.
//!
//! A reconcile under way may have planned from what it saw before the request: from the
//! moment a lane write begins, a reconcile that began before it and plans any weight but 0
//! writes no weight (it checks before each attempt, a retry after a conflict included) and
//! no status, and ends at once, to be run again on what is there now. One that plans 0 too
//! saw the request (or agrees with it) and goes on, with its status and Events.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::{Context, apply, cache, model_deployment, observe};
use crate::api::ModelDeployment;
use crate::api::annotations::{ABORT, ROLLBACK_TO};

/// When lane writes began, per ModelDeployment, and which lane runs are under way.
#[derive(Default)]
pub struct Lane {
    began: Mutex<HashMap<ObjectRef<ModelDeployment>, Instant>>,
    running: Mutex<HashSet<ObjectRef<ModelDeployment>>>,
}

impl Lane {
    /// Whether a lane write to `key`'s route began after `since` (when a reconcile began).
    pub fn superseded(&self, key: &ObjectRef<ModelDeployment>, since: Instant) -> bool {
        let began = self.began.lock().unwrap_or_else(|e| e.into_inner());
        began.get(key).is_some_and(|at| *at > since)
    }

    /// Forgets a lane write to `key` that began before `since`: a reconcile that began
    /// after it planned with the request in view.
    pub fn settled(&self, key: &ObjectRef<ModelDeployment>, since: Instant) {
        let mut began = self.began.lock().unwrap_or_else(|e| e.into_inner());
        if began.get(key).is_some_and(|at| *at <= since) {
            began.remove(key);
        }
    }

    /// Forgets everything about `key`.
    pub fn forget(&self, key: &ObjectRef<ModelDeployment>) {
        self.began.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    fn begin(&self, key: &ObjectRef<ModelDeployment>) {
        let mut began = self.began.lock().unwrap_or_else(|e| e.into_inner());
        began.insert(key.clone(), Instant::now());
    }
}

/// Whether `md` carries a request that may take the weight off its canary.
pub fn requested(md: &ModelDeployment) -> bool {
    routed(md) && !requests(md).is_empty()
}

/// Whether `md` has a route to take weight off and is not being deleted.
fn routed(md: &ModelDeployment) -> bool {
    md.spec.traffic_routing.is_some() && md.metadata.deletion_timestamp.is_none()
}

/// The values of `md`'s `abort` and `rollback-to` annotations.
fn requests(md: &ModelDeployment) -> Vec<(&'static str, String)> {
    [ABORT, ROLLBACK_TO]
        .into_iter()
        .filter_map(|k| md.annotations().get(k).map(|v| (k, v.clone())))
        .collect()
}

/// The requests each ModelDeployment carried when its watch last showed it, so the lane runs
/// once per request, when it arrives: not again on the reconcile's own writes while the
/// request is handled (between its status write and the annotation's removal the object
/// would read as a second request).
#[derive(Default)]
pub struct Arrivals {
    seen: HashMap<ObjectRef<ModelDeployment>, Vec<(&'static str, String)>>,
}

impl Arrivals {
    /// The ModelDeployment whose watch event brings a new request for the lane, if any.
    pub fn arrived(
        &mut self,
        event: &kube::runtime::watcher::Event<ModelDeployment>,
    ) -> Option<ObjectRef<ModelDeployment>> {
        use kube::runtime::watcher::Event;
        match event {
            Event::Apply(md) | Event::InitApply(md) => {
                let key = ObjectRef::from(md);
                let now = requests(md);
                let before = if now.is_empty() {
                    self.seen.remove(&key)
                } else {
                    self.seen.insert(key.clone(), now.clone())
                };
                let new = now.iter().any(|r| !before.as_ref().is_some_and(|b| b.contains(r)));
                (new && routed(md)).then_some(key)
            }
            Event::Delete(md) => {
                self.seen.remove(&ObjectRef::from(md));
                None
            }
            Event::Init | Event::InitDone => None,
        }
    }
}

/// Why the lane runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// An `abort` or `rollback-to` arrived.
    Request,
    /// The triggers decided to roll back.
    Breach,
}

/// Runs the lane for `key` off the caller's path, unless a run for it is under way (the
/// reconcile that follows sees what came meanwhile).
pub fn spawn(ctx: &Arc<Context>, key: ObjectRef<ModelDeployment>, why: Why) {
    {
        let mut running = ctx.lane.running.lock().unwrap_or_else(|e| e.into_inner());
        if !running.insert(key.clone()) {
            return;
        }
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        run(&ctx, &key, why).await;
        ctx.lane.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
    });
}

/// Plans `key` from the caches and writes the weight when the plan takes it off the canary.
async fn run(ctx: &Context, key: &ObjectRef<ModelDeployment>, why: Why) {
    let Some(md) = cache::model(&ctx.stores, &ctx.written, key) else {
        return;
    };
    if !routed(&md) || (why == Why::Request && requests(&md).is_empty()) {
        return;
    }
    let Ok(owner) = model_deployment::owner_of(&md) else {
        return;
    };
    let (mut observed, read) = observe::observe(ctx, &owner, &md).await;
    observed.metrics = ctx.evaluators.observe(key, &md, &observed);
    let plan = crate::plan::plan(&md, &observed);
    // All of it at once only: a gradual rollback's walk stays with the reconcile, which
    // records each hold with its step (a weight written here alone would be a step whose
    // hold nobody started).
    if plan.route_weight != Some(0) || !apply::takes_weight_off_canary(&plan, &observed, read.route.as_ref()) {
        return;
    }
    let started = Instant::now();
    ctx.lane.begin(key);
    match apply::apply_route(ctx, &md, &owner, &plan, read.route, None).await {
        Ok(writes) => {
            tracing::info!(
                namespace = %owner.namespace,
                name = %owner.name,
                wrote = %writes.join(", "),
                ms = started.elapsed().as_millis() as u64,
                ?why,
                "took the weight off the canary ahead of the reconcile"
            );
        }
        // The reconcile that follows makes the same write and reports a failure.
        Err(e) => tracing::warn!(
            namespace = %owner.namespace,
            name = %owner.name,
            error = %super::error::chain(&e),
            "the abort lane could not write the route; the reconcile will"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(name: &str) -> ObjectRef<ModelDeployment> {
        ObjectRef::new(name).within("ns")
    }

    #[test]
    fn a_lane_write_supersedes_only_reconciles_that_began_before_it() {
        let lane = Lane::default();
        let before = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        lane.begin(&key("a"));
        std::thread::sleep(Duration::from_millis(2));
        let after = Instant::now();
        assert!(lane.superseded(&key("a"), before));
        assert!(!lane.superseded(&key("a"), after), "planned with the request in view");
        assert!(!lane.superseded(&key("b"), before), "another ModelDeployment");

        // A reconcile that began before the write does not clear it; one after it does.
        lane.settled(&key("a"), before);
        assert!(lane.superseded(&key("a"), before));
        lane.settled(&key("a"), after);
        assert!(!lane.superseded(&key("a"), before));

        lane.begin(&key("a"));
        lane.forget(&key("a"));
        assert!(!lane.superseded(&key("a"), before));
    }

    fn md(annotation: &str, routed: bool) -> ModelDeployment {
        md_with(&[(annotation, "x")], routed)
    }

    fn md_with(annotations: &[(&str, &str)], routed: bool) -> ModelDeployment {
        let mut spec = serde_json::json!({
            "model": {"name": "m", "version": "v1"},
            "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
        });
        if routed {
            spec["trafficRouting"] = serde_json::json!({"smi": {"trafficSplit": "s"}});
        }
        let annotations: serde_json::Map<String, serde_json::Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "rollguard.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "a", "namespace": "ns", "annotations": annotations},
            "spec": spec,
        }))
        .expect("a ModelDeployment")
    }

    #[test]
    fn only_abort_and_rollback_to_on_a_routed_model_deployment_are_urgent() {
        assert!(requested(&md(ABORT, true)));
        assert!(requested(&md(ROLLBACK_TO, true)));
        assert!(!requested(&md(ABORT, false)), "no route: nothing to take weight off");
        assert!(!requested(&md("rollguard.dev/promote", true)));
    }

    #[test]
    fn a_request_reaches_the_lane_once_when_it_arrives() {
        use kube::runtime::watcher::Event;
        let mut arrivals = Arrivals::default();
        assert_eq!(arrivals.arrived(&Event::Apply(md_with(&[], true))), None);
        assert_eq!(arrivals.arrived(&Event::Apply(md(ABORT, true))), Some(key("a")));
        // The reconcile's status write: the same request, not a new one.
        assert_eq!(arrivals.arrived(&Event::Apply(md(ABORT, true))), None);
        assert_eq!(arrivals.arrived(&Event::InitApply(md(ABORT, true))), None, "a relist");
        // Removed once handled; written again, it is a new request.
        assert_eq!(arrivals.arrived(&Event::Apply(md_with(&[], true))), None);
        assert_eq!(arrivals.arrived(&Event::Apply(md(ABORT, true))), Some(key("a")));
        // Another request beside it, or another value, is new too.
        let both = md_with(&[(ABORT, "x"), (ROLLBACK_TO, "previous")], true);
        assert_eq!(arrivals.arrived(&Event::Apply(both)), Some(key("a")));
        let other = md_with(&[(ABORT, "x"), (ROLLBACK_TO, "1")], true);
        assert_eq!(arrivals.arrived(&Event::Apply(other.clone())), Some(key("a")));
        // Forgotten when deleted: seen again (re-created), it is new.
        assert_eq!(arrivals.arrived(&Event::Delete(other.clone())), None);
        assert_eq!(arrivals.arrived(&Event::Apply(other)), Some(key("a")));
        // Without a route there is no weight to take off.
        let mut unrouted = Arrivals::default();
        assert_eq!(unrouted.arrived(&Event::Apply(md(ABORT, false))), None);
    }
}
