//! The Helm chart `charts/rollguard`: it lints, renders, is accepted by the API server
//! (server-side dry run), grants exactly the rules of `deploy/`, and ships the CRDs of
//! `crds/`. helm is built from its Go module by `hack/build-helm.sh` (`make test` does).

mod support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use support::*;

fn helm() -> PathBuf {
    std::env::var_os("ROLLGUARD_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("ROLLGUARD_HELM is not set: run `make test`, or `bash hack/build-helm.sh` and export its path")
        })
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn chart() -> String {
    repo_root().join("charts/rollguard").to_string_lossy().into_owned()
}

fn render(namespace: &str, extra: &[&str]) -> String {
    run(Command::new(helm())
        // The local control plane's version (helm built from source defaults to 1.20).
        .args([
            "template",
            "rollguard",
            &chart(),
            "--namespace",
            namespace,
            "--kube-version",
            "1.37.2",
        ])
        .args(extra))
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

#[test]
fn the_chart_lints_and_grants_the_rules_of_deploy() {
    run(Command::new(helm()).args(["lint", "--strict", "--kube-version", "1.37.2", &chart()]));
    let docs = parse_yaml_documents(&render("rollguard-system", &[])).expect("rendered YAML");
    let deploy = read_yaml_documents(&repo_root().join("deploy/rollguard.yaml"));
    assert_eq!(
        kind(&docs, "ClusterRole")["rules"],
        kind(&deploy, "ClusterRole")["rules"],
        "the chart and deploy/ grant the same permissions"
    );
    let args = &kind(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"];
    let args: Vec<&str> = args
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(args.contains(&"--leader-elect"), "{args:?}");
    assert!(args.contains(&"--metrics-address=0.0.0.0:8080"), "{args:?}");

    assert!(
        !args
            .iter()
            .any(|a| a.starts_with("--selector") || a.starts_with("--concurrency")),
        "{args:?}"
    );

    let one_ns = parse_yaml_documents(&render(
        "x",
        &[
            "--set",
            "watchNamespace=llm",
            "--set",
            "replicas=1",
            "--set-string",
            "selector=fleet in (a)",
            "--set",
            "concurrency=8",
        ],
    ))
    .expect("rendered YAML");
    let d = kind(&one_ns, "Deployment");
    assert_eq!(d["spec"]["replicas"], 1);
    let args = d["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("--namespace=llm"), "{args}");
    assert!(
        args.contains("--selector=fleet in (a)") && args.contains("--concurrency=8"),
        "{args}"
    );
}

#[test]
fn the_chart_ships_the_crds_of_crds_dir() {
    let shipped =
        std::fs::read_to_string(repo_root().join("charts/rollguard/crds/rollguard.yaml")).expect("chart CRDs");
    let generated = rollguard::api::crds_yaml().expect("CRDs");
    assert_eq!(shipped, generated, "run `make crds`");
}

#[tokio::test]
async fn the_rendered_chart_is_accepted_by_the_api_server() {
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "chart").await;
    let rendered = render(&ns.name, &[]);
    let path = std::env::temp_dir().join(format!("rollguard-chart-{}.yaml", ns.name));
    std::fs::write(&path, rendered).expect("writing the rendered chart");
    let out = run(Command::new(kubectl_path())
        .env("KUBECONFIG", kubeconfig_path())
        .args(["apply", "--dry-run=server", "-f"])
        .arg(&path));
    let _ = std::fs::remove_file(&path);
    for object in [
        "serviceaccount/rollguard",
        "clusterrole.rbac.authorization.k8s.io/rollguard",
        "clusterrolebinding.rbac.authorization.k8s.io/rollguard",
        "deployment.apps/rollguard",
    ] {
        assert!(out.contains(object), "{object} not accepted:\n{out}");
    }
}
