//! Evaluates the RollbackPolicy's triggers off the reconcile path.
//!
//! Metrics I/O must never delay a manual request, an abort, a rollback, a promotion or a
//! step, and a metrics provider is slowest exactly during an incident. So a reconcile never
//! queries: one task per ModelDeployment whose revision is being judged queries the provider
//! every `interval` and publishes its latest [`Judgement`]; the reconcile reads the latest one
//! without waiting ([`Evaluators::observe`]), and each publication wakes the reconcile.
//!
//! A task is bound to a [`Job`] (the judged revision and why, the triggers, the provider and
//! the query variables): when the reconcile asks for another job, the old task stops and a
//! new one starts, carrying on from the entries already recorded in `status.analysis` (so a
//! restarted operator keeps counting and does not query before the interval has passed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use futures::future::join_all;
use jiff::{SignedDuration, Timestamp};
use kube::runtime::reflector::ObjectRef;

use super::resources::{canary_service_name, stable_service_name};
use crate::api::{ModelDeployment, OnMetricsUnavailable, RollbackPolicySpec, Trigger, TriggerAnalysis};
use crate::metrics::MetricsProvider;
use crate::metrics::prometheus::Prometheus;
use crate::metrics::query::{Vars, render, text_of};
use crate::plan::{self, Judged, MetricsObservation, Observed, PolicyObservation};
use crate::telemetry::Metrics;
use crate::trigger::{self, Decision, EvaluationError, Judgement, Outcome};

/// Prometheus clients by address and timeout, shared by every evaluation (a client keeps its
/// connection pool and TLS setup).
#[derive(Default)]
struct Providers {
    clients: Mutex<HashMap<(String, Duration), Prometheus>>,
}

impl Providers {
    /// The client of `address` with `timeout`, built on first use.
    fn prometheus(&self, address: &str, timeout: Duration) -> Prometheus {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry((address.to_string(), timeout))
            .or_insert_with(|| Prometheus::new(address, timeout))
            .clone()
    }
}

/// What one evaluation task does: judge one revision with one policy's triggers.
#[derive(Clone, Debug, PartialEq)]
struct Job {
    judged: Judged,
    triggers: Vec<Trigger>,
    on_unavailable: OnMetricsUnavailable,
    interval: SignedDuration,
    address: String,
    timeout: Duration,
    vars: Vars,
}

impl Job {
    /// The job `md` needs now; None when nothing is judged.
    fn of(md: &ModelDeployment, obs: &Observed) -> Option<Job> {
        let judged = plan::judged(md, obs)?;
        let policy = match &obs.policy {
            Some(PolicyObservation::Found(p)) => p.as_ref(),
            _ => return None,
        };
        let provider = policy.provider.as_ref()?;
        Some(Job {
            judged,
            triggers: policy.triggers.clone(),
            on_unavailable: policy.on_metrics_unavailable,
            // At least a second: `0s` must not query in a busy loop.
            interval: policy.interval.signed().max(SignedDuration::from_secs(1)),
            address: provider.prometheus.address.clone(),
            // At least 100 ms: `0s` would fail every query before it is sent.
            timeout: provider.prometheus.timeout.get().max(Duration::from_millis(100)),
            vars: vars(md, obs, judged, policy),
        })
    }
}

/// The latest judgement a task published (None until its first).
type Latest = Arc<Mutex<Option<Judgement>>>;

fn read(latest: &Latest) -> Option<Judgement> {
    latest.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

struct Task {
    job: Job,
    latest: Latest,
    handle: tokio::task::AbortHandle,
}

impl Drop for Task {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// The evaluation tasks, one per judged ModelDeployment.
pub struct Evaluators {
    tasks: Mutex<HashMap<ObjectRef<ModelDeployment>, Task>>,
    providers: Providers,
    wake: UnboundedSender<ObjectRef<ModelDeployment>>,
    /// Where a judgement that rolls back also goes: the abort lane (see [`super::lane`]).
    lane: Option<UnboundedSender<ObjectRef<ModelDeployment>>>,
    metrics: Arc<Metrics>,
}

impl Evaluators {
    /// Sends each ModelDeployment whose triggers decide to roll back to `lane` too.
    pub fn set_lane(&mut self, lane: UnboundedSender<ObjectRef<ModelDeployment>>) {
        self.lane = Some(lane);
    }

    /// Evaluators that wake a ModelDeployment's reconcile through `wake` when they publish.
    pub fn new(wake: UnboundedSender<ObjectRef<ModelDeployment>>, metrics: Arc<Metrics>) -> Self {
        Evaluators {
            tasks: Mutex::new(HashMap::new()),
            providers: Providers::default(),
            wake,
            lane: None,
            metrics,
        }
    }

    /// What the triggers say now about the revision `md` needs judged, without waiting: the
    /// latest published judgement, else the one standing in `status.analysis`, else a Hold
    /// until the first evaluation. Starts, replaces or stops the evaluation task to match.
    /// None when nothing is judged.
    pub fn observe(
        &self,
        key: &ObjectRef<ModelDeployment>,
        md: &ModelDeployment,
        obs: &Observed,
    ) -> Option<MetricsObservation> {
        let Some(job) = Job::of(md, obs) else {
            self.forget(key);
            return None;
        };
        let revision = job.judged.revision;
        let recorded: Vec<TriggerAnalysis> = md
            .status
            .as_ref()
            .map(|s| s.analysis.iter().filter(|a| a.revision == revision).cloned().collect())
            .unwrap_or_default();
        let published = {
            let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
            match tasks.get(key) {
                Some(task) if task.job == job => read(&task.latest),
                previous => {
                    // Carry on from the newer of the old task's judgement and the status.
                    let carried = previous
                        .and_then(|t| read(&t.latest))
                        .filter(|j| j.analysis.iter().all(|a| a.revision == revision))
                        .filter(|j| newest(&j.analysis) >= newest(&recorded))
                        .map(|j| j.analysis)
                        .unwrap_or_else(|| recorded.clone());
                    let task = self.spawn(key.clone(), job.clone(), carried);
                    let first = read(&task.latest);
                    tasks.insert(key.clone(), task);
                    first
                }
            }
        };
        Some(match published {
            Some(j) => {
                // Announce a round once: when it is newer than what the status recorded.
                let fresh = newest(&j.analysis) > newest(&recorded);
                MetricsObservation {
                    judged: job.judged,
                    analysis: j.analysis,
                    decision: j.decision,
                    notices: if fresh { j.notices } else { Vec::new() },
                    fresh,
                }
            }
            None => MetricsObservation {
                judged: job.judged,
                analysis: Vec::new(),
                decision: Decision::Hold {
                    reason: format!("the triggers on revision {revision} are being evaluated for the first time"),
                },
                notices: Vec::new(),
                fresh: false,
            },
        })
    }

    /// Stops the evaluation of `key` (it was deleted, or nothing of it is judged).
    pub fn forget(&self, key: &ObjectRef<ModelDeployment>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.remove(key);
    }

    fn spawn(&self, key: ObjectRef<ModelDeployment>, job: Job, recorded: Vec<TriggerAnalysis>) -> Task {
        let standing = trigger::standing(&job.triggers, job.judged.revision, &recorded, job.on_unavailable);
        let latest: Latest = Arc::new(Mutex::new(standing));
        let prometheus = self.providers.prometheus(&job.address, job.timeout);
        let run = evaluate_every_interval(
            job.clone(),
            recorded,
            prometheus,
            latest.clone(),
            Wake {
                reconcile: self.wake.clone(),
                lane: self.lane.clone(),
            },
            key,
            self.metrics.clone(),
        );
        let handle = tokio::spawn(run).abort_handle();
        Task { job, latest, handle }
    }
}

/// The latest `lastEvaluatedAt` among `entries`.
fn newest(entries: &[TriggerAnalysis]) -> Option<Timestamp> {
    entries
        .iter()
        .filter_map(|a| a.last_evaluated_at.as_ref().map(|t| t.0))
        .max()
}

/// Whom a publication wakes: the reconcile, and the abort lane when it rolls back.
struct Wake {
    reconcile: UnboundedSender<ObjectRef<ModelDeployment>>,
    lane: Option<UnboundedSender<ObjectRef<ModelDeployment>>>,
}

/// The task: wait until the triggers are due, query them all at once, publish, wake the
/// reconcile (and the abort lane, for a rollback), repeat. Ends when the operator stops
/// listening.
async fn evaluate_every_interval(
    job: Job,
    mut recorded: Vec<TriggerAnalysis>,
    prometheus: Prometheus,
    latest: Latest,
    wake: Wake,
    key: ObjectRef<ModelDeployment>,
    metrics: Arc<Metrics>,
) {
    let revision = job.judged.revision;
    loop {
        let now = Timestamp::now();
        if let Some(at) = trigger::next_due(&job.triggers, &recorded, revision, job.interval, now) {
            tokio::time::sleep(now.duration_until(at).unsigned_abs()).await;
        }
        let now = Timestamp::now();
        let outcomes: Vec<Outcome> = join_all(job.triggers.iter().map(|t| {
            let query = render(&text_of(t), &job.vars);
            let prometheus = &prometheus;
            async move {
                match query {
                    Ok(q) => prometheus.query(&q).await.map_err(EvaluationError::from),
                    Err(e) => Err(EvaluationError::Invalid(format!("query cannot be built: {e}"))),
                }
            }
        }))
        .await;
        let judgement = trigger::judge(&job.triggers, revision, &outcomes, &recorded, job.on_unavailable, now);
        for a in &judgement.analysis {
            metrics.evaluated(&format!(
                "{:?}",
                a.verdict.unwrap_or(crate::api::TriggerVerdict::NoData)
            ));
        }
        tracing::debug!(
            object = %key,
            revision,
            purpose = ?job.judged.purpose,
            decision = ?judgement.decision,
            "triggers evaluated"
        );
        recorded = judgement.analysis.clone();
        let rolls_back = matches!(judgement.decision, Decision::Rollback { .. });
        *latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(judgement);
        if let Some(lane) = wake.lane.as_ref().filter(|_| rolls_back) {
            let _ = lane.unbounded_send(key.clone());
        }
        if wake.reconcile.unbounded_send(key.clone()).is_err() {
            return;
        }
    }
}

/// The query variables for `judged`.
fn vars(md: &ModelDeployment, obs: &Observed, judged: Judged, policy: &RollbackPolicySpec) -> Vars {
    let name = md.metadata.name.clone().unwrap_or_default();
    let snapshot = obs
        .revisions
        .iter()
        .find(|r| r.number == judged.revision)
        .map(|r| &r.snapshot);
    Vars {
        revision: judged.revision.to_string(),
        version: snapshot
            .map(|s| s.model.version.clone())
            .unwrap_or_else(|| md.spec.model.version.clone()),
        model: snapshot
            .map(|s| s.model.name.clone())
            .unwrap_or_else(|| md.spec.model.name.clone()),
        namespace: md.metadata.namespace.clone().unwrap_or_default(),
        service: if judged.via_canary {
            canary_service_name(&name)
        } else {
            stable_service_name(&name)
        },
        name,
        interval: policy.interval.as_str().to_string(),
    }
}
