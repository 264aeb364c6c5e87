//! What GitOps tools show of ModelDeployments and RollbackPolicies: Argo CD's health checks
//! (`deploy/argocd/resource_customizations/rollguard.dev/*/health.lua`, under Lua 5.1) and
//! Flux's kstatus (`sigs.k8s.io/cli-utils`, through `hack/kstatus`), on objects captured from
//! the live operator in every phase. The captures are Argo CD's test fixtures
//! (`testdata/*.yaml`, checked by `health_test.yaml`); `ROLLGUARD_WRITE_FIXTURES=1` writes
//! them anew from the run.

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use kube::Api;
use rollguard::api::{Phase, RollbackPolicy};
use serde_json::json;
use support::httproute::*;
use support::lua::health;
use support::slow_provider::{Answer, SlowProvider};
use support::*;

const SECS_60: Duration = Duration::from_secs(60);
const OK: &str =
    r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1795000000,"0.01"]}]}}"#;
const BAD: &str =
    r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1795000000,"0.5"]}]}}"#;

fn customizations(kind: &str) -> PathBuf {
    repo_root()
        .join("deploy/argocd/resource_customizations/rollguard.dev")
        .join(kind)
}

/// The object as a fixture: without what changes from run to run and says nothing of health.
fn fixture(obj: &impl serde::Serialize) -> serde_json::Value {
    let mut v = serde_json::to_value(obj).expect("JSON");
    if let Some(meta) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        for key in ["managedFields", "uid", "resourceVersion", "creationTimestamp"] {
            meta.remove(key);
        }
        meta.insert("namespace".into(), json!("llm"));
    }
    v
}

/// What kstatus (Flux's health checks) computes for each object: (status, message).
fn kstatus(objects: &[serde_json::Value]) -> Vec<(String, String)> {
    let bin = std::env::var_os("ROLLGUARD_KSTATUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("ROLLGUARD_KSTATUS is not set: run this test through `make test`, which builds hack/kstatus")
        });
    let mut child = std::process::Command::new(&bin)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for o in objects {
            writeln!(stdin, "{o}").expect("writing to kstatus");
        }
    }
    let out = child.wait_with_output().expect("kstatus");
    assert!(out.status.success(), "kstatus failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("kstatus JSON");
            (
                v["status"].as_str().unwrap_or_default().to_string(),
                v["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// One captured phase and what each tool must make of it.
struct Capture {
    name: &'static str,
    kind: &'static str,
    object: serde_json::Value,
    argocd: &'static str,
    argocd_message: &'static str,
    flux: &'static str,
}

#[tokio::test]
async fn argocd_and_flux_read_every_phase_from_the_live_operator() {
    let cluster = cluster().await;
    apply_router_crds(&cluster.client).await;
    let ns = TestNamespace::create(&cluster.client, "gitops").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    let policies: Api<RollbackPolicy> = Api::namespaced(cluster.client.clone(), &ns.name);
    create_route(&apis).await;
    let provider = SlowProvider::start(Answer::Respond(200, OK)).await;
    let trigger = json!({"name": "error-rate", "query": "vector(0.01)", "operator": "Gt", "threshold": 0.05,
                         "consecutive": 1, "severity": "Critical"});
    apis.create_policy(
        "llm",
        json!({"provider": {"prometheus": {"address": provider.address, "timeout": "2s"}},
               "interval": "1s", "onMetricsUnavailable": "Hold", "triggers": [trigger],
               "rollback": {"mode": "Gradual", "gradual": {"steps": [50, 0], "stepDuration": "1h"}}}),
    )
    .await;
    let steps = json!([{"setWeight": 50}, {"pause": {"duration": "8s"}}, {"pause": {}}]);
    let spec = json!({"strategy": {"canary": {"steps": steps}}, "trafficRouting": {"gatewayAPI": {"httpRoute": "chat"}},
                      "rollbackPolicyRef": {"name": "llm"}});
    apis.create(&model_deployment("chat", "v1", 1, spec)).await;
    let md = || async { apis.md.get("chat").await.expect("the ModelDeployment") };
    let policy = |name: &'static str| {
        let policies = policies.clone();
        async move { policies.get(name).await.expect("the RollbackPolicy") }
    };
    let mut captures = Vec::new();
    let mut capture = |name, kind, object, argocd, argocd_message, flux| {
        captures.push(Capture {
            name,
            kind,
            object,
            argocd,
            argocd_message,
            flux,
        });
    };

    // Before the operator has seen them.
    capture(
        "not-reconciled",
        "ModelDeployment",
        fixture(&md().await),
        "Progressing",
        "Waiting for rollguard to reconcile",
        "Current",
    );
    capture(
        "policy-not-checked",
        "RollbackPolicy",
        fixture(&policy("llm").await),
        "Progressing",
        "Waiting for rollguard",
        "Current",
    );

    let mut op = Operator::start_with(&ns.name, &["--resync-seconds", "2"]);
    apis.wait_healthy("chat", 1).await;
    capture(
        "healthy",
        "ModelDeployment",
        fixture(&md().await),
        "Healthy",
        "revision 1 (version v1) serves all traffic",
        "Current",
    );
    let p = wait_object(&policies, "llm", SECS_60, |p| {
        p.status.as_ref().is_some_and(|s| !s.conditions.is_empty())
    })
    .await
    .expect("the policy checked");
    capture(
        "policy-valid",
        "RollbackPolicy",
        fixture(&p),
        "Healthy",
        "1 trigger(s) can be evaluated",
        "Current",
    );

    // A new version written while the operator is down: the status is of the last generation.
    op.kill();
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    capture(
        "generation-not-observed",
        "ModelDeployment",
        fixture(&md().await),
        "Progressing",
        "Waiting for rollguard to observe generation 2",
        "InProgress",
    );
    let _op = Operator::start_with(&ns.name, &["--resync-seconds", "2"]);

    let m = apis
        .wait_md("chat", "canary revision 2 in its timed pause, judged", SECS_60, |md| {
            md.status.as_ref().is_some_and(|s| {
                s.phase == Some(Phase::Paused)
                    && s.current_step_index == Some(1)
                    && s.analysis.iter().any(|a| a.revision == 2 && a.value.is_some())
            })
        })
        .await;
    capture(
        "paused-timed",
        "ModelDeployment",
        fixture(&m),
        "Suspended",
        "canary revision 2 at 50% (step 2 of 3), paused until",
        "InProgress",
    );

    // The timed pause ends on its own.
    let m = apis
        .wait_md("chat", "paused at the open pause", SECS_60, |md| {
            md.status
                .as_ref()
                .is_some_and(|s| s.phase == Some(Phase::Paused) && s.current_step_index == Some(2))
        })
        .await;
    capture(
        "paused",
        "ModelDeployment",
        fixture(&m),
        "Suspended",
        "canary revision 2 at 50% (step 3 of 3), paused",
        "InProgress",
    );

    provider.set(Answer::Respond(503, "overloaded"));
    let m = apis
        .wait_md("chat", "held: metrics unavailable", SECS_60, |md| {
            condition(md, "Ready").is_some_and(|(_, reason, _)| reason == "MetricsHold")
        })
        .await;
    capture(
        "metrics-hold",
        "ModelDeployment",
        fixture(&m),
        "Suspended",
        "Rollout held, metrics unavailable: trigger error-rate on revision 2",
        "InProgress",
    );

    provider.set(Answer::Respond(200, BAD));
    let m = apis
        .wait_md("chat", "a gradual rollback holding at 50%", SECS_60, |md| {
            md.status.as_ref().is_some_and(|s| {
                s.phase == Some(Phase::RollingBack) && s.last_rollback.as_ref().is_some_and(|r| r.value == Some(0.5))
            })
        })
        .await;
    capture(
        "rolling-back",
        "ModelDeployment",
        fixture(&m),
        "Progressing",
        "",
        "InProgress",
    );

    apis.annotate("chat", "rollguard.dev/abort", "true").await;
    let m = apis
        .wait_md("chat", "Degraded", SECS_60, |md| {
            md.status.as_ref().is_some_and(|s| s.phase == Some(Phase::Degraded))
        })
        .await;
    capture(
        "degraded",
        "ModelDeployment",
        fixture(&m),
        "Degraded",
        "revision 2 rolled back to 1 (Metric error-rate: value 0.5, threshold 0.05): ",
        "Failed",
    );

    // A revision whose pods cannot start (no node matches): Progressing until the deadline.
    let cold = json!({"template": {"spec": {"nodeSelector": {"rollguard.dev/no-such-node": "x"},
                      "containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0"}]}}});
    apis.create(&model_deployment("cold", "v1", 1, cold)).await;
    let m = apis
        .wait_md("cold", "Progressing with no pod ready", SECS_60, |md| {
            md.status.as_ref().is_some_and(|s| s.phase == Some(Phase::Progressing))
        })
        .await;
    capture(
        "progressing",
        "ModelDeployment",
        fixture(&m),
        "Progressing",
        "revision 1 (version v1) starting: 0/1 replicas ready",
        "InProgress",
    );

    apis.create_policy(
        "typo",
        json!({"provider": {"prometheus": {"address": provider.address}},
               "triggers": [{"name": "typo", "query": "x{r=\"{{revison}}\"}", "operator": "Gt", "threshold": 1}]}),
    )
    .await;
    let p = wait_object(&policies, "typo", SECS_60, |p| {
        p.status.as_ref().is_some_and(|s| !s.conditions.is_empty())
    })
    .await
    .expect("the policy checked");
    capture(
        "policy-invalid",
        "RollbackPolicy",
        fixture(&p),
        "Degraded",
        "spec.triggers[0] (typo): unknown variable {{revison}}",
        "Failed",
    );

    // Each tool on each capture.
    let flux = kstatus(&captures.iter().map(|c| c.object.clone()).collect::<Vec<_>>());
    let mut wrong = Vec::new();
    for (c, (flux_status, flux_message)) in captures.iter().zip(&flux) {
        let (status, message) = health(&customizations(c.kind).join("health.lua"), &c.object);
        if status != c.argocd || !message.contains(c.argocd_message) {
            wrong.push(format!(
                "{}: Argo CD {status:?} {message:?}, want {:?} containing {:?}",
                c.name, c.argocd, c.argocd_message
            ));
        }
        if flux_status != c.flux {
            wrong.push(format!(
                "{}: kstatus {flux_status:?} ({flux_message}), want {:?}",
                c.name, c.flux
            ));
        }
        eprintln!(
            "{:<24} Argo CD {status:<12} kstatus {flux_status:<11} {message}",
            c.name
        );
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    if std::env::var_os("ROLLGUARD_WRITE_FIXTURES").is_some() {
        write_fixtures(&captures);
    }
}

/// Writes the captures as Argo CD's testdata and health_test.yaml, with what the checks say.
fn write_fixtures(captures: &[Capture]) {
    for kind in ["ModelDeployment", "RollbackPolicy"] {
        let dir = customizations(kind);
        let mut tests = Vec::new();
        for c in captures.iter().filter(|c| c.kind == kind) {
            let path = format!("testdata/{}.yaml", c.name);
            std::fs::write(dir.join(&path), serde_yaml::to_string(&c.object).expect("YAML"))
                .expect("writing a fixture");
            let (status, message) = health(&dir.join("health.lua"), &c.object);
            tests.push(json!({"healthStatus": {"status": status, "message": message}, "inputPath": path}));
        }
        let doc = serde_yaml::to_string(&json!({"tests": tests})).expect("YAML");
        std::fs::write(dir.join("health_test.yaml"), doc).expect("writing health_test.yaml");
    }
}

#[test]
fn argocd_health_tests_pass_on_the_committed_fixtures() {
    for kind in ["ModelDeployment", "RollbackPolicy"] {
        let dir = customizations(kind);
        let text = std::fs::read_to_string(dir.join("health_test.yaml")).expect("health_test.yaml");
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
        let tests = doc["tests"].as_sequence().expect("tests");
        assert!(tests.len() >= 3, "{kind}: every phase has a fixture");
        for t in tests {
            let input = t["inputPath"].as_str().expect("inputPath");
            let obj: serde_json::Value =
                serde_yaml::from_str(&std::fs::read_to_string(dir.join(input)).expect("the fixture")).expect("YAML");
            let got = health(&dir.join("health.lua"), &obj);
            let want = (
                t["healthStatus"]["status"].as_str().unwrap_or_default().to_string(),
                t["healthStatus"]["message"].as_str().unwrap_or_default().to_string(),
            );
            assert_eq!(got, want, "{kind} {input}");
        }
    }
}

#[test]
fn the_argocd_config_map_carries_the_committed_health_checks() {
    let text = std::fs::read_to_string(repo_root().join("deploy/argocd/argocd-cm.yaml")).expect("argocd-cm.yaml");
    let cm: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    for kind in ["ModelDeployment", "RollbackPolicy"] {
        let key = format!("resource.customizations.health.rollguard.dev_{kind}");
        let lua = std::fs::read_to_string(customizations(kind).join("health.lua")).expect("health.lua");
        assert_eq!(
            cm["data"][key.as_str()].as_str(),
            Some(lua.as_str()),
            "{key} is health.lua as committed"
        );
    }
}
