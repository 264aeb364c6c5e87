//! Observe: read the cluster into an [`Observed`] for the planner.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::Error;
use super::resources::{Owner, canary_service_name, stable_service_name};
use crate::api::{ModelDeployment, RollbackPolicy, TrafficRouting, labels, owned_annotations};
use crate::plan::{
    CanaryStepState, Observed, ObservedDeployment, ObservedRevision, PolicyObservation, RouteObservation, ServiceTarget,
};
use crate::revision::Snapshot;
use crate::traffic::{Backends, Router, TrafficRouter};

fn owned_by(obj: &impl ResourceExt, owner: &Owner) -> bool {
    obj.owner_references().iter().any(|r| r.uid == owner.reference.uid)
}

fn revision_label(obj: &impl ResourceExt) -> Option<i64> {
    obj.labels().get(labels::REVISION).and_then(|v| v.parse().ok())
}

/// Reads the ControllerRevisions, Deployments and Services of one ModelDeployment, and the
/// weights on its traffic-split object.
pub async fn observe(client: &Client, owner: &Owner, md: &ModelDeployment) -> Result<Observed, Error> {
    let routing = md.spec.traffic_routing.as_ref();
    let key = format!("{}/{}", owner.namespace, owner.name);
    let selector = ListParams::default().labels(&format!("{}={}", labels::MODEL_DEPLOYMENT, owner.name));
    let crs: Api<ControllerRevision> = Api::namespaced(client.clone(), &owner.namespace);
    let mut revisions = Vec::new();
    for cr in crs
        .list(&selector)
        .await
        .map_err(|e| Error::ListRevisions(key.clone(), e))?
    {
        if !owned_by(&cr, owner) {
            continue;
        }
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
        let Some(number) = cr.revision.or_else(|| revision_label(&cr)) else {
            continue;
        };
        revisions.push(ObservedRevision { number, hash, snapshot });
    }

    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &owner.namespace);
    let mut deployments = BTreeMap::new();
    for d in deploys
        .list(&selector)
        .await
        .map_err(|e| Error::ListDeployments(key.clone(), e))?
    {
        if !owned_by(&d, owner) {
            continue;
        }
        if let Some(rev) = revision_label(&d) {
            deployments.insert(rev, observe_deployment(&d));
        }
    }

    let services: Api<Service> = Api::namespaced(client.clone(), &owner.namespace);
    let service_target = async |name: String| -> Result<Option<ServiceTarget>, Error> {
        let svc = services
            .get_opt(&name)
            .await
            .map_err(|e| Error::GetService(name.clone(), e))?;
        Ok(svc.filter(|s| owned_by(s, owner)).and_then(|s| {
            let spec = s.spec?;
            let revision = spec.selector?.get(labels::REVISION)?.parse().ok()?;
            let port = spec.ports?.first()?.port;
            Some(ServiceTarget { revision, port })
        }))
    };
    let stable_service = service_target(stable_service_name(&owner.name)).await?;
    let canary_service = service_target(canary_service_name(&owner.name)).await?;

    let route = match routing.and_then(|r| router_for(client, owner, r)) {
        Some(router) => Some(match router.weights().await {
            Ok(w) => RouteObservation::Weights(w),
            Err(e) => RouteObservation::Fault {
                reason: e.reason(),
                message: e.to_string(),
            },
        }),
        None => None,
    };

    let policy = match &md.spec.rollback_policy_ref {
        Some(reference) => {
            let policies: Api<RollbackPolicy> = Api::namespaced(client.clone(), &owner.namespace);
            let name = &reference.name;
            let found = policies
                .get_opt(name)
                .await
                .map_err(|e| Error::GetPolicy(format!("{}/{name}", owner.namespace), e))?;
            Some(match found {
                Some(p) => PolicyObservation::Found(Box::new(p.spec)),
                None => PolicyObservation::NotFound(format!(
                    "spec.rollbackPolicyRef.name: RollbackPolicy {name:?} not found in namespace {}",
                    owner.namespace
                )),
            })
        }
        None => None,
    };

    Ok(Observed {
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
    })
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
pub fn observe_deployment(d: &Deployment) -> ObservedDeployment {
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
    }
}
