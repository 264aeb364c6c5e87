//! Test support for tests against the local control plane (`make cluster-up`).
//!
//! [`cluster`] connects to it and applies the CRDs; [`TestNamespace`] gives each test its own
//! namespace, deleted when the test ends, pass or fail. A missing cluster fails the test with
//! a message that says how to start one: a test never passes without its cluster.
#![allow(dead_code)]

pub mod httproute;
pub mod prometheus;
pub mod sim;
pub mod slow_provider;
pub mod telemetry;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Client, Config, Discovery};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The kubeconfig of the local control plane: `ROLLGUARD_TEST_KUBECONFIG`, else
/// `.local-cluster/kubeconfig` in the repository.
pub fn kubeconfig_path() -> PathBuf {
    std::env::var_os("ROLLGUARD_TEST_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".local-cluster/kubeconfig"))
}

/// The kubectl to run: `ROLLGUARD_KUBECTL`, else `kubectl` on PATH.
pub fn kubectl_path() -> PathBuf {
    std::env::var_os("ROLLGUARD_KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("kubectl"))
}

fn no_cluster(detail: impl std::fmt::Display) -> ! {
    panic!(
        "\n\nthis test needs the local control plane, and it is not reachable: {detail}\n\
         start it with `make cluster-up` (or run everything with `make test`).\n\
         kubeconfig looked for: {}\n",
        kubeconfig_path().display()
    )
}

/// A client for the kubeconfig at `path`.
pub async fn client_for(path: &Path) -> Result<Client, String> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("bad kubeconfig {}: {e}", path.display()))?;
    Client::try_from(config).map_err(|e| format!("cannot build a client: {e}"))
}

/// The local control plane, with the CRDs applied and Established.
pub struct Cluster {
    pub client: Client,
}

/// Connects to the local control plane and applies the CRDs from `crds/`.
/// Panics with instructions when there is no cluster.
pub async fn cluster() -> Cluster {
    let path = kubeconfig_path();
    if !path.exists() {
        no_cluster(format!("{} does not exist", path.display()));
    }
    let client = client_for(&path).await.unwrap_or_else(|e| no_cluster(e));
    if let Err(e) = client.apiserver_version().await {
        no_cluster(format!("the API server does not answer: {e}"));
    }
    apply_crds(&client).await;
    Cluster { client }
}

/// Server-side applies every CRD in `crds/` and waits until each is Established.
pub async fn apply_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds_from_repo() {
        let name = crd.metadata.name.clone().expect("CRD in crds/ has a name");
        api.patch(
            &name,
            &PatchParams::apply("rollguard-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        wait_for(Duration::from_secs(30), || async {
            api.get(&name).await.ok().filter(crd_established).map(|_| ())
        })
        .await
        .unwrap_or_else(|| panic!("CRD {name} did not become Established within 30s"));
    }
}

/// Whether a CRD has the condition Established=True.
pub fn crd_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
}

/// The CRDs committed in `crds/`.
pub fn crds_from_repo() -> Vec<CustomResourceDefinition> {
    let mut out = Vec::new();
    for path in yaml_files(&repo_root().join("crds")) {
        for doc in read_yaml_documents(&path) {
            out.push(serde_json::from_value(doc).unwrap_or_else(|e| panic!("{}: not a CRD: {e}", path.display())));
        }
    }
    out
}

/// The `.yaml`/`.yml` files of a directory, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

/// The non-empty YAML documents of a file, as JSON values.
pub fn read_yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    parse_yaml_documents(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The non-empty documents of a multi-document YAML string.
pub fn parse_yaml_documents(text: &str) -> Result<Vec<serde_json::Value>, serde_yaml::Error> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_json::Value::deserialize(doc)?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

/// A duration in milliseconds with one decimal, for benchmark output.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// How many runs a benchmark makes: the environment variable `var`, else `default`, kept
/// within `min..=max`.
pub fn runs_from_env(var: &str, default: usize, min: usize, max: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .clamp(min, max)
}

/// Polls `f` every 100 ms until it returns Some, or `timeout` passes.
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Nearest-rank percentile of sorted samples (benchmarks).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// A namespace of one test, deleted when dropped.
pub struct TestNamespace {
    pub name: String,
}

static NAMESPACE_COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestNamespace {
    /// Creates `rg-<prefix>-<unique>`.
    pub async fn create(client: &Client, prefix: &str) -> TestNamespace {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = NAMESPACE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut prefix: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        prefix.truncate(40);
        let name = format!(
            "rg-{}-{:x}{:x}{}",
            prefix.trim_matches('-'),
            std::process::id(),
            nanos,
            n
        );
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("rollguard.dev/test".to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating test namespace {name}: {e}"));
        TestNamespace { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        delete_blocking::<Namespace>(&self.name);
    }
}

/// Deletes a cluster-scoped object from a thread with its own runtime: Drop cannot await,
/// and this also runs when the test panicked.
pub fn delete_blocking<K>(name: &str)
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
    K::DynamicType: Default,
{
    let name = name.to_string();
    let path = kubeconfig_path();
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        rt.block_on(async move {
            if let Ok(client) = client_for(&path).await {
                let _ = Api::<K>::all(client).delete(&name, &DeleteParams::background()).await;
            }
        });
    })
    .join();
}

/// An `Api<DynamicObject>` for the kind of a manifest (apiVersion + kind), in `namespace`.
pub async fn dynamic_api(client: &Client, manifest: &serde_json::Value, namespace: &str) -> Api<DynamicObject> {
    let api_version = manifest["apiVersion"].as_str().expect("manifest has apiVersion");
    let kind = manifest["kind"].as_str().expect("manifest has kind");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let discovery = Discovery::new(client.clone())
        .filter(&[group])
        .run()
        .await
        .unwrap_or_else(|e| panic!("API discovery of group {group:?}: {e}"));
    let (resource, _) = discovery
        .resolve_gvk(&gvk)
        .unwrap_or_else(|| panic!("the API server does not serve {api_version} {kind}"));
    Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::from_gvk_with_plural(&gvk, &resource.plural),
    )
}

/// A running `rollguard run`, killed when dropped. Its log goes to a file.
pub struct Operator {
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl Operator {
    /// Starts the operator binary of this build against the local cluster, watching `namespace`.
    pub fn start(namespace: &str) -> Operator {
        Operator::start_with(namespace, &[])
    }

    /// Starts it with extra arguments (for example `--resync-seconds 1`).
    pub fn start_with(namespace: &str, extra: &[&str]) -> Operator {
        Operator::start_as(namespace, &kubeconfig_path(), extra)
    }

    /// Starts it with the identity of `kubeconfig` (such as a ServiceAccount token).
    pub fn start_as(namespace: &str, kubeconfig: &Path, extra: &[&str]) -> Operator {
        let log = std::env::temp_dir().join(format!(
            "rollguard-{namespace}-{}.log",
            NAMESPACE_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&log).expect("creating the operator log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_rollguard"))
            .args(["run", "--namespace", namespace])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn,rollguard=debug")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .expect("starting the rollguard binary");
        Operator { child, log }
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- operator log ({}) ----\n{}", self.log.display(), self.log_text());
        }
    }
}

// ----- ModelDeployment helpers ---------------------------------------------------------

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::core::v1::Service;
use rollguard::api::ModelDeployment;

/// A blue/green ModelDeployment `name` serving `version`, with `replicas` pods; `extra` is
/// merged into the spec (JSON merge semantics, one level deep).
pub fn model_deployment(name: &str, version: &str, replicas: i32, extra: serde_json::Value) -> ModelDeployment {
    let mut spec = serde_json::json!({
        "model": {"name": "llama-3.1-8b-instruct", "version": version, "uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
        "replicas": replicas,
        "template": {"spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0"}]}},
        "strategy": {"blueGreen": {"autoPromote": true}},
        "revisionHistoryLimit": 3,
        "warmRevisions": 1,
        "progressDeadlineSeconds": 600
    });
    if let (Some(obj), serde_json::Value::Object(extra)) = (spec.as_object_mut(), extra) {
        obj.extend(extra);
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "rollguard.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("a valid ModelDeployment")
}

/// Typed APIs of one test namespace.
pub struct Apis {
    pub md: Api<ModelDeployment>,
    pub deployments: Api<Deployment>,
    pub services: Api<Service>,
    pub revisions: Api<ControllerRevision>,
    pub client: Client,
    pub namespace: String,
}

impl Apis {
    pub fn new(client: &Client, namespace: &str) -> Apis {
        Apis {
            md: Api::namespaced(client.clone(), namespace),
            deployments: Api::namespaced(client.clone(), namespace),
            services: Api::namespaced(client.clone(), namespace),
            revisions: Api::namespaced(client.clone(), namespace),
            client: client.clone(),
            namespace: namespace.to_string(),
        }
    }

    pub async fn create(&self, md: &ModelDeployment) -> ModelDeployment {
        self.md
            .create(&PostParams::default(), md)
            .await
            .expect("creating the ModelDeployment")
    }

    /// Merge-patches the spec.
    pub async fn patch_spec(&self, name: &str, spec: serde_json::Value) {
        self.md
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": spec})),
            )
            .await
            .expect("patching spec");
    }

    /// Sets an annotation, as `kubectl annotate --overwrite` does.
    pub async fn annotate(&self, name: &str, key: &str, value: &str) {
        let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
        self.md
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect("annotating");
    }

    /// Creates `name` at `versions[0]` and rolls out each later version in turn, waiting
    /// until each is Healthy (revision i+1). Returns the last state.
    pub async fn roll_out(
        &self,
        name: &str,
        versions: &[&str],
        replicas: i32,
        extra: serde_json::Value,
    ) -> ModelDeployment {
        self.create(&model_deployment(name, versions[0], replicas, extra)).await;
        let mut md = self.wait_healthy(name, 1).await;
        for (i, v) in versions.iter().enumerate().skip(1) {
            self.patch_spec(name, serde_json::json!({"model": {"version": v}}))
                .await;
            md = self.wait_healthy(name, i as i64 + 1).await;
        }
        md
    }

    /// Waits until `pred` holds for the ModelDeployment, and returns it.
    pub async fn wait_md<F>(&self, name: &str, what: &str, timeout: Duration, pred: F) -> ModelDeployment
    where
        F: Fn(&ModelDeployment) -> bool,
    {
        let mut last = None;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(md) = self.md.get(name).await {
                if pred(&md) {
                    return md;
                }
                last = Some(md);
            }
            if tokio::time::Instant::now() >= deadline {
                let status = last
                    .and_then(|m| m.status)
                    .map(|s| serde_json::to_string_pretty(&s).unwrap_or_default());
                panic!("timed out after {timeout:?} waiting for {name}: {what}; last status: {status:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the operator removed the annotation `key`.
    pub async fn wait_consumed(&self, name: &str, key: &str) -> ModelDeployment {
        self.wait_md(
            name,
            &format!("annotation {key} consumed"),
            Duration::from_secs(60),
            |md| !md.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(key)),
        )
        .await
    }

    /// Waits until the stable revision is `rev` and the phase is Healthy.
    pub async fn wait_healthy(&self, name: &str, rev: i64) -> ModelDeployment {
        self.wait_md(
            name,
            &format!("Healthy on revision {rev}"),
            Duration::from_secs(60),
            |md| {
                md.status
                    .as_ref()
                    .is_some_and(|s| s.stable_revision == Some(rev) && s.phase == Some(rollguard::api::Phase::Healthy))
            },
        )
        .await
    }

    /// The revision the Service selects.
    pub async fn service_revision(&self, service: &str) -> Option<i64> {
        let svc = self.services.get_opt(service).await.expect("reading Service")?;
        svc.spec?.selector?.get("rollguard.dev/revision")?.parse().ok()
    }

    /// Runs `act` and returns how long after it started the Service `service` selected
    /// `revision` (seen through a watch opened before `act`); panics after 30 s.
    pub async fn time_until_selects<F: std::future::Future<Output = ()>>(
        &self,
        service: &str,
        revision: i64,
        act: F,
    ) -> Duration {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, watcher};
        let watch = watcher(
            self.services.clone(),
            watcher::Config::default().fields(&format!("metadata.name={service}")),
        )
        .applied_objects()
        .boxed();
        let mut watch = watch.peekable();
        // The first event is the current state; wait for it so the watch is established.
        let _ = std::pin::Pin::new(&mut watch).peek().await;
        let wanted = revision.to_string();
        let start = std::time::Instant::now();
        act.await;
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(Ok(svc)) = watch.next().await {
                let selected = svc
                    .spec
                    .and_then(|s| s.selector)
                    .and_then(|s| s.get("rollguard.dev/revision").cloned());
                if selected.as_deref() == Some(wanted.as_str()) {
                    return Some(start.elapsed());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("the Service {service} did not select revision {revision} within 30s"))
    }

    /// `spec.replicas` of a Deployment, None when it does not exist.
    pub async fn deployment_replicas(&self, name: &str) -> Option<i32> {
        let d = self.deployments.get_opt(name).await.expect("reading Deployment")?;
        d.spec.replicas
    }

    /// The Events about a ModelDeployment with the given reason (Normal and Warning).
    pub async fn events(&self, name: &str, reason: &str) -> Vec<k8s_openapi::api::events::v1::Event> {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), &self.namespace);
        api.list(&Default::default())
            .await
            .expect("listing Events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect()
    }

    /// Waits up to 60 s for an Event `reason` about `name`, of type `type_` (any when None).
    pub async fn wait_event(
        &self,
        name: &str,
        reason: &str,
        type_: Option<&str>,
    ) -> Option<k8s_openapi::api::events::v1::Event> {
        wait_for(Duration::from_secs(60), || async {
            self.events(name, reason)
                .await
                .into_iter()
                .find(|e| type_.is_none() || e.type_.as_deref() == type_)
        })
        .await
    }
}

/// The condition `type_` of a ModelDeployment: (status, reason, message).
pub fn condition(md: &ModelDeployment, type_: &str) -> Option<(String, String, String)> {
    md.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// A fake node of one test, managed by kwok, deleted when dropped.
pub struct FakeNode {
    pub name: String,
}

impl FakeNode {
    /// Creates a Ready kwok node labelled `rollguard.dev/test-node=<name>`.
    pub async fn create(client: &Client, name: &str) -> FakeNode {
        let mut name: String = name.chars().take(60).collect();
        name = name.trim_end_matches('-').to_string();
        let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {"type": "kwok", "rollguard.dev/test-node": name, "kubernetes.io/hostname": name}},
            "status": {"allocatable": {"cpu": "64", "memory": "512Gi", "pods": "250"},
                       "capacity": {"cpu": "64", "memory": "512Gi", "pods": "250"}}
        }))
        .expect("node manifest");
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("creating the fake node");
        let ready = wait_for(Duration::from_secs(60), || async {
            let n = nodes.get(&name).await.ok()?;
            let ready = n
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some(())
        })
        .await;
        assert!(ready.is_some(), "fake node {name} did not become Ready");
        FakeNode { name }
    }

    /// Marks the node unschedulable (or schedulable again).
    pub async fn cordon(&self, client: &Client, unschedulable: bool) {
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
        let patch = serde_json::json!({"spec": {"unschedulable": unschedulable}});
        nodes
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect("cordoning");
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        delete_blocking::<k8s_openapi::api::core::v1::Node>(&self.name);
    }
}

// ----- router CRDs ---------------------------------------------------------------------

/// The route object `name` in `ns`, splitting traffic between the Services `chat` and
/// `chat-canary` (the ModelDeployment `chat` of the tests).
pub fn route_target(ns: &str, name: &str) -> rollguard::traffic::Target {
    rollguard::traffic::Target {
        namespace: ns.to_string(),
        name: name.to_string(),
        backends: rollguard::traffic::Backends {
            stable: "chat".into(),
            canary: "chat-canary".into(),
        },
        routes: Vec::new(),
    }
}

/// Installs the upstream CRDs of HTTPRoute, TrafficSplit and VirtualService, taken from the
/// projects' Go modules by `hack/router-crds.sh`, and waits until they are Established.
/// SMI's module ships its CRD as `apiextensions.k8s.io/v1beta1`, which Kubernetes no longer
/// serves; it is converted mechanically to `v1`, keeping the served versions and the schema.
pub async fn apply_router_crds(client: &Client) {
    let out = std::process::Command::new("bash")
        .arg(repo_root().join("hack/router-crds.sh"))
        .output()
        .expect("running hack/router-crds.sh");
    assert!(
        out.status.success(),
        "hack/router-crds.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for path in String::from_utf8_lossy(&out.stdout).lines() {
        for doc in read_yaml_documents(Path::new(path)) {
            let doc = crd_v1(doc);
            if doc["kind"] != "CustomResourceDefinition" {
                continue;
            }
            let crd: CustomResourceDefinition =
                serde_json::from_value(doc).unwrap_or_else(|e| panic!("{path}: not a CRD: {e}"));
            let name = crd.metadata.name.clone().expect("CRD name");
            api.patch(
                &name,
                &PatchParams::apply("rollguard-tests").force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap_or_else(|e| panic!("applying CRD {name} from {path}: {e}"));
        }
    }
    for name in [
        "httproutes.gateway.networking.k8s.io",
        "trafficsplits.split.smi-spec.io",
        "virtualservices.networking.istio.io",
    ] {
        let ok = wait_for(Duration::from_secs(60), || async {
            api.get(name).await.ok().filter(crd_established)
        })
        .await;
        assert!(ok.is_some(), "CRD {name} did not become Established");
    }
}

/// A CRD as `apiextensions.k8s.io/v1`: v1beta1 documents are converted (top-level
/// validation, subresources and printer columns move into each served version).
pub fn crd_v1(mut doc: serde_json::Value) -> serde_json::Value {
    if doc["apiVersion"] != "apiextensions.k8s.io/v1beta1" {
        return doc;
    }
    let spec = doc["spec"].take();
    let schema = spec
        .pointer("/validation/openAPIV3Schema")
        .cloned()
        .map(|mut s| {
            if s.get("type").is_none() {
                s["type"] = serde_json::json!("object");
            }
            s
        })
        .unwrap_or_else(|| serde_json::json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    let columns: Vec<serde_json::Value> = spec["additionalPrinterColumns"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut c| {
            if let Some(path) = c.as_object_mut().and_then(|o| o.remove("JSONPath")) {
                c["jsonPath"] = path;
            }
            c
        })
        .collect();
    let versions: Vec<serde_json::Value> = spec["versions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|v| v["served"] == true)
        .map(|mut v| {
            v["schema"] = serde_json::json!({"openAPIV3Schema": schema});
            if !columns.is_empty() {
                v["additionalPrinterColumns"] = serde_json::json!(columns);
            }
            if let Some(sub) = spec.get("subresources") {
                v["subresources"] = sub.clone();
            }
            v
        })
        .collect();
    doc["apiVersion"] = serde_json::json!("apiextensions.k8s.io/v1");
    doc["spec"] = serde_json::json!({
        "group": spec["group"], "scope": spec["scope"], "names": spec["names"], "versions": versions,
    });
    doc
}
