//! Waits on watches: a test waits for the event that proves a state, seeing every state the
//! objects pass through, instead of polling the API server.
//!
//! [`wait_object`] and [`wait_gone`] follow one named object (kube's `await_condition`);
//! [`wait_list`] follows a label- or field-selected set through a reflector store.
//! Polling ([`super::wait_for`]) stays for what has no watch: logs, scrapes, processes.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde::de::DeserializeOwned;

/// Waits until the object `name` exists and `pred` holds for it; None after `timeout`.
pub async fn wait_object<K, F>(api: &Api<K>, name: &str, timeout: Duration, pred: F) -> Option<K>
where
    K: Clone + Debug + Send + DeserializeOwned + Resource + 'static,
    F: Fn(&K) -> bool,
{
    let holds = |k: Option<&K>| k.is_some_and(&pred);
    match tokio::time::timeout(timeout, kube::runtime::wait::await_condition(api.clone(), name, holds)).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => panic!("watching {name} failed: {e}"),
        Err(_) => None,
    }
}

/// Waits until the object `name` does not exist; false after `timeout`.
pub async fn wait_gone<K>(api: &Api<K>, name: &str, timeout: Duration) -> bool
where
    K: Clone + Debug + Send + DeserializeOwned + Resource + 'static,
{
    let absent = |k: Option<&K>| k.is_none();
    match tokio::time::timeout(timeout, kube::runtime::wait::await_condition(api.clone(), name, absent)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => panic!("watching {name} failed: {e}"),
        Err(_) => false,
    }
}

/// The names of `objects`, sorted.
pub fn names<K: Resource>(objects: &[Arc<K>]) -> Vec<String> {
    let mut names: Vec<String> = objects.iter().filter_map(|o| o.meta().name.clone()).collect();
    names.sort();
    names
}

/// Waits until `pred` holds for the objects `config` selects (evaluated on the watch's full
/// state after each change, from the first complete list on); returns them, or None after
/// `timeout`.
pub async fn wait_list<K, F>(api: &Api<K>, config: watcher::Config, timeout: Duration, pred: F) -> Option<Vec<Arc<K>>>
where
    K: Clone + Debug + Send + Sync + DeserializeOwned + Resource + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    F: Fn(&[Arc<K>]) -> bool,
{
    let (reader, writer) = reflector::store();
    let events = reflector(writer, watcher(api.clone(), config)).default_backoff();
    let mut events = std::pin::pin!(events);
    let waited = tokio::time::timeout(timeout, async {
        let mut listed = false;
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::InitDone) => listed = true,
                Ok(_) => {}
                Err(e) => panic!("watching failed: {e}"),
            }
            let state = reader.state();
            if listed && pred(&state) {
                return Some(state);
            }
        }
        None
    })
    .await;
    waited.ok().flatten()
}
