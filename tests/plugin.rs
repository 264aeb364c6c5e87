//! `kubectl rollguard` (the `kubectl-rollguard` binary) against the local control plane and
//! the operator: every command, every exit code, the `--watch` view in a terminal (tmux), the
//! install through `make install-plugin` and through krew.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rollguard::api::Phase;
use serde_json::json;
use support::httproute::*;
use support::slow_provider::{Answer, SlowProvider};
use support::*;

const SECS_60: Duration = Duration::from_secs(60);

/// What a run of the plugin printed and how it exited.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

fn plugin_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kubectl-rollguard"))
}

/// Runs `program args` with the test cluster's kubeconfig, off the async runtime.
async fn run_program(program: PathBuf, args: Vec<String>, env: Vec<(String, String)>) -> Run {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(&program)
            .args(&args)
            .env("KUBECONFIG", kubeconfig_path())
            .envs(env)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .expect("the plugin run")
}

/// `kubectl rollguard -n <namespace> args...`.
async fn plugin(namespace: &str, args: &[&str]) -> Run {
    let mut all = vec!["-n".to_string(), namespace.to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    run_program(plugin_bin(), all, vec![]).await
}

/// Runs the plugin and asserts its exit code.
async fn expect(namespace: &str, args: &[&str], code: i32) -> Run {
    let run = plugin(namespace, args).await;
    assert_eq!(run.code, Some(code), "kubectl rollguard {args:?}: {run:?}");
    run
}

fn steps_spec(steps: serde_json::Value) -> serde_json::Value {
    json!({"strategy": {"canary": {"steps": steps}}, "trafficRouting": {"gatewayAPI": {"httpRoute": "chat"}}})
}

async fn wait_paused_at(apis: &Apis, rev: i64, index: i32) -> rollguard::api::ModelDeployment {
    apis.wait_md(
        "chat",
        &format!("revision {rev} paused at step index {index}"),
        SECS_60,
        |md| {
            md.status.as_ref().is_some_and(|s| {
                s.phase == Some(Phase::Paused) && s.canary_revision == Some(rev) && s.current_step_index == Some(index)
            })
        },
    )
    .await
}

fn has(text: &str, want: &str) {
    assert!(text.contains(want), "missing {want:?} in:\n{text}");
}

#[tokio::test]
async fn every_command_and_exit_code_through_a_canary_a_rollback_and_a_retry() {
    let (ns, apis, mut op) = with_route("plugin", &["--resync-seconds", "2"]).await;
    let ns = ns.name.clone();
    let steps = json!([{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}]);
    apis.roll_out("chat", &["v1"], 1, steps_spec(steps)).await;
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    wait_paused_at(&apis, 2, 1).await;

    // status waits through a pause: the timeout ends it with 2.
    let run = expect(&ns, &["status", "chat", "--timeout", "2s"], 2).await;
    has(&run.stdout, "Paused: canary revision 2 at 20%");
    has(&run.stdout, "timed out after 2s");

    // get: the text view, and the same facts as JSON and YAML.
    let run = expect(&ns, &["get", "chat"], 0).await;
    eprintln!("kubectl rollguard get chat:\n{}", run.stdout);
    has(&run.stdout, &format!("Namespace:     {ns}\n"));
    has(&run.stdout, "Phase:         Paused\n");
    has(
        &run.stdout,
        "Traffic:       stable revision 1 (v1) 80%, canary revision 2 (v2) 20%\n",
    );
    has(&run.stdout, "Step:          2 of 4: pause (until promoted)\n");
    has(
        &run.stdout,
        "Waiting for:   a promotion: kubectl rollguard promote chat",
    );
    has(&run.stdout, "Strategy:      canary, traffic on HTTPRoute/chat\n");
    let json = expect(&ns, &["get", "chat", "-o", "json"], 0).await.json();
    assert_eq!(
        json["canary"],
        json!({"revision": 2, "version": "v2", "weight": 20}),
        "{json}"
    );
    assert_eq!(json["stable"]["weight"], 80);
    assert_eq!(json["step"]["number"], 2);
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&expect(&ns, &["get", "chat", "-o", "yaml"], 0).await.stdout).expect("YAML");
    assert_eq!(yaml["canary"]["weight"].as_i64(), Some(20));
    assert_eq!(yaml["phase"].as_str(), Some("Paused"));

    // explain says which step and what it waits for.
    let run = expect(&ns, &["explain", "chat"], 0).await;
    eprintln!("kubectl rollguard explain chat:\n{}", run.stdout);
    has(
        &run.stdout,
        "canary revision 2 is at 20%, step 2 of 4: pause (until promoted)",
    );
    has(&run.stdout, "Waiting for: a promotion: kubectl rollguard promote chat");
    let why = expect(&ns, &["explain", "chat", "-o", "json"], 0).await.json();
    assert!(
        why["waitingFor"].as_str().is_some_and(|w| w.starts_with("a promotion")),
        "{why}"
    );

    // promote leaves the pause; the operator consumes the annotation and moves to 60%.
    let run = expect(&ns, &["promote", "chat"], 0).await;
    has(&run.stdout, "annotated rollguard.dev/promote=true");
    wait_paused_at(&apis, 2, 3).await;
    assert_eq!(route_weights(&apis).await.map(|w| w.canary), Some(60));

    // promote --full, then status blocks until Healthy and exits 0.
    expect(&ns, &["promote", "chat", "--full"], 0).await;
    let run = expect(&ns, &["status", "chat", "--timeout", "60s"], 0).await;
    assert!(
        run.stdout.lines().last().is_some_and(|l| l.starts_with("Healthy:")),
        "{run:?}"
    );
    assert_eq!(
        apis.md
            .get("chat")
            .await
            .expect("md")
            .status
            .and_then(|s| s.stable_revision),
        Some(2)
    );

    // Right after a spec change the old Healthy does not count: status does not pass.
    apis.patch_spec("chat", json!({"model": {"version": "v3"}})).await;
    let run = expect(&ns, &["status", "chat", "--timeout", "3s"], 2).await;
    assert!(!run.stdout.lines().any(|l| l.starts_with("Healthy")), "{run:?}");
    wait_paused_at(&apis, 3, 1).await;

    // abort: traffic back to stable, Degraded, status exits 1; explain says what ends it.
    expect(&ns, &["abort", "chat"], 0).await;
    let run = expect(&ns, &["status", "chat", "--timeout", "60s"], 1).await;
    assert!(
        run.stdout.lines().last().is_some_and(|l| l.starts_with("Degraded:")),
        "{run:?}"
    );
    assert_eq!(route_weights(&apis).await.map(|w| w.canary), Some(0));
    let why = expect(&ns, &["explain", "chat", "-o", "json"], 0).await.json();
    let because = why["because"].to_string();
    has(&because, "revision 3 (v3), which the spec names, was RolledBack");
    has(&why["youCan"].to_string(), "kubectl rollguard retry chat");

    // retry rolls revision 3 out again, from the first step.
    expect(&ns, &["retry", "chat"], 0).await;
    wait_paused_at(&apis, 3, 1).await;
    expect(&ns, &["promote", "chat", "--full"], 0).await;
    expect(&ns, &["status", "chat", "--timeout", "60s"], 0).await;

    // rollback: a target the history lacks, or a typo, fails with 3 and writes nothing.
    let run = expect(&ns, &["rollback", "chat", "--to", "7"], 3).await;
    has(
        &run.stderr,
        "has no revision 7; its revisions are 3 (v3), 2 (v2), 1 (v1)",
    );
    let run = expect(&ns, &["rollback", "chat", "--to", "soon"], 3).await;
    has(&run.stderr, "rollguard.dev/rollback-to=\"soon\" is not valid");
    let md = apis.md.get("chat").await.expect("md");
    assert!(!has_annotation(&md, "rollguard.dev/rollback-to"), "nothing was written");
    // Right after the request the old Healthy does not count either: with the operator
    // stopped, the annotation stays and status holds back until the timeout.
    op.kill();
    expect(&ns, &["rollback", "chat", "--to", "version:v1"], 0).await;
    let run = expect(&ns, &["status", "chat", "--timeout", "2s"], 2).await;
    has(&run.stdout, "request rollguard.dev/rollback-to not handled yet");
    assert!(!run.stdout.lines().any(|l| l.starts_with("Healthy")), "{run:?}");
    let _restarted = Operator::start_with(&ns, &["--resync-seconds", "2"]);
    let run = expect(&ns, &["status", "chat", "--timeout", "60s"], 1).await;
    has(&run.stdout, "Degraded:");
    apis.wait_rolled_back("chat", 1, Some(rollguard::api::RollbackTrigger::Manual))
        .await;
    // get shows the last rollback: from, to, what started it, how, when, the verification.
    let run = expect(&ns, &["get", "chat"], 0).await;
    has(&run.stdout, "Last rollback: revision 3 -> 1, Manual");
    has(&run.stdout, "Instant, started ");

    // history: newest first, with roles; as a table and as JSON.
    let run = expect(&ns, &["history", "chat"], 0).await;
    has(&run.stdout, "REVISION  VERSION  PHASE");
    let history = expect(&ns, &["history", "chat", "-o", "json"], 0).await.json();
    let rows: Vec<(i64, String, String)> = history
        .as_array()
        .expect("an array")
        .iter()
        .map(|r| {
            (
                r["revision"].as_i64().unwrap_or_default(),
                r["phase"].as_str().unwrap_or_default().to_string(),
                r["role"].to_string(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (3, "RolledBack".into(), r#"["spec"]"#.into()),
            (2, "Superseded".into(), "[]".into()),
            (1, "Stable".into(), r#"["stable"]"#.into()),
        ]
    );

    // The command could not run: 3, with the reason.
    let run = expect(&ns, &["get", "nosuch"], 3).await;
    has(
        &run.stderr,
        &format!("ModelDeployment nosuch not found in namespace {ns}"),
    );
    expect(&ns, &["get"], 3).await;
    expect(&ns, &["status", "nosuch", "--timeout", "1s"], 3).await;
    let run = expect(&ns, &["status", "chat", "--timeout", "soon"], 3).await;
    has(&run.stderr, "soon");
    let run = expect(&ns, &["--version"], 0).await;
    has(&run.stdout, env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn get_and_explain_show_trigger_values_and_a_metrics_hold() {
    const VALUE: &str =
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1795000000,"0.012"]}]}}"#;
    let (ns, apis, _op) = with_route("plugin-hold", &["--resync-seconds", "2"]).await;
    let provider = SlowProvider::start(Answer::Respond(200, VALUE)).await;
    apis.create_policy(
        "llm",
        json!({"provider": {"prometheus": {"address": provider.address, "timeout": "2s"}},
               "interval": "1s", "onMetricsUnavailable": "Hold",
               "triggers": [{"name": "error-rate", "query": "vector(0.012)", "operator": "Gt", "threshold": 0.05,
                             "consecutive": 2, "severity": "Critical"}]}),
    )
    .await;
    let mut spec = steps_spec(json!([{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}]));
    spec["rollbackPolicyRef"] = json!({"name": "llm"});
    apis.roll_out("chat", &["v1"], 1, spec).await;
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    apis.wait_md("chat", "revision 2 judged Healthy at 0.012", SECS_60, |md| {
        md.status.as_ref().is_some_and(|s| {
            s.analysis.iter().any(|a| a.revision == 2 && a.value == Some(0.012)) && s.current_step_index == Some(1)
        })
    })
    .await;

    let run = expect(&ns.name, &["get", "chat"], 0).await;
    has(
        &run.stdout,
        "TRIGGER     REVISION  VALUE  BREACHES WHEN  VERDICT  IN A ROW",
    );
    has(&run.stdout, "error-rate  2         0.012  > 0.05         Healthy  0/2");
    let json = expect(&ns.name, &["get", "chat", "-o", "json"], 0).await.json();
    assert_eq!(json["analysis"][0]["value"], 0.012, "{json}");
    assert_eq!(json["analysis"][0]["breachesWhen"], "> 0.05");
    let run = expect(&ns.name, &["get", "chat"], 0).await;
    eprintln!("kubectl rollguard get chat (with a policy):\n{}", run.stdout);
    let run = expect(&ns.name, &["explain", "chat"], 0).await;
    eprintln!("kubectl rollguard explain chat (with a policy):\n{}", run.stdout);
    has(
        &run.stdout,
        "error-rate on revision 2 [Critical]: 0.012, breaches when > 0.05: Healthy",
    );

    // The provider fails: the rollout holds, and explain says that is what it waits for.
    provider.set(Answer::Respond(503, "overloaded"));
    apis.wait_md("chat", "MetricsAvailable=False", SECS_60, |md| {
        condition(md, "MetricsAvailable").is_some_and(|(status, _, _)| status == "False")
    })
    .await;
    let why = expect(&ns.name, &["explain", "chat", "-o", "json"], 0).await.json();
    assert_eq!(
        why["waitingFor"], "the metrics provider to answer (onMetricsUnavailable: Hold)",
        "{why}"
    );
    has(&why["triggers"][0].to_string(), "Unavailable");
    let run = expect(&ns.name, &["get", "chat"], 0).await;
    has(&run.stdout, "Waiting for:   the metrics provider to answer");
}

/// A tmux server of its own, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        Tmux {
            socket: format!("rollguard-test-{}-{}", std::process::id(), unique()),
        }
    }

    fn cmd(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux (Debian package tmux) must be installed for the watch-view test")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "view"]).stdout).into_owned()
    }

    /// Waits until the screen satisfies `pred`; the screen then.
    async fn wait_screen(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let seen = wait_for(SECS_60, || async {
            let s = self.screen();
            pred(&s).then_some(s)
        })
        .await;
        seen.unwrap_or_else(|| panic!("the watch view never showed {what}; screen:\n{}", self.screen()))
    }

    fn alive(&self) -> bool {
        self.cmd(&["has-session", "-t", "view"]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

/// The seconds left in "(Ns left)" on the screen.
fn seconds_left(screen: &str) -> Option<String> {
    let (_, rest) = screen.split_once("pause to end (")?;
    Some(rest.split_once(" left)")?.0.to_string())
}

#[tokio::test]
async fn the_watch_view_redraws_in_place_in_a_terminal_and_stops_on_ctrl_c() {
    let (ns, apis, _op) = with_route("plugin-watch", &["--resync-seconds", "2"]).await;
    let steps = json!([{"setWeight": 20}, {"pause": {"duration": "20s"}}, {"setWeight": 50}, {"pause": {}}]);
    apis.roll_out("chat", &["v1"], 1, steps_spec(steps)).await;

    let tmux = Tmux::new();
    let command = format!(
        "env KUBECONFIG={} {} -n {} get chat --watch",
        kubeconfig_path().display(),
        plugin_bin().display(),
        ns.name
    );
    let started = tmux.cmd(&["new-session", "-d", "-s", "view", "-x", "150", "-y", "50", &command]);
    assert!(started.status.success(), "tmux new-session: {started:?}");
    tmux.wait_screen("Healthy on revision 1", |s| {
        s.contains("Phase:         Healthy") && s.contains("stable revision 1 (v1) 100%")
    })
    .await;

    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    // The timed pause counts down on screen between changes of the ModelDeployment.
    let first = tmux
        .wait_screen("the 20s pause counting", |s| seconds_left(s).is_some())
        .await;
    has(&first, "canary revision 2 (v2) 20%");
    has(&first, "Step:          2 of 4: pause 20s");
    let left = seconds_left(&first);
    tmux.wait_screen("the count moving on", |s| {
        seconds_left(s).is_some_and(|l| Some(l) != left)
    })
    .await;
    let paused = tmux
        .wait_screen("the open pause at 50%", |s| {
            s.contains("Step:          4 of 4: pause (until promoted)")
        })
        .await;
    has(&paused, "stable revision 1 (v1) 50%, canary revision 2 (v2) 50%");
    has(&paused, "Waiting for:   a promotion");

    apis.annotate("chat", "rollguard.dev/promote", "true").await;
    let done = tmux
        .wait_screen("Healthy on revision 2", |s| {
            s.contains("Phase:         Healthy") && s.contains("stable revision 2 (v2) 100%")
        })
        .await;
    // Redrawn in place: one view on the screen, not a scroll of them.
    assert_eq!(done.matches("Name:").count(), 1, "{done}");
    assert!(done.trim_start().starts_with("Name:          chat"), "{done}");

    tmux.cmd(&["send-keys", "-t", "view", "C-c"]);
    let ended = wait_for(Duration::from_secs(10), || async { (!tmux.alive()).then_some(()) }).await;
    assert!(
        ended.is_some(),
        "Ctrl-C did not end the watch; screen:\n{}",
        tmux.screen()
    );
}

/// The path of a tool that `make test` builds, from its environment variable.
fn tool(var: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{var} is not set: run this test through `make test`, which builds the tool"))
}

fn sh(program: &Path, args: &[&str], env: &[(&str, &Path)]) -> std::process::Output {
    let out = std::process::Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .env("KUBECONFIG", kubeconfig_path())
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test]
async fn kubectl_finds_the_plugin_from_make_install_plugin_and_from_krew() {
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "plugin-install").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    apis.create(&model_deployment("chat", "v1", 1, json!({}))).await;
    let kubectl = kubectl_path();
    let scratch = std::env::temp_dir().join(format!("rollguard-plugin-{}-{}", std::process::id(), unique()));
    let _ = std::fs::remove_dir_all(&scratch);

    // make install-plugin PREFIX=...: kubectl lists it and runs `kubectl rollguard`.
    let prefix = scratch.join("prefix");
    sh(
        Path::new("make"),
        &["--quiet", "install-plugin", &format!("PREFIX={}", prefix.display())],
        &[],
    );
    let path = format!(
        "{}:{}",
        prefix.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let path = PathBuf::from(path);
    let listed = sh(&kubectl, &["plugin", "list", "--name-only"], &[("PATH", &path)]);
    has(&String::from_utf8_lossy(&listed.stdout), "kubectl-rollguard");
    let got = sh(
        &kubectl,
        &["rollguard", "-n", &ns.name, "get", "chat"],
        &[("PATH", &path)],
    );
    has(&String::from_utf8_lossy(&got.stdout), "Name:          chat\n");

    // The krew manifest: valid for the index, and krew installs the archive it names.
    let release = sh(Path::new("bash"), &["hack/plugin-release.sh"], &[]);
    let printed = String::from_utf8_lossy(&release.stdout).into_owned();
    let mut lines = printed.lines().rev();
    let manifest = PathBuf::from(lines.next().expect("the manifest's path"));
    let archive = PathBuf::from(lines.next().expect("the archive's path"));
    let text = std::fs::read_to_string(&manifest).expect("the manifest");
    has(&text, &format!("version: v{}", env!("CARGO_PKG_VERSION")));
    assert!(!text.contains("${"), "every placeholder is filled:\n{text}");
    // Validated as the krew index does (its install step would download the URI: krew
    // installs the local archive below instead, checking it against the manifest's sha256).
    sh(
        &tool("ROLLGUARD_KREW_VALIDATE"),
        &["-manifest", &manifest.display().to_string(), "-skip-install"],
        &[],
    );
    let krew_root = scratch.join("krew");
    sh(
        &tool("ROLLGUARD_KREW"),
        &[
            "install",
            &format!("--manifest={}", manifest.display()),
            &format!("--archive={}", archive.display()),
        ],
        &[("KREW_ROOT", &krew_root)],
    );
    let installed = krew_root.join("bin/kubectl-rollguard");
    let version = sh(&installed, &["--version"], &[]);
    has(&String::from_utf8_lossy(&version.stdout), env!("CARGO_PKG_VERSION"));
    let path = PathBuf::from(format!(
        "{}:{}",
        krew_root.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    ));
    let got = sh(
        &kubectl,
        &["rollguard", "-n", &ns.name, "history", "chat"],
        &[("PATH", &path)],
    );
    has(&String::from_utf8_lossy(&got.stdout), "REVISION  VERSION  PHASE");
    let _ = std::fs::remove_dir_all(&scratch);
}
