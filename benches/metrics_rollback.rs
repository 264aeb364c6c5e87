//! Benchmark: from a breach being visible in Prometheus to traffic being 100% on stable.
//!
//! Against the local control plane, a real Prometheus scraping the simulated model servers
//! every second, and the operator (release build) with a RollbackPolicy whose `interval` is
//! 1s. Each run rolls out a new canary revision at 20%, makes it fail (60% 5xx), and
//! measures from the moment the trigger's query first returns a breaching value (polled
//! every 50 ms) to the HTTPRoute carrying 0% on the canary.
//!
//! Run with `make bench`. `ROLLGUARD_BENCH_RUNS` sets the runs (default 12, at least 10).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use kube::api::{Api, PostParams};
use rollguard::api::RollbackPolicy;
use rollguard::metrics::prometheus::Prometheus;
use rollguard::metrics::query::{Vars, render};
use rollguard::metrics::{MetricsProvider, Reading};
use serde_json::json;
use support::httproute::{create_route, route_weights};
use support::sim::ModelSim;
use support::*;

const INTERVAL: &str = "1s";
const THRESHOLD: f64 = 0.1;
const ERROR_RATE: &str = r#"sum(rate(http_requests_total{namespace="{{namespace}}",rollguard_model_deployment="{{name}}",rollguard_revision="{{revision}}",status="5xx"}[5s])) / sum(rate(http_requests_total{namespace="{{namespace}}",rollguard_model_deployment="{{name}}",rollguard_revision="{{revision}}"}[5s]))"#;

#[tokio::main]
async fn main() {
    let runs = runs_from_env("ROLLGUARD_BENCH_RUNS", 12, 10, 30) as i64;
    let cluster = cluster().await;
    apply_router_crds(&cluster.client).await;
    let ns = TestNamespace::create(&cluster.client, "bench-metrics").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    create_route(&apis).await;
    let sim = ModelSim::start().await;
    let prometheus = sim.prometheus(&ns.name, "chat", 1..=runs + 1).await;
    let policy: RollbackPolicy = serde_json::from_value(json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackPolicy", "metadata": {"name": "llm"},
        "spec": {"provider": {"prometheus": {"address": prometheus.address}}, "interval": INTERVAL,
                 "triggers": [{"name": "error-rate", "query": ERROR_RATE, "operator": "Gt", "threshold": THRESHOLD}]}
    }))
    .expect("policy");
    Api::<RollbackPolicy>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &policy)
        .await
        .expect("creating the RollbackPolicy");
    let _op = Operator::start(&ns.name);
    let spec = json!({"strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}},
                      "trafficRouting": {"gatewayAPI": {"httpRoute": "chat"}},
                      "rollbackPolicyRef": {"name": "llm"}});
    apis.roll_out("chat", &["v1"], 1, spec).await;
    let provider = Prometheus::new(&prometheus.address, Duration::from_secs(2));

    let mut samples = Vec::new();
    for run in 0..runs {
        let revision = run + 2;
        apis.patch_spec("chat", json!({"model": {"version": format!("v{revision}")}}))
            .await;
        let at_20 = wait_for(Duration::from_secs(60), || async {
            let md = apis.md.get("chat").await.ok()?;
            let s = md.status?;
            let weight = route_weights(&apis).await?.canary;
            (s.canary_revision == Some(revision) && weight == 20).then_some(())
        })
        .await;
        assert!(at_20.is_some(), "run {run}: canary r{revision} never reached 20%");
        sim.set(&ns.name, "chat", revision, json!({"errorRate": 0.6})).await;
        let vars = Vars {
            namespace: ns.name.clone(),
            name: "chat".into(),
            revision: revision.to_string(),
            ..Vars::default()
        };
        let query = render(ERROR_RATE, &vars).expect("query");
        let visible = loop {
            if let Ok(Reading::Value(v)) = provider.query(&query).await
                && v > THRESHOLD
            {
                break Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let stable = loop {
            if route_weights(&apis).await.is_some_and(|w| w.canary == 0) {
                break Instant::now();
            }
            if visible.elapsed() > Duration::from_secs(60) {
                panic!("run {run}: traffic never returned to stable");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        samples.push(stable.saturating_duration_since(visible));
        let settled = wait_for(Duration::from_secs(60), || async {
            let md = apis.md.get("chat").await.ok()?;
            let r = md.status?.last_rollback?;
            (r.from_revision == revision && r.completed_at.is_some()).then_some(())
        })
        .await;
        assert!(
            settled.is_some(),
            "run {run}: the rollback of r{revision} did not complete"
        );
    }
    samples.sort();
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    println!("metrics rollback (interval {INTERVAL}, consecutive 1, scrape every 1s, query polled every 50 ms):");
    println!(
        "  breach visible in Prometheus -> HTTPRoute 100% on stable: runs {}  p50 {}  p99 {}  min {}  max {}",
        samples.len(),
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 99.0)),
        ms(samples[0]),
        ms(samples[samples.len() - 1])
    );
}
