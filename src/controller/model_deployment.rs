//! The ModelDeployment reconciler.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::{Context, Error, FIELD_MANAGER};
use crate::api::{ModelDeployment, ModelDeploymentStatus, Phase};
use crate::conditions::{self, Desired, reasons, types};

/// How often a ModelDeployment is looked at again without any event.
pub const RESYNC: Duration = Duration::from_secs(300);

/// The status the operator wants for `md`, given its current status and the time.
///
/// Pure: no client. The same input gives the same output, and a status that already
/// matches is returned unchanged (so the reconcile makes no write).
pub fn desired_status(md: &ModelDeployment, now: &Time) -> ModelDeploymentStatus {
    let generation = md.metadata.generation.unwrap_or(0);
    let current = md.status.clone().unwrap_or_default();
    let message = format!("generation {generation} observed");
    let desired = [
        Desired::new(types::RECONCILING, Some(true), reasons::NEW_GENERATION, message.clone()),
        Desired::new(types::READY, Some(false), reasons::PROGRESSING, message.clone()),
        Desired::new(types::STALLED, Some(false), reasons::PROGRESSING, ""),
    ];
    ModelDeploymentStatus {
        observed_generation: Some(generation),
        phase: Some(current.phase.unwrap_or(Phase::Progressing)),
        message: Some(current.message.clone().unwrap_or(message)),
        conditions: conditions::merge(&current.conditions, &desired, generation, now),
        ..current
    }
}

/// Reconciles one ModelDeployment: observe, decide, write what differs.
pub async fn reconcile(md: Arc<ModelDeployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = md.namespace().ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    let name = md.name_any();
    let now = Time(jiff::Timestamp::now());
    let status = desired_status(&md, &now);
    if md.status.as_ref() != Some(&status) {
        let api: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = serde_json::json!({
            "apiVersion": "rollguard.dev/v1alpha1",
            "kind": "ModelDeployment",
            "status": status,
        });
        api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
            .map_err(|source| Error::StatusPatchFailed {
                namespace: namespace.clone(),
                name: name.clone(),
                source,
            })?;
        tracing::info!(%namespace, %name, generation = ?status.observed_generation, "status updated");
    }
    ctx.record_success(&ObjectRef::from(md.as_ref()));
    Ok(Action::requeue(RESYNC))
}

/// Requeues a failed object with exponential backoff per object.
pub fn error_policy(md: Arc<ModelDeployment>, err: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.record_failure(ObjectRef::from(md.as_ref()));
    tracing::warn!(name = %md.name_any(), category = err.category(), error = %err, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}
