//! Apply: turn a [`Plan`] into server-side-apply writes, writing only what differs.

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::core::v1::Service;
use kube::Resource;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

use super::resources::{self, Owner, canary_service_name, stable_service_name};
use super::{Context, Error, FIELD_MANAGER, observe};
use crate::api::annotations::PROMOTE;
use crate::api::{InferencePoolRouting, ModelDeployment, ModelDeploymentStatus};
use crate::plan::{Observed, Plan, ServiceTarget};
use crate::revision::Snapshot;
use crate::traffic::inference_pool::InferencePool;

/// The writes an apply made, each as "kind name" (for the idempotence check and logs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Writes(pub Vec<String>);

fn ssa() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == code)
}

/// How long a status write waits for the object's queued Events (they are slow only when
/// the API server is: a write would be slow then too).
const EVENTS_BEFORE_STATUS: std::time::Duration = std::time::Duration::from_secs(5);

/// Applies the plan. Order: new revision record, Deployments, Services, pruning, status,
/// annotations; Events last, after the status write succeeded (queued: they go out after
/// the reconcile, see [`super::events`]).
/// Every write's answer goes into `written`, so the next reconcile knows when its caches
/// show it.
pub async fn apply(
    ctx: &Context,
    md: &ModelDeployment,
    owner: &Owner,
    observed: &Observed,
    read: observe::Read,
    plan: &Plan,
    began: std::time::Instant,
) -> Result<Writes, Error> {
    let route = read.route;
    let (client, written) = (&ctx.client, &ctx.written);
    let ns = &owner.namespace;
    let mut writes: Vec<String> = Vec::new();
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), ns);
    let key = format!("{ns}/{}", owner.name);

    // A promote moves a rollout one step on: not idempotent. It is claimed (removed) before
    // anything is done, so a crash in between loses it rather than applying it twice.
    if plan.consume.contains(&PROMOTE) {
        let claimed = consume(&mds, md, PROMOTE)
            .await
            .map_err(|e| Error::ConsumeAnnotation(key.clone(), PROMOTE, e))?;
        let Some(claimed) = claimed else {
            return Err(Error::AnnotationChanged(key, PROMOTE));
        };
        written.models.wrote(claimed);
        writes.push(format!("annotation {PROMOTE} claimed"));
    }

    if let Some((rev, snapshot)) = &plan.new_revision {
        let crs: Api<ControllerRevision> = Api::namespaced(client.clone(), ns);
        let cr = resources::controller_revision(owner, *rev, snapshot);
        let name = resources::revision_object_name(&owner.name, *rev);
        match crs.create(&PostParams::default(), &cr).await {
            Ok(created) => {
                written.revisions.wrote(created);
                writes.push(format!("ControllerRevision {name}"));
            }
            Err(e) if is_status(&e, 409) => {
                let existing = crs
                    .get(&name)
                    .await
                    .map_err(|e| Error::CreateRevision(name.clone(), e))?;
                let hash = existing
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(crate::api::owned_annotations::HASH).cloned());
                if hash.as_deref() != Some(snapshot.hash().as_str()) {
                    return Err(Error::RevisionConflict(name));
                }
            }
            Err(e) => return Err(Error::CreateRevision(name, e)),
        }
    }

    // Taking weight off the canary while the stable Service keeps what it selects (an abort,
    // a rollback to the stable revision, a gradual rollback's step) goes first: the stable
    // side serves already, and every write before it would delay the rollback.
    let route_first = takes_weight_off_canary(plan, observed, route.as_ref());
    let route = if route_first {
        writes.extend(apply_route(ctx, md, owner, plan, route, Some(began)).await?);
        None
    } else {
        route
    };

    let snapshot_of = |rev: i64| -> Option<&Snapshot> {
        match &plan.new_revision {
            Some((n, s)) if *n == rev => Some(s),
            _ => observed.revisions.iter().find(|r| r.number == rev).map(|r| &r.snapshot),
        }
    };
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let mut restored = Vec::new();
    for (rev, desired) in &plan.deployments {
        let current = observed.deployments.get(rev);
        let differs = match current {
            None => desired.create,
            Some(c) => {
                c.replicas != desired.replicas
                    || c.progress_started_at != desired.progress_started_at
                    || c.canary_step != desired.canary_step
                    || c.rollback_step != desired.rollback_step
                    || c.template_drifted
            }
        };
        if !differs {
            continue;
        }
        let Some(snapshot) = snapshot_of(*rev) else {
            tracing::warn!(revision = rev, "no snapshot for revision; cannot build its Deployment");
            continue;
        };
        let d = resources::deployment(owner, *rev, snapshot, desired);
        let name = resources::revision_object_name(&owner.name, *rev);
        let applied = deploys
            .patch(&name, &ssa(), &Patch::Apply(&d))
            .await
            .map_err(|e| Error::ApplyDeployment(name.clone(), e))?;
        let stored = serde_json::to_value(&applied.spec.template).unwrap_or_default();
        let wanted = serde_json::to_value(&d.spec.template).unwrap_or_default();
        written.remember_stored(&wanted, resources::differences(&stored, &wanted));
        // A restore that changed the spec moves the generation on (a re-apply of a template
        // the server had only normalized, after a restart, changes nothing and says nothing).
        if current.is_some_and(|c| c.template_drifted && applied.metadata.generation != Some(c.generation)) {
            tracing::info!(deployment = %name, "restored the pod template someone else changed");
            restored.push(name.clone());
        }
        written.deployments.wrote(applied);
        writes.push(format!("Deployment {name}"));
    }

    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let pairs: [(String, Option<ServiceTarget>, Option<ServiceTarget>); 2] = [
        (
            stable_service_name(&owner.name),
            plan.stable_service,
            observed.stable_service,
        ),
        (
            canary_service_name(&owner.name),
            plan.canary_service,
            observed.canary_service,
        ),
    ];
    for (name, want, have) in pairs {
        if let Some(target) = want.filter(|w| Some(*w) != have) {
            let svc = resources::service(owner, &name, target);
            let applied = services
                .patch(&name, &ssa(), &Patch::Apply(&svc))
                .await
                .map_err(|e| Error::ApplyService(name.clone(), e))?;
            written.services.wrote(applied);
            writes.push(format!("Service {name}"));
        }
    }

    if let (Some(pools), Some(routing)) = (read.pools.as_ref(), md.gateway_inference_pools()) {
        writes.extend(apply_pools(ctx, owner, plan, pools, routing).await?);
    }

    if !route_first {
        writes.extend(apply_route(ctx, md, owner, plan, route, Some(began)).await?);
    }

    let crs: Api<ControllerRevision> = Api::namespaced(client.clone(), ns);
    for rev in &plan.prune {
        let name = resources::revision_object_name(&owner.name, *rev);
        if observed.deployments.contains_key(rev) {
            match deploys.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {
                    written.deployments.deleted(ns, &name);
                    writes.push(format!("Deployment {name} deleted"));
                }
                Err(e) if is_status(&e, 404) => written.deployments.deleted(ns, &name),
                Err(e) => return Err(Error::Prune(format!("Deployment {name}"), e)),
            }
        }
        if observed.revisions.iter().any(|r| r.number == *rev) {
            match crs.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {
                    written.revisions.deleted(ns, &name);
                    writes.push(format!("ControllerRevision {name} deleted"));
                }
                Err(e) if is_status(&e, 404) => written.revisions.deleted(ns, &name),
                Err(e) => return Err(Error::Prune(format!("ControllerRevision {name}"), e)),
            }
        }
    }

    let reference = md.object_ref(&());
    let status_differs = md.status.as_ref() != Some(&plan.status);
    // The Events of the reconcile before go out first: a kill after this write would
    // otherwise lose them for good (see [`super::events`]).
    if status_differs && !ctx.events.published(&reference, EVENTS_BEFORE_STATUS).await {
        tracing::warn!(
            model_deployment = %key,
            "writing the status before the previous reconcile's Events were published"
        );
    }
    // A status planned before the abort lane's write would describe a weight no longer there
    // (checked after the wait for Events: the lane may have written meanwhile).
    if superseded(ctx, owner, plan, Some(began)) {
        return Err(Error::Superseded(key));
    }
    if status_differs {
        let patch = serde_json::json!({
            "apiVersion": "rollguard.dev/v1alpha1",
            "kind": "ModelDeployment",
            "status": plan.status,
        });
        let patched = mds
            .patch_status(&owner.name, &ssa(), &Patch::Apply(&patch))
            .await
            .map_err(|e| Error::PatchStatus(key.clone(), e))?;
        written.models.wrote(patched);
        writes.push(format!(
            "status ({})",
            changed_fields(md.status.as_ref(), &plan.status).join(" ")
        ));
    }

    for key_name in plan.consume.iter().filter(|k| **k != PROMOTE) {
        if let Some(patched) = consume(&mds, md, key_name)
            .await
            .map_err(|e| Error::ConsumeAnnotation(key.clone(), key_name, e))?
        {
            written.models.wrote(patched);
            writes.push(format!("annotation {key_name} removed"));
        }
    }

    let restored = restored.into_iter().map(|name| crate::plan::PlannedEvent {
        warning: true,
        reason: "DeploymentRestored",
        note: format!(
            "someone else changed the pod template of Deployment {name}; rollguard restored its revision's template"
        ),
    });
    ctx.events
        .send(reference, plan.events.iter().cloned().chain(restored).collect());
    Ok(Writes(writes))
}

/// The top-level status fields that differ between `before` and `after`, as serialized
/// (for the log: what made a status write).
fn changed_fields(before: Option<&ModelDeploymentStatus>, after: &ModelDeploymentStatus) -> Vec<String> {
    let fields = |s: Option<&ModelDeploymentStatus>| match s.map(serde_json::to_value) {
        Some(Ok(serde_json::Value::Object(m))) => m,
        _ => serde_json::Map::new(),
    };
    let (before, after) = (fields(before), fields(Some(after)));
    let mut changed: Vec<String> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .chain(before.keys().filter(|k| !after.contains_key(*k)).cloned())
        .collect();
    changed.sort();
    changed
}

/// Whether the plan only lowers the canary's weight on the route, while the stable Service
/// keeps its target: such a write needs nothing written before it.
pub(super) fn takes_weight_off_canary(plan: &Plan, observed: &Observed, route: Option<&crate::traffic::Route>) -> bool {
    let (Some(weight), Some(route)) = (plan.route_weight, route) else {
        return false;
    };
    weight < route.weights.canary && plan.stable_service.is_none_or(|s| Some(s) == observed.stable_service)
}

/// Writes the plan's weight onto the traffic-split object, holding the traffic finalizer
/// while the canary has weight: added before a weight above 0, removed after the weight is
/// back to 0 (so a deletion resets the route). A route that could not be read keeps the
/// finalizer as it is. Returns the writes.
///
/// `began`: when the reconcile that planned this began. A plan made before the abort lane
/// took all weight off this route writes nothing ([`Error::Superseded`], see
/// [`superseded`]); the lane itself passes None.
pub(super) async fn apply_route(
    ctx: &Context,
    md: &ModelDeployment,
    owner: &Owner,
    plan: &Plan,
    route: Option<crate::traffic::Route>,
    began: Option<std::time::Instant>,
) -> Result<Vec<String>, Error> {
    let key = || format!("{}/{}", owner.namespace, owner.name);
    if superseded(ctx, owner, plan, began) {
        return Err(Error::Superseded(key()));
    }
    let mut writes = Vec::new();
    let hold = md.spec.traffic_routing.is_some()
        && match (plan.route_weight, route.as_ref().map(|r| r.weights.canary)) {
            (Some(w), _) if w > 0 => true,
            (planned, Some(now)) => planned.unwrap_or(now) > 0,
            (_, None) => super::finalizer::held(md),
        };
    if hold && !super::finalizer::held(md) {
        super::finalizer::set(ctx, owner, true).await?;
        writes.push("traffic finalizer added".to_string());
    }
    if let (Some(weight), Some(routing), Some(route)) = (plan.route_weight, md.spec.traffic_routing.as_ref(), route) {
        let router = observe::router_for(&ctx.client, owner, routing);
        if let Some(router) = router.filter(|_| route.weights.canary != weight) {
            let written = router
                .write_unless(route, weight, || superseded(ctx, owner, plan, began))
                .await
                .map_err(|e| Error::Route(key(), e))?;
            let crate::traffic::Written::Route(written) = written else {
                return Err(Error::Superseded(key()));
            };
            if let Ok(object) = serde_json::from_value(written.object().clone()) {
                ctx.routes.wrote(&router.resource(), object);
            }
            writes.push(format!("route weight {weight}"));
        }
    }
    if !hold && super::finalizer::held(md) {
        super::finalizer::set(ctx, owner, false).await?;
        writes.push("traffic finalizer removed".to_string());
    }
    Ok(writes)
}

/// Whether `plan` is superseded: the abort lane began taking all weight off `owner`'s
/// canary after `began` (when the reconcile that planned it began), and the plan does not
/// take it all off too (it was made without the lane's request in view). A plan that also
/// sends all to stable saw the request: it goes on, with its status and Events.
fn superseded(ctx: &Context, owner: &Owner, plan: &Plan, began: Option<std::time::Instant>) -> bool {
    plan.route_weight != Some(0)
        && began.is_some_and(|since| {
            let key = kube::runtime::reflector::ObjectRef::new(&owner.name).within(&owner.namespace);
            ctx.lane.superseded(&key, since)
        })
}

/// Publishes `ev` about `reference`; a failure is logged, not returned (an Event is never
/// worth failing the reconcile for).
pub(super) async fn publish(
    recorder: &super::recorder::Recorder,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    ev: &crate::plan::PlannedEvent,
) {
    let event = super::recorder::Event {
        warning: ev.warning,
        reason: ev.reason.to_string(),
        note: crate::truncate(&ev.note, 1024),
        // The recorder folds events with the same reason and action into one series;
        // the note as action keeps distinct happenings (revision 2, then 3) apart.
        action: crate::truncate(&ev.note, 128),
    };
    if let Err(e) = recorder.publish(&event, reference).await {
        tracing::warn!(error = %e, reason = ev.reason, "failed to publish Event");
    }
}

/// Removes annotation `key` if it still holds the value `md` was planned with: a new
/// request written meanwhile is kept for the next reconcile. Returns the object after the
/// removal, None when it was not removed.
async fn consume(
    mds: &Api<ModelDeployment>,
    md: &ModelDeployment,
    key: &str,
) -> Result<Option<ModelDeployment>, kube::Error> {
    let Some(value) = md.metadata.annotations.as_ref().and_then(|a| a.get(key)) else {
        return Ok(None);
    };
    let path = format!("/metadata/annotations/{}", key.replace('~', "~0").replace('/', "~1"));
    let ops: json_patch::Patch = match serde_json::from_value(serde_json::json!([
        {"op": "test", "path": path, "value": value},
        {"op": "remove", "path": path},
    ])) {
        Ok(ops) => ops,
        Err(_) => return Ok(None),
    };
    let name = md.metadata.name.clone().unwrap_or_default();
    match mds.patch(&name, &PatchParams::default(), &Patch::<()>::Json(ops)).await {
        Ok(patched) => Ok(Some(patched)),
        Err(e) if is_status(&e, 422) || is_status(&e, 404) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Applies the InferencePools `<name>` and `<name>-canary` where they do not select what the
/// plan's Services select, with the Endpoint Pickers of the spec. Fields the API server
/// defaulted, or someone else added, are not a difference.
async fn apply_pools(
    ctx: &Context,
    owner: &Owner,
    plan: &Plan,
    observed: &observe::ObservedPools,
    routing: &InferencePoolRouting,
) -> Result<Vec<String>, Error> {
    let pools: Api<InferencePool> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let roles = [
        (
            stable_service_name(&owner.name),
            plan.stable_service,
            &observed.stable,
            &routing.endpoint_picker_ref,
        ),
        (
            canary_service_name(&owner.name),
            plan.canary_service,
            &observed.canary,
            &routing.canary_endpoint_picker_ref,
        ),
    ];
    let mut writes = Vec::new();
    for (name, want, have, picker) in roles {
        let Some(target) = want else {
            continue;
        };
        let pool = resources::inference_pool(owner, &name, target, picker);
        let wanted = serde_json::to_value(&pool.spec).unwrap_or_default();
        let differs = have.as_ref().is_none_or(|have| {
            let seen = serde_json::to_value(&have.spec).unwrap_or_default();
            !resources::differences(&seen, &wanted).is_empty()
        });
        if !differs {
            continue;
        }
        let applied = pools
            .patch(&name, &ssa(), &Patch::Apply(&pool))
            .await
            .map_err(|e| Error::ApplyInferencePool(name.clone(), e))?;
        ctx.pools.written.wrote(applied);
        writes.push(format!("InferencePool {name}"));
    }
    Ok(writes)
}
