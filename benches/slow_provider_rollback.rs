//! Benchmark: a manual rollback (`rollback-to=previous`, blue/green, warm previous revision)
//! while the stable revision is judged in its guard window, with the metrics provider
//! healthy, hanging (timeout 5 s) and answering after 20 s (timeout 30 s), side by side.
//! Each latency is from the annotation being written to the stable Service selecting r1,
//! seen through a watch; a query is waiting for its answer when the annotation is written.
//!
//! Run with `make bench`. `ROLLGUARD_BENCH_SLOW_RUNS` sets the runs per provider (default 5).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use support::slow_provider::{Answer, GuardedRollback};
use support::*;

#[tokio::main]
async fn main() {
    let runs = runs_from_env("ROLLGUARD_BENCH_SLOW_RUNS", 5, 1, 1000);
    let cases = [
        ("healthy", "5s", Answer::Now),
        ("hanging (timeout 5s)", "5s", Answer::Hang),
        (
            "answers after 20s (timeout 30s)",
            "30s",
            Answer::After(Duration::from_secs(20)),
        ),
    ];
    println!("manual rollback latency by metrics provider: annotation -> stable Service selects r1 ({runs} runs each)");
    println!("  {:<34} {:>10} {:>10} {:>10}", "provider", "p50", "max", "mean");
    for (i, (label, timeout, answer)) in cases.into_iter().enumerate() {
        let s = GuardedRollback::start(&format!("bench-slow-{i}"), timeout).await;
        let mut samples = Vec::with_capacity(runs);
        for _ in 0..runs {
            samples.push(s.rollback_once(answer).await);
        }
        samples.sort();
        let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
        println!(
            "  {:<34} {:>10} {:>10} {:>10}",
            label,
            ms(percentile(&samples, 50.0)),
            ms(samples[samples.len() - 1]),
            ms(mean)
        );
    }
}
