//! The local control plane: connecting (a missing cluster fails loudly), CRDs, a namespace
//! per test, fake nodes, the router CRDs.

use super::*;

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
    for crd in crds_from_repo() {
        apply_crd(client, &crd).await;
    }
}

/// Server-side applies `crd` and waits until it is Established.
pub async fn apply_crd(client: &Client, crd: &CustomResourceDefinition) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().expect("a CRD has a name");
    api.patch(
        &name,
        &PatchParams::apply("rollguard-tests").force(),
        &Patch::Apply(crd),
    )
    .await
    .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
    wait_object(&api, &name, Duration::from_secs(60), crd_established)
        .await
        .unwrap_or_else(|| panic!("CRD {name} did not become Established within 60s"));
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

/// A namespace of one test, deleted when dropped.
pub struct TestNamespace {
    pub name: String,
}

static NAMESPACE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A number no other call in this test process gets (for names of namespaces and logs).
pub fn unique() -> u32 {
    NAMESPACE_COUNTER.fetch_add(1, Ordering::Relaxed)
}

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
        release_model_deployments_blocking(&self.name);
        delete_blocking::<Namespace>(&self.name);
    }
}

/// Runs `work` with a client of the local cluster on a thread with its own runtime, and
/// waits for it: Drop cannot await, and this also runs when the test panicked. Does nothing
/// when there is no cluster to talk to.
fn blocking<F, Fut>(work: F)
where
    F: FnOnce(Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let path = kubeconfig_path();
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        rt.block_on(async move {
            if let Ok(client) = client_for(&path).await {
                work(client).await;
            }
        });
    })
    .join();
}

/// Deletes the ModelDeployments in `namespace` and removes their finalizers: a test may
/// end with its operator stopped (or stopping), and a canary's traffic finalizer would hold
/// the namespace's deletion. Deleted first, so that no operator still running adds one
/// again (the API server refuses new finalizers on an object being deleted).
fn release_model_deployments_blocking(namespace: &str) {
    let namespace = namespace.to_string();
    blocking(move |client| async move {
        let mds: Api<rollguard::api::ModelDeployment> = Api::namespaced(client, &namespace);
        let _ = mds
            .delete_collection(&DeleteParams::background(), &Default::default())
            .await;
        let Ok(list) = mds.list(&Default::default()).await else {
            return;
        };
        let release = Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}}));
        let held = list
            .items
            .iter()
            .filter(|m| m.metadata.finalizers.as_ref().is_some_and(|f| !f.is_empty()));
        for name in held.filter_map(|m| m.metadata.name.as_deref()) {
            let _ = mds.patch(name, &PatchParams::default(), &release).await;
        }
    });
}

/// Deletes a cluster-scoped object, blocking (see [`blocking`]).
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
    blocking(move |client| async move {
        let _ = Api::<K>::all(client).delete(&name, &DeleteParams::background()).await;
    });
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
        let ready = wait_object(&nodes, &name, Duration::from_secs(60), |n| {
            let conditions = n.status.as_ref().and_then(|s| s.conditions.as_ref());
            conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
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

/// The route object `name` in `ns`, splitting traffic between the Services `chat` and
/// `chat-canary` (the ModelDeployment `chat` of the tests).
pub fn route_target(ns: &str, name: &str) -> rollguard::traffic::Target {
    route_target_to(ns, name, rollguard::traffic::BackendKind::Service)
}

/// The route object `name` in `ns`, splitting traffic between the backends `chat` and
/// `chat-canary` of kind `backend`.
pub fn route_target_to(ns: &str, name: &str, backend: rollguard::traffic::BackendKind) -> rollguard::traffic::Target {
    let mut backends = rollguard::traffic::Backends::services("chat", "chat-canary");
    backends.kind = backend;
    rollguard::traffic::Target {
        namespace: ns.to_string(),
        name: name.to_string(),
        backends,
        routes: Vec::new(),
    }
}

/// Installs the CRDs of the routers: [`apply_upstream_router_crds`] and the InferencePool
/// CRD ([`apply_inference_pool_crd`]).
pub async fn apply_router_crds(client: &Client) {
    apply_upstream_router_crds(client).await;
    apply_inference_pool_crd(client).await;
}

/// Installs the upstream CRDs of HTTPRoute, TrafficSplit and VirtualService, taken from the
/// projects' Go modules by `hack/router-crds.sh`, and waits until they are Established.
/// SMI's module ships its CRD as `apiextensions.k8s.io/v1beta1`, which Kubernetes no longer
/// serves; it is converted mechanically to `v1`, keeping the served versions and the schema.
pub async fn apply_upstream_router_crds(client: &Client) {
    let out = std::process::Command::new("bash")
        .arg(repo_root().join("hack/router-crds.sh"))
        .output()
        .expect("running hack/router-crds.sh");
    assert!(
        out.status.success(),
        "hack/router-crds.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names = Vec::new();
    for path in String::from_utf8_lossy(&out.stdout).lines() {
        for doc in read_yaml_documents(Path::new(path)) {
            let doc = crd_v1(doc);
            if doc["kind"] != "CustomResourceDefinition" {
                continue;
            }
            let crd: CustomResourceDefinition =
                serde_json::from_value(doc).unwrap_or_else(|e| panic!("{path}: not a CRD: {e}"));
            apply_crd(client, &crd).await;
            names.extend(crd.metadata.name);
        }
    }
    for name in [
        "httproutes.gateway.networking.k8s.io",
        "trafficsplits.split.smi-spec.io",
        "virtualservices.networking.istio.io",
    ] {
        assert!(
            names.iter().any(|n| n == name),
            "hack/router-crds.sh gave no CRD {name}"
        );
    }
}

/// The InferencePool CRD (`inference.networking.k8s.io/v1`, `tests/crds/inferencepools.yaml`:
/// written from the published v1 fields, as the extension's Go module is not served), applied
/// and Established.
pub async fn apply_inference_pool_crd(client: &Client) {
    let path = repo_root().join("tests/crds/inferencepools.yaml");
    for doc in read_yaml_documents(&path) {
        let crd: CustomResourceDefinition = serde_json::from_value(doc).expect("tests/crds/inferencepools.yaml: a CRD");
        apply_crd(client, &crd).await;
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
