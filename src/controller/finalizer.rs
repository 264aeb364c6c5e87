//! The traffic finalizer: a ModelDeployment deleted while its traffic-split object sends
//! traffic to the canary first returns the weights to 100/0 on stable.
//!
//! Without it, a deletion mid-canary (or mid gradual rollback) would leave the route
//! weighting a canary nobody judges any more: with `--cascade=orphan` the revisions keep
//! running and the unverified one keeps its share; a ModelDeployment re-created under the
//! same name (a GitOps replace) would start with the old split. The finalizer is there only
//! while the canary has weight, so a steady ModelDeployment deletes at once, even with the
//! operator gone.

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};

use super::resources::Owner;
use super::{Context, Error, observe};
use crate::api::{ModelDeployment, TRAFFIC_FINALIZER};
use crate::traffic::RouterError;

/// The field manager of the finalizer alone: applying without it removes only this entry
/// (`metadata.finalizers` is a set), whatever other finalizers the object has.
const MANAGER: &str = "rollguard-finalizer";

/// Whether `md` carries the traffic finalizer.
pub fn held(md: &ModelDeployment) -> bool {
    md.finalizers().iter().any(|f| f == TRAFFIC_FINALIZER)
}

/// Adds (`hold`) or removes the traffic finalizer; returns the object as written.
pub async fn set(ctx: &Context, owner: &Owner, hold: bool) -> Result<ModelDeployment, Error> {
    let mds: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let mut metadata = serde_json::json!({"name": owner.name});
    if hold {
        metadata["finalizers"] = serde_json::json!([TRAFFIC_FINALIZER]);
    }
    let patch = serde_json::json!({
        "apiVersion": ModelDeployment::api_version(&()),
        "kind": "ModelDeployment",
        "metadata": metadata,
    });
    let written = mds
        .patch(&owner.name, &PatchParams::apply(MANAGER), &Patch::Apply(&patch))
        .await
        .map_err(|e| {
            let key = format!("{}/{}", owner.namespace, owner.name);
            Error::Finalizer(key, if hold { "add" } else { "remove" }, e)
        })?;
    ctx.written.models.wrote(written.clone());
    Ok(written)
}

/// For a ModelDeployment being deleted that holds the finalizer: sets its traffic-split
/// object to 100/0 on stable (says so in an Event), then removes the finalizer. A route
/// that is gone, not installed or no longer references the Services has nothing to reset.
/// Any other failure is returned (retried with backoff and shown as an Event), and the
/// deletion waits: `kubectl patch md/<name> --type=json -p
/// '[{"op":"remove","path":"/metadata/finalizers"}]'` lets it go without the reset.
pub async fn release(ctx: &Context, md: &ModelDeployment, owner: &Owner) -> Result<(), Error> {
    let key = format!("{}/{}", owner.namespace, owner.name);
    if let Some(router) = md
        .spec
        .traffic_routing
        .as_ref()
        .and_then(|routing| observe::router_for(&ctx.client, owner, routing))
    {
        let reset = match router.read().await {
            Ok(route) if route.weights.canary == 0 => None,
            Ok(route) => {
                let from = route.weights;
                router.write(route, 0).await.map_err(|e| Error::Route(key.clone(), e))?;
                Some(from)
            }
            Err(
                RouterError::NotFound { .. } | RouterError::NotInstalled { .. } | RouterError::NotReferenced { .. },
            ) => None,
            Err(e) => return Err(Error::Route(key, e)),
        };
        if let Some(from) = reset {
            tracing::info!(namespace = %owner.namespace, name = %owner.name, ?from, "deleted mid-rollout: route weights returned to stable");
            let event = crate::plan::PlannedEvent {
                warning: false,
                reason: "TrafficReset",
                note: format!(
                    "ModelDeployment deleted while the canary had {}% of the traffic; the route was set to 100/0 on stable before its children go",
                    from.canary
                ),
            };
            super::apply::publish(&ctx.recorder, &md.object_ref(&()), &event).await;
        }
    }
    set(ctx, owner, false).await.map(|_| ())
}
