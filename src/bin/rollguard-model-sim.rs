//! A simulated model server fleet for tests and the demo: serves vLLM-style metrics per
//! revision, for Prometheus to scrape, from synthetic traffic whose error rate and latency a
//! test sets at run time.
//!
//! ```text
//! rollguard-model-sim --listen 127.0.0.1:9400
//! GET  /metrics/<namespace>/<name>/<revision>   OpenMetrics text of that revision
//! PUT  /control/<namespace>/<name>/<revision>   {"rps": 20, "errorRate": 0.5, "ttftSeconds": 0.2, ...}
//! GET  /control/<namespace>/<name>/<revision>   the profile in force
//! ```
//!
//! Every scrape advances the revision's counters by `rps` requests per second since the last
//! one (a share `errorRate` of them answered 5xx), and observes each request's latencies in
//! the histograms `vllm:time_to_first_token_seconds`, `vllm:inter_token_latency_seconds` and
//! `vllm:e2e_request_latency_seconds`. Prometheus attaches the labels `namespace`,
//! `rollguard_model_deployment` and `rollguard_revision` from its target configuration, as the
//! documented relabeling does for real pods.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

#[derive(Parser)]
#[command(about = "Simulated model servers: vLLM-style metrics per revision, controllable at run time")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9400")]
    listen: String,
}

/// How a revision behaves.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
struct Profile {
    /// Requests per second.
    rps: f64,
    /// Share of requests answered 5xx (0..1).
    error_rate: f64,
    /// Time to first token, seconds.
    ttft_seconds: f64,
    /// Inter-token latency, seconds.
    itl_seconds: f64,
    /// End-to-end latency, seconds.
    e2e_seconds: f64,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            rps: 20.0,
            error_rate: 0.0,
            ttft_seconds: 0.2,
            itl_seconds: 0.02,
            e2e_seconds: 2.0,
        }
    }
}

type Status = Vec<(String, String)>;

struct Revision {
    profile: Profile,
    last: Instant,
    carry: f64,
    registry: Registry,
    requests: Family<Status, Counter<f64, std::sync::atomic::AtomicU64>>,
    ttft: Histogram,
    itl: Histogram,
    e2e: Histogram,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0].into_iter()
}

impl Revision {
    fn new(profile: Profile) -> Revision {
        let mut registry = Registry::default();
        let requests = Family::<Status, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        let ttft = Histogram::new(latency_buckets());
        let itl = Histogram::new(latency_buckets());
        let e2e = Histogram::new(latency_buckets());
        registry.register("http_requests", "HTTP requests by status class", requests.clone());
        registry.register("vllm:time_to_first_token_seconds", "Time to first token", ttft.clone());
        registry.register("vllm:inter_token_latency_seconds", "Inter-token latency", itl.clone());
        registry.register(
            "vllm:e2e_request_latency_seconds",
            "End-to-end request latency",
            e2e.clone(),
        );
        // Both status classes exist from the start, so an error ratio is 0, not absent.
        for class in ["2xx", "5xx"] {
            let _ = requests.get_or_create(&status(class));
        }
        Revision {
            profile,
            last: Instant::now(),
            carry: 0.0,
            registry,
            requests,
            ttft,
            itl,
            e2e,
        }
    }

    /// Serves the requests due since the last scrape.
    fn advance(&mut self) {
        let now = Instant::now();
        let due = self.profile.rps.max(0.0) * now.duration_since(self.last).as_secs_f64() + self.carry;
        self.last = now;
        let n = due.floor();
        self.carry = due - n;
        let errors = (n * self.profile.error_rate.clamp(0.0, 1.0)).round();
        self.requests.get_or_create(&status("5xx")).inc_by(errors);
        self.requests.get_or_create(&status("2xx")).inc_by(n - errors);
        for _ in 0..(n as u64).min(100_000) {
            self.ttft.observe(self.profile.ttft_seconds);
            self.itl.observe(self.profile.itl_seconds);
            self.e2e.observe(self.profile.e2e_seconds);
        }
    }
}

fn status(class: &str) -> Status {
    vec![
        ("handler".into(), "/v1/chat/completions".into()),
        ("method".into(), "POST".into()),
        ("status".into(), class.into()),
    ]
}

type Fleet = Arc<Mutex<HashMap<(String, String, String), Revision>>>;

async fn metrics(State(fleet): State<Fleet>, Path(key): Path<(String, String, String)>) -> Response {
    let mut fleet = fleet.lock().unwrap_or_else(|e| e.into_inner());
    let revision = fleet.entry(key).or_insert_with(|| Revision::new(Profile::default()));
    revision.advance();
    rollguard::telemetry::openmetrics(&revision.registry)
}

async fn set_profile(
    State(fleet): State<Fleet>,
    Path(key): Path<(String, String, String)>,
    Json(profile): Json<Profile>,
) -> Json<Profile> {
    let mut fleet = fleet.lock().unwrap_or_else(|e| e.into_inner());
    let revision = fleet.entry(key).or_insert_with(|| Revision::new(profile));
    // Requests so far were served with the old profile.
    revision.advance();
    revision.profile = profile;
    Json(profile)
}

async fn get_profile(State(fleet): State<Fleet>, Path(key): Path<(String, String, String)>) -> Json<Profile> {
    let fleet = fleet.lock().unwrap_or_else(|e| e.into_inner());
    Json(fleet.get(&key).map(|r| r.profile).unwrap_or_default())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fleet: Fleet = Arc::default();
    let app = Router::new()
        .route("/metrics/{namespace}/{name}/{revision}", get(metrics))
        .route(
            "/control/{namespace}/{name}/{revision}",
            get(get_profile).put(set_profile),
        )
        .with_state(fleet);
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    eprintln!("rollguard-model-sim listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
