//! The ModelDeployment reconciler: observe, plan, apply.

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::resources::Owner;
use super::{Context, Error, apply, cache, finalizer, observe};
use crate::api::{ModelDeployment, RollbackRecord};
use crate::plan::{self, RouteObservation};

/// Reconciles one ModelDeployment, recording its result and duration.
pub async fn reconcile(cached: Arc<ModelDeployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(cached, &ctx, started).await;
    ctx.metrics.reconciled(result.is_ok(), started.elapsed().as_secs_f64());
    result
}

async fn reconcile_inner(
    cached: Arc<ModelDeployment>,
    ctx: &Arc<Context>,
    started: std::time::Instant,
) -> Result<Action, Error> {
    let key = ObjectRef::from(cached.as_ref());
    // The cache can lag behind this operator's own last writes (status, then the removal of
    // a handled annotation); planning from it could handle a request twice. `cache::model`
    // gives the last write until the cache shows it: no read from the API server.
    let Some(md) = cache::model(&ctx.stores, &ctx.written, &key) else {
        ctx.forget(&key);
        return Ok(Action::await_change());
    };
    let owner = owner_of(&md).map_err(Error::MissingObjectKey)?;
    if md.metadata.deletion_timestamp.is_some() {
        // Owner references delete the children; a route still sending traffic to the canary
        // goes back to stable first.
        if finalizer::held(&md) {
            finalizer::release(ctx, &md, &owner).await?;
        }
        ctx.forget(&key);
        return Ok(Action::await_change());
    }
    let (mut observed, read) = observe::observe(ctx, &owner, &md).await;
    // Never waits for a metrics provider: the latest published verdicts, if any.
    observed.metrics = ctx.evaluators.observe(&key, &md, &observed);
    let plan = plan::plan(&md, &observed);
    let before = md.status.as_ref().and_then(|s| s.last_rollback.as_ref());
    if let Some(r) = new_rollback(before, plan.status.last_rollback.as_ref()) {
        ctx.metrics.rollback_started(&format!("{:?}", r.trigger));
    }
    let writes = match apply::apply(ctx, &md, &owner, &observed, read, &plan, started).await {
        // Planned before the abort lane wrote the route: plan again on what is there now.
        Err(Error::Superseded(name)) => {
            tracing::debug!(object = %name, "the abort lane wrote the route meanwhile; planning again");
            return Ok(Action::requeue(std::time::Duration::ZERO));
        }
        result => result?,
    };
    if !writes.0.is_empty() {
        tracing::info!(
            namespace = %owner.namespace,
            name = %owner.name,
            writes = writes.0.len(),
            wrote = %writes.0.join(", "),
            ms = started.elapsed().as_millis() as u64,
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
    ctx.lane.settled(&key, started);
    let requeue = plan.requeue_after.map_or(ctx.resync, |r| r.min(ctx.resync));
    Ok(Action::requeue(requeue))
}

/// The owner `md`'s children name (and their namespace); Err: the metadata field missing.
pub(super) fn owner_of(md: &ModelDeployment) -> Result<Owner, &'static str> {
    let namespace = md.namespace().ok_or(".metadata.namespace")?;
    let reference = md.controller_owner_ref(&()).ok_or(".metadata.uid")?;
    Ok(Owner {
        name: md.name_any(),
        namespace,
        reference,
    })
}

/// The rollback a plan starts, if its record differs from the one in status.
fn new_rollback<'a>(before: Option<&RollbackRecord>, after: Option<&'a RollbackRecord>) -> Option<&'a RollbackRecord> {
    let after = after?;
    let same = before.is_some_and(|b| {
        (b.from_revision, b.to_revision, &b.started_at) == (after.from_revision, after.to_revision, &after.started_at)
    });
    (!same).then_some(after)
}

/// Requeues a failed object with exponential backoff per object, logs the error with its
/// causes and publishes it as a Warning Event on the ModelDeployment (reason: its category),
/// so `kubectl describe` says why: at the first failure, when the category changes, and
/// every [`super::FAILURE_EVENT_EVERY`] while it lasts.
pub fn error_policy(md: Arc<ModelDeployment>, err: &Error, ctx: Arc<Context>) -> Action {
    let category = err.category();
    let (delay, publish) = ctx.record_failure(ObjectRef::from(md.as_ref()), category);
    let message = super::error::chain(err);
    tracing::warn!(
        namespace = md.namespace().unwrap_or_default(),
        name = %md.name_any(),
        category,
        error = %message,
        ?delay,
        "reconcile failed; retrying"
    );
    if publish && err.needs_event() {
        let reference = md.object_ref(&());
        let recorder = ctx.recorder.clone();
        let event = super::recorder::Event {
            warning: true,
            reason: category.to_string(),
            note: crate::truncate(&format!("{message}; retrying in {delay:?}"), 1024),
            action: "Reconcile".into(),
        };
        // error_policy cannot wait; the Event goes out on its own.
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::warn!(error = %super::error::chain(&e), "failed to publish the failure Event");
            }
        });
    }
    Action::requeue(delay)
}
