//! Logging, and the operator's own metrics and health endpoints.

pub mod requests;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Installs the global tracing subscriber. The filter comes from `RUST_LOG`, defaulting to
/// `info` for rollguard and `warn` for everything else.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,rollguard=info"));
    // Colours only on a terminal: logs piped to a file or a collector stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

// ----- the operator's own metrics and health endpoints ------------------------------------

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Buckets of the API request histogram: 1 ms to about 16 s.
fn request_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The operator's own metrics, served on `/metrics` with `/healthz` and `/readyz`.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    reconcile_seconds: Histogram,
    rollbacks: Family<Labels, Counter>,
    evaluations: Family<Labels, Counter>,
    kube_requests: Family<Labels, Counter>,
    kube_request_seconds: Family<Labels, Histogram>,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rollguard");
        let reconciles = Family::<Labels, Counter>::default();
        let reconcile_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let rollbacks = Family::<Labels, Counter>::default();
        let evaluations = Family::<Labels, Counter>::default();
        let kube_requests = Family::<Labels, Counter>::default();
        let kube_request_seconds =
            Family::<Labels, Histogram>::new_with_constructor(request_buckets as fn() -> Histogram);
        registry.register("reconciles", "ModelDeployment reconciles by result", reconciles.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Time of one ModelDeployment reconcile",
            reconcile_seconds.clone(),
        );
        registry.register("rollbacks", "Rollbacks started, by trigger", rollbacks.clone());
        registry.register(
            "trigger_evaluations",
            "Trigger evaluations, by verdict",
            evaluations.clone(),
        );
        registry.register(
            "kube_requests",
            "Requests to the Kubernetes API server, by verb, resource and HTTP status code",
            kube_requests.clone(),
        );
        registry.register(
            "kube_request_duration_seconds",
            "Time from sending a request to the Kubernetes API server to its answer's headers, by verb",
            kube_request_seconds.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_seconds,
            rollbacks,
            evaluations,
            kube_requests,
            kube_request_seconds,
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    /// Records one reconcile.
    pub fn reconciled(&self, ok: bool, seconds: f64) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
        self.reconcile_seconds.observe(seconds);
    }

    /// Records a rollback started by `trigger` (Manual, Metric, ProgressDeadline...).
    pub fn rollback_started(&self, trigger: &str) {
        self.rollbacks
            .get_or_create(&vec![("trigger", trigger.to_string())])
            .inc();
    }

    /// Records one trigger evaluation with its verdict.
    pub fn evaluated(&self, verdict: &str) {
        self.evaluations
            .get_or_create(&vec![("verdict", verdict.to_string())])
            .inc();
    }

    /// Records one request to the API server, answered after `seconds`.
    pub fn kube_request(&self, verb: &str, resource: &str, code: &str, seconds: f64) {
        self.kube_request_seconds
            .get_or_create(&vec![("verb", verb.to_string())])
            .observe(seconds);
        self.kube_requests
            .get_or_create(&vec![
                ("verb", verb.to_string()),
                ("resource", resource.to_string()),
                ("code", code.to_string()),
            ])
            .inc();
    }

    /// The OpenMetrics text of every figure, as `/metrics` serves it.
    pub fn text(&self) -> Result<String, std::fmt::Error> {
        let mut body = String::new();
        encode(&mut body, &self.registry)?;
        Ok(body)
    }

    /// Marks the operator ready (its controllers run).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }
}

/// An HTTP answer with the OpenMetrics text of `registry` (500 if it cannot be encoded).
pub fn openmetrics(registry: &Registry) -> axum::response::Response {
    let mut body = String::new();
    match encode(&mut body, registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn metrics_handler(State(m): State<Arc<Metrics>>) -> axum::response::Response {
    openmetrics(&m.registry)
}

async fn readyz(State(m): State<Arc<Metrics>>) -> StatusCode {
    if m.ready.load(Ordering::Relaxed) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Binds `address` and serves `/metrics`, `/healthz` and `/readyz` in the background;
/// returns the bound address (port 0 picks a free one).
pub async fn serve(address: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let app = axum::Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { StatusCode::OK }))
        .route("/readyz", get(readyz))
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics server stopped");
        }
    });
    Ok(bound)
}
