//! Caches: reflector stores of what rollguard owns and reads, filled by label-selected
//! watches, so a reconcile observes without asking the API server.
//!
//! A watch delivers this operator's own writes a moment after they succeed. Planning from a
//! store that has not seen them yet could undo or repeat what the last reconcile did (handle
//! a request twice, start a canary step's clock again). So the object the API server returns
//! from every write is kept in [`Written`] and read instead of the store's copy until the
//! store shows that write (its resourceVersion) or a newer one. No reconcile reads the API
//! server for what the caches hold; the traffic-split objects have caches of their own
//! ([`super::routes`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::core::v1::Service;
use kube::runtime::reflector::{self, ObjectRef, ReflectHandle, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};

use crate::api::{ModelDeployment, RollbackPolicy, labels};
use crate::traffic::RouterError;
use crate::traffic::inference_pool::{self, InferencePool};

/// The stores a reconcile reads.
#[derive(Clone)]
pub struct Stores {
    /// The ModelDeployments (the controller's own store).
    pub models: Store<ModelDeployment>,
    /// Deployments labelled `rollguard.dev/model-deployment`.
    pub deployments: Store<Deployment>,
    /// Services labelled `rollguard.dev/model-deployment`.
    pub services: Store<Service>,
    /// ControllerRevisions labelled `rollguard.dev/model-deployment`.
    pub revisions: Store<ControllerRevision>,
    /// RollbackPolicies.
    pub policies: Store<RollbackPolicy>,
}

impl Stores {
    /// Waits until every store (but the controller's own) has listed its objects once.
    pub async fn wait_until_ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.deployments.wait_until_ready().await?;
        self.services.wait_until_ready().await?;
        self.revisions.wait_until_ready().await?;
        self.policies.wait_until_ready().await
    }
}

/// The subscriptions that trigger reconciles from the shared watches.
pub struct Triggers {
    /// Changes to owned Deployments.
    pub deployments: ReflectHandle<Deployment>,
    /// Changes to owned Services.
    pub services: ReflectHandle<Service>,
    /// Changes to RollbackPolicies.
    pub policies: ReflectHandle<RollbackPolicy>,
}

/// Buffer of each shared watch: how far a subscriber may fall behind before the watch waits.
const SUBSCRIBER_BUFFER: usize = 1024;

/// Starts the watches (only objects labelled as rollguard's, but for RollbackPolicies) on
/// `apis`, each driven by a task of its own. Returns the stores, the subscriptions for the
/// controller, and the tasks.
pub fn start(
    deployments: Api<Deployment>,
    services: Api<Service>,
    revisions: Api<ControllerRevision>,
    policies: Api<RollbackPolicy>,
    models: Store<ModelDeployment>,
) -> (Stores, Triggers, Vec<tokio::task::JoinHandle<()>>) {
    let owned = || watcher::Config::default().labels(labels::MODEL_DEPLOYMENT);
    let mut tasks = Vec::new();
    let (deployments, deployment_triggers) = shared(deployments, owned(), slim, &mut tasks);
    let (services, service_triggers) = shared(services, owned(), slim, &mut tasks);
    // A policy's users are read from its managedFields (see rollback_policy): kept whole.
    let (policies, policy_triggers) = shared(policies, watcher::Config::default(), |_| {}, &mut tasks);
    let (revision_store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(revisions, owned()).default_backoff().modify(slim));
    tasks.push(tokio::spawn(drain(stream)));
    (
        Stores {
            models,
            deployments,
            services,
            revisions: revision_store,
            policies,
        },
        Triggers {
            deployments: deployment_triggers,
            services: service_triggers,
            policies: policy_triggers,
        },
        tasks,
    )
}

/// Leaves out of a cached object what no reconcile reads: its managedFields, which are
/// often larger than the rest of a Deployment or a Service (one entry per field manager,
/// each a tree of every field it set). At fleet scale they are most of what a store holds.
pub fn slim<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
}

fn shared<K>(
    api: Api<K>,
    config: watcher::Config,
    modify: fn(&mut K),
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> (Store<K>, ReflectHandle<K>)
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store_shared(SUBSCRIBER_BUFFER);
    #[allow(clippy::expect_used)]
    let subscriber = writer
        .subscribe()
        .expect("a store made by store_shared has a dispatcher");
    let stream = watcher(api, config)
        .default_backoff()
        .modify(modify)
        .reflect_shared(writer);
    tasks.push(tokio::spawn(drain(stream)));
    (store, subscriber)
}

/// Polls a watch for ever; its store and subscribers see every event.
pub(super) async fn drain<S, T>(stream: S)
where
    S: Stream<Item = Result<T, watcher::Error>> + Send,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        if let Err(e) = event {
            tracing::warn!(error = %crate::controller::error::chain(&e), "watch failed; retrying with backoff");
        }
    }
}

/// Whether `seen` is at least `written`. resourceVersions are etcd revisions (integers)
/// on every API server rollguard supports; anything else counts as caught up only when equal.
fn at_least(seen: &str, written: &str) -> bool {
    match (seen.parse::<u64>(), written.parse::<u64>()) {
        (Ok(s), Ok(w)) => s >= w,
        _ => seen == written,
    }
}

/// How long a write is preferred over a store that does not show it. A watch delivers in
/// milliseconds; a write the store never shows (the object was deleted by someone else
/// meanwhile) must not hide the store's view for long.
const WRITE_EXPIRY: std::time::Duration = std::time::Duration::from_secs(10);

/// A write: when, and the object the API server returned (None for a deletion).
type Write<K> = (std::time::Instant, Option<Arc<K>>);

/// This operator's writes of one kind that its store may not show yet, by namespace and name.
pub struct Pending<K> {
    writes: Mutex<HashMap<(String, String), Write<K>>>,
}

impl<K> Default for Pending<K> {
    fn default() -> Self {
        Pending {
            writes: Mutex::new(HashMap::new()),
        }
    }
}

impl<K> Pending<K>
where
    K: Resource + Clone + 'static,
{
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Write<K>>> {
        let mut writes = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        writes.retain(|_, (at, _)| at.elapsed() < WRITE_EXPIRY);
        writes
    }

    /// Remembers `obj` as the API server returned it after a write.
    pub fn wrote(&self, mut obj: K) {
        slim(&mut obj);
        let key = (obj.namespace().unwrap_or_default(), obj.name_any());
        self.lock()
            .insert(key, (std::time::Instant::now(), Some(Arc::new(obj))));
    }

    /// Remembers that `name` in `namespace` was deleted.
    pub fn deleted(&self, namespace: &str, name: &str) {
        self.lock().insert(
            (namespace.to_string(), name.to_string()),
            (std::time::Instant::now(), None),
        );
    }

    /// The newer of the store's `cached` object and this operator's last write of it
    /// (forgetting the write once the store shows it). None when it was deleted.
    pub fn latest(&self, namespace: &str, name: &str, cached: Option<Arc<K>>) -> Option<Arc<K>> {
        let mut writes = self.lock();
        let key = (namespace.to_string(), name.to_string());
        let Some((_, write)) = writes.get(&key) else {
            return cached;
        };
        match (write, &cached) {
            // Deleted, and the store no longer shows it.
            (None, None) => {
                writes.remove(&key);
                None
            }
            (None, Some(_)) => None,
            (Some(mine), Some(seen)) if shows(seen.as_ref(), mine.as_ref()) => {
                writes.remove(&key);
                cached
            }
            (Some(mine), _) => Some(mine.clone()),
        }
    }

    /// Forgets the writes of `namespace` whose names `matches` selects.
    pub fn forget(&self, namespace: &str, matches: impl Fn(&str) -> bool) {
        self.lock().retain(|(ns, name), _| !(ns == namespace && matches(name)));
    }
}

impl<K> Pending<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    /// The objects of `namespace` that `keep` selects: the store's, updated with this
    /// operator's writes that it does not show yet.
    pub fn view(&self, store: &Store<K>, namespace: &str, keep: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        let mut objects: HashMap<String, Arc<K>> = store
            .state()
            .into_iter()
            .filter(|o| o.namespace().as_deref() == Some(namespace) && keep(o))
            .map(|o| (o.name_any(), o))
            .collect();
        let names: Vec<String> = self
            .lock()
            .keys()
            .filter(|(ns, _)| ns == namespace)
            .map(|(_, name)| name.clone())
            .collect();
        for name in names {
            let cached = store.get(&ObjectRef::new(&name).within(namespace));
            match self.latest(namespace, &name, cached) {
                Some(o) if keep(&o) => {
                    objects.insert(name, o);
                }
                _ => {
                    objects.remove(&name);
                }
            }
        }
        objects.into_values().collect()
    }
}

/// Whether the store's `seen` shows the write `mine` (or something newer).
fn shows<K: Resource>(seen: &K, mine: &K) -> bool {
    match (seen.resource_version(), mine.resource_version()) {
        (Some(s), Some(m)) => at_least(&s, &m),
        _ => true,
    }
}

/// This operator's writes that the stores may not show yet, by kind.
#[derive(Default)]
pub struct Written {
    /// ModelDeployments (status, handled annotations removed).
    pub models: Pending<ModelDeployment>,
    /// Deployments of revisions.
    pub deployments: Pending<Deployment>,
    /// The stable and canary Services.
    pub services: Pending<Service>,
    /// ControllerRevisions.
    pub revisions: Pending<ControllerRevision>,
    /// Where the API server stored a pod template of rollguard's differently from how it
    /// was written (it normalizes some values: cpu `0.5` is stored as `500m`), by digest of
    /// the template written: each place with the value stored.
    normalized: Mutex<HashMap<u64, Vec<(String, serde_json::Value)>>>,
}

/// A digest of a JSON value.
fn digest(value: &serde_json::Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.to_string().hash(&mut hasher);
    hasher.finish()
}

impl Written {
    /// Remembers how the API server stored the pod template `desired` that rollguard wrote:
    /// the `differences` between them (none for most templates).
    pub fn remember_stored(&self, desired: &serde_json::Value, differences: Vec<(String, serde_json::Value)>) {
        let mut normalized = self.normalized.lock().unwrap_or_else(|e| e.into_inner());
        if differences.is_empty() {
            normalized.remove(&digest(desired));
            return;
        }
        // Bounded: one entry per template written; start again if it ever grows large.
        if normalized.len() > 10_000 {
            normalized.clear();
        }
        normalized.insert(digest(desired), differences);
    }

    /// Whether the `differences` of an observed pod template from `desired` are all the
    /// server's own normalization of rollguard's write (so nobody changed anything).
    pub fn only_normalized(&self, desired: &serde_json::Value, differences: &[(String, serde_json::Value)]) -> bool {
        let normalized = self.normalized.lock().unwrap_or_else(|e| e.into_inner());
        let known = normalized.get(&digest(desired));
        differences.iter().all(|d| known.is_some_and(|k| k.contains(d)))
    }

    /// Forgets the writes of the ModelDeployment `key` and of what it owns (it is gone).
    pub fn forget(&self, key: &ObjectRef<ModelDeployment>) {
        let namespace = key.namespace.clone().unwrap_or_default();
        let name = key.name.clone();
        let prefix = format!("{name}-");
        let owned = |n: &str| n == name || n.starts_with(&prefix);
        self.models.forget(&namespace, owned);
        self.deployments.forget(&namespace, owned);
        self.services.forget(&namespace, owned);
        self.revisions.forget(&namespace, owned);
    }
}

/// The ModelDeployment as this operator last saw it: the cache, or its own last write to
/// it when the cache does not show that yet. None when the cache no longer has it.
pub fn model(stores: &Stores, written: &Written, key: &ObjectRef<ModelDeployment>) -> Option<Arc<ModelDeployment>> {
    let namespace = key.namespace.as_deref().unwrap_or_default();
    let cached = stores.models.get(key)?;
    written.models.latest(namespace, &key.name, Some(cached))
}

/// The objects of kind `K` owned by the ModelDeployment with `uid` in `namespace`, as this
/// operator last saw them.
pub fn owned<K>(store: &Store<K>, pending: &Pending<K>, namespace: &str, uid: &str) -> Vec<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    pending.view(store, namespace, |o| o.owner_references().iter().any(|r| r.uid == uid))
}

/// The InferencePools rollguard owns, in a store of their own that is started the first time
/// a ModelDeployment routes to InferencePools and the Inference Extension's API is served:
/// a cluster without the extension is never watched for it (and logs nothing about it).
pub struct Pools {
    api: Api<InferencePool>,
    started: tokio::sync::Mutex<Option<(Store<InferencePool>, AbortOnDrop)>>,
    /// Whether a reconcile has waited for the first list already.
    waited: std::sync::atomic::AtomicBool,
    /// This operator's pool writes the store may not show yet.
    pub written: Pending<InferencePool>,
}

/// Aborts a task when dropped.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long a reconcile waits for the first list of InferencePools.
const POOL_LIST_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Pools {
    /// Pools watched through `api` (all namespaces, or the operator's own).
    pub fn new(api: Api<InferencePool>) -> Pools {
        Pools {
            api,
            started: tokio::sync::Mutex::new(None),
            waited: std::sync::atomic::AtomicBool::new(false),
            written: Pending::default(),
        }
    }

    /// The store of owned InferencePools, listed at least once: started now when it was not,
    /// after checking that the API is served.
    pub async fn store(&self, client: &kube::Client) -> Result<Store<InferencePool>, RouterError> {
        let mut started = self.started.lock().await;
        let store = match started.as_ref() {
            Some((store, _)) => store.clone(),
            None => {
                let gvk = kube::core::GroupVersionKind::gvk(
                    inference_pool::GROUP,
                    inference_pool::VERSION,
                    inference_pool::KIND,
                );
                if !crate::traffic::api_served(client, &gvk, inference_pool::PLURAL).await {
                    return Err(RouterError::NotInstalled {
                        kind: inference_pool::KIND,
                        api_version: inference_pool::API_VERSION,
                    });
                }
                let (store, writer) = reflector::store();
                let config = watcher::Config::default().labels(labels::MODEL_DEPLOYMENT);
                let stream =
                    reflector::reflector(writer, watcher(self.api.clone(), config).default_backoff().modify(slim));
                *started = Some((store.clone(), AbortOnDrop(tokio::spawn(drain(stream)))));
                store
            }
        };
        drop(started);
        // Only the first reconcile that needs the pools waits for their first list; while it
        // has not come (the API server refuses the list: RBAC), the others do not wait.
        let wait = if self.waited.swap(true, std::sync::atomic::Ordering::Relaxed) {
            std::time::Duration::ZERO
        } else {
            POOL_LIST_WAIT
        };
        match tokio::time::timeout(wait, store.wait_until_ready()).await {
            Ok(Ok(())) => Ok(store),
            _ => Err(RouterError::NotListed {
                kind: inference_pool::KIND,
                waited: POOL_LIST_WAIT,
            }),
        }
    }
}
