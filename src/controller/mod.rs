//! The imperative shell: watches, reconcilers and the run loop.

pub mod apply;
pub mod cache;
pub mod error;
pub mod evaluate;
pub mod events;
pub mod finalizer;
pub mod lane;
pub mod model_deployment;
pub mod observe;
pub mod policy_triggers;
pub mod recorder;
pub mod resources;
pub mod rollback_policy;
pub mod routes;
pub mod written;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use crate::api::{ModelDeployment, RollbackPolicy};
pub use error::Error;
use recorder::Recorder;

pub use crate::FIELD_MANAGER;

/// Operator settings from the command line.
#[derive(Clone, Debug)]
pub struct Config {
    /// Watch only this namespace; all namespaces when None.
    pub namespace: Option<String>,
    /// How often every ModelDeployment is looked at again without any event.
    pub resync: Duration,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` (None: not served).
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Leader election among replicas (None: this process reconciles at once).
    pub leader_election: Option<LeaderElection>,
    /// Reconcile only the ModelDeployments that this label selector selects (None: all), so
    /// that several operators can split a fleet.
    pub selector: Option<String>,
    /// How many ModelDeployments are reconciled at the same time (0: no limit).
    pub concurrency: u16,
}

/// Leader election through a coordination.k8s.io Lease: only its holder reconciles.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub lease: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// Seconds a holder keeps the Lease without renewing it (>= 2).
    pub duration_seconds: u64,
}

/// Why the operator stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The metrics address could not be bound.
    #[error("cannot serve the metrics endpoint: {0}")]
    Metrics(#[source] std::io::Error),
    /// The Lease could not be used.
    #[error("leader election failed: {0}")]
    Lease(#[source] kube_lease_manager::LeaseManagerError),
    /// A cache's watch stopped before it listed its objects.
    #[error("the caches stopped before they were filled")]
    CachesStopped,
    /// The API server rejects the `--selector` value.
    #[error("--selector {selector:?} is not a label selector the API server accepts: {source}")]
    Selector {
        /// The value given.
        selector: String,
        /// The API server's answer.
        #[source]
        source: kube::Error,
    },
    /// Another replica took the Lease: this one stops, to be restarted as a follower.
    #[error("lost the leadership Lease {0}; stopping so that only the leader reconciles")]
    LostLeadership(String),
}

/// Whether SIGTERM or SIGINT has been received since [`Shutdown::listen`]. A signal is seen
/// whenever it comes: a listener made only when needed would miss one that came before it.
#[derive(Clone)]
struct Shutdown(tokio::sync::watch::Receiver<bool>);

impl Shutdown {
    /// Starts listening.
    fn listen() -> Shutdown {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = tx.send(true);
        });
        Shutdown(rx)
    }

    /// Resolves once a signal was received.
    async fn requested(self) {
        let mut rx = self.0;
        // The value stays true after the sender is gone.
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            namespace: None,
            resync: Duration::from_secs(300),
            metrics_address: None,
            leader_election: None,
            selector: None,
            concurrency: 0,
        }
    }
}

/// An object that has been failing.
struct Failing {
    /// When its streak of failures began.
    since: std::time::Instant,
    /// The category and time of the last failure published as an Event.
    published: Option<(&'static str, std::time::Instant)>,
}

/// How often the same failure of an object is published again as an Event.
pub const FAILURE_EVENT_EVERY: Duration = Duration::from_secs(60);

/// Shared state of the reconcilers.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Publishes the Events of reconciles, off their path.
    pub events: events::Events,
    /// Resync period.
    pub resync: Duration,
    /// When each failing object began to fail, for exponential backoff.
    failures: Mutex<HashMap<ObjectRef<ModelDeployment>, Failing>>,
    /// The operator's own metrics.
    pub metrics: Arc<crate::telemetry::Metrics>,
    /// The trigger evaluations running off the reconcile path.
    pub evaluators: evaluate::Evaluators,
    /// What the watches hold.
    pub stores: cache::Stores,
    /// This operator's writes the stores may not show yet.
    pub written: written::Written,
    /// The InferencePools rollguard owns (watched once a ModelDeployment routes to them).
    pub pools: cache::Pools,
    /// The traffic-split objects (each kind watched once one of them was read).
    pub routes: routes::Routes,
    /// The label selector of the ModelDeployments this operator reconciles, when it runs
    /// one shard of a fleet.
    pub shard: Option<String>,
    /// The abort lane's writes (see [`lane`]).
    pub lane: lane::Lane,
}

/// What a reconcile observes through, for [`Context::new`].
pub struct Caches {
    /// What the watches hold.
    pub stores: cache::Stores,
    /// This operator's writes the stores may not show yet (fed by the same watches).
    pub written: written::Written,
    /// The InferencePools rollguard owns.
    pub pools: cache::Pools,
    /// The traffic-split objects.
    pub routes: routes::Routes,
}

impl Context {
    /// A context around a client; trigger evaluations wake reconciles through `wake`.
    pub fn new(
        client: Client,
        resync: Duration,
        metrics: Arc<crate::telemetry::Metrics>,
        wake: UnboundedSender<ObjectRef<ModelDeployment>>,
        caches: Caches,
    ) -> Self {
        let Caches {
            stores,
            written,
            pools,
            routes,
        } = caches;
        let instance = std::env::var("POD_NAME")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok());
        let recorder = Recorder::new(client.clone(), "rollguard", instance);
        Context {
            events: events::Events::start(recorder.clone(), events::LANES),
            recorder,
            resync,
            client,
            failures: Mutex::new(HashMap::new()),
            evaluators: evaluate::Evaluators::new(wake, metrics.clone()),
            metrics,
            stores,
            written,
            pools,
            routes,
            shard: None,
            lane: lane::Lane::default(),
        }
    }

    /// Records a failure of `obj` in `category` and returns the delay before its next
    /// attempt (as long as it has been failing, at least 1 s and at most 5 minutes: see
    /// [`backoff`]) and whether to publish it as an Event: the first failure of a streak, a
    /// new category, or the same one again after [`FAILURE_EVENT_EVERY`].
    pub fn record_failure(&self, obj: ObjectRef<ModelDeployment>, category: &'static str) -> (Duration, bool) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        let failing = failures.entry(obj).or_insert(Failing {
            since: now,
            published: None,
        });
        let publish = match failing.published {
            Some((last, at)) => last != category || now.duration_since(at) >= FAILURE_EVENT_EVERY,
            None => true,
        };
        if publish {
            failing.published = Some((category, now));
        }
        (backoff(failing.since.elapsed()), publish)
    }

    /// Forgets the failures of `obj` after a successful reconcile.
    pub fn record_success(&self, obj: &ObjectRef<ModelDeployment>) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(obj);
    }

    /// Forgets everything kept about `obj`, which is gone or being deleted: its failure count
    /// and its trigger evaluation.
    pub fn forget(&self, obj: &ObjectRef<ModelDeployment>) {
        self.record_success(obj);
        self.evaluators.forget(obj);
        self.written.forget(obj);
        self.lane.forget(obj);
        let (namespace, name) = (obj.namespace.as_deref().unwrap_or_default(), obj.name.as_str());
        let canary = resources::canary_service_name(name);
        self.pools.written.forget(namespace, |n| n == name || n == canary);
    }
}

/// The delay before the next attempt of an object that has been failing for `failing`:
/// that long again, so attempts come at 1, 2, 4, 8... seconds after the first failure, at
/// least 1 s and at most 300 s apart. Measured in time rather than counted in attempts, so
/// watch events that retry a failing object early do not stretch its backoff.
///
/// ```
/// use rollguard::controller::backoff;
/// use std::time::Duration;
/// assert_eq!(backoff(Duration::ZERO), Duration::from_secs(1));
/// assert_eq!(backoff(Duration::from_secs(4)), Duration::from_secs(4));
/// assert_eq!(backoff(Duration::from_secs(4000)), Duration::from_secs(300));
/// ```
pub fn backoff(failing: Duration) -> Duration {
    failing.clamp(Duration::from_secs(1), Duration::from_secs(300))
}

type Held = (
    tokio::sync::watch::Receiver<bool>,
    tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
    String,
);

/// Waits to hold the Lease; None when a shutdown signal came first.
async fn lead(client: Client, le: &LeaderElection, shutdown: Shutdown) -> Result<Option<Held>, RunError> {
    let duration = le.duration_seconds.max(2);
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client, &le.lease)
        .with_namespace(&le.namespace)
        .with_identity(&le.identity)
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        .with_field_manager(FIELD_MANAGER)
        .build()
        .await
        .map_err(RunError::Lease)?;
    let lease = format!("{}/{}", le.namespace, le.lease);
    let (mut held, task) = manager.watch().await;
    tracing::info!(lease = %lease, identity = %le.identity, "waiting for leadership");
    let acquired = async {
        loop {
            if *held.borrow_and_update() {
                return true;
            }
            if held.changed().await.is_err() {
                return false;
            }
        }
    };
    tokio::select! {
        ok = acquired => {
            if !ok {
                return Err(RunError::LostLeadership(lease));
            }
        }
        _ = shutdown.requested() => return Ok(None),
    }
    tracing::info!(lease = %lease, identity = %le.identity, "became the leader");
    Ok(Some((held, task, lease)))
}

/// Runs the operator until SIGTERM or SIGINT, then returns after in-flight reconciles end.
/// With leader election it first waits to hold the Lease, and stops if it loses it.
/// `metrics` are served on `config.metrics_address` (the client may count its requests there).
pub async fn run(client: Client, metrics: Arc<crate::telemetry::Metrics>, config: Config) -> Result<(), RunError> {
    fn scoped<K>(client: &Client, namespace: &Option<String>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let shutdown = Shutdown::listen();
    let api: Api<ModelDeployment> = scoped(&client, &config.namespace);
    if let Some(address) = config.metrics_address {
        let bound = crate::telemetry::serve(address, metrics.clone())
            .await
            .map_err(RunError::Metrics)?;
        tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz");
    }
    // Ready means the process runs; a follower waiting for the Lease is ready too.
    metrics.set_ready();
    let leadership = match &config.leader_election {
        Some(le) => match lead(client.clone(), le, shutdown.clone()).await? {
            Some(held) => Some(held),
            // Asked to stop before becoming the leader.
            None => return Ok(()),
        },
        None => None,
    };
    tracing::info!(
        namespace = config.namespace.as_deref().unwrap_or("<all>"),
        "rollguard operator starting"
    );
    let selected = || match &config.selector {
        Some(selector) => watcher::Config::default().labels(selector),
        None => watcher::Config::default(),
    };
    if let Some(selector) = &config.selector {
        // A selector the API server cannot parse would leave the watch retrying for ever.
        api.list_metadata(&kube::api::ListParams::default().labels(selector).limit(1))
            .await
            .map_err(|source| RunError::Selector {
                selector: selector.clone(),
                source,
            })?;
    }
    // One watch of the ModelDeployments fills the controller's store and tells the policy
    // controller which policies gained or lost users.
    let (model_store, model_writer) = kube::runtime::reflector::store();
    // This operator's writes the stores may not show yet; each watch tells them how far it has come.
    let written = written::Written::default();
    let model_progress = written.models.progress();
    let (policy_wake, policy_woken) = futures::channel::mpsc::unbounded();
    let mut users = policy_triggers::PolicyUsers::default();
    let model_events = watcher(api.clone(), selected())
        .default_backoff()
        .modify(cache::slim)
        .inspect(move |event| {
            if let Ok(event) = event {
                for policy in users.changed(event) {
                    let _ = policy_wake.unbounded_send(policy);
                }
            }
        });
    // A request that takes the weight off a canary goes to the abort lane when it arrives,
    // once the store holds it (the lane plans from the store).
    let (urgent, urgent_requests) = futures::channel::mpsc::unbounded();
    let mut arrivals = lane::Arrivals::default();
    let models = Controller::for_stream(
        model_progress
            .track(kube::runtime::reflector(model_writer, model_events))
            .inspect(move |event| {
                if let Some(key) = event.as_ref().ok().and_then(|e| arrivals.arrived(e)) {
                    let _ = urgent.unbounded_send(key);
                }
            })
            .applied_objects(),
        model_store,
    )
    .with_config(kube::runtime::controller::Config::default().concurrency(config.concurrency));
    // Label-selected watches of what rollguard owns, and of the policies, fill the caches
    // that observe reads; their changes trigger reconciles through shared subscriptions.
    let (stores, triggers, watches) = cache::start(
        scoped(&client, &config.namespace),
        scoped(&client, &config.namespace),
        scoped(&client, &config.namespace),
        scoped(&client, &config.namespace),
        models.store(),
        &written,
    );
    // The watch tasks are aborted when the operator stops.
    let _watches: Vec<cache::AbortOnDrop> = watches.into_iter().map(cache::AbortOnDrop).collect();
    // Trigger evaluations publish off the reconcile path and wake the reconcile through this.
    let (wake, woken) = futures::channel::mpsc::unbounded();
    let mut ctx = Context::new(
        client.clone(),
        config.resync,
        metrics.clone(),
        wake,
        Caches {
            stores: stores.clone(),
            written,
            pools: cache::Pools::new(scoped(&client, &config.namespace)),
            routes: routes::Routes::new(client.clone(), config.namespace.clone()),
        },
    );
    ctx.shard = config.selector.clone();
    let (breaches, breached) = futures::channel::mpsc::unbounded();
    ctx.evaluators.set_lane(breaches);
    let ctx = Arc::new(ctx);
    let publisher = ctx.clone();
    // Planning from a cache that has not listed its objects yet would recreate what exists.
    tokio::select! {
        ready = stores.wait_until_ready() => {
            if ready.is_err() {
                return Err(RunError::CachesStopped);
            }
        }
        _ = shutdown.clone().requested() => return Ok(()),
    }
    let lane_ctx = ctx.clone();
    let _lane = cache::AbortOnDrop(tokio::spawn(async move {
        let mut urgent = futures::stream::select(
            urgent_requests.map(|key| (key, lane::Why::Request)),
            breached.map(|key| (key, lane::Why::Breach)),
        );
        while let Some((key, why)) = urgent.next().await {
            lane::spawn(&lane_ctx, key, why);
        }
    }));
    // A changed RollbackPolicy is looked at again by every ModelDeployment that uses it.
    let model_store = stores.models.clone();
    let models = models
        .owns_shared_stream(triggers.deployments)
        .owns_shared_stream(triggers.services)
        .watches_shared_stream(policy_triggers::new_generations(triggers.policies), move |policy| {
            let (namespace, name) = (policy.namespace(), policy.name_any());
            model_store
                .state()
                .into_iter()
                .filter(|md| md.namespace() == namespace && policy_triggers::policy_name(md) == Some(name.as_str()))
                .map(|md| ObjectRef::from(md.as_ref()))
                .collect::<Vec<_>>()
        })
        .reconcile_on(woken)
        .graceful_shutdown_on(shutdown.clone().requested())
        .run(model_deployment::reconcile, model_deployment::error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(object = %obj, "reconciled"),
                // A child of a ModelDeployment that is gone, or that another shard reconciles.
                Err(kube::runtime::controller::Error::ObjectNotFound(obj)) => {
                    tracing::debug!(object = %obj, "not reconciled: not in this operator's store")
                }
                Err(err) => tracing::warn!(error = %error::chain(&err), "reconcile failed"),
            }
        });
    // A policy's status lists the ModelDeployments that reference it.
    let policies: Api<RollbackPolicy> = scoped(&client, &config.namespace);
    let policies = Controller::new(policies, watcher::Config::default());
    let policy_store = policies.store();
    let policies = policies
        .reconcile_on(policy_woken)
        .graceful_shutdown_on(shutdown.clone().requested())
        .run(rollback_policy::reconcile, rollback_policy::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::warn!(error = %error::chain(&err), "policy reconcile failed");
            }
        });
    // A controller winds down only once its own store is filled; a signal that comes before
    // its first list would leave it waiting for ever. Then nothing has been reconciled: stop.
    let model_store = stores.models.clone();
    let unfilled = async move {
        shutdown.requested().await;
        let filled =
            async { model_store.wait_until_ready().await.is_ok() && policy_store.wait_until_ready().await.is_ok() };
        if !matches!(tokio::time::timeout(Duration::from_millis(200), filled).await, Ok(true)) {
            tracing::info!("stopping before the caches were filled");
            return;
        }
        std::future::pending::<()>().await
    };
    let controllers = async {
        tokio::select! {
            _ = async { futures::join!(models, policies) } => {}
            _ = unfilled => {}
        }
    };
    if let Some((mut held, task, lease)) = leadership {
        let lost = async {
            while held.changed().await.is_ok() {
                if !*held.borrow_and_update() {
                    break;
                }
            }
        };
        tokio::select! {
            _ = controllers => {}
            _ = lost => {
                tracing::error!(lease = %lease, "lost the leadership Lease; stopping");
                return Err(RunError::LostLeadership(lease));
            }
        }
        // Closing the channel releases the Lease for the next replica at once.
        drop(held);
        if let Ok(Err(e)) = task.await {
            tracing::warn!(error = %e, "releasing the Lease failed; it expires on its own");
        }
    } else {
        controllers.await;
    }
    // The last reconciles' Events are still queued.
    publisher.events.flush(Duration::from_secs(5)).await;
    tracing::info!("rollguard operator stopped");
    Ok(())
}
