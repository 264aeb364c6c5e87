//! Limits, against the local control plane: the longest canary the schema allows (64
//! steps) and the longest history (50 revisions) run to completion.

mod support;

use std::time::Duration;

use kube::runtime::watcher;
use serde_json::json;
use support::httproute::*;
use support::*;

#[tokio::test]
async fn a_64_step_canary_runs_to_completion() {
    let (_ns, apis, _op) = with_route("limit-steps", &["--resync-seconds", "2"]).await;
    // 1%, 2%, ... 63%, then 100%: every step moves the weight.
    let steps: Vec<serde_json::Value> = (1..=63)
        .map(|w| json!({"setWeight": w}))
        .chain(std::iter::once(json!({"setWeight": 100})))
        .collect();
    let spec =
        json!({"strategy": {"canary": {"steps": steps}}, "trafficRouting": {"gatewayAPI": {"httpRoute": "chat"}}});
    apis.roll_out("chat", &["v1"], 1, spec).await;
    let log = record_weights(&apis).await;
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    apis.wait_md("chat", "Healthy on r2", Duration::from_secs(180), |md| {
        md.status
            .as_ref()
            .is_some_and(|s| s.stable_revision == Some(2) && s.phase == Some(rollguard::api::Phase::Healthy))
    })
    .await;
    wait_weight(&apis, 0).await;
    let weights = weights(&log);
    let expected: Vec<i32> = std::iter::once(0).chain(1..=63).chain([100, 0]).collect();
    assert_eq!(weights, expected, "every step once, in order");
}

#[tokio::test]
async fn a_50_revision_history_runs_to_completion_and_its_status_stays_small() {
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "limit-history").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    let _op = Operator::start_with(&ns.name, &["--resync-seconds", "2"]);
    let versions: Vec<String> = (1..=52).map(|i| format!("v{i}")).collect();
    let versions: Vec<&str> = versions.iter().map(String::as_str).collect();
    let md = apis
        .roll_out(
            "chat",
            &versions,
            1,
            json!({"revisionHistoryLimit": 50, "warmRevisions": 0}),
        )
        .await;
    let status = md.status.expect("status");
    assert_eq!(status.stable_revision, Some(52));
    assert_eq!(status.history.len(), 50, "history bounded by revisionHistoryLimit");
    let owned = || watcher::Config::default().labels("rollguard.dev/model-deployment=chat");
    let revisions = wait_list(&apis.revisions, owned(), Duration::from_secs(60), |r| r.len() == 50).await;
    assert!(revisions.is_some(), "r1 and r2 pruned, 50 ControllerRevisions kept");
    let stored = apis.md.get("chat").await.expect("md");
    let bytes = serde_json::to_vec(&stored).expect("json").len();
    println!("a ModelDeployment with 50 revisions: {bytes} bytes as stored");
    assert!(bytes < 256 * 1024, "{bytes} bytes");
}
