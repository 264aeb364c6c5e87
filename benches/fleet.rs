//! Benchmark: a fleet. N ModelDeployments on the local control plane, each with an SMI
//! TrafficSplit and one shared RollbackPolicy (a trigger evaluated against a real Prometheus
//! every 30 s), reconciled by the release build of the operator with `--resync-seconds 30`.
//! For each N it prints one row:
//!
//! - the time from the first create to every ModelDeployment Healthy;
//! - the operator's RSS: peak (VmHWM) and after a steady minute (VmRSS);
//! - a steady window (`ROLLGUARD_FLEET_STEADY_SECONDS`, default 60, after the fleet settled):
//!   API requests per second and writes, from the operator's own request counter, and
//!   requests per reconcile;
//! - a fleet-wide rollout to a new version (every canary stepping at once through
//!   25% → 5 s → 50% → 5 s → 100%): the time to every ModelDeployment Healthy on it, and
//!   the writes it took per member (the controller's own request counter, Events included);
//! - the CPU time the controller used over the whole run;
//! - abort latency, twice, of a sample of the fleet (every N/50th member): each member is
//!   aborted as soon as its TrafficSplit shows canary traffic, timed from the abort's write to
//!   100% on stable on the TrafficSplit (seen on a watch), p50/p99. First while only the
//!   sample rolls out (to v3) and the rest of the fleet resyncs; then while the whole fleet
//!   rolls out (to v4).
//!
//! With `--peer` (`make bench-peer`), the Argo Rollouts controller (hack/build-argo-rollouts.sh)
//! does the same work on the same control plane after rollguard: Rollouts with the same canary
//! steps and `trafficRouting.smi`, aborted with `status.abort=true` as its kubectl plugin
//! does, and the two are printed side by side with their ratio.
//!
//! `ROLLGUARD_FLEET_SIZES` (default `250,500,1000,2000`) lists the N. Fake nodes (1,000 pods
//! each) and a second Service IP range (a ServiceCIDR, 10.112.0.0/12) are added so every
//! pod and Service fits. `ROLLGUARD_FLEET_WRAP` (say `heaptrack -o /tmp/fleet`) runs the
//! operator under a profiler.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::prometheus::free_port;
use support::telemetry;
use support::*;

const STEPS_NOTE: &str = "25% → pause 5s → 50% → pause 5s → 100%";
const CREATE_CONCURRENCY: usize = 16;

fn split_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("split.smi-spec.io", "v1alpha4", "TrafficSplit"),
        "trafficsplits",
    )
}

fn rollout_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout"), "rollouts")
}

fn md_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("rollguard.dev", "v1alpha1", "ModelDeployment"),
        "modeldeployments",
    )
}

/// Which controller does the work.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Rollguard,
    Argo,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Rollguard => "rollguard",
            Kind::Argo => "Argo Rollouts v1.10.2",
        }
    }
    fn resource(self) -> ApiResource {
        match self {
            Kind::Rollguard => md_resource(),
            Kind::Argo => rollout_resource(),
        }
    }
}

/// The controller process, killed when dropped.
struct Controller {
    child: std::process::Child,
    metrics: String,
    log: std::path::PathBuf,
}

impl Drop for Controller {
    fn drop(&mut self) {
        // The whole process group: a profiler's wrapper and the operator under it.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Controller {
    fn start(kind: Kind, namespace: &str) -> Controller {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("fleet-{namespace}.log"));
        let file = std::fs::File::create(&log).expect("the controller's log file");
        let mut cmd = match kind {
            Kind::Rollguard => {
                // `ROLLGUARD_FLEET_WRAP="heaptrack -o /tmp/fleet"` runs the operator under a
                // profiler: its RSS and CPU figures are then the wrapper's, not the operator's.
                let wrap: Vec<String> = std::env::var("ROLLGUARD_FLEET_WRAP")
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                let mut c = match wrap.split_first() {
                    Some((program, args)) => {
                        let mut c = std::process::Command::new(program);
                        c.args(args).arg(env!("CARGO_BIN_EXE_rollguard"));
                        c
                    }
                    None => std::process::Command::new(env!("CARGO_BIN_EXE_rollguard")),
                };
                c.args(["run", "--namespace", namespace, "--resync-seconds", "30"])
                    .arg(format!("--metrics-address=127.0.0.1:{port}"))
                    .env("KUBECONFIG", kubeconfig_path());
                c
            }
            Kind::Argo => {
                let mut c = std::process::Command::new(argo_binary());
                // No client-side throttle (rollguard's client has none), no leader election
                // (rollguard runs without), the same resync, TrafficSplit v1alpha3 (the newest
                // it writes; the CRD serves it and v1alpha4 from one storage).
                c.args(["--kubeconfig"])
                    .arg(kubeconfig_path())
                    .args(["--namespaced", "--namespace", namespace, "--rollout-resync", "30"])
                    .args(["--leader-elect=false", "--qps", "1000", "--burst", "2000"])
                    .args(["--traffic-split-api-version", "v1alpha3", "--loglevel", "warn"])
                    .arg(format!("--metricsPort={port}"))
                    .arg(format!("--healthzPort={}", free_port()));
                c
            }
        };
        let child = std::os::unix::process::CommandExt::process_group(&mut cmd, 0)
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .expect("starting the controller");
        Controller {
            child,
            metrics: format!("http://127.0.0.1:{port}/metrics"),
            log,
        }
    }

    fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// CPU time (user and system) the controller used so far, in seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces, inside parentheses):
        // utime and stime are the 14th and 15th fields of the line.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / clock_ticks()
    }

    fn rss_mb(&self) -> f64 {
        self.status_kb("VmRSS:") as f64 / 1024.0
    }

    fn peak_mb(&self) -> f64 {
        self.status_kb("VmHWM:") as f64 / 1024.0
    }

    /// (requests, writes, reconciles) so far, from the controller's own counters.
    async fn counters(&self, kind: Kind) -> (f64, f64, f64) {
        let text = scrape(&self.metrics)
            .await
            .unwrap_or_else(|| panic!("scraping {}", self.metrics));
        let (requests, reconciles) = match kind {
            Kind::Rollguard => ("rollguard_kube_requests_total", "rollguard_reconciles_total"),
            Kind::Argo => ("controller_clientset_k8s_request_total", "rollout_reconcile_count"),
        };
        let all = telemetry::samples(&text, requests);
        let total = all.iter().map(|(_, v)| v).sum();
        let writes = all
            .iter()
            .filter(|(labels, _)| {
                labels
                    .get("verb")
                    .is_some_and(|v| telemetry::is_write(&v.to_ascii_lowercase()))
            })
            .map(|(_, v)| v)
            .sum();
        let done = telemetry::samples(&text, reconciles).iter().map(|(_, v)| v).sum();
        (total, writes, done)
    }

    /// (seconds, requests) of the API server's answers so far, from rollguard's request
    /// latency histogram; None for Argo Rollouts, which does not measure them.
    async fn answer_times(&self, kind: Kind) -> Option<(f64, f64)> {
        if kind == Kind::Argo {
            return None;
        }
        let text = scrape(&self.metrics).await?;
        // Watches stay open: only the requests that get an answer count.
        let sum = |name: &str| {
            telemetry::samples(&text, name)
                .iter()
                .filter(|(labels, _)| labels.get("verb").is_some_and(|v| v != "watch"))
                .map(|(_, v)| v)
                .sum::<f64>()
        };
        Some((
            sum("rollguard_kube_request_duration_seconds_sum"),
            sum("rollguard_kube_request_duration_seconds_count"),
        ))
    }

    async fn wait_serving(&self) {
        let up = wait_for(Duration::from_secs(60), || async {
            scrape(&self.metrics).await.map(|_| ())
        })
        .await;
        assert!(
            up.is_some(),
            "{} does not serve metrics:\n{}",
            self.metrics,
            self.log_tail()
        );
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

async fn scrape(url: &str) -> Option<String> {
    let response = reqwest::get(url).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

fn argo_binary() -> std::path::PathBuf {
    std::env::var("ROLLGUARD_ARGO_ROLLOUTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            panic!("ROLLGUARD_ARGO_ROLLOUTS is not set: run `make bench-peer` (it builds Argo Rollouts)")
        })
}

/// The objects of one kind in a namespace, from a watch, with whether each meets the goal.
#[derive(Clone)]
struct Tracker {
    inner: Arc<Mutex<TrackerState>>,
    changed: Arc<tokio::sync::Notify>,
}

type Goal = Box<dyn Fn(&Value) -> bool + Send>;

struct TrackerState {
    objects: HashMap<String, Value>,
    met: HashSet<String>,
    goal: Goal,
    /// Canary weight changes of TrafficSplits: name -> (when, weight).
    weights: HashMap<String, Vec<(Instant, i64)>>,
}

impl Tracker {
    fn start(api: Api<DynamicObject>, split: bool) -> Tracker {
        let tracker = Tracker {
            inner: Arc::new(Mutex::new(TrackerState {
                objects: HashMap::new(),
                met: HashSet::new(),
                goal: Box::new(|_| false),
                weights: HashMap::new(),
            })),
            changed: Arc::new(tokio::sync::Notify::new()),
        };
        let t = tracker.clone();
        tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default()).boxed();
            while let Ok(Some(event)) = events.try_next().await {
                let (obj, gone) = match event {
                    watcher::Event::Apply(o) | watcher::Event::InitApply(o) => (o, false),
                    watcher::Event::Delete(o) => (o, true),
                    _ => continue,
                };
                let name = obj.name_any();
                let value = serde_json::to_value(&obj).unwrap_or(Value::Null);
                let mut s = t.inner.lock().unwrap_or_else(|e| e.into_inner());
                if split {
                    let w = canary_weight(&value, &name);
                    let list = s.weights.entry(name.clone()).or_default();
                    if list.last().map(|(_, last)| *last) != Some(w) {
                        list.push((Instant::now(), w));
                    }
                }
                if gone {
                    s.objects.remove(&name);
                    s.met.remove(&name);
                } else {
                    if (s.goal)(&value) {
                        s.met.insert(name.clone());
                    } else {
                        s.met.remove(&name);
                    }
                    s.objects.insert(name, value);
                }
                drop(s);
                t.changed.notify_waiters();
            }
        });
        tracker
    }

    fn set_goal(&self, goal: Goal) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let met = s
            .objects
            .iter()
            .filter(|(_, v)| goal(v))
            .map(|(k, _)| k.clone())
            .collect();
        s.met = met;
        s.goal = goal;
    }

    fn met(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).met.len()
    }

    /// Waits until `n` objects meet the goal; the time it took from `since`.
    async fn wait_met(&self, n: usize, since: Instant, timeout: Duration, what: &str) -> Duration {
        let deadline = since + timeout;
        loop {
            let notified = self.changed.notified();
            if self.met() >= n {
                return since.elapsed();
            }
            if Instant::now() >= deadline {
                panic!("{what}: {} of {n} after {timeout:?}", self.met());
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
        }
    }

    fn weights(&self, name: &str) -> Vec<(Instant, i64)> {
        let s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.weights.get(name).cloned().unwrap_or_default()
    }
}

/// The weight of the backend `<name>-canary` of the TrafficSplit `name` (0 when absent).
fn canary_weight(split: &Value, name: &str) -> i64 {
    let canary = format!("{name}-canary");
    split["spec"]["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["service"] == canary.as_str())
        .and_then(|b| b["weight"].as_i64())
        .unwrap_or(0)
}

/// Whether the fleet object is Healthy on the version `v` (rollguard: revision `rev`).
fn healthy(kind: Kind, rev: i64, version: &str) -> Goal {
    let image = format!("vllm/vllm-openai:{version}");
    match kind {
        Kind::Rollguard => Box::new(move |o: &Value| {
            o["status"]["phase"] == "Healthy" && o["status"]["stableRevision"].as_i64() == Some(rev)
        }),
        Kind::Argo => Box::new(move |o: &Value| {
            let s = &o["status"];
            let generation = o["metadata"]["generation"].as_i64().map(|g| g.to_string());
            s["phase"] == "Healthy"
                && s["observedGeneration"].as_str().map(str::to_string) == generation
                && s["stableRS"] == s["currentPodHash"]
                && o["spec"]["template"]["spec"]["containers"][0]["image"] == image.as_str()
        }),
    }
}

fn md_name(i: usize) -> String {
    format!("m{i:05}")
}

fn steps() -> Value {
    json!([{"setWeight": 25}, {"pause": {"duration": "5s"}}, {"setWeight": 50}, {"pause": {"duration": "5s"}}, {"setWeight": 100}])
}

/// The resource of a fleet manifest's kind (no discovery: thousands are created).
fn resource_of(manifest: &Value) -> ApiResource {
    match manifest["kind"].as_str() {
        Some("TrafficSplit") => split_resource(),
        Some("ModelDeployment") => md_resource(),
        Some("Rollout") => rollout_resource(),
        Some("RollbackPolicy") => ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("rollguard.dev", "v1alpha1", "RollbackPolicy"),
            "rollbackpolicies",
        ),
        Some("Service") => ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Service"), "services"),
        other => panic!("no resource for {other:?}"),
    }
}

async fn create_dynamic(client: &Client, namespace: &str, manifest: Value) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource_of(&manifest));
    let obj: DynamicObject = serde_json::from_value(manifest).expect("a manifest");
    api.create(&PostParams::default(), &obj)
        .await
        .expect("creating a fleet object");
}

/// The objects of one member of the fleet, in creation order.
fn member(kind: Kind, name: &str, version: &str) -> Vec<Value> {
    let port = json!([{"name": "http", "port": 8000, "targetPort": 8000}]);
    let image = format!("vllm/vllm-openai:{version}");
    match kind {
        Kind::Rollguard => vec![
            json!({"apiVersion": "split.smi-spec.io/v1alpha4", "kind": "TrafficSplit", "metadata": {"name": name},
                   "spec": {"service": format!("{name}-apex"), "backends": [{"service": name, "weight": 100}]}}),
            json!({"apiVersion": "rollguard.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
                   "spec": {"model": {"name": "llama-3.1-8b-instruct", "version": version, "uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
                            "replicas": 1, "revisionHistoryLimit": 3, "warmRevisions": 1,
                            "template": {"spec": {"containers": [{"name": "vllm", "image": image}]}},
                            "strategy": {"canary": {"steps": steps()}},
                            "trafficRouting": {"smi": {"trafficSplit": name}},
                            "rollbackPolicyRef": {"name": "fleet"}}}),
        ],
        Kind::Argo => vec![
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                   "spec": {"selector": {"app": name}, "ports": port}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("{name}-canary")},
                   "spec": {"selector": {"app": name}, "ports": port}}),
            json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": name},
                   "spec": {"replicas": 1, "revisionHistoryLimit": 3,
                            "selector": {"matchLabels": {"app": name}},
                            "template": {"metadata": {"labels": {"app": name}},
                                         "spec": {"containers": [{"name": "vllm", "image": image}]}},
                            "strategy": {"canary": {"canaryService": format!("{name}-canary"), "stableService": name,
                                "trafficRouting": {"smi": {"rootService": format!("{name}-apex"), "trafficSplitName": name}},
                                "steps": steps()}}}}),
        ],
    }
}

/// Starts a rollout of every member to `version`.
/// Rolls the members `names` out to `version`.
async fn roll_out(kind: Kind, client: &Client, namespace: &str, names: Vec<String>, version: &str) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &kind.resource());
    let patch = match kind {
        Kind::Rollguard => json!({"spec": {"model": {"version": version},
            "template": {"spec": {"containers": [{"name": "vllm", "image": format!("vllm/vllm-openai:{version}")}]}}}}),
        Kind::Argo => {
            json!({"spec": {"template": {"spec": {"containers": [{"name": "vllm", "image": format!("vllm/vllm-openai:{version}")}]}}}})
        }
    };
    futures::stream::iter(names)
        .map(|name| {
            let (api, patch) = (api.clone(), patch.clone());
            async move {
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .expect("rolling a member out")
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
}

async fn abort(kind: Kind, client: &Client, namespace: &str, name: &str) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &kind.resource());
    match kind {
        Kind::Rollguard => {
            let patch = json!({"metadata": {"annotations": {"rollguard.dev/abort": "true"}}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await
        }
        Kind::Argo => {
            let patch = json!({"status": {"abort": true}});
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
        }
    }
    .expect("aborting");
}

/// Aborts each member of `sample` as soon as its TrafficSplit shows canary traffic (a
/// weight above 0 seen after this call began, within `timeout`) and returns, sorted, the times from each
/// abort's write to 100% on stable on its TrafficSplit (within `timeout` again: under a
/// fleet-wide rollout at N = 1,000 the slowest took 55 s).
async fn abort_sample(
    kind: Kind,
    client: &Client,
    namespace: &str,
    splits: &Tracker,
    sample: &[String],
    timeout: Duration,
) -> Vec<Duration> {
    let began = Instant::now();
    let mut aborts = futures::stream::iter(sample.iter().cloned())
        .map(|name| {
            let (client, ns, splits) = (client.clone(), namespace.to_string(), splits.clone());
            async move {
                loop {
                    let w = splits.weights(&name);
                    if w.last().is_some_and(|(at, w)| *w > 0 && *at >= began) {
                        break;
                    }
                    if began.elapsed() > timeout {
                        panic!("{name} had no canary traffic within {timeout:?}");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let written = Instant::now();
                abort(kind, &client, &ns, &name).await;
                let stable = wait_for(timeout, || async {
                    splits
                        .weights(&name)
                        .into_iter()
                        .find(|(at, w)| *at >= written && *w == 0)
                        .map(|(at, _)| at - written)
                })
                .await;
                stable.unwrap_or_else(|| panic!("{name}: no 100% on stable within {timeout:?} of the abort"))
            }
        })
        .buffer_unordered(sample.len().max(1))
        .collect::<Vec<_>>()
        .await;
    aborts.sort();
    aborts
}

/// One row of figures.
struct Row {
    n: usize,
    healthy: Duration,
    peak_mb: f64,
    settled_mb: f64,
    steady_rps: f64,
    steady_writes: f64,
    per_reconcile: f64,
    rollout: Duration,
    /// Writes per member during the fleet rollout (the controller's own request counter).
    rollout_writes: f64,
    /// CPU seconds the controller used in the whole run.
    cpu_seconds: f64,
    /// Aborts of the sample while the rest of the fleet resyncs.
    resync_abort: Aborts,
    /// Aborts of the sample while the whole fleet rolls out.
    busy_abort: Aborts,
}

/// Abort latencies of a sample.
struct Aborts {
    p50: Duration,
    p99: Duration,
    count: usize,
    /// The mean time the API server took to answer the controller's requests meanwhile
    /// (rollguard's own histogram; Argo Rollouts has no such metric).
    answer_ms: Option<f64>,
}

impl Aborts {
    /// Of sorted latencies.
    fn of(sorted: &[Duration], answer_ms: Option<f64>) -> Aborts {
        Aborts {
            p50: percentile(sorted, 50.0),
            p99: percentile(sorted, 99.0),
            count: sorted.len(),
            answer_ms,
        }
    }
}

async fn run_fleet(kind: Kind, client: &Client, prometheus: &str, n: usize) -> Row {
    let ns = TestNamespace::create(
        client,
        &format!("fleet-{}-{n}", if kind == Kind::Rollguard { "rg" } else { "argo" }),
    )
    .await;
    if kind == Kind::Rollguard {
        let policy = json!({"apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackPolicy", "metadata": {"name": "fleet"},
            "spec": {"provider": {"prometheus": {"address": prometheus}}, "interval": "30s",
                     "triggers": [{"name": "errors", "query": "vector(0)", "operator": "Gt", "threshold": 1, "severity": "Critical"}]}});
        create_dynamic(client, &ns.name, policy).await;
    }
    let controller = Controller::start(kind, &ns.name);
    controller.wait_serving().await;
    let fleet = Tracker::start(Api::namespaced_with(client.clone(), &ns.name, &kind.resource()), false);
    let splits = Tracker::start(Api::namespaced_with(client.clone(), &ns.name, &split_resource()), true);

    // Create the fleet.
    fleet.set_goal(healthy(kind, 1, "v1"));
    let begun = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let (client, ns) = (client.clone(), ns.name.clone());
            async move {
                for manifest in member(kind, &md_name(i), "v1") {
                    create_dynamic(&client, &ns, manifest).await;
                }
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let timeout = Duration::from_secs(600 + n as u64);
    let healthy_after = fleet.wait_met(n, begun, timeout, "Healthy after create").await;
    // Each figure as soon as it is measured (stderr): a run cut off still tells what it got.
    let started = Instant::now();
    let progress = |what: String| {
        eprintln!(
            "fleet {} N = {n} (+{:.0} s): {what}",
            kind.name(),
            started.elapsed().as_secs_f64()
        );
    };
    progress(format!(
        "Healthy after create {:.1} s, RSS {:.1} MB",
        healthy_after.as_secs_f64(),
        controller.rss_mb()
    ));

    // A steady window, after a resync period for the fleet to settle.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let window = Duration::from_secs(runs_from_env("ROLLGUARD_FLEET_STEADY_SECONDS", 60, 10, 3600) as u64);
    let (r0, w0, c0) = controller.counters(kind).await;
    tokio::time::sleep(window).await;
    let (r1, w1, c1) = controller.counters(kind).await;
    let settled_mb = controller.rss_mb();
    progress(format!(
        "steady {:.1} requests/s, {} writes, RSS settled {settled_mb:.1} MB",
        (r1 - r0) / window.as_secs_f64(),
        w1 - w0
    ));

    // A fleet-wide rollout.
    let everyone: Vec<String> = (0..n).map(md_name).collect();
    fleet.set_goal(healthy(kind, 2, "v2"));
    let begun = Instant::now();
    let (_, before, _) = controller.counters(kind).await;
    roll_out(kind, client, &ns.name, everyone.clone(), "v2").await;
    let rollout = fleet.wait_met(n, begun, timeout, "Healthy on v2").await;
    let (_, after, _) = controller.counters(kind).await;
    progress(format!(
        "fleet rollout {:.1} s, {:.1} writes per member, RSS peak {:.1} MB",
        rollout.as_secs_f64(),
        (after - before) / n as f64,
        controller.peak_mb()
    ));
    let abort_figures = |sorted: &[Duration]| {
        format!(
            "{} aborts, p50 / p99 {} / {} ms",
            sorted.len(),
            percentile(sorted, 50.0).as_millis(),
            percentile(sorted, 99.0).as_millis()
        )
    };

    // Aborts while the rest of the fleet only resyncs: the sample alone rolls out to v3, and
    // each member is aborted as soon as it has canary traffic.
    let sample: Vec<String> = (0..n).step_by((n / 50).max(1)).map(md_name).collect();
    let rolled = {
        let (client, ns, sample) = (client.clone(), ns.name.clone(), sample.clone());
        tokio::spawn(async move { roll_out(kind, &client, &ns, sample, "v3").await })
    };
    let answers = controller.answer_times(kind).await;
    let resync_aborts = abort_sample(kind, client, &ns.name, &splits, &sample, timeout).await;
    progress(format!("while the rest resyncs: {}", abort_figures(&resync_aborts)));
    rolled.await.expect("the sample's rollout");

    // Aborts while the whole fleet rolls out to v4.
    let rolled = {
        let (client, ns) = (client.clone(), ns.name.clone());
        tokio::spawn(async move { roll_out(kind, &client, &ns, everyone, "v4").await })
    };
    let resync_answers = controller.answer_times(kind).await;
    let busy_aborts = abort_sample(kind, client, &ns.name, &splits, &sample, timeout).await;
    let busy_answers = controller.answer_times(kind).await;
    let mean_ms = |from: Option<(f64, f64)>, to: Option<(f64, f64)>| match (from, to) {
        (Some((s0, c0)), Some((s1, c1))) if c1 > c0 => Some((s1 - s0) / (c1 - c0) * 1e3),
        _ => None,
    };
    progress(format!("while the fleet rolls out: {}", abort_figures(&busy_aborts)));
    rolled.await.expect("the second fleet-wide rollout");
    let peak_mb = controller.peak_mb();
    let cpu_seconds = controller.cpu_seconds();
    drop(controller);
    drop(fleet);
    drop(splits);
    let nsname = ns.name.clone();
    drop(ns);
    progress(format!(
        "RSS peak {peak_mb:.1} MB, CPU {cpu_seconds:.0} s; deleting the namespace"
    ));
    wait_namespace_gone(client, &nsname, n).await;
    let secs = window.as_secs_f64();
    Row {
        n,
        healthy: healthy_after,
        peak_mb,
        settled_mb,
        steady_rps: (r1 - r0) / secs,
        steady_writes: w1 - w0,
        per_reconcile: if c1 > c0 { (r1 - r0) / (c1 - c0) } else { f64::NAN },
        rollout,
        rollout_writes: (after - before) / n as f64,
        cpu_seconds,
        resync_abort: Aborts::of(&resync_aborts, mean_ms(answers, resync_answers)),
        busy_abort: Aborts::of(&busy_aborts, mean_ms(resync_answers, busy_answers)),
    }
}

/// Waits for the namespace of a fleet of `n` to be deleted: 15 minutes, and a second more per
/// member above 900 (the garbage collector deletes every member's Deployments, ReplicaSets
/// and Pods).
async fn wait_namespace_gone(client: &Client, name: &str, n: usize) {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let limit = Duration::from_secs(900 + n.saturating_sub(900) as u64);
    let gone = wait_gone(&api, name, limit).await;
    assert!(gone, "namespace {name} was not deleted within {limit:?}");
}

/// Fake nodes for `pods` pods (1,000 each), and a second Service IP range.
async fn make_room(client: &Client, pods: usize) {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    for i in 0..pods.div_ceil(1000) {
        let name = format!("fleet-node-{i}");
        let node = json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                         "labels": {"type": "kwok", "kubernetes.io/hostname": name}},
            "status": {"allocatable": {"cpu": "1000", "memory": "4Ti", "pods": "1000"},
                       "capacity": {"cpu": "1000", "memory": "4Ti", "pods": "1000"}}});
        nodes
            .patch(
                &name,
                &PatchParams::apply("rollguard-bench").force(),
                &Patch::Apply(&node),
            )
            .await
            .expect("a fake node");
    }
    let cidr = json!({"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR", "metadata": {"name": "rollguard-fleet"},
                      "spec": {"cidrs": ["10.112.0.0/12"]}});
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.k8s.io", "v1", "ServiceCIDR"),
        "servicecidrs",
    );
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let obj: DynamicObject = serde_json::from_value(cidr).expect("ServiceCIDR");
    api.patch(
        "rollguard-fleet",
        &PatchParams::apply("rollguard-bench").force(),
        &Patch::Apply(&obj),
    )
    .await
    .expect("a second Service IP range");
}

async fn apply_argo_crds(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let dir = argo_binary()
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("crds"))
        .expect("the Argo Rollouts cache directory");
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a CRD file").path();
        for doc in read_yaml_documents(&path) {
            let crd: CustomResourceDefinition =
                serde_json::from_value(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            apply_crd(client, &crd).await;
        }
    }
}

/// Argo Rollouts writes TrafficSplits as `v1alpha1`..`v1alpha3`; the SMI CRD installed here
/// serves `v1alpha4`. The same schema is served as `v1alpha3` too (no conversion: the fields
/// both read, `service` and `backends[].{service,weight}`, are the same), stored as v1alpha4.
async fn serve_split_v1alpha3(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = "trafficsplits.split.smi-spec.io";
    let mut crd = api.get(name).await.expect("the TrafficSplit CRD");
    if !crd.spec.versions.iter().any(|v| v.name == "v1alpha3") {
        let mut v3 = crd.spec.versions[0].clone();
        v3.name = "v1alpha3".into();
        v3.storage = false;
        crd.spec.versions.push(v3);
        crd.metadata.managed_fields = None;
        api.replace(name, &PostParams::default(), &crd)
            .await
            .expect("serving TrafficSplit v1alpha3");
    }
    let served = wait_object(&api, name, Duration::from_secs(60), crd_established).await;
    assert!(served.is_some(), "TrafficSplit v1alpha3 is not served");
}

fn print_rows(kind: Kind, rows: &[Row]) {
    println!(
        "\n{} (release build; canary steps {STEPS_NOTE}; resync 30 s)",
        kind.name()
    );
    println!(
        "{:>6} | {:>10} | {:>9} | {:>11} | {:>8} | {:>6} | {:>8} | {:>10} | {:>8} | {:>7} | {:>26} | {:>26}",
        "N",
        "Healthy",
        "RSS peak",
        "RSS settled",
        "req/s",
        "writes",
        "req/rec",
        "rollout",
        "wr/memb",
        "CPU",
        "abort p50/p99, resyncing",
        "abort p50/p99, rolling out"
    );
    let aborts = |a: &Aborts| format!("{} / {} (of {})", ms(a.p50), ms(a.p99), a.count);
    for r in rows {
        let per_reconcile = if r.per_reconcile.is_nan() {
            "no rec.".to_string()
        } else {
            format!("{:.2}", r.per_reconcile)
        };
        println!(
            "{:>6} | {:>8.1} s | {:>6.1} MB | {:>8.1} MB | {:>8.1} | {:>6} | {:>8} | {:>8.1} s | {:>8.1} | {:>5.0} s | {:>26} | {:>26}",
            r.n,
            r.healthy.as_secs_f64(),
            r.peak_mb,
            r.settled_mb,
            r.steady_rps,
            r.steady_writes,
            per_reconcile,
            r.rollout.as_secs_f64(),
            r.rollout_writes,
            r.cpu_seconds,
            aborts(&r.resync_abort),
            aborts(&r.busy_abort),
        );
    }
    for r in rows {
        if let (Some(resync), Some(busy)) = (r.resync_abort.answer_ms, r.busy_abort.answer_ms) {
            println!(
                "N={}: the API server answered the operator's requests in {resync:.0} ms on average while the sample was aborted during resyncs, {busy:.0} ms during the fleet rollout",
                r.n
            );
        }
    }
    if rows.len() >= 2 {
        let (a, b) = (&rows[0], &rows[rows.len() - 1]);
        let per = (b.settled_mb - a.settled_mb) * 1024.0 * 1024.0 / (b.n - a.n) as f64;
        println!(
            "RSS growth (settled) from N={} to N={}: {:.1} KB per member",
            a.n,
            b.n,
            per / 1024.0
        );
    }
}

fn print_side_by_side(ours: &[Row], theirs: &[Row]) {
    println!("\nSide by side (ratio = Argo Rollouts / rollguard; above 1 means rollguard is ahead)");
    println!(
        "{:>6} | {:<34} | {:>14} | {:>14} | {:>7}",
        "N", "figure", "rollguard", "Argo Rollouts", "ratio"
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (a, b) in ours.iter().zip(theirs) {
        let rows: [(&str, f64, f64); 8] = [
            (
                "Healthy after create (s)",
                a.healthy.as_secs_f64(),
                b.healthy.as_secs_f64(),
            ),
            ("RSS peak (MB)", a.peak_mb, b.peak_mb),
            ("RSS settled (MB)", a.settled_mb, b.settled_mb),
            ("steady API requests/s", a.steady_rps, b.steady_rps),
            ("steady writes", a.steady_writes, b.steady_writes),
            ("fleet rollout (s)", a.rollout.as_secs_f64(), b.rollout.as_secs_f64()),
            ("writes per member in the rollout", a.rollout_writes, b.rollout_writes),
            ("controller CPU, whole run (s)", a.cpu_seconds, b.cpu_seconds),
        ];
        let mut rows: Vec<(String, f64, f64)> = rows.into_iter().map(|(w, x, y)| (w.to_string(), x, y)).collect();
        for (when, ours, theirs) in [
            ("fleet resyncing", &a.resync_abort, &b.resync_abort),
            ("fleet rolling out", &a.busy_abort, &b.busy_abort),
        ] {
            rows.push((format!("abort p50, {when} (ms)"), ms(ours.p50), ms(theirs.p50)));
            rows.push((format!("abort p99, {when} (ms)"), ms(ours.p99), ms(theirs.p99)));
        }
        rows.push((
            "aborts timed".into(),
            a.busy_abort.count as f64,
            b.busy_abort.count as f64,
        ));
        for (what, x, y) in rows {
            let ratio = if x > 0.0 { format!("{:.2}", y / x) } else { "n/a".into() };
            println!("{:>6} | {:<34} | {:>14.1} | {:>14.1} | {:>7}", a.n, what, x, y, ratio);
        }
    }
    println!(
        "Not the same work: rollguard also evaluates one trigger per ModelDeployment every 30 s \
         against Prometheus and keeps the previous revision warm; the Argo Rollouts runs use no \
         analysis. Requests per reconcile are not compared: Argo Rollouts counts its reconciles \
         per Rollout key, rollguard per ModelDeployment, but one Argo reconcile can be a resync \
         that does nothing. Argo Rollouts resyncs every Rollout at the same moment (its informer's \
         period), rollguard each ModelDeployment 30 s after its last reconcile: a steady window \
         shorter than 30 s can hold no Argo resync (req/rec \"no rec.\")."
    );
}

#[tokio::main]
async fn main() {
    let peer = std::env::args().any(|a| a == "--peer");
    let sizes: Vec<usize> = std::env::var("ROLLGUARD_FLEET_SIZES")
        .unwrap_or_else(|_| "250,500,1000,2000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let cluster = cluster().await;
    apply_upstream_router_crds(&cluster.client).await;
    if peer {
        apply_argo_crds(&cluster.client).await;
        serve_split_v1alpha3(&cluster.client).await;
    }
    let largest = sizes.iter().copied().max().unwrap_or(0);
    make_room(&cluster.client, largest * 4).await;
    let prometheus = support::prometheus::PrometheusServer::start(&[]).await;
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for &n in &sizes {
        let row = run_fleet(Kind::Rollguard, &cluster.client, &prometheus.address, n).await;
        print_rows(Kind::Rollguard, std::slice::from_ref(&row));
        ours.push(row);
        if peer {
            let row = run_fleet(Kind::Argo, &cluster.client, &prometheus.address, n).await;
            print_rows(Kind::Argo, std::slice::from_ref(&row));
            theirs.push(row);
        }
    }
    println!("\n=== fleet benchmark, {} ===", date());
    print_rows(Kind::Rollguard, &ours);
    if peer {
        print_rows(Kind::Argo, &theirs);
        print_side_by_side(&ours, &theirs);
    }
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when it cannot be asked).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn date() -> String {
    std::process::Command::new("date")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
