//! The Prometheus metrics provider against a real Prometheus: every result shape, errors,
//! and query escaping.

mod support;

use std::time::Duration;

use rollguard::metrics::prometheus::Prometheus;
use rollguard::metrics::query::{Vars, render};
use rollguard::metrics::{MetricsError, MetricsProvider, Reading};
use support::prometheus::PrometheusServer;

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn each_result_shape_has_its_meaning() {
    let server = PrometheusServer::start(&[]).await;
    let p = Prometheus::new(&server.address, TIMEOUT);
    assert_eq!(p.query("vector(0.25)").await, Ok(Reading::Value(0.25)), "one sample");
    assert_eq!(p.query("scalar(vector(3))").await, Ok(Reading::Value(3.0)), "a scalar");
    assert_eq!(
        p.query("rollguard_metric_that_does_not_exist").await,
        Ok(Reading::NoData),
        "an empty vector"
    );
    assert_eq!(p.query("vector(0) / 0").await, Ok(Reading::NoData), "NaN");
    assert_eq!(
        p.query("vector(1) / 0").await,
        Ok(Reading::Value(f64::INFINITY)),
        "+Inf"
    );
    assert_eq!(
        p.query("vector(-1) / 0").await,
        Ok(Reading::Value(f64::NEG_INFINITY)),
        "-Inf"
    );
    let several = r#"label_replace(vector(1), "a", "x", "", "") or label_replace(vector(2), "a", "y", "", "")"#;
    assert_eq!(
        p.query(several).await,
        Err(MetricsError::Ambiguous {
            query: several.into(),
            series: 2
        })
    );
    match p.query("sum(").await {
        Err(MetricsError::Query {
            error_type, message, ..
        }) => {
            assert_eq!(error_type, "bad_data");
            assert!(message.contains("unclosed left parenthesis"), "{message}");
        }
        other => panic!("a PromQL error, got {other:?}"),
    }
}

#[tokio::test]
async fn http_errors_and_an_unreachable_server_are_unavailability() {
    let server = PrometheusServer::start(&[]).await;
    let wrong_path = Prometheus::new(&format!("{}/not-prometheus", server.address), TIMEOUT);
    match wrong_path.query("vector(1)").await {
        Err(MetricsError::Unavailable { reason, .. }) => assert!(reason.contains("HTTP 404"), "{reason}"),
        other => panic!("unavailable, got {other:?}"),
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let nobody = Prometheus::new(&format!("http://127.0.0.1:{port}"), TIMEOUT);
    let err = nobody.query("vector(1)").await.expect_err("nothing listens");
    assert_eq!(err.reason(), "ProviderUnavailable", "{err}");
    assert!(err.to_string().contains("vector(1)"), "names the query: {err}");
}

/// Returns the labels of the single series a query returns, straight from the HTTP API.
async fn labels_of(address: &str, query: &str) -> serde_json::Value {
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{address}/api/v1/query"))
        .query(&[("query", query)])
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("json");
    assert_eq!(body["status"], "success", "{body}");
    let result = body["data"]["result"].as_array().cloned().unwrap_or_default();
    assert_eq!(result.len(), 1, "one series: {body}");
    result[0]["metric"].clone()
}

#[tokio::test]
async fn a_label_value_with_quotes_and_backslashes_cannot_break_out_of_its_literal() {
    let server = PrometheusServer::start(&[]).await;
    let nasty = [
        r#"x") or label_replace(vector(2), "injected", "yes", "", "") or vector(3"#,
        r#"a\"b"#,
        r"trailing\",
        "it's",
        "new\nline",
    ];
    for value in nasty {
        for template in [
            r#"label_replace(vector(1), "v", "{{version}}", "", "")"#,
            r"label_replace(vector(1), 'v', '{{version}}', '', '')",
        ] {
            let vars = Vars {
                version: value.into(),
                ..Vars::default()
            };
            let query = render(template, &vars).expect("render");
            let labels = labels_of(&server.address, &query).await;
            assert_eq!(labels["v"], value, "{template} with {value:?} -> {query}");
            assert!(labels.get("injected").is_none(), "{query}");
        }
    }
}
