//! The operator's own writes, read instead of a store's copy until the store shows them.
//!
//! A watch delivers this operator's own writes a moment after they succeed. Planning from a
//! store that has not seen them yet could undo or repeat what the last reconcile did (handle
//! a request twice, start a canary step's clock again). So the object the API server returns
//! from every write is kept in [`Written`] and read instead of the store's copy until the
//! store's watch has come past that write ([`Progress`]), however long that takes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::core::v1::Service;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::cache::slim;
use crate::api::ModelDeployment;

/// Whether `seen` is at least `written`. resourceVersions are etcd revisions (integers)
/// on every API server rollguard supports; anything else counts as caught up only when equal.
fn at_least(seen: &str, written: &str) -> bool {
    match (seen.parse::<u64>(), written.parse::<u64>()) {
        (Ok(s), Ok(w)) => s >= w,
        _ => seen == written,
    }
}

/// How far one watch has brought its store: the highest resourceVersion among the changes
/// it applied, and when the last full list it applied was begun. A write that the watch has
/// come past, or that was made before such a list was asked for, is in the store (or was
/// undone or deleted since, which the store shows too).
#[derive(Clone, Default)]
pub struct Progress(Arc<Mutex<Passed>>);

#[derive(Default)]
struct Passed {
    /// The highest resourceVersion of a change applied to the store.
    version: u64,
    /// The highest resourceVersion in the list under way (the store shows it at its end).
    listing_version: u64,
    /// When the list under way was begun.
    listing: Option<std::time::Instant>,
    /// When the last list the store shows was begun.
    listed: Option<std::time::Instant>,
}

fn version<K: Resource>(obj: &K) -> Option<u64> {
    obj.meta().resource_version.as_deref().and_then(|v| v.parse().ok())
}

impl Progress {
    /// Takes in one event of the watch, once its store has applied it.
    pub fn passed<K: Resource>(&self, event: &watcher::Event<K>) {
        let mut passed = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Apply(obj) | watcher::Event::Delete(obj) => {
                passed.version = passed.version.max(version(obj).unwrap_or_default());
            }
            // A list (a new watch, or one that fell too far behind) is asked for after Init
            // and shown by the store from InitDone.
            watcher::Event::Init => {
                passed.listing = Some(std::time::Instant::now());
                passed.listing_version = 0;
            }
            watcher::Event::InitApply(obj) => {
                passed.listing_version = passed.listing_version.max(version(obj).unwrap_or_default());
            }
            watcher::Event::InitDone => {
                passed.listed = passed.listing.take().or(passed.listed);
                passed.version = passed.version.max(passed.listing_version);
            }
        }
    }

    /// Whether the store shows a write made at `at` whose answer carried `written` (None
    /// for a deletion): the watch has applied a change as new, or a list asked for after it.
    fn covers(&self, at: std::time::Instant, written: Option<&str>) -> bool {
        let passed = self.0.lock().unwrap_or_else(|e| e.into_inner());
        passed.listed.is_some_and(|listed| listed > at)
            || written
                .and_then(|w| w.parse::<u64>().ok())
                .is_some_and(|w| passed.version >= w)
    }
}

impl Progress {
    /// `stream` (a reflector's: each event already applied to its store), taking every event
    /// into this progress on its way.
    pub fn track<S, K>(self, stream: S) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>
    where
        S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
        K: Resource,
    {
        stream.inspect(move |event| {
            if let Ok(event) = event {
                self.passed(event);
            }
        })
    }
}

/// A write: when, and the object the API server returned (None for a deletion).
type Write<K> = (std::time::Instant, Option<Arc<K>>);

/// This operator's writes of one kind that its store may not show yet, by namespace and name.
/// A write is preferred over the store's copy until the store's watch has come past it
/// ([`Progress`]), however long that takes: a watch that is down or retrying (the API server
/// restarting) must not bring back what the store held before the write.
pub struct Pending<K> {
    writes: Mutex<HashMap<(String, String), Write<K>>>,
    progress: Progress,
}

impl<K> Default for Pending<K> {
    fn default() -> Self {
        Pending {
            writes: Mutex::new(HashMap::new()),
            progress: Progress::default(),
        }
    }
}

impl<K> Pending<K>
where
    K: Resource + Clone + 'static,
{
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Write<K>>> {
        let mut writes = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        writes.retain(|_, (at, obj)| {
            let written = obj.as_ref().and_then(|o| o.meta().resource_version.clone());
            !self.progress.covers(*at, written.as_deref())
        });
        writes
    }

    /// The progress of the watch that fills the store these writes are read over; the watch
    /// feeds it ([`super::cache::drain_tracked`]).
    pub fn progress(&self) -> Progress {
        self.progress.clone()
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

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;

    fn config_map(name: &str, version: u64, data: &str) -> k8s_openapi::api::core::v1::ConfigMap {
        let mut cm = k8s_openapi::api::core::v1::ConfigMap::default();
        cm.metadata.name = Some(name.into());
        cm.metadata.namespace = Some("ns".into());
        cm.metadata.resource_version = Some(version.to_string());
        cm.data = Some([("v".to_string(), data.to_string())].into());
        cm
    }

    fn data(obj: Option<Arc<k8s_openapi::api::core::v1::ConfigMap>>) -> Option<String> {
        obj.and_then(|o| o.data.as_ref().and_then(|d| d.get("v").cloned()))
    }

    /// A store that has not seen a write, behind a watch that has not come past it, is
    /// read through the write for as long as that lasts (a watch retrying while the API
    /// server restarts); once the watch has applied anything newer, the store is the truth.
    #[test]
    fn a_write_is_read_until_the_watch_has_come_past_it_however_long() {
        let pending = Pending::default();
        let progress = pending.progress();
        let old = Arc::new(config_map("a", 5, "old"));
        pending.wrote(config_map("a", 10, "mine"));
        assert_eq!(data(pending.latest("ns", "a", Some(old.clone()))), Some("mine".into()));
        // Changes older than the write, of other objects: still behind.
        progress.passed(&Event::Apply(config_map("b", 9, "")));
        assert_eq!(data(pending.latest("ns", "a", Some(old.clone()))), Some("mine".into()));
        // A list begun before the write and done after it does not count either.
        progress.passed(&Event::<k8s_openapi::api::core::v1::ConfigMap>::Init);
        pending.wrote(config_map("a", 10, "mine"));
        progress.passed(&Event::InitApply(config_map("b", 9, "")));
        progress.passed(&Event::<k8s_openapi::api::core::v1::ConfigMap>::InitDone);
        assert_eq!(data(pending.latest("ns", "a", Some(old.clone()))), Some("mine".into()));
        // The watch applied a change newer than the write: the store shows what became of it
        // (here someone else's change after it, or nothing when it was deleted).
        progress.passed(&Event::Delete(config_map("b", 11, "")));
        let theirs = Arc::new(config_map("a", 12, "theirs"));
        assert_eq!(data(pending.latest("ns", "a", Some(theirs))), Some("theirs".into()));
        pending.wrote(config_map("a", 10, "mine"));
        assert_eq!(
            data(pending.latest("ns", "a", None)),
            None,
            "covered: forgotten at once"
        );
    }

    /// A store that shows the write (or newer) is read at once, whatever the watch's progress.
    #[test]
    fn a_store_that_shows_the_write_is_read() {
        let pending = Pending::default();
        pending.wrote(config_map("a", 10, "mine"));
        let seen = Arc::new(config_map("a", 10, "seen"));
        assert_eq!(data(pending.latest("ns", "a", Some(seen))), Some("seen".into()));
        let old = Arc::new(config_map("a", 5, "old"));
        assert_eq!(
            data(pending.latest("ns", "a", Some(old))),
            Some("old".into()),
            "the write is forgotten"
        );
    }

    /// A deletion hides the store's copy until the store drops it or relists after it.
    #[test]
    fn a_deletion_hides_the_object_until_the_store_drops_it_or_lists_again() {
        let pending = Pending::default();
        let progress = pending.progress();
        let there = Arc::new(config_map("a", 5, "there"));
        pending.deleted("ns", "a");
        progress.passed(&Event::Apply(config_map("b", 100, "")));
        assert_eq!(data(pending.latest("ns", "a", Some(there.clone()))), None);
        // Instants are monotonic; the list must be asked for after the deletion.
        std::thread::sleep(std::time::Duration::from_millis(2));
        progress.passed(&Event::<k8s_openapi::api::core::v1::ConfigMap>::Init);
        assert_eq!(
            data(pending.latest("ns", "a", Some(there.clone()))),
            None,
            "listing, not listed"
        );
        progress.passed(&Event::<k8s_openapi::api::core::v1::ConfigMap>::InitDone);
        assert_eq!(data(pending.latest("ns", "a", Some(there))), Some("there".into()));
    }
}
