//! Benchmark: what warm standby buys. A rollback (`rollguard.dev/rollback-to`) on an
//! HTTPRoute to a previous revision of 4 replicas kept fully warm (`warmReplicas: 4`), partly
//! warm (`warmReplicas: 1`) or cold (`warmReplicas: 0`), timed from the annotation to the
//! first traffic on it (its share on the canary backend, or the stable Service) and to all
//! traffic (the stable Service selects it).
//!
//! A model server's start is simulated: the revision's missing pods are held Pending (their
//! node cordoned) for `ROLLGUARD_BENCH_START_MS` (default 3000) after the annotation, then
//! start. Run with `make bench`; `ROLLGUARD_BENCH_WARM_RUNS` sets the runs per size
//! (default 5, at least 3).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::httproute::*;
use support::*;

const FULL: i32 = 4;

/// The time to the first and to all traffic on the target of one rollback.
struct Sample {
    first: Duration,
    all: Duration,
}

async fn run_size(warm_replicas: i32, runs: usize, start: Duration) -> Vec<Sample> {
    let (ns, apis, _op) = with_route(&format!("bench-warm-{warm_replicas}"), &["--resync-seconds", "2"]).await;
    let node = FakeNode::create(&apis.client, &format!("bw-{}", ns.name)).await;
    let spec = json!({"warmRevisions": 1, "warmReplicas": warm_replicas,
        "strategy": {"canary": {"steps": [{"setWeight": 100}]}}, "trafficRouting": routing(&apis),
        "template": {"spec": {"nodeSelector": {"rollguard.dev/test-node": node.name},
                              "containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0"}]}}});
    apis.roll_out("chat", &["v1", "v2"], FULL, spec).await;

    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        // r2 serves all traffic; r1 is kept at `warm_replicas` ready pods.
        apis.wait_warm("chat-r1", warm_replicas).await;
        wait_weight(&apis, 0).await;
        let log = record_weights(&apis).await;
        node.cordon(&apis.client, true).await;
        let release = {
            let client = apis.client.clone();
            let name = node.name.clone();
            tokio::spawn(async move {
                tokio::time::sleep(start).await;
                uncordon(&client, &name).await;
            })
        };
        let begun = Instant::now();
        let all = apis
            .time_until_selects("chat", 1, apis.annotate("chat", "rollguard.dev/rollback-to", "1"))
            .await;
        release.await.expect("the release of the pods");
        let first_share = weight_changes(&log)
            .into_iter()
            .find(|(at, w)| *w > 0 && *at >= begun)
            .map(|(at, _)| at - begun);
        samples.push(Sample {
            first: first_share.map_or(all, |s| s.min(all)),
            all,
        });

        // Back to r2 for the next round: r1 goes back to its warm size.
        apis.annotate("chat", "rollguard.dev/retry", "true").await;
        apis.wait_healthy("chat", 2).await;
    }
    samples
}

async fn uncordon(client: &kube::Client, name: &str) {
    use kube::api::{Patch, PatchParams};
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    let patch = json!({"spec": {"unschedulable": false}});
    nodes
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("uncordoning");
}

fn line(samples: &mut [Duration]) -> String {
    samples.sort();
    format!(
        "p50 {}  max {}",
        ms(percentile(samples, 50.0)),
        ms(samples[samples.len() - 1])
    )
}

#[tokio::main]
async fn main() {
    let runs = runs_from_env("ROLLGUARD_BENCH_WARM_RUNS", 5, 3, 100);
    let start = Duration::from_millis(
        std::env::var("ROLLGUARD_BENCH_START_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3000),
    );
    println!(
        "warm standby: rollback-to on an HTTPRoute to a revision of {FULL} replicas; missing pods start {} after the annotation",
        ms(start)
    );
    for (label, warm) in [("fully warm", FULL), ("partly warm", 1), ("cold", 0)] {
        let samples = run_size(warm, runs, start).await;
        let mut first: Vec<Duration> = samples.iter().map(|s| s.first).collect();
        let mut all: Vec<Duration> = samples.iter().map(|s| s.all).collect();
        println!(
            "  {label:<12} warmReplicas {warm} ({warm} standby pods)  runs {runs}  first traffic {}  all traffic {}",
            line(&mut first),
            line(&mut all)
        );
    }
}
