//! Observe: read the cluster into an [`Observed`] for the planner.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};

use super::cache::{self, Stores, Written};
use super::resources::{self, Owner, canary_service_name, stable_service_name};
use crate::api::{ModelDeployment, TrafficRouting, labels, owned_annotations};
use crate::plan::{
    CanaryStepState, Observed, ObservedDeployment, ObservedRevision, PolicyObservation, RouteObservation, ServiceTarget,
};
use crate::revision::Snapshot;
use crate::traffic::{Backends, Route, Router};

fn revision_label(obj: &impl ResourceExt) -> Option<i64> {
    obj.labels().get(labels::REVISION).and_then(|v| v.parse().ok())
}

/// Reads the ControllerRevisions, Deployments and Services of one ModelDeployment from the
/// caches, its RollbackPolicy from the cache, and its traffic-split object (returned too, as
/// read: a weight write is guarded by its resourceVersion).
pub async fn observe(
    client: &Client,
    stores: &Stores,
    written: &Written,
    owner: &Owner,
    md: &ModelDeployment,
) -> (Observed, Option<Route>) {
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

    let (route, route_object) = match routing.and_then(|r| router_for(client, owner, r)) {
        Some(router) => match router.read().await {
            Ok(r) => (Some(RouteObservation::Weights(r.weights)), Some(r)),
            Err(e) => (
                Some(RouteObservation::Fault {
                    reason: e.reason(),
                    message: e.to_string(),
                }),
                None,
            ),
        },
        None => (None, None),
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
    (observed, route_object)
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

/// The router of a ModelDeployment's `trafficRouting`.
pub fn router_for(client: &Client, owner: &Owner, routing: &TrafficRouting) -> Option<Router> {
    let backends = Backends {
        stable: stable_service_name(&owner.name),
        canary: canary_service_name(&owner.name),
    };
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
    let progress_started_at = d
        .annotations()
        .get(owned_annotations::PROGRESS_STARTED_AT)
        .and_then(|v| v.parse::<Timestamp>().ok());
    let canary_step = d
        .annotations()
        .get(owned_annotations::CANARY_STEP)
        .and_then(|v| CanaryStepState::from_annotation(v));
    let rollback_step = d
        .annotations()
        .get(owned_annotations::ROLLBACK_STEP)
        .and_then(|v| CanaryStepState::from_annotation(v));
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
