//! Observe: read the cluster into an [`Observed`] for the planner.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};

use super::Context;
use super::cache;
use super::resources::{self, Owner, canary_service_name, stable_service_name};
use super::written::Written;
use crate::api::{ModelDeployment, TrafficRouting, labels, owned_annotations};
use crate::plan::{
    CanaryStepState, Observed, ObservedDeployment, ObservedRevision, PolicyObservation, RouteObservation,
    ServiceTarget, time_from_label,
};
use crate::revision::Snapshot;
use crate::traffic::inference_pool::InferencePool;
use crate::traffic::{Backends, Route, Router, RouterError};

fn revision_label(obj: &impl ResourceExt) -> Option<i64> {
    obj.labels().get(labels::REVISION).and_then(|v| v.parse().ok())
}

/// What observe read for apply besides the [`Observed`] the planner sees.
#[derive(Default)]
pub struct Read {
    /// The traffic-split object, as read: a weight write is guarded by its resourceVersion.
    pub route: Option<Route>,
    /// The InferencePools, when the route's backends are InferencePools and their store
    /// could be read.
    pub pools: Option<ObservedPools>,
}

/// The InferencePools `<name>` and `<name>-canary` as this operator last saw them.
#[derive(Default)]
pub struct ObservedPools {
    /// The stable pool, if it exists and is ours.
    pub stable: Option<Arc<InferencePool>>,
    /// The canary pool, if it exists and is ours.
    pub canary: Option<Arc<InferencePool>>,
}

/// Reads the ControllerRevisions, Deployments and Services of one ModelDeployment from the
/// caches, its RollbackPolicy from the cache, its InferencePools (when it routes to them)
/// from theirs, and its traffic-split object from the watch of its kind (or the API server,
/// see [`super::routes`]).
pub async fn observe(ctx: &Context, owner: &Owner, md: &ModelDeployment) -> (Observed, Read) {
    let (client, stores, written) = (&ctx.client, &ctx.stores, &ctx.written);
    let routing = md.spec.traffic_routing.as_ref();
    let (namespace, uid) = (owner.namespace.as_str(), owner.reference.uid.as_str());
    let mut revisions = Vec::new();
    for cr in cache::owned(&stores.revisions, &written.revisions, namespace, uid) {
        let snapshot = serde_json::from_value::<Snapshot>(cr.data.0.clone()).ok();
        let Some(snapshot) = snapshot else {
            tracing::warn!(name = %cr.name_any(), "ControllerRevision without a readable snapshot; ignored");
            continue;
        };
        let hash = cr
            .annotations()
            .get(owned_annotations::HASH)
            .cloned()
            .unwrap_or_else(|| snapshot.hash());
        let Some(number) = cr.revision.or_else(|| revision_label(cr.as_ref())) else {
            continue;
        };
        revisions.push(ObservedRevision { number, hash, snapshot });
    }
    revisions.sort_by_key(|r| r.number);

    let mut deployments = BTreeMap::new();
    for d in cache::owned(&stores.deployments, &written.deployments, namespace, uid) {
        if let Some(rev) = revision_label(d.as_ref()) {
            let mut observed = observe_deployment(&d);
            if let Some(r) = revisions.iter().find(|r| r.number == rev) {
                observed.template_drifted = template_drifted(written, &owner.name, rev, &r.snapshot, &d);
            }
            deployments.insert(rev, observed);
        }
    }

    // The two Services have known names: looked up, not searched for.
    let service_target = |name: String| -> Option<ServiceTarget> {
        let cached = stores.services.get(&ObjectRef::new(&name).within(namespace));
        let s = written.services.latest(namespace, &name, cached)?;
        if !s.owner_references().iter().any(|r| r.uid == uid) {
            return None;
        }
        let spec = s.spec.as_ref()?;
        let revision = spec.selector.as_ref()?.get(labels::REVISION)?.parse().ok()?;
        let port = spec.ports.as_ref()?.first()?.port;
        Some(ServiceTarget { revision, port })
    };
    let stable_service = service_target(stable_service_name(&owner.name));
    let canary_service = service_target(canary_service_name(&owner.name));

    // InferencePool backends are looked at before the route: without them the route cannot
    // be used (and is not read).
    let fault = |e: RouterError| RouteObservation::Fault {
        reason: e.reason(),
        message: e.to_string(),
    };
    let mut pools = None;
    let mut pool_fault = None;
    if md.gateway_inference_pools().is_some() {
        match ctx.pools.store(client).await {
            Ok(store) => {
                let pool = |name: String| {
                    let cached = store.get(&ObjectRef::new(&name).within(namespace));
                    ctx.pools
                        .written
                        .latest(namespace, &name, cached)
                        .filter(|p| p.owner_references().iter().any(|r| r.uid == uid))
                };
                pools = Some(ObservedPools {
                    stable: pool(stable_service_name(&owner.name)),
                    canary: pool(canary_service_name(&owner.name)),
                });
            }
            Err(e) => pool_fault = Some(fault(e)),
        }
    }
    let (route, route_object) = match (pool_fault, routing.and_then(|r| router_for(client, owner, r))) {
        (Some(f), _) => (Some(f), None),
        (None, Some(router)) => match read_route(ctx, &router).await {
            Ok(r) => (Some(RouteObservation::Weights(r.weights)), Some(r)),
            Err(e) => (Some(fault(e)), None),
        },
        (None, None) => (None, None),
    };

    let policy = md.spec.rollback_policy_ref.as_ref().map(|reference| {
        let name = &reference.name;
        let found = stores.policies.get(&ObjectRef::new(name).within(&owner.namespace));
        match found {
            Some(p) => PolicyObservation::Found(Box::new(p.spec.clone())),
            None => PolicyObservation::NotFound(format!(
                "spec.rollbackPolicyRef.name: RollbackPolicy {name:?} not found in namespace {}",
                owner.namespace
            )),
        }
    });

    let observed = Observed {
        route,
        policy,
        // Filled in by the evaluation of the policy's triggers, when a revision is judged.
        metrics: None,
        // Full precision: the planner truncates status timestamps itself.
        now: Timestamp::now(),
        revisions,
        deployments,
        stable_service,
        canary_service,
    };
    (
        observed,
        Read {
            route: route_object,
            pools,
        },
    )
}

/// Whether someone else changed a field rollguard sets in the pod template of `d`, the
/// Deployment of revision `rev`. A template the API server normalized after rollguard's own
/// write (a quantity written `0.5` read back as `500m`) is not a change.
fn template_drifted(written: &Written, name: &str, rev: i64, snapshot: &Snapshot, d: &Deployment) -> bool {
    let desired = serde_json::to_value(resources::pod_template(name, rev, snapshot)).unwrap_or_default();
    let observed = serde_json::to_value(&d.spec.template).unwrap_or_default();
    let differences = resources::differences(&observed, &desired);
    !differences.is_empty() && !written.only_normalized(&desired, &differences)
}

/// The route object of `router`: from the watch of its kind when that holds it, else from
/// the API server (and its kind is watched from then on).
async fn read_route(ctx: &Context, router: &Router) -> Result<Route, RouterError> {
    let resource = router.resource();
    let (namespace, name) = router.object_key();
    let cached = ctx.routes.cached(&resource, namespace, name);
    if let Some(object) = cached.and_then(|o| serde_json::to_value(o.as_ref()).ok()) {
        return router.route_from(object);
    }
    let read = router.read().await;
    if read.is_ok() {
        ctx.routes.watch(&resource);
    }
    read
}

/// The router of a ModelDeployment's `trafficRouting`.
pub fn router_for(client: &Client, owner: &Owner, routing: &TrafficRouting) -> Option<Router> {
    let backends = Backends::services(stable_service_name(&owner.name), canary_service_name(&owner.name));
    Router::for_routing(client.clone(), routing, &owner.namespace, backends)
}

/// Whether a Deployment is up to date with all desired replicas available.
fn observe_deployment(d: &Deployment) -> ObservedDeployment {
    let replicas = d.spec.replicas.unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    let current = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let available_replicas = status.available_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = current && updated >= replicas && available_replicas >= replicas && total <= replicas;
    // The labels rollguard writes; the annotations of earlier versions when they are missing.
    let label = |key: &str| d.labels().get(key).map(String::as_str);
    let annotation = |key: &str| d.annotations().get(key).map(String::as_str);
    let step = |label_key: &str, annotation_key: &str| match label(label_key) {
        Some(v) => CanaryStepState::from_label(v),
        None => annotation(annotation_key).and_then(CanaryStepState::from_annotation),
    };
    let progress_started_at = match label(labels::PROGRESS_STARTED_AT) {
        Some(v) => time_from_label(v),
        None => annotation(owned_annotations::PROGRESS_STARTED_AT).and_then(|v| v.parse::<Timestamp>().ok()),
    };
    let canary_step = step(labels::CANARY_STEP, owned_annotations::CANARY_STEP);
    let rollback_step = step(labels::ROLLBACK_STEP, owned_annotations::ROLLBACK_STEP);
    ObservedDeployment {
        rollback_step,
        replicas,
        ready_replicas: status.ready_replicas.unwrap_or(0),
        available,
        progress_started_at,
        canary_step,
        template_drifted: false,
        generation: d.metadata.generation.unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::DeploymentStatus;

    use super::*;

    fn deployment(generation: i64, observed: i64, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Deployment {
        let map = |kv: &[(&str, &str)]| Some(kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        let mut d = Deployment::default();
        d.metadata.generation = Some(generation);
        d.metadata.labels = map(labels);
        d.metadata.annotations = map(annotations);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(observed),
            replicas: Some(1),
            updated_replicas: Some(1),
            ready_replicas: Some(1),
            available_replicas: Some(1),
            ..Default::default()
        });
        d
    }

    #[test]
    fn step_state_is_read_from_labels_and_from_the_annotations_of_earlier_versions() {
        let at: Timestamp = "2026-11-23T10:00:00.5Z".parse().unwrap_or_default();
        let step = CanaryStepState {
            index: 3,
            started_at: at,
        };
        let labelled = deployment(
            2,
            2,
            &[
                (labels::CANARY_STEP, &step.to_label()),
                (labels::PROGRESS_STARTED_AT, &crate::plan::time_to_label(at)),
            ],
            &[],
        );
        let seen = observe_deployment(&labelled);
        assert_eq!(
            (seen.canary_step, seen.rollback_step, seen.progress_started_at),
            (Some(step), None, Some(at))
        );
        assert!(seen.available);

        let legacy = deployment(
            2,
            2,
            &[],
            &[
                (owned_annotations::ROLLBACK_STEP, &step.to_annotation()),
                (owned_annotations::PROGRESS_STARTED_AT, &at.to_string()),
            ],
        );
        let seen = observe_deployment(&legacy);
        assert_eq!(
            (seen.canary_step, seen.rollback_step, seen.progress_started_at),
            (None, Some(step), Some(at))
        );

        // A label wins over a stale annotation; a label someone mangled is no state.
        let both = deployment(
            1,
            1,
            &[(labels::CANARY_STEP, "x.y")],
            &[(owned_annotations::CANARY_STEP, &step.to_annotation())],
        );
        assert_eq!(observe_deployment(&both).canary_step, None);
    }

    #[test]
    fn a_status_older_than_the_spec_is_not_available() {
        assert!(!observe_deployment(&deployment(3, 2, &[], &[])).available);
    }
}
