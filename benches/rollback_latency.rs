//! Benchmark: time from `rollguard.dev/rollback-to=previous` being written to the stable
//! Service selecting the warm target, over many rollbacks on the local control plane.
//!
//! Run with `make bench` (starts the local control plane when it is not running).
//! `ROLLGUARD_BENCH_ROLLBACKS` sets the number of rollbacks (default 25, at least 20).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

#[tokio::main]
async fn main() {
    let runs = runs_from_env("ROLLGUARD_BENCH_ROLLBACKS", 25, 20, 1000);
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "bench-rollback").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    let _op = Operator::start(&ns.name);

    apis.roll_out("chat", &["v1", "v2"], 1, json!({})).await;

    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        // r2 serves, r1 is warm: wait until its Deployment is Available.
        apis.wait_warm("chat-r1", 1).await;

        let selected = apis
            .time_until_selects(
                "chat",
                1,
                apis.annotate("chat", "rollguard.dev/rollback-to", "previous"),
            )
            .await;
        samples.push(selected);

        // Back to r2 for the next round.
        apis.annotate("chat", "rollguard.dev/retry", "true").await;
        apis.wait_healthy("chat", 2).await;
    }

    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!("rollback latency: rollback-to=previous annotation -> stable Service selects the warm revision");
    println!(
        "  runs {}  p50 {}  p99 {}  min {}  max {}  mean {}",
        samples.len(),
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 99.0)),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
        ms(mean)
    );
}
