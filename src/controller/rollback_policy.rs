//! The RollbackPolicy reconciler: its status says whether every trigger's query can be built
//! and which ModelDeployments use it.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::{Context, Error};
use crate::api::{RollbackPolicy, RollbackPolicyStatus};
use crate::conditions::{self, Desired, types};

/// The reason of `Valid=True`.
pub const VALID: &str = "Valid";
/// The reason of `Valid=False` when a trigger's query cannot be built.
const INVALID_QUERY: &str = "InvalidQuery";

/// The status a policy should have, given the ModelDeployments that reference it. Pure.
fn desired_status(policy: &RollbackPolicy, users: Vec<String>, now: &Time) -> RollbackPolicyStatus {
    let generation = policy.metadata.generation.unwrap_or(0);
    let current = policy.status.clone().unwrap_or_default();
    // Valid for people; Ready and Stalled for kstatus (Flux, `kubectl wait`).
    let desired = match crate::metrics::query::validate(&policy.spec) {
        Ok(()) => {
            let message = format!("{} trigger(s) can be evaluated", policy.spec.triggers.len());
            vec![
                Desired::new(types::VALID, Some(true), VALID, message.clone()),
                Desired::new(types::READY, Some(true), VALID, message),
                Desired::new(types::STALLED, Some(false), VALID, ""),
            ]
        }
        Err(why) => vec![
            Desired::new(types::VALID, Some(false), INVALID_QUERY, why.clone()),
            Desired::new(types::READY, Some(false), INVALID_QUERY, why.clone()),
            Desired::new(types::STALLED, Some(true), INVALID_QUERY, why),
        ],
    };
    let mut users = users;
    users.sort();
    users.dedup();
    RollbackPolicyStatus {
        observed_generation: Some(generation),
        model_deployments: users,
        conditions: conditions::merge(&current.conditions, &desired, &[], generation, now),
    }
}

/// Whether `current` must be rewritten to say `desired`. `owned` is None for an operator
/// that reconciles every ModelDeployment (the whole list is its own: any difference is
/// stale); for one shard of a fleet it holds the names this shard wrote before, and the
/// list is another shard's too: the shard rewrites when one of its users is missing or a name
/// it wrote is no longer a user.
fn needs_write(
    current: Option<&RollbackPolicyStatus>,
    desired: &RollbackPolicyStatus,
    owned: Option<&BTreeSet<String>>,
) -> bool {
    let Some(current) = current else { return true };
    let Some(owned) = owned else { return current != desired };
    let listed: BTreeSet<&String> = current.model_deployments.iter().collect();
    current.observed_generation != desired.observed_generation
        || current.conditions != desired.conditions
        || desired.model_deployments.iter().any(|n| !listed.contains(n))
        || owned.iter().any(|n| !desired.model_deployments.contains(n))
}

/// The names in `status.modelDeployments` that the field manager `manager` applied, from the
/// policy's managedFields (a set list: each item is a `v:"<name>"` key).
fn applied_names(policy: &RollbackPolicy, manager: &str) -> BTreeSet<String> {
    let entries = policy.metadata.managed_fields.iter().flatten();
    entries
        .filter(|e| e.manager.as_deref() == Some(manager) && e.subresource.as_deref() == Some("status"))
        .filter_map(|e| e.fields_v1.as_ref())
        .filter_map(|f| f.0.get("f:status")?.get("f:modelDeployments")?.as_object())
        .flat_map(|items| items.keys())
        .filter_map(|k| serde_json::from_str::<String>(k.strip_prefix("v:")?).ok())
        .collect()
}

/// The field manager of the policy status writes: `rollguard`, or for one shard of a fleet
/// `rollguard:<selector>` (at most 128 characters), so that the shards' lists merge.
pub fn status_manager(shard: Option<&str>) -> String {
    match shard {
        None => crate::FIELD_MANAGER.to_string(),
        Some(selector) => format!("{}:{selector}", crate::FIELD_MANAGER)
            .chars()
            .take(128)
            .collect(),
    }
}

/// Reconciles one RollbackPolicy: writes its status when it differs. The ModelDeployments
/// that use it come from the controller's store (those this operator reconciles).
pub async fn reconcile(policy: Arc<RollbackPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = policy
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    let name = policy.name_any();
    // Before the store listed the ModelDeployments, every policy would look unused.
    let ready = tokio::time::timeout(std::time::Duration::from_secs(1), ctx.stores.models.wait_until_ready());
    if !matches!(ready.await, Ok(Ok(()))) {
        tracing::debug!(%namespace, %name, "policy not reconciled yet: the ModelDeployments are not listed");
        return Ok(Action::requeue(std::time::Duration::from_secs(1)));
    }
    let users: Vec<String> = ctx
        .stores
        .models
        .state()
        .iter()
        .filter(|md| md.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|md| md.spec.rollback_policy_ref.as_ref().is_some_and(|r| r.name == name))
        .map(|md| md.name_any())
        .collect();
    let now = conditions::stamp(jiff::Timestamp::now());
    let status = desired_status(&policy, users, &now);
    let manager = status_manager(ctx.shard.as_deref());
    let owned = ctx.shard.is_some().then(|| applied_names(&policy, &manager));
    let write = needs_write(policy.status.as_ref(), &status, owned.as_ref());
    tracing::debug!(%namespace, %name, users = status.model_deployments.len(), write, "policy reconciled");
    if write {
        let patch = serde_json::json!({
            "apiVersion": "rollguard.dev/v1alpha1",
            "kind": "RollbackPolicy",
            "status": status,
        });
        let api: Api<RollbackPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
        api.patch_status(&name, &PatchParams::apply(&manager).force(), &Patch::Apply(&patch))
            .await
            .map_err(|e| Error::PatchPolicyStatus(format!("{namespace}/{name}"), e))?;
    }
    Ok(Action::requeue(ctx.resync))
}

/// Retries a failed RollbackPolicy after a short delay.
pub fn error_policy(policy: Arc<RollbackPolicy>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(name = %policy.name_any(), category = err.category(), error = %err, "policy reconcile failed; retrying");
    Action::requeue(std::time::Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(triggers: serde_json::Value) -> RollbackPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackPolicy",
            "metadata": {"name": "llm", "namespace": "ns", "generation": 3},
            "spec": {"provider": {"prometheus": {"address": "http://p:9090"}}, "triggers": triggers}
        }))
        .expect("policy")
    }

    #[test]
    fn an_unknown_variable_makes_the_policy_invalid_naming_the_trigger() {
        let p = policy(serde_json::json!([
            {"name": "ok", "template": "VllmErrorRate", "operator": "Gt", "threshold": 0.05},
            {"name": "typo", "query": "x{r=\"{{revison}}\"}", "operator": "Gt", "threshold": 1}
        ]));
        let now = Time(jiff::Timestamp::UNIX_EPOCH);
        let s = desired_status(&p, vec!["b".into(), "a".into()], &now);
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.model_deployments, vec!["a", "b"]);
        let c = conditions::find(&s.conditions, types::VALID).expect("Valid");
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", INVALID_QUERY));
        let stalled = conditions::find(&s.conditions, types::STALLED).expect("Stalled");
        assert_eq!(
            (stalled.status.as_str(), stalled.message.as_str()),
            ("True", c.message.as_str())
        );
        assert_eq!(
            conditions::find(&s.conditions, types::READY).map(|c| c.status.as_str()),
            Some("False")
        );
        assert!(
            c.message
                .contains("spec.triggers[1] (typo): unknown variable {{revison}}"),
            "{}",
            c.message
        );
    }

    fn status(names: &[&str]) -> RollbackPolicyStatus {
        RollbackPolicyStatus {
            model_deployments: names.iter().map(|n| n.to_string()).collect(),
            ..RollbackPolicyStatus::default()
        }
    }

    #[test]
    fn one_operator_rewrites_any_difference_in_the_list() {
        assert!(needs_write(None, &status(&[]), None));
        assert!(!needs_write(Some(&status(&["a", "b"])), &status(&["a", "b"]), None));
        assert!(needs_write(Some(&status(&["a", "b"])), &status(&["a"]), None));
        assert!(needs_write(Some(&status(&["a"])), &status(&["a", "b"]), None));
    }

    #[test]
    fn a_shard_leaves_the_other_shards_names_alone() {
        let owned: BTreeSet<String> = ["a".to_string()].into();
        // b is another shard's: no write.
        assert!(!needs_write(Some(&status(&["a", "b"])), &status(&["a"]), Some(&owned)));
        // A user of this shard is missing: write.
        assert!(needs_write(Some(&status(&["b"])), &status(&["a", "c"]), Some(&owned)));
        // a, which this shard wrote, no longer uses the policy: write (the apply drops it).
        assert!(needs_write(Some(&status(&["a", "b"])), &status(&[]), Some(&owned)));
        // The conditions changed: write.
        let mut changed = status(&["a"]);
        changed.observed_generation = Some(2);
        assert!(needs_write(Some(&status(&["a", "b"])), &changed, Some(&owned)));
    }

    #[test]
    fn the_names_a_manager_applied_come_from_its_status_entry() {
        let p: RollbackPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackPolicy",
            "metadata": {"name": "llm", "namespace": "ns", "managedFields": [
                {"manager": "rollguard:fleet=a", "operation": "Apply", "subresource": "status",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:modelDeployments": {
                     "v:\"chat\"": {}, "v:\"code\"": {}}}}},
                {"manager": "rollguard:fleet=b", "operation": "Apply", "subresource": "status",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:modelDeployments": {"v:\"embed\"": {}}}}},
                {"manager": "rollguard:fleet=a", "operation": "Apply",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}
            ]},
            "spec": {"provider": {"prometheus": {"address": "http://p:9090"}}}
        }))
        .expect("policy");
        let names: Vec<String> = applied_names(&p, "rollguard:fleet=a").into_iter().collect();
        assert_eq!(names, ["chat", "code"]);
        assert!(applied_names(&p, "rollguard").is_empty());
        assert_eq!(status_manager(None), "rollguard");
        assert_eq!(status_manager(Some("fleet=a")), "rollguard:fleet=a");
        assert_eq!(status_manager(Some(&"x".repeat(300))).len(), 128);
    }

    #[test]
    fn a_policy_with_good_queries_is_valid() {
        let p =
            policy(serde_json::json!([{"name": "ok", "template": "VllmTtftP95", "operator": "Gt", "threshold": 2.5}]));
        let s = desired_status(&p, vec![], &Time(jiff::Timestamp::UNIX_EPOCH));
        let c = conditions::find(&s.conditions, types::VALID).expect("Valid");
        assert_eq!(c.status, "True");
        let kstatus = |t: &str| conditions::find(&s.conditions, t).map(|c| c.status.clone());
        assert_eq!(kstatus(types::READY).as_deref(), Some("True"));
        assert_eq!(kstatus(types::STALLED).as_deref(), Some("False"));
    }
}
