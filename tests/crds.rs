//! The CRDs against the real API server of the local control plane: they install, the
//! examples are accepted, and invalid manifests are rejected at admission with a message
//! that names the field.

mod support;

use kube::api::{Api, PostParams};
use kube::core::DynamicObject;
use serde_json::{Value, json};
use support::*;

#[tokio::test]
async fn kubectl_apply_of_crds_succeeds_and_they_become_established() {
    let cluster = cluster().await;
    let out = std::process::Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(["apply", "-f"])
        .arg(repo_root().join("crds"))
        .output()
        .expect("running kubectl");
    assert!(
        out.status.success(),
        "kubectl apply -f crds/ failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let api: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(cluster.client.clone());
    for name in ["modeldeployments.rollguard.dev", "rollbackpolicies.rollguard.dev"] {
        let established = wait_object(&api, name, std::time::Duration::from_secs(30), crd_established).await;
        let crd = established.unwrap_or_else(|| panic!("{name} not Established"));
        let names = &crd.spec.names;
        assert!(
            names
                .categories
                .as_ref()
                .is_some_and(|c| c.contains(&"rollguard".to_string()))
        );
        assert!(
            crd.spec.versions[0]
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
    }
}

#[tokio::test]
async fn every_example_is_accepted_by_the_api_server() {
    let cluster = cluster().await;
    apply_router_crds(&cluster.client).await;
    let ns = TestNamespace::create(&cluster.client, "examples").await;
    let mut kinds = Vec::new();
    for path in yaml_files(&repo_root().join("examples")) {
        for doc in read_yaml_documents(&path) {
            let api = dynamic_api(&cluster.client, &doc, &ns.name).await;
            let obj: DynamicObject = serde_json::from_value(doc.clone()).expect("example is an object");
            let created = api
                .create(&PostParams::default(), &obj)
                .await
                .unwrap_or_else(|e| panic!("{} was rejected: {e}", path.display()));
            let spec = &created.data["spec"];
            let kind = match doc["kind"].as_str() {
                Some("ModelDeployment") if spec.pointer("/trafficRouting/gatewayAPI/inferencePool").is_some() => {
                    "inferencePool"
                }
                Some("ModelDeployment") if spec["strategy"].get("canary").is_some() => "canary",
                Some("ModelDeployment") if spec["strategy"].get("blueGreen").is_some() => "blueGreen",
                Some(other) => other,
                None => "unknown",
            };
            kinds.push(kind.to_string());
        }
    }
    for wanted in ["canary", "blueGreen", "inferencePool", "RollbackPolicy"] {
        assert!(
            kinds.iter().any(|k| k == wanted),
            "examples/ has no {wanted}: {kinds:?}"
        );
    }
}

#[tokio::test]
async fn defaults_are_applied_by_the_api_server() {
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "defaults").await;
    let md = json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "minimal"},
        "spec": {"model": {"name": "m", "version": "1"},
                 "template": {"spec": {"containers": [{"name": "s", "image": "server:1"}]}}}
    });
    let created = create(&cluster.client, &ns.name, &md, false)
        .await
        .expect("minimal ModelDeployment accepted");
    let spec = &created.data["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["port"], 8000);
    assert_eq!(spec["revisionHistoryLimit"], 3);
    assert_eq!(spec["warmRevisions"], 1);
    assert_eq!(spec["progressDeadlineSeconds"], 1800);
    assert_eq!(spec["strategy"], json!({"blueGreen": {"autoPromote": true}}));

    let rbp = json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackPolicy",
        "metadata": {"name": "minimal"},
        "spec": {"provider": {"prometheus": {"address": "http://prom:9090"}},
                 "triggers": [{"name": "e", "template": "VllmErrorRate", "operator": "Gt", "threshold": 0.1}]}
    });
    let created = create(&cluster.client, &ns.name, &rbp, false)
        .await
        .expect("minimal RollbackPolicy accepted");
    let spec = &created.data["spec"];
    assert_eq!(spec["interval"], "30s");
    assert_eq!(spec["onMetricsUnavailable"], "Hold");
    assert_eq!(spec["guardWindow"], "10m");
    assert_eq!(spec["verification"]["window"], "5m");
    assert_eq!(spec["rollback"]["mode"], "Instant");
    assert_eq!(spec["provider"]["prometheus"]["timeout"], "5s");
    let trigger = &spec["triggers"][0];
    assert_eq!(trigger["severity"], "Critical");
    assert_eq!(trigger["cooldown"], "5m");
    assert_eq!(trigger["consecutive"], 1);
}

async fn create(client: &kube::Client, ns: &str, manifest: &Value, dry_run: bool) -> Result<DynamicObject, String> {
    let api = dynamic_api(client, manifest, ns).await;
    let obj: DynamicObject = serde_json::from_value(manifest.clone()).map_err(|e| e.to_string())?;
    api.create(
        &PostParams {
            dry_run,
            ..Default::default()
        },
        &obj,
    )
    .await
    .map_err(|e| e.to_string())
}

fn valid_model_deployment() -> Value {
    json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "chat"},
        "spec": {
            "model": {"name": "llama", "version": "2026-11-01", "uri": "hf://x/y"},
            "replicas": 1,
            "port": 8000,
            "template": {"spec": {"containers": [{"name": "vllm", "image": "vllm:1"}]}},
            "strategy": {"canary": {"steps": [{"setWeight": 10}, {"pause": {"duration": "5m"}}, {"setWeight": 100}]}},
            "trafficRouting": {"gatewayAPI": {"httpRoute": "chat"}},
            "revisionHistoryLimit": 3,
            "warmRevisions": 1,
            "progressDeadlineSeconds": 600
        }
    })
}

fn valid_rollback_policy() -> Value {
    json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackPolicy",
        "metadata": {"name": "llm"},
        "spec": {
            "provider": {"prometheus": {"address": "http://prometheus:9090", "timeout": "5s"}},
            "interval": "30s",
            "onMetricsUnavailable": "Hold",
            "triggers": [
                {"name": "error-rate", "query": "up", "operator": "Gt", "threshold": 0.05,
                 "severity": "Critical", "cooldown": "5m", "consecutive": 2},
                {"name": "ttft", "template": "VllmTtftP95", "operator": "Gt", "threshold": 2.5, "severity": "Warning"}
            ],
            "rollback": {"mode": "Gradual", "gradual": {"steps": [50, 20, 5, 0], "stepDuration": "60s"}},
            "verification": {"window": "5m"},
            "guardWindow": "10m"
        }
    })
}

/// Sets the value at a JSON pointer, creating objects on the way.
fn set(v: &mut Value, pointer: &str, new: Value) {
    let mut cur = v;
    for part in pointer.trim_start_matches('/').split('/') {
        cur = match cur {
            Value::Array(items) => {
                let i: usize = part.parse().expect("array index in pointer");
                &mut items[i]
            }
            other => {
                if !other.is_object() {
                    *other = json!({});
                }
                other
                    .as_object_mut()
                    .expect("object in pointer")
                    .entry(part.to_string())
                    .or_insert(Value::Null)
            }
        };
    }
    *cur = new;
}

/// Removes the value at a JSON pointer.
fn remove(v: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer with a parent");
    let parent = if parent.is_empty() {
        Some(v)
    } else {
        v.pointer_mut(parent)
    };
    if let Some(Value::Object(map)) = parent {
        map.remove(key);
    }
}

enum Edit {
    Set(&'static str, Value),
    Remove(&'static str),
}
use Edit::{Remove, Set};

struct Case {
    name: &'static str,
    base: fn() -> Value,
    edits: Vec<Edit>,
    /// Every one of these must appear in the API server's error message.
    expect: &'static [&'static str],
}

fn md(name: &'static str, edits: Vec<Edit>, expect: &'static [&'static str]) -> Case {
    Case {
        name,
        base: valid_model_deployment,
        edits,
        expect,
    }
}

fn rbp(name: &'static str, edits: Vec<Edit>, expect: &'static [&'static str]) -> Case {
    Case {
        name,
        base: valid_rollback_policy,
        edits,
        expect,
    }
}

fn invalid_cases() -> Vec<Case> {
    let long_version = "v".repeat(64);
    vec![
        md(
            "weight above 100",
            vec![Set("/spec/strategy/canary/steps/0/setWeight", json!(101))],
            &["spec.strategy.canary.steps[0].setWeight", "100"],
        ),
        md(
            "negative weight",
            vec![Set("/spec/strategy/canary/steps/0/setWeight", json!(-1))],
            &["spec.strategy.canary.steps[0].setWeight"],
        ),
        md(
            "negative replicas",
            vec![Set("/spec/replicas", json!(-1))],
            &["spec.replicas"],
        ),
        md(
            "empty steps",
            vec![Set("/spec/strategy/canary/steps", json!([]))],
            &["spec.strategy.canary.steps"],
        ),
        md(
            "step with setWeight and pause",
            vec![Set("/spec/strategy/canary/steps/0/pause", json!({}))],
            &[
                "spec.strategy.canary.steps[0]",
                "exactly one of setWeight, pause or setCanaryScale",
            ],
        ),
        md(
            "step with neither setWeight nor pause",
            vec![Set("/spec/strategy/canary/steps/1", json!({}))],
            &[
                "spec.strategy.canary.steps[1]",
                "exactly one of setWeight, pause or setCanaryScale",
            ],
        ),
        md(
            "step with setWeight and setCanaryScale",
            vec![Set(
                "/spec/strategy/canary/steps/0/setCanaryScale",
                json!({"replicas": 1}),
            )],
            &[
                "spec.strategy.canary.steps[0]",
                "exactly one of setWeight, pause or setCanaryScale",
            ],
        ),
        md(
            "setCanaryScale with replicas and matchTrafficWeight",
            vec![Set(
                "/spec/strategy/canary/steps/1",
                json!({"setCanaryScale": {"replicas": 1, "matchTrafficWeight": true}}),
            )],
            &[
                "spec.strategy.canary.steps[1].setCanaryScale",
                "exactly one of replicas or matchTrafficWeight",
            ],
        ),
        md(
            "setCanaryScale with neither",
            vec![Set("/spec/strategy/canary/steps/1", json!({"setCanaryScale": {}}))],
            &[
                "spec.strategy.canary.steps[1].setCanaryScale",
                "exactly one of replicas or matchTrafficWeight",
            ],
        ),
        md(
            "setCanaryScale matchTrafficWeight false",
            vec![Set(
                "/spec/strategy/canary/steps/1",
                json!({"setCanaryScale": {"matchTrafficWeight": false}}),
            )],
            &[
                "spec.strategy.canary.steps[1].setCanaryScale",
                "matchTrafficWeight must be true",
            ],
        ),
        md(
            "setCanaryScale negative replicas",
            vec![Set(
                "/spec/strategy/canary/steps/1",
                json!({"setCanaryScale": {"replicas": -1}}),
            )],
            &["spec.strategy.canary.steps[1].setCanaryScale.replicas", "-1"],
        ),
        md(
            "canary and blueGreen",
            vec![Set("/spec/strategy/blueGreen", json!({"autoPromote": true}))],
            &["spec.strategy", "exactly one of canary or blueGreen"],
        ),
        md(
            "empty strategy",
            vec![Set("/spec/strategy", json!({}))],
            &["spec.strategy", "exactly one of canary or blueGreen"],
        ),
        md(
            "an Endpoint Picker Service without a port",
            vec![Set(
                "/spec/trafficRouting/gatewayAPI/inferencePool",
                json!({"endpointPickerRef": {"name": "chat-epp"},
                       "canaryEndpointPickerRef": {"name": "chat-canary-epp", "port": {"number": 9002}}}),
            )],
            &[
                "spec.trafficRouting.gatewayAPI.inferencePool.endpointPickerRef.port",
                "required when the Endpoint Picker is a Service",
            ],
        ),
        md(
            "InferencePools without the canary pool's Endpoint Picker",
            vec![Set(
                "/spec/trafficRouting/gatewayAPI/inferencePool",
                json!({"endpointPickerRef": {"name": "chat-epp", "port": {"number": 9002}}}),
            )],
            &[
                "spec.trafficRouting.gatewayAPI.inferencePool.canaryEndpointPickerRef",
                "Required",
            ],
        ),
        md(
            "an unknown Endpoint Picker failure mode",
            vec![Set(
                "/spec/trafficRouting/gatewayAPI/inferencePool",
                json!({"endpointPickerRef": {"name": "chat-epp", "port": {"number": 9002}, "failureMode": "Retry"},
                       "canaryEndpointPickerRef": {"name": "chat-canary-epp", "port": {"number": 9002}}}),
            )],
            &[
                "spec.trafficRouting.gatewayAPI.inferencePool.endpointPickerRef.failureMode",
                "Retry",
            ],
        ),
        md(
            "canary without trafficRouting",
            vec![Remove("/spec/trafficRouting")],
            &["spec.trafficRouting"],
        ),
        md(
            "two routers",
            vec![Set("/spec/trafficRouting/smi", json!({"trafficSplit": "chat"}))],
            &["spec.trafficRouting", "exactly one of gatewayAPI, smi or istio"],
        ),
        md(
            "no router",
            vec![Set("/spec/trafficRouting", json!({}))],
            &["spec.trafficRouting", "exactly one"],
        ),
        md(
            "bad pause duration",
            vec![Set("/spec/strategy/canary/steps/1/pause/duration", json!("5 minutes"))],
            &["spec.strategy.canary.steps[1].pause.duration"],
        ),
        md(
            "pause duration too large for the parser (20 digits)",
            vec![Set(
                "/spec/strategy/canary/steps/1/pause/duration",
                json!("20000000000000000000s"),
            )],
            &["spec.strategy.canary.steps[1].pause.duration"],
        ),
        md(
            "revisionHistoryLimit 0",
            vec![Set("/spec/revisionHistoryLimit", json!(0))],
            &["spec.revisionHistoryLimit"],
        ),
        md(
            "revisionHistoryLimit 51",
            vec![Set("/spec/revisionHistoryLimit", json!(51))],
            &["spec.revisionHistoryLimit"],
        ),
        md(
            "negative warmReplicas",
            vec![Set("/spec/warmReplicas", json!(-2))],
            &["spec.warmReplicas", "-2"],
        ),
        md(
            "warmRevisions above the limit",
            vec![Set("/spec/warmRevisions", json!(4))],
            &["spec.warmRevisions", "must not exceed spec.revisionHistoryLimit"],
        ),
        md(
            "warmRevisions above the default limit",
            vec![
                Remove("/spec/revisionHistoryLimit"),
                Set("/spec/warmRevisions", json!(5)),
            ],
            &["spec.warmRevisions"],
        ),
        md(
            "missing model.version",
            vec![Remove("/spec/model/version")],
            &["spec.model.version", "Required"],
        ),
        md(
            "empty model.version",
            vec![Set("/spec/model/version", json!(""))],
            &["spec.model.version"],
        ),
        md(
            "over-long model.version",
            vec![Set("/spec/model/version", json!(long_version))],
            &["spec.model.version", "63"],
        ),
        md(
            "missing template",
            vec![Remove("/spec/template")],
            &["spec.template", "Required"],
        ),
        md("port 0", vec![Set("/spec/port", json!(0))], &["spec.port"]),
        md("port 65536", vec![Set("/spec/port", json!(65536))], &["spec.port"]),
        md(
            "progressDeadlineSeconds under 30",
            vec![Set("/spec/progressDeadlineSeconds", json!(29))],
            &["spec.progressDeadlineSeconds"],
        ),
        md(
            "replicas of the wrong type",
            vec![Set("/spec/replicas", json!("two"))],
            &["spec.replicas"],
        ),
        md(
            "container ports of the wrong type",
            vec![Set("/spec/template/spec/containers/0/ports", json!("8000"))],
            &["spec.template.spec.containers[0].ports"],
        ),
        rbp(
            "unknown operator",
            vec![Set("/spec/triggers/0/operator", json!("GreaterThan"))],
            &["spec.triggers[0].operator", "GreaterThan"],
        ),
        rbp(
            "unknown severity",
            vec![Set("/spec/triggers/0/severity", json!("Fatal"))],
            &["spec.triggers[0].severity"],
        ),
        rbp(
            "unknown template",
            vec![Set("/spec/triggers/1/template", json!("VllmFoo"))],
            &["spec.triggers[1].template"],
        ),
        rbp(
            "bad interval",
            vec![Set("/spec/interval", json!("30 seconds"))],
            &["spec.interval"],
        ),
        rbp(
            "interval of a 13-digit number",
            vec![Set("/spec/interval", json!("1000000000000h"))],
            &["spec.interval"],
        ),
        rbp(
            "negative cooldown",
            vec![Set("/spec/triggers/0/cooldown", json!("-5m"))],
            &["spec.triggers[0].cooldown"],
        ),
        rbp(
            "bad query timeout",
            vec![Set("/spec/provider/prometheus/timeout", json!("5"))],
            &["spec.provider.prometheus.timeout"],
        ),
        rbp(
            "bad guardWindow",
            vec![Set("/spec/guardWindow", json!("10 min"))],
            &["spec.guardWindow"],
        ),
        rbp(
            "increasing gradual steps",
            vec![Set("/spec/rollback/gradual/steps", json!([20, 50, 0]))],
            &["spec.rollback.gradual.steps", "strictly decreasing"],
        ),
        rbp(
            "repeated gradual steps",
            vec![Set("/spec/rollback/gradual/steps", json!([50, 50, 0]))],
            &["spec.rollback.gradual.steps", "strictly decreasing"],
        ),
        rbp(
            "gradual steps not ending at 0",
            vec![Set("/spec/rollback/gradual/steps", json!([50, 20, 5]))],
            &["spec.rollback.gradual.steps", "must end at 0"],
        ),
        rbp(
            "gradual step above 100",
            vec![Set("/spec/rollback/gradual/steps", json!([101, 0]))],
            &["spec.rollback.gradual.steps[0]"],
        ),
        rbp(
            "Gradual mode without gradual steps",
            vec![Remove("/spec/rollback/gradual")],
            &["spec.rollback.gradual"],
        ),
        rbp(
            "duplicate trigger names",
            vec![Set("/spec/triggers/1/name", json!("error-rate"))],
            &["spec.triggers", "names must be unique"],
        ),
        rbp(
            "trigger with query and template",
            vec![Set("/spec/triggers/0/template", json!("VllmErrorRate"))],
            &["spec.triggers[0]", "exactly one of query or template"],
        ),
        rbp(
            "trigger with neither query nor template",
            vec![Remove("/spec/triggers/1/template")],
            &["spec.triggers[1]", "exactly one of query or template"],
        ),
        rbp(
            "triggers without a provider",
            vec![Remove("/spec/provider")],
            &["spec.provider", "required"],
        ),
        rbp(
            "consecutive 0",
            vec![Set("/spec/triggers/0/consecutive", json!(0))],
            &["spec.triggers[0].consecutive"],
        ),
        rbp(
            "unknown onMetricsUnavailable",
            vec![Set("/spec/onMetricsUnavailable", json!("Panic"))],
            &["spec.onMetricsUnavailable"],
        ),
        rbp(
            "prometheus address without a scheme",
            vec![Set("/spec/provider/prometheus/address", json!("prometheus:9090"))],
            &["spec.provider.prometheus.address"],
        ),
        rbp(
            "trigger name that is not a DNS label",
            vec![Set("/spec/triggers/0/name", json!("Error Rate"))],
            &["spec.triggers[0].name"],
        ),
    ]
}

#[tokio::test]
async fn invalid_manifests_are_rejected_with_a_message_naming_the_field() {
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "invalid").await;
    // The unedited bases are valid, so each rejection below comes from its edit.
    for base in [valid_model_deployment(), valid_rollback_policy()] {
        create(&cluster.client, &ns.name, &base, true)
            .await
            .unwrap_or_else(|e| panic!("the valid base {} was rejected: {e}", base["kind"]));
    }
    let cases = invalid_cases();
    assert!(cases.len() >= 25, "the table holds {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let mut manifest = (case.base)();
        for edit in &case.edits {
            match edit {
                Set(pointer, value) => set(&mut manifest, pointer, value.clone()),
                Remove(pointer) => remove(&mut manifest, pointer),
            }
        }
        match create(&cluster.client, &ns.name, &manifest, true).await {
            Ok(_) => failures.push(format!("{}: accepted", case.name)),
            Err(message) => {
                let missing: Vec<_> = case.expect.iter().filter(|s| !message.contains(*s)).collect();
                if !missing.is_empty() {
                    failures.push(format!("{}: message lacks {missing:?}: {message}", case.name));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
