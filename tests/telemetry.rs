//! The operator's own endpoints: /healthz, /readyz and /metrics, and the Events its recorder
//! publishes, against the local control plane.

mod support;

use std::time::Duration;

use rollguard::traffic::BackendKind;
use serde_json::json;
use support::httproute::*;
use support::telemetry::*;
use support::*;

#[tokio::test]
async fn health_and_metrics_endpoints_count_reconciles_and_rollbacks() {
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "telemetry").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    let op = Operator::start_with(&ns.name, &["--metrics-address", "127.0.0.1:0"]);
    let address = metrics_address(&op).await;
    let base = format!("http://{address}");
    let ok = |path: &'static str| {
        let url = format!("{base}{path}");
        async move { reqwest::get(&url).await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    assert_eq!(ok("/healthz").await, 200);
    let ready = wait_for(Duration::from_secs(30), || async {
        (ok("/readyz").await == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "/readyz never said ready");

    apis.roll_out("chat", &["v1", "v2"], 1, json!({})).await;
    apis.annotate("chat", "rollguard.dev/rollback-to", "previous").await;
    apis.wait_md("chat", "stable r1", Duration::from_secs(60), |md| {
        md.status.as_ref().is_some_and(|s| s.stable_revision == Some(1))
    })
    .await;
    let scrape = Scrape::of(&address).await;
    let reconciles = scrape.reconciles();
    let text = scrape.0;
    assert!(reconciles >= 3.0, "reconciles counted:\n{text}");
    assert_eq!(
        sample(&text, r#"rollguard_rollbacks_total{trigger="Manual"}"#),
        Some(1.0),
        "one manual rollback:\n{text}"
    );
    let count = sample(&text, "rollguard_reconcile_duration_seconds_count").unwrap_or(0.0);
    assert!(count >= reconciles, "durations observed:\n{text}");

    // Every request's latency is observed with its count: the lists (made when the caches
    // start, none since) match one for one, and took some time.
    let by_verb = |name: &str, verb: &str| -> f64 {
        samples(&text, name)
            .into_iter()
            .filter(|(labels, _)| labels.get("verb").map(String::as_str) == Some(verb))
            .map(|(_, v)| v)
            .sum()
    };
    let lists = by_verb("rollguard_kube_requests_total", "list");
    assert!(lists >= 1.0, "lists counted:\n{text}");
    assert_eq!(
        by_verb("rollguard_kube_request_duration_seconds_count", "list"),
        lists,
        "list latencies observed:\n{text}"
    );
    assert!(
        by_verb("rollguard_kube_request_duration_seconds_sum", "list") > 0.0,
        "list latencies add up to more than 0:\n{text}"
    );
}

/// A steady-state reconcile reads nothing from the API server (the traffic-split object
/// comes from the watch of its kind, everything else from the caches) and writes nothing; a
/// canary step reads nothing the caches hold.
#[tokio::test]
async fn a_steady_state_reconcile_makes_at_most_one_request_and_no_write() {
    steady_state_requests(BackendKind::Service, "requests").await;
}

/// The same on InferencePool backends: the pools come from their cache too.
#[tokio::test]
async fn a_steady_state_reconcile_on_inference_pools_makes_at_most_one_request_and_no_write() {
    steady_state_requests(BackendKind::InferencePool, "requests-pool").await;
}

async fn steady_state_requests(backend: BackendKind, prefix: &str) {
    let cluster = cluster().await;
    apply_router_crds(&cluster.client).await;
    let ns = TestNamespace::create(&cluster.client, prefix).await;
    let apis = Apis::new(&cluster.client, &ns.name).routing_to(backend);
    create_route(&apis).await;
    let op = Operator::start_with(&ns.name, &["--metrics-address", "127.0.0.1:0", "--resync-seconds", "1"]);
    let address = metrics_address(&op).await;
    let spec = json!({"strategy": {"canary": {"steps": [
                          {"setWeight": 20}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}]}},
                      "trafficRouting": routing(&apis)});
    apis.roll_out("chat", &["v1"], 1, spec).await;
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    wait_weight(&apis, 20).await;
    let paused_at = |index: i32| {
        move |md: &rollguard::api::ModelDeployment| {
            md.status
                .as_ref()
                .is_some_and(|s| s.phase == Some(rollguard::api::Phase::Paused) && s.current_step_index == Some(index))
        }
    };
    apis.wait_md("chat", "paused at step 1", Duration::from_secs(60), paused_at(1))
        .await;

    // One canary step: promote ends the pause; the route goes to 60 and the next pause opens.
    let cached = |verb: &str, resource: &str| {
        matches!(verb, "get" | "list")
            && [
                "modeldeployments",
                "deployments",
                "services",
                "controllerrevisions",
                "rollbackpolicies",
                "inferencepools",
            ]
            .contains(&resource)
    };
    let before = Scrape::of(&address).await;
    apis.annotate("chat", "rollguard.dev/promote", "true").await;
    wait_weight(&apis, 60).await;
    apis.wait_md("chat", "paused at step 3", Duration::from_secs(60), paused_at(3))
        .await;
    let after = Scrape::of(&address).await;
    let step_reconciles = after.reconciles() - before.reconciles();
    let step_cached_reads = after.requests(cached) - before.requests(cached);
    let step_route_reads = after.requests(|v, r| v == "get" && r == "httproutes")
        - before.requests(|v, r| v == "get" && r == "httproutes");
    println!(
        "canary step ({backend:?}): {step_reconciles} reconciles, {step_route_reads} route reads, {step_cached_reads} reads of cached kinds"
    );
    assert_eq!(
        step_cached_reads, 0.0,
        "a canary step read what the caches hold:\n{}",
        after.0
    );
    assert_eq!(
        step_route_reads, 0.0,
        "a canary step read the route from the API server, not from its watch:\n{}",
        after.0
    );

    // To the end, then a steady state: Healthy, resync every second.
    apis.annotate("chat", "rollguard.dev/promote", "true").await;
    apis.wait_healthy("chat", 2).await;
    let not_watch = |verb: &str, _: &str| verb != "watch";
    let writes = |verb: &str, _: &str| is_write(verb);
    // Settled once two reconciles in a row wrote nothing.
    let after_reconciles = |n: f64, from: f64| {
        let address = address.clone();
        async move {
            wait_for(Duration::from_secs(60), || async {
                let now = Scrape::of(&address).await;
                (now.reconciles() - from >= n).then_some(now)
            })
            .await
            .unwrap_or_else(|| panic!("{n} more reconciles within a minute"))
        }
    };
    let mut previous = Scrape::of(&address).await;
    let mut rounds = 0;
    let start = loop {
        let now = after_reconciles(2.0, previous.reconciles()).await;
        if now.requests(writes) == previous.requests(writes) {
            break now;
        }
        rounds += 1;
        assert!(rounds < 30, "the operator kept writing:\n{}", now.0);
        previous = now;
    };
    let end = after_reconciles(5.0, start.reconciles()).await;
    let reconciles = end.reconciles() - start.reconciles();
    let requests = end.requests(not_watch) - start.requests(not_watch);
    let written = end.requests(writes) - start.requests(writes);
    println!(
        "steady state ({backend:?}): {reconciles} reconciles, {requests} requests ({:.2} per reconcile), {written} writes",
        requests / reconciles
    );
    assert!(
        requests <= reconciles,
        "{requests} requests in {reconciles} steady-state reconciles:\n{}",
        end.0
    );
    assert_eq!(written, 0.0, "steady-state writes:\n{}", end.0);
    let route_reads = |s: &Scrape| s.requests(|v, r| v == "get" && r == "httproutes");
    assert_eq!(
        route_reads(&end) - route_reads(&start),
        0.0,
        "steady-state reconciles read the route from the API server, not from its watch:\n{}",
        end.0
    );
}

/// Events through the operator's recorder, on the real API server: a repeat of the same
/// happening becomes the next count of the Event already published (one object, a series);
/// another action is another Event; a repeat of an Event deleted meanwhile is published anew.
#[tokio::test]
async fn a_repeated_event_is_one_event_with_a_series_and_a_deleted_one_is_published_again() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::api::events::v1::Event as KubeEvent;
    use kube::api::{Api, DeleteParams, ListParams, PostParams};
    use kube::{Resource, ResourceExt};
    use rollguard::controller::recorder::{Event, Recorder};

    let cluster = cluster::cluster().await;
    let ns = cluster::TestNamespace::create(&cluster.client, "recorder").await;
    let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns.name);
    let subject: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "subject"}})).expect("a ConfigMap");
    let subject = maps
        .create(&PostParams::default(), &subject)
        .await
        .expect("the subject is created");
    let reference = subject.object_ref(&());
    let recorder = Recorder::new(cluster.client.clone(), "rollguard-test", None);
    let publish = |action: &'static str| {
        let (recorder, reference) = (recorder.clone(), reference.clone());
        async move {
            let happening = Event {
                warning: true,
                reason: "Tested".into(),
                action: action.into(),
                note: format!("note of {action}"),
            };
            recorder.publish(&happening, &reference).await
        }
    };
    let events: Api<KubeEvent> = Api::namespaced(cluster.client.clone(), &ns.name);
    let listed = |action: &'static str| {
        let events = events.clone();
        async move {
            let all = events.list(&ListParams::default()).await.expect("Events list");
            all.items
                .into_iter()
                .filter(|e| e.action.as_deref() == Some(action))
                .collect::<Vec<_>>()
        }
    };

    publish("first").await.expect("published");
    publish("first").await.expect("the repeat is published");
    publish("second").await.expect("published");
    let first = listed("first").await;
    assert_eq!(first.len(), 1, "a repeat is not a second Event: {first:?}");
    let first = &first[0];
    assert_eq!(
        first.series.as_ref().map(|s| s.count),
        Some(2),
        "the repeat is counted: {first:?}"
    );
    assert_eq!(first.type_.as_deref(), Some("Warning"));
    assert_eq!(first.reason.as_deref(), Some("Tested"));
    assert_eq!(first.note.as_deref(), Some("note of first"));
    assert_eq!(first.reporting_controller.as_deref(), Some("rollguard-test"));
    assert_eq!(
        first.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("subject")
    );
    let second = listed("second").await;
    assert_eq!(second.len(), 1, "another action is another Event: {second:?}");
    assert!(second[0].series.is_none(), "published once: {:?}", second[0]);
    assert_eq!(recorder.remembered(), 2);

    // The Event is gone from the API server (its TTL, or someone deleted it): the next
    // repeat is a new Event rather than a failed series update.
    events
        .delete(&first.name_any(), &DeleteParams::default())
        .await
        .expect("the Event is deleted");
    publish("first").await.expect("published again");
    let again = listed("first").await;
    assert_eq!(again.len(), 1, "{again:?}");
    assert_ne!(again[0].name_any(), first.name_any(), "a new Event");
    assert!(
        again[0].series.is_none(),
        "a new Event starts a new count: {:?}",
        again[0]
    );
}
