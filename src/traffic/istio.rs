//! Istio `VirtualService` (`networking.istio.io/v1`).
//!
//! In the named HTTP routes, or in every HTTP route with a destination host that is the
//! stable Service, the stable destination gets `100 - w` and the canary one `w`; a missing
//! canary destination is added, copied from the stable one with the canary host. Matches,
//! retries, timeouts and other routes are left as they are.

use serde_json::{Value, json};

use super::{RouteKind, Target, Weights};

/// Whether `host` names `service` in `namespace`: `svc`, `svc.ns`, `svc.ns.svc`,
/// `svc.ns.svc.cluster.local` and so on.
fn host_is(host: &str, service: &str, namespace: &str) -> bool {
    let mut parts = host.split('.');
    parts.next() == Some(service) && parts.next().is_none_or(|ns| ns == namespace)
}

/// The canary host written the way the stable host is (short or qualified).
fn canary_host(stable_host: &str, stable: &str, canary: &str) -> String {
    match stable_host.strip_prefix(stable) {
        Some(rest) => format!("{canary}{rest}"),
        None => canary.to_string(),
    }
}

fn dest_host(d: &Value) -> Option<&str> {
    d.pointer("/destination/host").and_then(Value::as_str)
}

/// `spec.http` with the weights set, or None when no selected route has the stable Service
/// as a destination.
///
/// ```
/// use rollguard::traffic::{Backends, Target, istio::http_with_weights};
/// let vs = serde_json::json!({"spec": {"hosts": ["chat"], "http": [
///     {"name": "primary", "route": [{"destination": {"host": "chat.llm.svc.cluster.local"}}]}]}});
/// let t = Target { namespace: "llm".into(), name: "chat".into(),
///     backends: Backends::services("chat", "chat-canary"), routes: vec![] };
/// let http = http_with_weights(&vs, &t, 10).unwrap();
/// assert_eq!(http[0]["route"], serde_json::json!([
///     {"destination": {"host": "chat.llm.svc.cluster.local"}, "weight": 90},
///     {"destination": {"host": "chat-canary.llm.svc.cluster.local"}, "weight": 10}]));
/// ```
pub fn http_with_weights(vs: &Value, target: &Target, weight: i32) -> Option<Value> {
    let w = Weights::canary_at(weight);
    let (stable, canary, ns) = (&target.backends.stable, &target.backends.canary, &target.namespace);
    let mut http = vs.pointer("/spec/http")?.as_array()?.clone();
    let mut referenced = false;
    for route in &mut http {
        let name = route
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !target.routes.is_empty() && !target.routes.contains(&name) {
            continue;
        }
        let Some(dests) = route.get_mut("route").and_then(Value::as_array_mut) else {
            continue;
        };
        let Some(stable_dest) = dests
            .iter()
            .find(|d| dest_host(d).is_some_and(|h| host_is(h, stable, ns)))
            .cloned()
        else {
            continue;
        };
        referenced = true;
        if !dests
            .iter()
            .any(|d| dest_host(d).is_some_and(|h| host_is(h, canary, ns)))
        {
            let mut c = stable_dest.clone();
            c["destination"]["host"] = json!(canary_host(dest_host(&stable_dest).unwrap_or(stable), stable, canary));
            dests.push(c);
        }
        for d in dests.iter_mut() {
            let host = dest_host(d).unwrap_or_default().to_string();
            if host_is(&host, stable, ns) {
                d["weight"] = json!(w.stable);
            } else if host_is(&host, canary, ns) {
                d["weight"] = json!(w.canary);
            }
        }
    }
    referenced.then_some(Value::Array(http))
}

/// The weights of the first selected route with the stable Service as a destination.
pub fn weights_of(vs: &Value, target: &Target) -> Option<Weights> {
    let (stable, canary, ns) = (&target.backends.stable, &target.backends.canary, &target.namespace);
    vs.pointer("/spec/http")?.as_array()?.iter().find_map(|route| {
        let name = route.get("name").and_then(Value::as_str).unwrap_or_default();
        if !target.routes.is_empty() && !target.routes.iter().any(|r| r == name) {
            return None;
        }
        let dests = route.get("route")?.as_array()?;
        let weight = |svc: &str| {
            dests
                .iter()
                .find(|d| dest_host(d).is_some_and(|h| host_is(h, svc, ns)))
                // Istio: a lone destination without weight takes 100.
                .map(|d| {
                    d.get("weight")
                        .and_then(Value::as_i64)
                        .unwrap_or(if dests.len() == 1 { 100 } else { 0 }) as i32
                })
        };
        Some(Weights {
            stable: weight(stable)?,
            canary: weight(canary).unwrap_or(0),
        })
    })
}

/// VirtualService, `networking.istio.io/v1`.
pub static ROUTE_KIND: RouteKind = RouteKind {
    kind: "VirtualService",
    group: "networking.istio.io",
    version: "v1",
    api_version: "networking.istio.io/v1",
    plural: "virtualservices",
    field: "http",
    edit: http_with_weights,
    read: weights_of,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::Backends;
    use proptest::prelude::*;

    fn target(routes: &[&str]) -> Target {
        Target {
            namespace: "llm".into(),
            name: "chat".into(),
            backends: Backends::services("chat", "chat-canary"),
            routes: routes.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn vs() -> Value {
        json!({"spec": {"hosts": ["chat"], "http": [
            {"name": "primary", "match": [{"uri": {"prefix": "/v1"}}], "timeout": "30s",
             "route": [{"destination": {"host": "chat", "port": {"number": 8000}}}]},
            {"name": "secondary", "route": [{"destination": {"host": "chat.llm.svc.cluster.local"}, "weight": 100}]},
            {"name": "elsewhere", "route": [{"destination": {"host": "chat.other"}}]}
        ]}})
    }

    #[test]
    fn only_named_routes_are_weighted_when_routes_are_given() {
        let http = http_with_weights(&vs(), &target(&["secondary"]), 30).expect("referenced");
        assert_eq!(http[0], vs()["spec"]["http"][0], "primary untouched");
        assert_eq!(
            http[1]["route"][1]["destination"]["host"],
            "chat-canary.llm.svc.cluster.local"
        );
        assert_eq!(http[1]["route"][1]["weight"], 30);
    }

    #[test]
    fn all_routes_to_our_service_are_weighted_and_other_namespaces_are_not_ours() {
        let http = http_with_weights(&vs(), &target(&[]), 40).expect("referenced");
        assert_eq!(http[0]["route"][0]["weight"], 60);
        assert_eq!(
            http[0]["route"][1],
            json!({"destination": {"host": "chat-canary", "port": {"number": 8000}}, "weight": 40})
        );
        assert_eq!(http[0]["timeout"], "30s");
        assert_eq!(
            http[2],
            vs()["spec"]["http"][2],
            "chat.other is another namespace's Service"
        );
        assert_eq!(
            weights_of(&vs(), &target(&[])),
            Some(Weights { stable: 100, canary: 0 })
        );
    }

    proptest! {
        #[test]
        fn weights_read_back_are_the_weights_written(w in 0i32..=100) {
            let written = json!({"spec": {"http": http_with_weights(&vs(), &target(&[]), w).expect("referenced")}});
            prop_assert_eq!(weights_of(&written, &target(&[])), Some(Weights::canary_at(w)));
        }
    }
}
