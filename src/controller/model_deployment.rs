//! The ModelDeployment reconciler: observe, plan, apply.

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use super::resources::Owner;
use super::{Context, Error, apply, observe};
use crate::api::{ModelDeployment, RollbackRecord};
use crate::plan::{self, RouteObservation};

/// Reconciles one ModelDeployment, recording its result and duration.
pub async fn reconcile(cached: Arc<ModelDeployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(cached, &ctx).await;
    ctx.metrics.reconciled(result.is_ok(), started.elapsed().as_secs_f64());
    result
}

async fn reconcile_inner(cached: Arc<ModelDeployment>, ctx: &Arc<Context>) -> Result<Action, Error> {
    let namespace = cached
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    // The watch cache can lag behind this operator's own last writes (status, then the
    // removal of a handled annotation); planning from it could handle a request twice.
    // Read the object fresh: one GET per reconcile.
    let api: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let key = ObjectRef::from(cached.as_ref());
    let Some(md) = api
        .get_opt(&cached.name_any())
        .await
        .map_err(|e| Error::GetModelDeployment(format!("{namespace}/{}", cached.name_any()), e))?
    else {
        ctx.forget(&key);
        return Ok(Action::await_change());
    };
    let md = Arc::new(md);
    let reference = md
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectKey(".metadata.uid"))?;
    if md.metadata.deletion_timestamp.is_some() {
        // Owner references delete the children; nothing to do.
        ctx.forget(&key);
        return Ok(Action::await_change());
    }
    let owner = Owner {
        name: md.name_any(),
        namespace,
        reference,
    };
    let mut observed = observe::observe(&ctx.client, &owner, &md).await?;
    // Never waits for a metrics provider: the latest published verdicts, if any.
    observed.metrics = ctx.evaluators.observe(&key, &md, &observed);
    let plan = plan::plan(&md, &observed);
    let before = md.status.as_ref().and_then(|s| s.last_rollback.as_ref());
    if let Some(r) = new_rollback(before, plan.status.last_rollback.as_ref()) {
        ctx.metrics.rollback_started(&format!("{:?}", r.trigger));
    }
    let writes = apply::apply(&ctx.client, &ctx.recorder, &md, &owner, &observed, &plan).await?;
    if writes.0 > 0 {
        tracing::info!(
            namespace = %owner.namespace,
            name = %owner.name,
            writes = writes.0,
            phase = ?plan.status.phase,
            stable = ?plan.status.stable_revision,
            message = plan.status.message.as_deref().unwrap_or(""),
            "reconciled"
        );
    }
    // A traffic-split object that cannot be used is in the status now; retry with backoff.
    if let Some(RouteObservation::Fault { reason, message }) = &observed.route {
        return Err(Error::RouteUnusable(
            format!("{}/{}", owner.namespace, owner.name),
            reason,
            message.clone(),
        ));
    }
    ctx.record_success(&key);
    let requeue = plan.requeue_after.map_or(ctx.resync, |r| r.min(ctx.resync));
    Ok(Action::requeue(requeue))
}

/// The rollback a plan starts, if its record differs from the one in status.
fn new_rollback<'a>(before: Option<&RollbackRecord>, after: Option<&'a RollbackRecord>) -> Option<&'a RollbackRecord> {
    let after = after?;
    let same = before.is_some_and(|b| {
        (b.from_revision, b.to_revision, &b.started_at) == (after.from_revision, after.to_revision, &after.started_at)
    });
    (!same).then_some(after)
}

/// Requeues a failed object with exponential backoff per object.
pub fn error_policy(md: Arc<ModelDeployment>, err: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.record_failure(ObjectRef::from(md.as_ref()));
    tracing::warn!(name = %md.name_any(), category = err.category(), error = %err, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}
