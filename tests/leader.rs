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

#[tokio::test]
async fn a_leader_killed_at_50_percent_is_followed_without_a_double_step_and_a_promote_written_meanwhile_applies_once()
{
    use support::fault_proxy::FaultProxy;
    use support::httproute::*;
    let cluster = cluster().await;
    apply_router_crds(&cluster.client).await;
    let ns = TestNamespace::create(&cluster.client, "leader-mid").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    create_route(&apis).await;
    let proxy = FaultProxy::start(&cluster.client).await;
    let args = [
        "--resync-seconds",
        "2",
        "--leader-elect",
        "--leader-election-namespace",
        &ns.name,
        "--leader-election-seconds",
        "4",
    ];
    // The leader talks through the proxy, which kills it at the exact point.
    let mut leader = Operator::start_as(&ns.name, &proxy.kubeconfig, &args);
    wait_log(&leader, "became the leader").await;
    let follower = replica(&ns.name);
    wait_log(&follower, "waiting for leadership").await;

    let steps = json!([{"setWeight": 10}, {"setWeight": 50}, {"pause": {}}, {"setWeight": 80}, {"pause": {}}]);
    let spec =
        json!({"strategy": {"canary": {"steps": steps}}, "trafficRouting": {"gatewayAPI": {"httpRoute": "chat"}}});
    apis.roll_out("chat", &["v1"], 1, spec).await;
    let log = record_weights(&apis).await;
    let killed = proxy.kill_after(leader.child.id(), 1, |s| {
        s.write_to("/httproutes/chat") && s.body.contains("\"weight\":50")
    });
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    tokio::time::timeout(SECS_60, killed)
        .await
        .expect("the leader was killed after writing 50%")
        .expect("the proxy reports the kill");
    leader.kill();
    // During the failover (the Lease has not expired yet) someone promotes.
    apis.annotate("chat", "rollguard.dev/promote", "true").await;
    wait_log(&follower, "became the leader").await;
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
