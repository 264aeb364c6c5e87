//! A Prometheus server, through its HTTP API (`GET /api/v1/query`, instant queries).

use std::time::Duration;

use serde::Deserialize;

use super::{MetricsError, MetricsProvider, Reading};

/// A Prometheus server.
#[derive(Clone, Debug)]
pub struct Prometheus {
    http: reqwest::Client,
    url: String,
    timeout: Duration,
}

impl Prometheus {
    /// A client of the server at `address` (such as `http://prometheus.monitoring:9090`);
    /// each query may take `timeout`.
    pub fn new(address: &str, timeout: Duration) -> Prometheus {
        Prometheus {
            http: reqwest::Client::new(),
            url: format!("{}/api/v1/query", address.trim_end_matches('/')),
            timeout,
        }
    }
}

impl MetricsProvider for Prometheus {
    async fn query(&self, promql: &str) -> Result<Reading, MetricsError> {
        let unavailable = |reason: String| MetricsError::Unavailable {
            query: promql.to_string(),
            reason,
        };
        // Prometheus stops evaluating at its own timeout too; the client gives it a moment
        // more to answer with its error.
        let server_timeout = format!("{}ms", self.timeout.as_millis().max(1));
        let response = self
            .http
            .get(&self.url)
            .query(&[("query", promql), ("timeout", server_timeout.as_str())])
            .timeout(self.timeout + Duration::from_millis(500))
            .send()
            .await
            .map_err(|e| {
                unavailable(if e.is_timeout() {
                    format!("no answer within {:?}", self.timeout)
                } else {
                    format!(
                        "{e} ({})",
                        std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default()
                    )
                })
            })?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|e| unavailable(format!("HTTP {status}, body unreadable: {e}")))?;
        interpret(promql, status, &body)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct Sample {
    value: (f64, String),
}

/// What an HTTP answer of `/api/v1/query` means. Pure: each result shape is tested.
///
/// ```
/// use rollguard::metrics::{prometheus::interpret, Reading};
/// let one = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.7e9,"0.25"]}]}}"#;
/// assert_eq!(interpret("q", 200, one), Ok(Reading::Value(0.25)));
/// let none = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
/// assert_eq!(interpret("q", 200, none), Ok(Reading::NoData));
/// ```
pub fn interpret(query: &str, status: u16, body: &str) -> Result<Reading, MetricsError> {
    let unavailable = |reason: String| MetricsError::Unavailable {
        query: query.to_string(),
        reason,
    };
    let envelope: Envelope = match serde_json::from_str(body) {
        Ok(e) => e,
        Err(e) => {
            let start: String = body.chars().take(200).collect();
            return Err(unavailable(format!(
                "HTTP {status}, not a Prometheus API answer ({e}): {start:?}"
            )));
        }
    };
    if envelope.status != "success" {
        let error_type = envelope.error_type.unwrap_or_else(|| "unknown".into());
        let message = envelope.error.unwrap_or_default();
        // bad_data (400) and execution errors (422) are the query's fault; the rest
        // (timeout, canceled, internal, unavailable: 503) are the server's.
        if matches!(error_type.as_str(), "bad_data" | "execution") && status < 500 {
            return Err(MetricsError::Query {
                query: query.to_string(),
                error_type,
                message,
            });
        }
        return Err(unavailable(format!("HTTP {status}, {error_type}: {message}")));
    }
    if status >= 300 {
        return Err(unavailable(format!("HTTP {status}")));
    }
    let Some(data) = envelope.data else {
        return Err(unavailable("answer without data".into()));
    };
    let number = |text: &str| -> Result<f64, MetricsError> {
        // Prometheus writes "NaN", "+Inf" and "-Inf"; Rust parses all three.
        text.parse::<f64>()
            .map_err(|_| unavailable(format!("sample value {text:?} is not a number")))
    };
    let value = match data.result_type.as_str() {
        "scalar" => {
            let (_, text): (f64, String) =
                serde_json::from_value(data.result).map_err(|e| unavailable(format!("malformed scalar: {e}")))?;
            number(&text)?
        }
        "vector" => {
            let samples: Vec<Sample> =
                serde_json::from_value(data.result).map_err(|e| unavailable(format!("malformed vector: {e}")))?;
            match samples.as_slice() {
                [] => return Ok(Reading::NoData),
                [one] => number(&one.value.1)?,
                many => {
                    return Err(MetricsError::Ambiguous {
                        query: query.to_string(),
                        series: many.len(),
                    });
                }
            }
        }
        other => {
            return Err(MetricsError::Query {
                query: query.to_string(),
                error_type: "unsupported_result".into(),
                message: format!("result type {other} (a trigger query must return one number)"),
            });
        }
    };
    Ok(if value.is_nan() {
        Reading::NoData
    } else {
        Reading::Value(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(samples: &[(&str, &str)]) -> String {
        let result: Vec<serde_json::Value> = samples
            .iter()
            .map(|(label, v)| serde_json::json!({"metric": {"pod": label}, "value": [1_763_950_000.0, v]}))
            .collect();
        serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": result}}).to_string()
    }

    #[test]
    fn one_sample_and_a_scalar_are_values() {
        assert_eq!(interpret("q", 200, &vector(&[("a", "0.07")])), Ok(Reading::Value(0.07)));
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1763950000,"3"]}}"#;
        assert_eq!(interpret("q", 200, scalar), Ok(Reading::Value(3.0)));
    }

    #[test]
    fn an_empty_vector_and_nan_are_no_data() {
        assert_eq!(interpret("q", 200, &vector(&[])), Ok(Reading::NoData));
        assert_eq!(interpret("q", 200, &vector(&[("a", "NaN")])), Ok(Reading::NoData));
    }

    #[test]
    fn infinities_are_values() {
        assert_eq!(
            interpret("q", 200, &vector(&[("a", "+Inf")])),
            Ok(Reading::Value(f64::INFINITY))
        );
        assert_eq!(
            interpret("q", 200, &vector(&[("a", "-Inf")])),
            Ok(Reading::Value(f64::NEG_INFINITY))
        );
    }

    #[test]
    fn several_series_are_ambiguous_and_name_the_query() {
        let err = interpret("rate(x[1m])", 200, &vector(&[("a", "1"), ("b", "2")])).expect_err("ambiguous");
        assert_eq!(
            err,
            MetricsError::Ambiguous {
                query: "rate(x[1m])".into(),
                series: 2
            }
        );
        assert!(err.to_string().contains("rate(x[1m])"), "{err}");
    }

    #[test]
    fn promql_errors_are_the_querys_fault_and_server_errors_are_unavailability() {
        let bad = r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unclosed left parenthesis"}"#;
        let err = interpret("sum(", 400, bad).expect_err("bad query");
        assert_eq!(err.reason(), "QueryFailed");
        assert!(err.to_string().contains("unclosed left parenthesis"), "{err}");
        let busy = r#"{"status":"error","errorType":"timeout","error":"query timed out"}"#;
        assert_eq!(
            interpret("q", 503, busy).map_err(|e| e.reason()),
            Err("ProviderUnavailable")
        );
        let proxy = "<html>502 Bad Gateway</html>";
        let err = interpret("q", 502, proxy).expect_err("proxy error");
        assert_eq!(err.reason(), "ProviderUnavailable");
        assert!(err.to_string().contains("HTTP 502"), "{err}");
    }

    #[test]
    fn a_matrix_is_refused() {
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert_eq!(
            interpret("x[1m]", 200, matrix).map_err(|e| e.reason()),
            Err("QueryFailed")
        );
    }
}
