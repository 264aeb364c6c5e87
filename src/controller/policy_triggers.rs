//! Which reconciles a change wakes between ModelDeployments and RollbackPolicies: a policy is
//! looked at again when it gains or loses users, its users when its spec changes.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::api::{ModelDeployment, RollbackPolicy};

pub(super) fn policy_name(md: &ModelDeployment) -> Option<&str> {
    md.spec.rollback_policy_ref.as_ref().map(|r| r.name.as_str())
}

/// Which policies' lists of users a ModelDeployment's watch event may change: one that
/// appears, is deleted, or moves to another policy (the old one and the new one). Status
/// writes and every other change are left out: in a fleet they come by the hundred a second,
/// and each would make every shared policy look through all its users.
#[derive(Default)]
pub(super) struct PolicyUsers {
    /// The policy each ModelDeployment seen uses, by namespace and name.
    seen: HashMap<(String, String), Option<String>>,
}

impl PolicyUsers {
    /// The policies to look at again after `event`.
    pub(super) fn changed(&mut self, event: &watcher::Event<ModelDeployment>) -> Vec<ObjectRef<RollbackPolicy>> {
        let mut changed = Vec::new();
        let mut policy = |namespace: &str, name: Option<String>| {
            if let Some(name) = name {
                changed.push(ObjectRef::<RollbackPolicy>::new(&name).within(namespace));
            }
        };
        match event {
            watcher::Event::Apply(md) | watcher::Event::InitApply(md) => {
                let namespace = md.namespace().unwrap_or_default();
                let now = policy_name(md).map(str::to_string);
                match self.seen.insert((namespace.clone(), md.name_any()), now.clone()) {
                    Some(before) if before == now => {}
                    Some(before) => {
                        policy(&namespace, before);
                        policy(&namespace, now);
                    }
                    None => policy(&namespace, now),
                }
            }
            watcher::Event::Delete(md) => {
                let namespace = md.namespace().unwrap_or_default();
                let before = self.seen.remove(&(namespace.clone(), md.name_any())).flatten();
                policy(&namespace, before.or_else(|| policy_name(md).map(str::to_string)));
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
        changed
    }
}

/// The policies whose spec changed (a generation not seen before), from the policy watch:
/// the ModelDeployments read a policy's spec only, so the policy's own status writes (its
/// list of users, rewritten as a fleet grows) wake none of them.
pub(super) fn new_generations<S>(policies: S) -> impl futures::Stream<Item = Arc<RollbackPolicy>> + Send
where
    S: futures::Stream<Item = Arc<RollbackPolicy>> + Send,
{
    let mut seen: HashMap<String, Option<i64>> = HashMap::new();
    policies.filter(move |policy| {
        let uid = policy.uid().unwrap_or_else(|| policy.name_any());
        let generation = policy.metadata.generation;
        futures::future::ready(seen.insert(uid, generation) != Some(generation))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(name: &str, policy: Option<&str>, phase_note: &str) -> ModelDeployment {
        let extra = match policy {
            Some(p) => serde_json::json!({"rollbackPolicyRef": {"name": p}}),
            None => serde_json::json!({}),
        };
        let mut md = ModelDeployment::example(name, "v1", 1, extra).expect("example");
        md.metadata.namespace = Some("ns".into());
        md.metadata.resource_version = Some(phase_note.into());
        md
    }

    #[test]
    fn only_new_moved_and_deleted_users_wake_their_policies() {
        let events = [
            watcher::Event::Init,
            watcher::Event::InitApply(md("a", Some("p"), "1")),
            watcher::Event::InitDone,
            // A status write: same policy, nothing to do.
            watcher::Event::Apply(md("a", Some("p"), "2")),
            watcher::Event::Apply(md("b", None, "3")),
            // a moves from p to q: both.
            watcher::Event::Apply(md("a", Some("q"), "4")),
            watcher::Event::Apply(md("b", Some("p"), "5")),
            watcher::Event::Delete(md("b", Some("p"), "6")),
        ];
        let mut users = PolicyUsers::default();
        let refs: Vec<String> = events
            .iter()
            .flat_map(|event| users.changed(event))
            .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
            .collect();
        assert_eq!(refs, ["ns/p", "ns/p", "ns/q", "ns/p", "ns/p"]);
    }

    fn policy(name: &str, uid: &str, generation: i64, users: &[&str]) -> Arc<RollbackPolicy> {
        let mut p: RollbackPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackPolicy",
            "metadata": {"name": name, "namespace": "ns", "uid": uid, "generation": generation},
            "spec": {"triggers": []},
            "status": {"modelDeployments": users},
        }))
        .expect("policy");
        p.metadata.resource_version = Some(format!("{generation}-{}", users.len()));
        Arc::new(p)
    }

    #[tokio::test]
    async fn only_a_policys_new_spec_wakes_its_users() {
        let events = vec![
            policy("p", "u1", 1, &[]),
            // Its status lists a user, then two: no new spec.
            policy("p", "u1", 1, &["a"]),
            policy("p", "u1", 1, &["a", "b"]),
            policy("q", "u2", 1, &[]),
            // The spec changes.
            policy("p", "u1", 2, &["a", "b"]),
            // Deleted and made again under the same name: a new object.
            policy("q", "u3", 1, &[]),
        ];
        let woken: Vec<String> = new_generations(futures::stream::iter(events))
            .map(|p| format!("{}@{}", p.name_any(), p.metadata.generation.unwrap_or(0)))
            .collect()
            .await;
        assert_eq!(woken, ["p@1", "q@1", "p@2", "q@1"]);
    }
}
