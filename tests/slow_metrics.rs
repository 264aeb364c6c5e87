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
