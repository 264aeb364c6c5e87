//! Benchmark: canary step and abort latency on a Gateway API HTTPRoute, against the local
//! control plane.
//!
//! - step: from a step falling due (the `rollguard.dev/promote=true` that ends an open
//!   pause is written) to the next step's weight being visible on the HTTPRoute;
//! - abort: from `rollguard.dev/abort=true` being written to the HTTPRoute carrying 100% on
//!   stable.
//!
//! Run with `make bench`. `ROLLGUARD_BENCH_RUNS` sets the runs of each (default 20).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::Api;
use kube::core::DynamicObject;
use kube::runtime::{WatchStreamExt, watcher};
use rollguard::traffic::gateway_api;
use serde_json::json;
use support::httproute::{create_route, routes};
use support::*;

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "  {name}: runs {}  p50 {}  p99 {}  min {}  max {}",
        samples.len(),
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 99.0)),
        ms(samples[0]),
        ms(samples[samples.len() - 1])
    );
}

/// Writes an annotation at `start` and waits for the route to carry canary weight `want`.
async fn time_until_weight(apis: &Apis, routes: &Api<DynamicObject>, key: &str, value: &str, want: i32) -> Duration {
    let target = route_target(&apis.namespace, "chat");
    let stream = watcher(routes.clone(), watcher::Config::default().fields("metadata.name=chat")).applied_objects();
    let mut stream = std::pin::pin!(stream.peekable());
    let _ = stream.as_mut().peek().await;
    let start = Instant::now();
    apis.annotate("chat", key, value).await;
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(obj)) = stream.next().await {
            let value = serde_json::to_value(obj).unwrap_or_default();
            if (gateway_api::ROUTE_KIND.read)(&value, &target).is_some_and(|w| w.canary == want) {
                return Some(start.elapsed());
            }
        }
        None
    })
    .await;
    waited
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("the route never carried canary weight {want} after {key}={value}"))
}

#[tokio::main]
async fn main() {
    let runs = runs_from_env("ROLLGUARD_BENCH_RUNS", 20, 10, 30);
    let cluster = cluster().await;
    apply_router_crds(&cluster.client).await;
    let ns = TestNamespace::create(&cluster.client, "bench-canary").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    let routes = routes(&apis);
    create_route(&apis).await;
    let _op = Operator::start(&ns.name);

    // One canary of `runs` open pauses, each followed by a weight one higher.
    let mut steps = vec![json!({"setWeight": 1})];
    for i in 0..runs {
        steps.push(json!({"pause": {}}));
        steps.push(json!({"setWeight": i + 2}));
    }
    steps.push(json!({"pause": {}}));
    let spec =
        json!({"strategy": {"canary": {"steps": steps}}, "trafficRouting": {"gatewayAPI": {"httpRoute": "chat"}}});
    apis.roll_out("chat", &["v1"], 1, spec).await;
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    let first = wait_for(Duration::from_secs(60), || async {
        let md = apis.md.get("chat").await.ok()?;
        (md.status?.current_step_index == Some(1)).then_some(())
    })
    .await;
    assert!(first.is_some(), "the canary did not reach its first pause");

    let mut step_samples = Vec::new();
    for i in 0..runs {
        step_samples.push(time_until_weight(&apis, &routes, "rollguard.dev/promote", "true", i as i32 + 2).await);
        let paused = wait_for(Duration::from_secs(30), || async {
            let md = apis.md.get("chat").await.ok()?;
            let s = md.status?;
            (s.current_step_index == Some(2 * i as i32 + 3)
                && !md
                    .metadata
                    .annotations
                    .unwrap_or_default()
                    .contains_key("rollguard.dev/promote"))
            .then_some(())
        })
        .await;
        if paused.is_none() {
            let md = apis.md.get("chat").await.expect("get");
            panic!(
                "step {i}: the canary did not reach the next pause: {:?} {:?}",
                md.metadata.annotations,
                md.status.map(|s| (s.phase, s.message, s.current_step_index))
            );
        }
    }

    let mut abort_samples = Vec::new();
    for i in 0..runs {
        let version = format!("v{}", i + 3);
        apis.patch_spec("chat", json!({"model": {"version": version}})).await;
        let at_first = wait_for(Duration::from_secs(60), || async {
            let md = apis.md.get("chat").await.ok()?;
            let s = md.status?;
            (s.canary_weight == Some(1) && s.current_step_index == Some(1)).then_some(())
        })
        .await;
        if at_first.is_none() {
            let md = apis.md.get("chat").await.expect("get");
            let s = md.status.expect("status");
            panic!(
                "abort run {i}: the canary did not start: {:?} {:?} stable {:?} current {:?} history {:?}",
                s.phase,
                s.message,
                s.stable_revision,
                s.current_revision,
                s.history.iter().map(|h| (h.revision, h.phase)).collect::<Vec<_>>()
            );
        }
        abort_samples.push(time_until_weight(&apis, &routes, "rollguard.dev/abort", "true", 0).await);
    }

    println!("canary latency on a Gateway API HTTPRoute (release build, local control plane)");
    report(
        "step falls due (promote written) -> next weight visible on the route",
        step_samples,
    );
    report("abort annotation written -> 100% on stable on the route", abort_samples);
}
