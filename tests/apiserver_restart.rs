//! etcd and kube-apiserver of the local control plane stopped and started again mid-pause
//! and mid-rollback; the operator keeps running and reconnects. Its own test binary: no
//! other test runs while the API server is down.

mod support;

use std::time::Duration;

use rollguard::api::Phase;
use rollguard::api::labels::{CANARY_STEP, ROLLBACK_STEP};
use rollguard::plan::CanaryStepState;
use serde_json::json;
use support::httproute::*;
use support::*;

const SECS_60: Duration = Duration::from_secs(60);

/// Restarts etcd and kube-apiserver of the local control plane (SIGTERM, then the same
/// command lines again, with their data kept), and with them kube-controller-manager and
/// kube-scheduler, which exit when they lose their leader Lease while the API server is down
/// (a real control plane's supervisor starts them again). kwok and the operator keep running
/// and reconnect. Returns once the API server answers `/readyz` again.
#[allow(
    clippy::zombie_processes,
    reason = "the control plane outlives this test; cluster-down stops it by its pid files"
)]
async fn restart_api_server_and_etcd(client: &kube::Client) {
    let kubeconfig = kubeconfig_path();
    let cluster = kubeconfig
        .parent()
        .map(|d| d.join("kwok/clusters/rollguard"))
        .expect("the cluster's state directory");
    let mut stopped = Vec::new();
    for name in ["kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"] {
        let pid_file = cluster.join(format!("pids/{name}.pid"));
        let pid = std::fs::read_to_string(&pid_file).expect("its pid file");
        let pid = pid.trim().to_string();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("its command line");
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).expect("its directory");
        let argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        // Gone, or a zombie nobody reaps (its parent, kwokctl, has exited).
        let gone = || async {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next());
            matches!(state, None | Some("Z") | Some("X")).then_some(())
        };
        // SIGTERM; etcd sometimes takes its time over it, then SIGKILL (its data is on disk).
        for signal in ["-TERM", "-KILL"] {
            let status = std::process::Command::new("kill")
                .args([signal, &pid])
                .status()
                .expect("kill");
            assert!(status.success(), "stopping {name}");
            if wait_for(Duration::from_secs(10), gone).await.is_some() {
                break;
            }
        }
        assert!(gone().await.is_some(), "{name} did not stop");
        stopped.push((name, pid_file, argv, cwd));
    }
    // All down for a moment, then etcd first, as they started.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, pid_file, argv, cwd) in stopped.into_iter().rev() {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(cluster.join(format!("logs/{name}.log")))
            .expect("its log");
        let child = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(cwd)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting it again");
        std::fs::write(&pid_file, child.id().to_string()).expect("its pid file");
    }
    let ready = wait_for(SECS_60, || async {
        let req = http::Request::get("/readyz").body(Vec::new()).ok()?;
        client.request_text(req).await.ok().filter(|t| t == "ok")
    })
    .await;
    assert!(ready.is_some(), "the API server did not come back");
}

fn since(at: &CanaryStepState) -> Duration {
    std::time::SystemTime::now()
        .duration_since(started(at))
        .unwrap_or_default()
}

/// A timed step of `hold` seconds, interrupted by a control plane restart that was over
/// `back` after the step started, ended `held` after it started: not before its time, and
/// within 8 s of the later of its end and the API server's return. A step that started over
/// after the restart would end `back + hold` after its start, which `hold` > 8 s tells apart.
fn assert_resumed(what: &str, hold: u64, held: Duration, back: Duration) {
    let hold = Duration::from_secs(hold);
    let due = hold.max(back) + Duration::from_secs(8);
    assert!(
        held >= hold - Duration::from_millis(300) && held < due,
        "{what} ended {held:?} after it started ({hold:?}; the API server was back after {back:?}, so due by {due:?})"
    );
}

#[tokio::test]
async fn a_control_plane_restart_mid_pause_and_mid_rollback_resumes_where_it_was_and_writes_nothing_twice() {
    const HOLD: u64 = 20;
    let cluster = cluster().await;
    apply_router_crds(&cluster.client).await;
    let ns = TestNamespace::create(&cluster.client, "apiserver-restart").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    create_route(&apis).await;
    apis.create_gradual_policy(&[50, 20, 0], &format!("{HOLD}s")).await;
    let _op = Operator::start_with(&ns.name, &["--resync-seconds", "2"]);
    let steps =
        json!([{"setWeight": 10}, {"pause": {"duration": format!("{HOLD}s")}}, {"setWeight": 60}, {"pause": {}}]);
    let spec = json!({"strategy": {"canary": {"steps": steps}}, "trafficRouting": {"gatewayAPI": {"httpRoute": "chat"}},
                      "rollbackPolicyRef": {"name": "gradual"}});
    apis.roll_out("chat", &["v1"], 1, spec).await;
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;

    // Mid-pause.
    apis.wait_md("chat", "in the timed pause", SECS_60, |md| {
        md.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::Paused) && s.current_step_index == Some(1))
    })
    .await;
    let pause = apis.step_on("chat-r2", CANARY_STEP).await.expect("the pause step");
    restart_api_server_and_etcd(&cluster.client).await;
    let back = since(&pause);
    wait_weight(&apis, 60).await;
    assert_resumed("the pause", HOLD, since(&pause), back);

    // Mid-rollback: in the gradual hold at 50%.
    apis.wait_md("chat", "paused at 60%", SECS_60, |md| {
        md.status.as_ref().is_some_and(|s| s.current_step_index == Some(3))
    })
    .await;
    let log = record_weights(&apis).await;
    apis.annotate("chat", "rollguard.dev/abort", "true").await;
    let md = apis
        .wait_md("chat", "holding 50%", SECS_60, |md| {
            md.status.as_ref().is_some_and(|s| {
                s.canary_weight == Some(50) && s.message.as_deref().unwrap_or_default().contains("(step 1 of 3)")
            })
        })
        .await;
    let record = md.status.and_then(|s| s.last_rollback).expect("lastRollback");
    let hold = apis.step_on("chat-r2", ROLLBACK_STEP).await.expect("the hold");
    restart_api_server_and_etcd(&cluster.client).await;
    let back = since(&hold);
    wait_weight(&apis, 20).await;
    assert_resumed("the hold at 50%", HOLD, since(&hold), back);
    let md = apis
        .wait_md("chat", "rolled back", Duration::from_secs(90), |md| {
            md.status
                .as_ref()
                .and_then(|s| s.last_rollback.as_ref())
                .is_some_and(|r| r.completed_at.is_some())
        })
        .await;
    let after = md.status.clone().and_then(|s| s.last_rollback).expect("lastRollback");
    assert_eq!(after.started_at, record.started_at, "the same rollback");
    let weights = weights(&log);
    assert_eq!(weights, vec![60, 50, 20, 0], "each step once");
    let history: Vec<i64> = md.status.expect("status").history.iter().map(|h| h.revision).collect();
    assert_eq!(history, vec![2, 1], "no duplicate revision");
}
