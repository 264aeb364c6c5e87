//! The traffic-split objects ModelDeployments name (HTTPRoutes, TrafficSplits,
//! VirtualServices), from one watch per kind in use, so a reconcile reads its route without
//! asking the API server: a weight write is the only request it makes for it.
//!
//! A kind is watched from the first time one of its objects was read from the API server, so
//! a cluster without that API, or an operator not allowed to read it, is never watched for
//! it. Until its watch has listed, and for an object the watch does not hold (just created,
//! or missing), reconciles read from the API server as before. Routes are the users'
//! objects, not labelled as rollguard's: a watch holds every object of its kind in the
//! operator's namespace (or the cluster), without managedFields.
//!
//! The object a weight write returns is read instead of the watch's copy until the watch
//! shows it ([`Pending`]), so the reconcile after a write plans from the weight it wrote. A
//! write made from a copy that is out of date is refused by the API server (it carries the
//! resourceVersion read) and made again on the object read anew ([`crate::traffic::Router::write`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

use super::cache::{AbortOnDrop, drain_tracked, slim};
use super::written::Pending;

/// One kind's watch.
struct Watched {
    store: Store<DynamicObject>,
    /// This operator's weight writes the store may not show yet.
    written: Pending<DynamicObject>,
    _task: AbortOnDrop,
}

/// The watches of the route kinds in use.
pub struct Routes {
    client: Client,
    namespace: Option<String>,
    kinds: Mutex<HashMap<String, Arc<Watched>>>,
}

fn key(resource: &ApiResource) -> String {
    format!("{}/{}", resource.api_version, resource.plural)
}

impl Routes {
    /// Routes watched through `client`, in `namespace` or (None) in every namespace.
    pub fn new(client: Client, namespace: Option<String>) -> Routes {
        Routes {
            client,
            namespace,
            kinds: Mutex::new(HashMap::new()),
        }
    }

    fn watched(&self, resource: &ApiResource) -> Option<Arc<Watched>> {
        let kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        kinds.get(&key(resource)).cloned()
    }

    /// The object `name` of `resource` in `namespace` as this operator last saw it; None
    /// while its kind is not watched or not listed yet, or the watch does not hold it: then
    /// it is read from the API server.
    pub fn cached(&self, resource: &ApiResource, namespace: &str, name: &str) -> Option<Arc<DynamicObject>> {
        let watched = self.watched(resource)?;
        let listed = matches!(watched.store.wait_until_ready().now_or_never(), Some(Ok(())));
        if !listed {
            return None;
        }
        let cached = watched
            .store
            .get(&ObjectRef::new_with(name, resource.clone()).within(namespace));
        watched.written.latest(namespace, name, cached)
    }

    /// Starts the watch of `resource`'s kind, unless it runs already. Called after one of its
    /// objects was read from the API server.
    pub fn watch(&self, resource: &ApiResource) {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        if kinds.contains_key(&key(resource)) {
            return;
        }
        let api: Api<DynamicObject> = match &self.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, resource),
            None => Api::all_with(self.client.clone(), resource),
        };
        let writer = reflector::store::Writer::new(resource.clone());
        let store = writer.as_reader();
        let stream = reflector::reflector(
            writer,
            watcher(api, watcher::Config::default()).default_backoff().modify(slim),
        );
        tracing::info!(kind = %resource.kind, "watching the traffic-split objects of this kind");
        let written = Pending::default();
        let task = AbortOnDrop(tokio::spawn(drain_tracked(stream, written.progress())));
        kinds.insert(
            key(resource),
            Arc::new(Watched {
                store,
                written,
                _task: task,
            }),
        );
    }

    /// Remembers `object` as a weight write to it returned.
    pub fn wrote(&self, resource: &ApiResource, object: DynamicObject) {
        if let Some(watched) = self.watched(resource) {
            watched.written.wrote(object);
        }
    }
}
