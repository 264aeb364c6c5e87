//! The operator's own endpoints: /healthz, /readyz and /metrics, against the local control
//! plane.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

/// The address the operator logged for its metrics server.
async fn metrics_address(op: &Operator) -> String {
    let found = wait_for(Duration::from_secs(30), || async {
        op.log_text()
            .lines()
            .find(|l| l.contains("serving /metrics"))
            .and_then(|l| l.split("address=").nth(1))
            .map(|a| a.split_whitespace().next().unwrap_or_default().to_string())
    })
    .await;
    found.unwrap_or_else(|| panic!("the operator never logged its metrics address:\n{}", op.log_text()))
}

/// The value of the sample `series` (name and labels, as written) in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn health_and_metrics_endpoints_count_reconciles_and_rollbacks() {
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "telemetry").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    let op = Operator::start_with(&ns.name, &["--metrics-address", "127.0.0.1:0"]);
    let address = metrics_address(&op).await;
    let base = format!("http://{address}");
    let ok = |path: &'static str| {
        let url = format!("{base}{path}");
        async move { reqwest::get(&url).await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    assert_eq!(ok("/healthz").await, 200);
    let ready = wait_for(Duration::from_secs(30), || async {
        (ok("/readyz").await == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "/readyz never said ready");

    apis.roll_out("chat", &["v1", "v2"], 1, json!({})).await;
    apis.annotate("chat", "rollguard.dev/rollback-to", "previous").await;
    apis.wait_md("chat", "stable r1", Duration::from_secs(60), |md| {
        md.status.as_ref().is_some_and(|s| s.stable_revision == Some(1))
    })
    .await;
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    let reconciles = sample(&text, r#"rollguard_reconciles_total{result="ok"}"#).unwrap_or(0.0);
    assert!(reconciles >= 3.0, "reconciles counted:\n{text}");
    assert_eq!(
        sample(&text, r#"rollguard_rollbacks_total{trigger="Manual"}"#),
        Some(1.0),
        "one manual rollback:\n{text}"
    );
    let count = sample(&text, "rollguard_reconcile_duration_seconds_count").unwrap_or(0.0);
    assert!(count >= reconciles, "durations observed:\n{text}");
}
