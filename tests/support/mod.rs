//! Test support for tests against the local control plane (`make cluster-up`).
//!
//! [`cluster`] connects to it and applies the CRDs; [`TestNamespace`] gives each test its own
//! namespace, deleted when the test ends, pass or fail. A missing cluster fails the test with
//! a message that says how to start one: a test never passes without its cluster.
#![allow(dead_code)]

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
        // Drop cannot await; delete from a thread with its own runtime, so this also runs
        // when the test panicked.
        let name = self.name.clone();
        let path = kubeconfig_path();
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                if let Ok(client) = client_for(&path).await {
                    let _ = Api::<Namespace>::all(client)
                        .delete(&name, &DeleteParams::background())
                        .await;
                }
            });
        });
        let _ = handle.join();
    }
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

/// A running `rollguard run`, killed when dropped.
pub struct Operator {
    pub child: std::process::Child,
}

impl Operator {
    /// Starts the operator binary of this build against the local cluster, watching `namespace`.
    pub fn start(namespace: &str) -> Operator {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_rollguard"))
            .args(["run", "--namespace", namespace])
            .env("KUBECONFIG", kubeconfig_path())
            .env("RUST_LOG", "warn,rollguard=debug")
            .spawn()
            .expect("starting the rollguard binary");
        Operator { child }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
