//! The operator's own `/metrics`: finding its address and reading samples.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Operator, wait_for};

/// The address the operator logged for its metrics server.
pub async fn metrics_address(op: &Operator) -> String {
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
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The samples of the metric `name` with their labels.
pub fn samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let prefix = format!("{name}{{");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (labels, value) = rest.rsplit_once("} ")?;
            let labels = labels
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.trim_matches('"').to_string()))
                })
                .collect();
            Some((labels, value.parse().ok()?))
        })
        .collect()
}

/// One reading of an operator's `/metrics`.
pub struct Scrape(pub String);

impl Scrape {
    /// Reads `http://<address>/metrics`.
    pub async fn of(address: &str) -> Scrape {
        let text = reqwest::get(format!("http://{address}/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body");
        Scrape(text)
    }

    /// Successful reconciles counted so far.
    pub fn reconciles(&self) -> f64 {
        sample(&self.0, r#"rollguard_reconciles_total{result="ok"}"#).unwrap_or(0.0)
    }

    /// Requests to the API server counted so far whose verb and resource `pick` selects.
    pub fn requests(&self, pick: impl Fn(&str, &str) -> bool) -> f64 {
        samples(&self.0, "rollguard_kube_requests_total")
            .into_iter()
            .filter(|(labels, _)| {
                let label = |k: &str| labels.get(k).map(String::as_str).unwrap_or_default();
                pick(label("verb"), label("resource"))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

/// Whether a verb writes.
pub fn is_write(verb: &str) -> bool {
    matches!(verb, "create" | "update" | "patch" | "delete" | "deletecollection")
}
