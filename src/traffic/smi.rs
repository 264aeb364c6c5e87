//! SMI `TrafficSplit` (`split.smi-spec.io/v1alpha4`).
//!
//! The backend of the stable Service gets `100 - w`, the canary one `w`; a missing canary
//! backend is added. `service` (the apex) and `matches` are left as they are.

use serde_json::{Value, json};

use super::{Backends, RouteKind, Weights};

/// `spec.backends` with the weights set, or None when no backend is the stable Service.
///
/// ```
/// use rollguard::traffic::{Backends, smi::backends_with_weights};
/// let split = serde_json::json!({"spec": {"service": "chat-apex", "backends": [{"service": "chat", "weight": 100}]}});
/// let b = Backends::services("chat", "chat-canary");
/// assert_eq!(backends_with_weights(&split, &b, 20).unwrap(), serde_json::json!([
///     {"service": "chat", "weight": 80}, {"service": "chat-canary", "weight": 20}]));
/// ```
pub fn backends_with_weights(split: &Value, backends: &Backends, weight: i32) -> Option<Value> {
    let w = Weights::canary_at(weight);
    let mut list = split.pointer("/spec/backends")?.as_array()?.clone();
    let is = |b: &Value, svc: &str| b.get("service").and_then(Value::as_str) == Some(svc);
    let stable = list.iter().find(|b| is(b, &backends.stable)).cloned()?;
    if !list.iter().any(|b| is(b, &backends.canary)) {
        let mut canary = stable;
        canary["service"] = json!(backends.canary);
        list.push(canary);
    }
    for b in &mut list {
        if is(b, &backends.stable) {
            b["weight"] = json!(w.stable);
        } else if is(b, &backends.canary) {
            b["weight"] = json!(w.canary);
        }
    }
    Some(Value::Array(list))
}

/// The weights of the stable and canary backends.
pub fn weights_of(split: &Value, backends: &Backends) -> Option<Weights> {
    let list = split.pointer("/spec/backends")?.as_array()?;
    let weight = |svc: &str| {
        list.iter()
            .find(|b| b.get("service").and_then(Value::as_str) == Some(svc))
            .map(|b| b.get("weight").and_then(Value::as_f64).unwrap_or(0.0).round() as i32)
    };
    Some(Weights {
        stable: weight(&backends.stable)?,
        canary: weight(&backends.canary).unwrap_or(0),
    })
}

/// TrafficSplit, `split.smi-spec.io/v1alpha4`.
pub static ROUTE_KIND: RouteKind = RouteKind {
    kind: "TrafficSplit",
    group: "split.smi-spec.io",
    version: "v1alpha4",
    api_version: "split.smi-spec.io/v1alpha4",
    plural: "trafficsplits",
    field: "backends",
    edit: |obj, target, weight| backends_with_weights(obj, &target.backends, weight),
    read: |obj, target| weights_of(obj, &target.backends),
};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b() -> Backends {
        Backends::services("chat", "chat-canary")
    }

    #[test]
    fn other_backends_are_left_alone() {
        let split = json!({"spec": {"service": "apex", "backends": [
            {"service": "chat", "weight": 90}, {"service": "chat-canary", "weight": 10}, {"service": "mirror", "weight": 0}]}});
        let list = backends_with_weights(&split, &b(), 50).expect("referenced");
        assert_eq!(list[2], json!({"service": "mirror", "weight": 0}));
        assert!(
            backends_with_weights(&json!({"spec": {"backends": [{"service": "x", "weight": 1}]}}), &b(), 5).is_none()
        );
    }

    proptest! {
        #[test]
        fn weights_read_back_are_the_weights_written(w in 0i32..=100) {
            let split = json!({"spec": {"service": "apex", "backends": [{"service": "chat", "weight": 100}]}});
            let written = json!({"spec": {"backends": backends_with_weights(&split, &b(), w).expect("referenced")}});
            prop_assert_eq!(weights_of(&written, &b()), Some(Weights::canary_at(w)));
        }
    }
}
