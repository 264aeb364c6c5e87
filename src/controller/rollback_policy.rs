//! The RollbackPolicy reconciler: its status says whether every trigger's query can be built
//! and which ModelDeployments use it.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::{Context, Error};
use crate::api::{ModelDeployment, RollbackPolicy, RollbackPolicyStatus};
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

/// Reconciles one RollbackPolicy: writes its status when it differs.
pub async fn reconcile(policy: Arc<RollbackPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = policy
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    let name = policy.name_any();
    let key = format!("{namespace}/{name}");
    let mds: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let users: Vec<String> = mds
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::ListModelDeployments(key.clone(), e))?
        .into_iter()
        .filter(|md| md.spec.rollback_policy_ref.as_ref().is_some_and(|r| r.name == name))
        .map(|md| md.name_any())
        .collect();
    let now = conditions::stamp(jiff::Timestamp::now());
    let status = desired_status(&policy, users, &now);
    if policy.status.as_ref() != Some(&status) {
        let patch = serde_json::json!({
            "apiVersion": "rollguard.dev/v1alpha1",
            "kind": "RollbackPolicy",
            "status": status,
        });
        let api: Api<RollbackPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
        api.patch_status(
            &name,
            &PatchParams::apply(crate::FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| Error::PatchPolicyStatus(key, e))?;
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
