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

/// Every distinct `(phase, message)` a ModelDeployment's status passes through, in order,
/// recorded by a watch from the moment [`record_statuses`] returns.
pub type StatusLog = Arc<std::sync::Mutex<Vec<(Option<rollguard::api::Phase>, String)>>>;

/// Starts recording the statuses of the ModelDeployment `name` (see [`StatusLog`]); returns
/// once the watch delivered the current state.
pub async fn record_statuses(api: &Api<rollguard::api::ModelDeployment>, name: &str) -> StatusLog {
    let log: StatusLog = Arc::default();
    let sink = log.clone();
    let (listed_tx, listed_rx) = tokio::sync::oneshot::channel();
    let stream = watcher(
        api.clone(),
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .default_backoff()
    .applied_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut listed = Some(listed_tx);
        while let Some(item) = stream.next().await {
            let Ok(md) = item else { continue };
            let entry = md
                .status
                .map(|s| (s.phase, s.message.unwrap_or_default()))
                .unwrap_or_default();
            if let Ok(mut v) = sink.lock()
                && v.last() != Some(&entry)
            {
                v.push(entry);
            }
            if let Some(tx) = listed.take() {
                let _ = tx.send(());
            }
        }
    });
    let started = tokio::time::timeout(Duration::from_secs(30), listed_rx).await;
    assert!(matches!(started, Ok(Ok(()))), "the watch of {name} delivered nothing");
    log
}

/// What [`record_statuses`] saw so far.
pub fn statuses(log: &StatusLog) -> Vec<(Option<rollguard::api::Phase>, String)> {
    log.lock().map(|v| v.clone()).unwrap_or_default()
}
