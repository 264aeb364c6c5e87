//! Caches: reflector stores of what rollguard owns and reads, filled by label-selected
//! watches, so a reconcile observes without asking the API server.
//!
//! A watch delivers this operator's own writes a moment after they succeed, so a reconcile
//! reads a store through the operator's writes it may not show yet ([`super::written`]),
//! each watch feeding its [`Progress`]. No reconcile reads the API
//! server for what the caches hold; the traffic-split objects have caches of their own
//! ([`super::routes`]).

use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::core::v1::Service;
use kube::runtime::reflector::{self, ObjectRef, ReflectHandle, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};

use super::written::{Pending, Progress, Written};
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
    written: &Written,
) -> (Stores, Triggers, Vec<tokio::task::JoinHandle<()>>) {
    let owned = || watcher::Config::default().labels(labels::MODEL_DEPLOYMENT);
    let mut tasks = Vec::new();
    let (deployments, deployment_triggers) =
        shared(deployments, owned(), slim, written.deployments.progress(), &mut tasks);
    let (services, service_triggers) = shared(services, owned(), slim, written.services.progress(), &mut tasks);
    // A policy's users are read from its managedFields (see rollback_policy): kept whole.
    // rollguard writes no policy a reconcile reads back: their progress is not followed.
    let (policies, policy_triggers) = shared(
        policies,
        watcher::Config::default(),
        |_| {},
        Progress::default(),
        &mut tasks,
    );
    let (revision_store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(revisions, owned()).default_backoff().modify(slim));
    tasks.push(tokio::spawn(drain_tracked(stream, written.revisions.progress())));
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
    progress: Progress,
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
    tasks.push(tokio::spawn(drain_tracked(stream, progress)));
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

/// Drives a watch for ever, taking each event its store applied into `progress`.
pub(super) async fn drain_tracked<S, K>(stream: S, progress: Progress)
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
    K: Resource + Send,
{
    drain(progress.track(stream)).await
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
                let task = tokio::spawn(drain_tracked(stream, self.written.progress()));
                *started = Some((store.clone(), AbortOnDrop(task)));
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
