//! Leader election: of two replicas only the Lease holder reconciles; when it dies the other
//! takes over; a stopped leader releases the Lease at once. Against the local control plane.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;
use support::*;

const SECS_60: Duration = Duration::from_secs(60);

fn replica(ns: &str) -> Operator {
    Operator::start_with(
        ns,
        &[
            "--resync-seconds",
            "2",
            "--leader-elect",
            "--leader-election-namespace",
            ns,
            "--leader-election-seconds",
            "4",
        ],
    )
}

async fn wait_log(op: &Operator, text: &str) {
    let seen = wait_for(SECS_60, || async { op.log_text().contains(text).then_some(()) }).await;
    assert!(seen.is_some(), "never logged {text:?}:\n{}", op.log_text());
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases.get("rollguard").await.ok()?.spec?.holder_identity
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_follower_takes_over_when_it_dies() {
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "leader").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), &ns.name);

    let mut first = replica(&ns.name);
    wait_log(&first, "became the leader").await;
    let second = replica(&ns.name);
    wait_log(&second, "waiting for leadership").await;
    let leader = holder(&leases).await.expect("the Lease has a holder");

    apis.roll_out("chat", &["v1"], 1, json!({})).await;
    assert!(
        !second.log_text().contains("reconciled"),
        "the follower reconciled:\n{}",
        second.log_text()
    );
    assert!(!second.log_text().contains("became the leader"));

    // The leader dies without releasing the Lease: the follower takes over once it expires.
    first.kill();
    let died = Instant::now();
    wait_log(&second, "became the leader").await;
    let took_over = died.elapsed();
    assert!(took_over < Duration::from_secs(30), "took over after {took_over:?}");
    assert_ne!(holder(&leases).await, Some(leader), "the Lease changed hands");
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    apis.wait_healthy("chat", 2).await;
    assert!(second.log_text().contains("reconciled"));
}

#[tokio::test]
async fn a_stopped_leader_releases_the_lease_for_the_next_one_at_once() {
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "leader-release").await;
    let first = replica(&ns.name);
    wait_log(&first, "became the leader").await;
    let second = replica(&ns.name);
    wait_log(&second, "waiting for leadership").await;
    // SIGTERM: the leader stops its controllers and releases the Lease.
    let pid = first.child.id();
    let stopped = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    wait_log(&second, "became the leader").await;
    let handover = stopped.elapsed();
    assert!(
        handover < Duration::from_secs(4),
        "the Lease was released, not left to expire (4 s): {handover:?}"
    );
}

/// Two replicas in a namespace of their own with the HTTPRoute: the leader talks through a
/// fault proxy (which kills it at an exact point), the follower directly.
struct Pair {
    _ns: TestNamespace,
    apis: Apis,
    proxy: support::fault_proxy::FaultProxy,
    leader: Operator,
    follower: Operator,
}

async fn pair(prefix: &str) -> Pair {
    let cluster = cluster().await;
    apply_router_crds(&cluster.client).await;
    let ns = TestNamespace::create(&cluster.client, prefix).await;
    let apis = Apis::new(&cluster.client, &ns.name);
    support::httproute::create_route(&apis).await;
    let proxy = support::fault_proxy::FaultProxy::start(&cluster.client).await;
    let args = [
        "--resync-seconds",
        "2",
        "--leader-elect",
        "--leader-election-namespace",
        &ns.name,
        "--leader-election-seconds",
        "4",
    ];
    let leader = Operator::start_as(&ns.name, &proxy.kubeconfig, &args);
    wait_log(&leader, "became the leader").await;
    let follower = replica(&ns.name);
    wait_log(&follower, "waiting for leadership").await;
    Pair {
        _ns: ns,
        apis,
        proxy,
        leader,
        follower,
    }
}

fn canary(steps: serde_json::Value) -> serde_json::Value {
    json!({"strategy": {"canary": {"steps": steps}}, "trafficRouting": {"gatewayAPI": {"httpRoute": "chat"}}})
}

#[tokio::test]
async fn a_leader_killed_at_50_percent_is_followed_without_a_double_step_and_a_promote_written_meanwhile_applies_once()
{
    use support::httproute::*;
    let mut p = pair("leader-mid").await;
    let steps = json!([{"setWeight": 10}, {"setWeight": 50}, {"pause": {}}, {"setWeight": 80}, {"pause": {}}]);
    p.apis.roll_out("chat", &["v1"], 1, canary(steps)).await;
    let log = record_weights(&p.apis).await;
    let apis = p.apis.clone();
    p.proxy
        .kill_during(
            &mut p.leader,
            |s| s.write_to("/httproutes/chat") && s.body.contains("\"weight\":50"),
            apis.patch_spec("chat", json!({"model": {"version": "v2"}})),
        )
        .await;
    // During the failover (the Lease has not expired yet) someone promotes.
    apis.annotate("chat", "rollguard.dev/promote", "true").await;
    wait_log(&p.follower, "became the leader").await;
    let md = apis
        .wait_md("chat", "paused at the second pause, 80%", SECS_60, |md| {
            md.status.as_ref().is_some_and(|s| {
                s.phase == Some(rollguard::api::Phase::Paused)
                    && s.current_step_index == Some(4)
                    && s.canary_weight == Some(80)
            })
        })
        .await;
    let consumed = !has_annotation(&md, "rollguard.dev/promote");
    assert!(consumed, "the promote was handled");
    let weights = weights(&log);
    assert_eq!(weights, vec![0, 10, 50, 80], "no step twice, the promote applied once");
}

#[tokio::test]
async fn a_leader_killed_in_a_gradual_hold_is_followed_on_the_same_clock_and_the_same_rollback() {
    use rollguard::api::labels::ROLLBACK_STEP;
    use support::httproute::*;
    const HOLD: i64 = 10;
    let mut p = pair("leader-gradual").await;
    p.apis.create_gradual_policy(&[50, 20, 0], &format!("{HOLD}s")).await;
    let mut spec = canary(json!([{"setWeight": 60}, {"pause": {}}]));
    spec["rollbackPolicyRef"] = json!({"name": "gradual"});
    p.apis.roll_out("chat", &["v1"], 1, spec).await;
    p.apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    wait_weight(&p.apis, 60).await;
    let log = record_weights(&p.apis).await;
    let apis = p.apis.clone();
    // Killed after the status write that records the hold at 50% (step 1 of 3).
    p.proxy
        .kill_during(
            &mut p.leader,
            |s| s.write_to("/modeldeployments/chat/status") && s.body.contains("at 50% (step 1 of 3)"),
            apis.annotate("chat", "rollguard.dev/abort", "true"),
        )
        .await;
    let record = apis
        .md
        .get("chat")
        .await
        .expect("reading")
        .status
        .and_then(|s| s.last_rollback)
        .expect("lastRollback");
    let hold = apis.step_on("chat-r2", ROLLBACK_STEP).await.expect("the hold at 50%");
    assert_eq!(hold.index, 0);
    wait_log(&p.follower, "became the leader").await;

    // The follower's next step starts one hold after the first one did (the leader's own
    // clock, from the label): not restarted when the follower took over, seconds later.
    let next = wait_object(&apis.deployments, "chat-r2", SECS_60, |d| {
        step_label(d, ROLLBACK_STEP).is_some_and(|s| s.index == 1)
    })
    .await
    .and_then(|d| step_label(&d, ROLLBACK_STEP))
    .expect("the follower moved the walk to 20%");
    let held = next.started_at.duration_since(hold.started_at);
    assert!(
        held >= jiff::SignedDuration::from_secs(HOLD) && held < jiff::SignedDuration::from_secs(HOLD + 3),
        "the hold lasted {held} (one hold of {HOLD}s; restarted at the takeover it would be longer)"
    );
    let after = apis.wait_rolled_back("chat", 1, None).await;
    assert_eq!(
        after.started_at, record.started_at,
        "the same rollback, not a second one"
    );
    assert_eq!(weights(&log), vec![60, 50, 20, 0], "each step of the walk once");
    assert_eq!(apis.events("chat", "Aborted").await.len(), 1, "one abort handled");
}
