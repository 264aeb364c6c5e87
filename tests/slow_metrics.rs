//! A manual rollback never waits for the metrics provider: trigger queries run off the
//! reconcile path. Against the local control plane, with a provider on loopback that hangs
//! or answers late while the stable revision is judged in its guard window.

mod support;

use std::time::Duration;

use support::slow_provider::{Answer, GuardedRollback};

/// Well inside the provider's 5 s timeout (the rollback took 8.1 s when queries ran inside
/// the reconcile; with a healthy provider it takes 0.1-0.3 s).
const QUICK: Duration = Duration::from_millis(2500);

#[tokio::test]
async fn a_manual_rollback_does_not_wait_for_a_hanging_provider() {
    let s = GuardedRollback::start("slow-hang", "5s").await;
    let took = s.rollback_once(Answer::Hang).await;
    assert!(s.provider.received() > 0, "the trigger was never queried");
    assert!(
        took < QUICK,
        "rollback-to=previous took {took:?} with a hanging provider (timeout 5s)"
    );
}

#[tokio::test]
async fn a_manual_rollback_does_not_wait_for_a_provider_that_answers_after_20s() {
    let s = GuardedRollback::start("slow-20s", "30s").await;
    let took = s.rollback_once(Answer::After(Duration::from_secs(20))).await;
    assert!(
        took < QUICK,
        "rollback-to=previous took {took:?} with a provider answering after 20 s"
    );
}

/// Each way a provider can misbehave ends in its documented verdict (README, "What the
/// results mean"), and none delays a manual rollback.
#[tokio::test]
async fn a_misbehaving_provider_ends_in_the_documented_verdict_and_never_delays_a_rollback() {
    use rollguard::api::{RollbackTrigger, TriggerVerdict};
    let fifty: &'static str = Box::leak(
        serde_json::json!({"status": "success", "data": {"resultType": "vector", "result":
            (0..50).map(|i| serde_json::json!({"metric": {"pod": format!("p{i}")}, "value": [1.7e9, "0"]})).collect::<Vec<_>>()}})
        .to_string()
        .into_boxed_str(),
    );
    let cases: [(&str, Answer, TriggerVerdict, &str, bool); 7] = [
        (
            "HTTP 503",
            Answer::Respond(
                503,
                r#"{"status":"error","errorType":"unavailable","error":"overloaded"}"#,
            ),
            TriggerVerdict::Unavailable,
            "HTTP 503",
            true,
        ),
        (
            "HTTP 500 without a body",
            Answer::Respond(500, ""),
            TriggerVerdict::Unavailable,
            "HTTP 500",
            true,
        ),
        (
            "a string result",
            Answer::Respond(
                200,
                r#"{"status":"success","data":{"resultType":"string","result":[1.7e9,"x"]}}"#,
            ),
            TriggerVerdict::Invalid,
            "result type string",
            true,
        ),
        (
            "a matrix",
            Answer::Respond(
                200,
                r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            ),
            TriggerVerdict::Invalid,
            "result type matrix",
            true,
        ),
        (
            "a 50-series vector",
            Answer::Respond(200, fifty),
            TriggerVerdict::Invalid,
            "50 series",
            true,
        ),
        (
            "an empty result",
            Answer::Respond(
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
            ),
            TriggerVerdict::NoData,
            "",
            false,
        ),
        (
            "NaN",
            Answer::Respond(
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.7e9,"NaN"]}]}}"#,
            ),
            TriggerVerdict::NoData,
            "",
            false,
        ),
    ];
    let s = GuardedRollback::start("misbehave", "5s").await;
    // Each round rolls back by hand and retries: r2 is judged in its guard window again.
    for (what, answer, verdict, marker, holds) in cases {
        s.provider.set(answer);
        let md = s
            .apis
            .wait_md(
                "chat",
                &format!("{what}: verdict {verdict:?}"),
                Duration::from_secs(60),
                |md| {
                    md.status.as_ref().is_some_and(|st| {
                        st.analysis.iter().any(|a| {
                            a.revision == 2
                                && a.verdict == Some(verdict)
                                && a.message.as_deref().unwrap_or_default().contains(marker)
                        })
                    })
                },
            )
            .await;
        let available = support::condition(&md, "MetricsAvailable").map(|c| c.0);
        let expected = if holds { "False" } else { "True" };
        assert_eq!(available.as_deref(), Some(expected), "{what}: MetricsAvailable");
        let took = s.rollback_once(answer).await;
        assert!(took < QUICK, "{what}: rollback-to=previous took {took:?}");
    }
    // +Inf is a value: above the threshold, the Critical trigger rolls r2 back on its own.
    s.provider.set(Answer::Respond(
        200,
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.7e9,"+Inf"]}]}}"#,
    ));
    let record = s.apis.wait_rolled_back("chat", 1, Some(RollbackTrigger::Metric)).await;
    assert_eq!(record.trigger_name.as_deref(), Some("error-rate"));
}

/// A canary judged by a provider whose queries hang (timeout 30 s, so each hangs for the
/// whole measurement): a `promote` moves it to its next step and an `abort` sends all traffic
/// to stable, each at once.
#[tokio::test]
async fn a_promote_and_an_abort_do_not_wait_for_a_hanging_provider() {
    use serde_json::json;
    use support::httproute::*;
    use support::slow_provider::SlowProvider;
    let (_ns, apis, _op) = with_route("slow-canary", &["--resync-seconds", "2"]).await;
    let provider = SlowProvider::start(Answer::Now).await;
    apis.create_policy(
        "llm",
        json!({"provider": {"prometheus": {"address": provider.address, "timeout": "30s"}},
               "interval": "1s",
               "triggers": [{"name": "error-rate", "query": "vector(0)", "operator": "Gt", "threshold": 0.1, "severity": "Critical"}]}),
    )
    .await;
    let steps = json!([{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}, {"setWeight": 80}]);
    let spec = json!({"strategy": {"canary": {"steps": steps}}, "trafficRouting": {"gatewayAPI": {"httpRoute": "chat"}},
                      "rollbackPolicyRef": {"name": "llm"}});
    apis.roll_out("chat", &["v1"], 1, spec).await;
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    apis.wait_md(
        "chat",
        "the canary paused at 20%, judged",
        Duration::from_secs(60),
        |md| {
            md.status.as_ref().is_some_and(|s| {
                s.phase == Some(rollguard::api::Phase::Paused)
                    && s.canary_weight == Some(20)
                    && s.analysis.iter().any(|a| a.revision == 2 && a.value.is_some())
            })
        },
    )
    .await;

    provider.set(Answer::Hang);
    provider.wait_in_flight(Duration::from_secs(20)).await;
    let asked = std::time::Instant::now();
    apis.annotate("chat", "rollguard.dev/promote", "true").await;
    let promoted = wait_weight(&apis, 50).await - asked;
    assert!(provider.in_flight() > 0, "a query was still hanging");
    let asked = std::time::Instant::now();
    apis.annotate("chat", "rollguard.dev/abort", "true").await;
    let aborted = wait_weight(&apis, 0).await - asked;
    assert!(provider.in_flight() > 0, "a query was still hanging");
    assert!(
        promoted < QUICK && aborted < QUICK,
        "with a hanging provider the promote took {promoted:?} and the abort {aborted:?}"
    );
}
