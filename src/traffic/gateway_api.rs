//! Gateway API `HTTPRoute` (`gateway.networking.k8s.io/v1`).
//!
//! In every rule of the route that has a backendRef to the stable Service, the stable
//! backendRef gets `100 - w` and the canary one `w`; a missing canary backendRef is added,
//! copied from the stable one with the canary Service's name. Other rules, matches, filters,
//! parentRefs and hostnames are left as they are.

use serde_json::{Value, json};

use super::{BackendKind, Backends, RouteKind, Weights};

/// Whether `backend` is a backendRef to the object `name` of `kind`. An empty or missing
/// group is the core group; a missing kind is `Service` (the Gateway API defaults).
fn is_ref(backend: &Value, kind: BackendKind, name: &str) -> bool {
    let group = backend.get("group").and_then(Value::as_str).unwrap_or("");
    let ref_kind = backend.get("kind").and_then(Value::as_str).unwrap_or("Service");
    group == kind.group() && ref_kind == kind.kind() && backend.get("name").and_then(Value::as_str) == Some(name)
}

/// The route's `spec.rules` with the weights set, or None when no rule references the
/// stable Service.
///
/// ```
/// use rollguard::traffic::{Backends, gateway_api::rules_with_weights};
/// let route = serde_json::json!({"spec": {"rules": [
///     {"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
///      "backendRefs": [{"name": "chat", "port": 8000}]}]}});
/// let b = Backends::services("chat", "chat-canary");
/// let rules = rules_with_weights(&route, &b, 10).unwrap();
/// assert_eq!(rules[0]["backendRefs"], serde_json::json!([
///     {"name": "chat", "port": 8000, "weight": 90},
///     {"name": "chat-canary", "port": 8000, "weight": 10}]));
/// assert_eq!(rules[0]["matches"], route["spec"]["rules"][0]["matches"]);
/// ```
pub fn rules_with_weights(route: &Value, backends: &Backends, weight: i32) -> Option<Value> {
    let w = Weights::canary_at(weight);
    let mut rules = route.pointer("/spec/rules")?.as_array()?.clone();
    let mut referenced = false;
    for rule in &mut rules {
        let Some(refs) = rule.get_mut("backendRefs").and_then(Value::as_array_mut) else {
            continue;
        };
        let Some(stable) = refs
            .iter()
            .find(|b| is_ref(b, backends.kind, &backends.stable))
            .cloned()
        else {
            continue;
        };
        referenced = true;
        if !refs.iter().any(|b| is_ref(b, backends.kind, &backends.canary)) {
            let mut canary = stable;
            canary["name"] = json!(backends.canary);
            refs.push(canary);
        }
        for b in refs.iter_mut() {
            if is_ref(b, backends.kind, &backends.stable) {
                b["weight"] = json!(w.stable);
            } else if is_ref(b, backends.kind, &backends.canary) {
                b["weight"] = json!(w.canary);
            }
        }
    }
    referenced.then_some(Value::Array(rules))
}

/// The weights of the first rule that references the stable Service. A backendRef without
/// a weight has the Gateway API default of 1; a missing canary backendRef counts as 0.
pub fn weights_of(route: &Value, backends: &Backends) -> Option<Weights> {
    let rules = route.pointer("/spec/rules")?.as_array()?;
    rules.iter().find_map(|rule| {
        let refs = rule.get("backendRefs")?.as_array()?;
        let weight = |svc: &str| {
            refs.iter()
                .find(|b| is_ref(b, backends.kind, svc))
                .map(|b| b.get("weight").and_then(Value::as_i64).unwrap_or(1) as i32)
        };
        let stable = weight(&backends.stable)?;
        Some(Weights {
            stable,
            canary: weight(&backends.canary).unwrap_or(0),
        })
    })
}

/// HTTPRoute, `gateway.networking.k8s.io/v1`.
pub static ROUTE_KIND: RouteKind = RouteKind {
    kind: "HTTPRoute",
    group: "gateway.networking.k8s.io",
    version: "v1",
    api_version: "gateway.networking.k8s.io/v1",
    plural: "httproutes",
    field: "rules",
    edit: |obj, target, weight| rules_with_weights(obj, &target.backends, weight),
    read: |obj, target| weights_of(obj, &target.backends),
};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn backends() -> Backends {
        Backends::services("chat", "chat-canary")
    }

    fn route() -> Value {
        json!({"spec": {
        "parentRefs": [{"name": "gw"}],
        "hostnames": ["llm.example.com"],
        "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
             "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x", "value": "y"}]}}],
             "backendRefs": [{"name": "chat", "port": 8000, "weight": 100}, {"name": "chat-canary", "port": 8000, "weight": 0}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/other"}}],
             "backendRefs": [{"name": "other", "port": 80}]}
        ]}})
    }

    #[test]
    fn only_weights_of_our_backends_change() {
        let rules = rules_with_weights(&route(), &backends(), 30).expect("referenced");
        assert_eq!(rules[0]["backendRefs"][0]["weight"], 70);
        assert_eq!(rules[0]["backendRefs"][1]["weight"], 30);
        assert_eq!(rules[0]["filters"], route()["spec"]["rules"][0]["filters"]);
        assert_eq!(rules[1], route()["spec"]["rules"][1], "other rules untouched");
    }

    #[test]
    fn a_route_without_the_stable_service_is_not_referenced() {
        let r = json!({"spec": {"rules": [{"backendRefs": [{"name": "other", "port": 80}]}]}});
        assert!(rules_with_weights(&r, &backends(), 10).is_none());
        assert!(weights_of(&r, &backends()).is_none());
    }

    #[test]
    fn refs_to_other_kinds_with_the_same_name_are_not_ours() {
        let r =
            json!({"spec": {"rules": [{"backendRefs": [{"group": "example.com", "kind": "Bucket", "name": "chat"}]}]}});
        assert!(rules_with_weights(&r, &backends(), 10).is_none());
    }

    #[test]
    fn inference_pool_backends_weight_only_the_pool_refs() {
        let pools = Backends {
            kind: BackendKind::InferencePool,
            ..backends()
        };
        let pool = |name: &str| json!({"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": name});
        let route = json!({"spec": {"rules": [
            {"backendRefs": [pool("chat")]},
            {"backendRefs": [{"name": "chat", "port": 8000}]}
        ]}});
        let rules = rules_with_weights(&route, &pools, 25).expect("referenced");
        let mut stable = pool("chat");
        stable["weight"] = json!(75);
        let mut canary = pool("chat-canary");
        canary["weight"] = json!(25);
        assert_eq!(
            rules[0]["backendRefs"],
            json!([stable, canary]),
            "the canary pool is added beside the stable one"
        );
        assert_eq!(
            rules[1], route["spec"]["rules"][1],
            "a Service of the same name is not a pool"
        );
        let written = json!({"spec": {"rules": rules}});
        assert_eq!(weights_of(&written, &pools), Some(Weights { stable: 75, canary: 25 }));
        // A route to the Service `chat` does not reference the pools, nor the other way round.
        let services = json!({"spec": {"rules": [route["spec"]["rules"][1].clone()]}});
        assert!(weights_of(&services, &pools).is_none());
        let only_pools = json!({"spec": {"rules": [route["spec"]["rules"][0].clone()]}});
        assert!(weights_of(&only_pools, &backends()).is_none());
    }

    proptest! {
        #[test]
        fn weights_read_back_are_the_weights_written(w in 0i32..=100) {
            let rules = rules_with_weights(&route(), &backends(), w).expect("referenced");
            let written = json!({"spec": {"rules": rules}});
            prop_assert_eq!(weights_of(&written, &backends()), Some(Weights { stable: 100 - w, canary: w }));
            // Writing the same weight again changes nothing.
            prop_assert_eq!(rules_with_weights(&written, &backends(), w), Some(written["spec"]["rules"].clone()));
        }
    }
}
