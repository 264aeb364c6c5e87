//! Pins the generated CRD schemas: an API change shows up here and in `crds/` in review.

mod support;

use rollguard::api::crds_yaml;
use serde_json::Value;
use support::*;

#[test]
fn generated_crds_match_the_committed_files() {
    let generated = crds_yaml().expect("rendering CRDs");
    let committed =
        std::fs::read_to_string(repo_root().join("crds/rollguard.yaml")).expect("reading crds/rollguard.yaml");
    assert!(
        generated == committed,
        "crds/rollguard.yaml is out of date; regenerate it with `make crds` and review the diff"
    );
}

fn schema_of(kind: &str) -> Value {
    let crd = rollguard::api::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"));
    serde_json::to_value(&crd.spec.versions[0].schema.as_ref().expect("schema").open_api_v3_schema).expect("json")
}

/// Every schema node must say what it is: a type, int-or-string, or preserve-unknown-fields.
/// An empty `{}` is not structural and the API server rejects the CRD.
fn assert_structural(path: &str, node: &Value) {
    let obj = node
        .as_object()
        .unwrap_or_else(|| panic!("{path}: not a schema object"));
    let typed = obj.contains_key("type")
        || obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    assert!(typed, "{path}: schema without a type: {node}");
    for forbidden in ["$ref", "oneOf", "anyOf", "allOf", "not"] {
        let ok = forbidden == "anyOf" && obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
        assert!(ok || !obj.contains_key(forbidden), "{path}: uses {forbidden}");
    }
    if let Some(Value::Object(props)) = obj.get("properties") {
        for (name, child) in props {
            assert_structural(&format!("{path}.{name}"), child);
        }
    }
    if let Some(items) = obj.get("items") {
        assert_structural(&format!("{path}[]"), items);
    }
    if let Some(extra) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        assert_structural(&format!("{path}{{}}"), extra);
    }
}

#[test]
fn schemas_are_structural() {
    for kind in ["ModelDeployment", "RollbackPolicy"] {
        assert_structural(kind, &schema_of(kind));
    }
}

#[test]
fn template_is_the_core_pod_template_spec() {
    let schema = schema_of("ModelDeployment");
    let template = &schema["properties"]["spec"]["properties"]["template"];
    let pod_spec = &template["properties"]["spec"];
    assert_eq!(pod_spec["required"], serde_json::json!(["containers"]));
    let container = &pod_spec["properties"]["containers"]["items"];
    assert_eq!(container["properties"]["image"]["type"], "string");
    // Probe ports and resource quantities accept both numbers and strings.
    let port = &container["properties"]["readinessProbe"]["properties"]["httpGet"]["properties"]["port"];
    assert_eq!(port["x-kubernetes-int-or-string"], true);
    let limits = &container["properties"]["resources"]["properties"]["limits"]["additionalProperties"];
    assert_eq!(limits["x-kubernetes-int-or-string"], true);
    let spec_required = &schema["properties"]["spec"]["required"];
    assert_eq!(spec_required, &serde_json::json!(["model", "template"]));
}

#[test]
fn model_deployment_columns_names_and_subresources() {
    let crd = rollguard::api::crds().remove(0);
    assert_eq!(crd.spec.names.short_names, Some(vec!["md".to_string()]));
    assert_eq!(crd.spec.names.categories, Some(vec!["rollguard".to_string()]));
    let version = &crd.spec.versions[0];
    let columns: Vec<_> = version
        .additional_printer_columns
        .as_ref()
        .expect("printer columns")
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        ["Model", "Version", "Phase", "Stable", "Canary", "Weight", "Age"]
    );
    assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());

    let rbp = rollguard::api::crds().remove(1);
    assert_eq!(rbp.spec.names.short_names, Some(vec!["rbp".to_string()]));
    assert_eq!(rbp.spec.names.categories, Some(vec!["rollguard".to_string()]));
}

#[test]
fn every_exactly_one_and_cross_field_rule_is_in_the_schema() {
    let rules = |kind: &str| -> Vec<String> {
        let mut out = Vec::new();
        collect_rules(&schema_of(kind), &mut out);
        out
    };
    let md = rules("ModelDeployment");
    for rule in [
        "has(self.canary) != has(self.blueGreen)",
        "[has(self.setWeight), has(self.pause), has(self.setCanaryScale)].filter(x, x).size() == 1",
        "has(self.replicas) != has(self.matchTrafficWeight)",
        "!has(self.matchTrafficWeight) || self.matchTrafficWeight",
        "!has(self.strategy) || !has(self.strategy.canary) || has(self.trafficRouting)",
        "(has(self.gatewayAPI) ? 1 : 0) + (has(self.smi) ? 1 : 0) + (has(self.istio) ? 1 : 0) == 1",
    ] {
        assert!(
            md.iter().any(|r| r == rule),
            "ModelDeployment lacks rule {rule}: {md:?}"
        );
    }
    assert!(md.iter().any(|r| r.contains("self.warmRevisions <=")));
    let rbp = rules("RollbackPolicy");
    for needle in [
        "has(self.query) != has(self.template)",
        "exists_one(u, u.name == t.name)",
        "has(self.provider)",
        "isSorted()",
        "self.steps[size(self.steps) - 1] == 0",
        "has(self.gradual)",
    ] {
        assert!(
            rbp.iter().any(|r| r.contains(needle)),
            "RollbackPolicy lacks a rule with {needle}: {rbp:?}"
        );
    }
}

fn collect_rules(node: &Value, out: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
                out.extend(rules.iter().filter_map(|r| r["rule"].as_str().map(String::from)));
            }
            map.values().for_each(|v| collect_rules(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_rules(v, out)),
        _ => {}
    }
}
