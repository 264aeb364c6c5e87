//! Evaluates the RollbackPolicy's triggers on the revision being judged, every `interval`.

use std::time::Duration;

use futures::future::join_all;

use super::resources::{canary_service_name, stable_service_name};
use crate::api::{ModelDeployment, RollbackPolicySpec};
use crate::metrics::MetricsProvider;
use crate::metrics::prometheus::Prometheus;
use crate::metrics::query::{Vars, render, text_of};
use crate::plan::{self, Judged, MetricsObservation, Observed, PolicyObservation, parse_duration};
use crate::trigger::{self, EvaluationError, Outcome};

/// Prometheus clients by address and timeout, shared by every reconcile (a client keeps its
/// connection pool and TLS setup).
#[derive(Default)]
pub struct Providers {
    clients: std::sync::Mutex<std::collections::HashMap<(String, Duration), Prometheus>>,
}

impl Providers {
    /// The client of `address` with `timeout`, built on first use.
    pub fn prometheus(&self, address: &str, timeout: Duration) -> Prometheus {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry((address.to_string(), timeout))
            .or_insert_with(|| Prometheus::new(address, timeout))
            .clone()
    }
}

/// The evaluation of this reconcile, and how long until the next one is due.
pub struct Evaluation {
    /// What the triggers say.
    pub metrics: MetricsObservation,
    /// When to evaluate again.
    pub next_in: Duration,
}

/// The query variables for `judged`.
pub fn vars(md: &ModelDeployment, obs: &Observed, judged: Judged, policy: &RollbackPolicySpec) -> Vars {
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
        interval: policy.interval.0.clone(),
    }
}

/// Queries the triggers when they are due (else keeps their last results) and decides.
/// None when nothing is judged.
pub async fn evaluate(md: &ModelDeployment, obs: &Observed, providers: &Providers) -> Option<Evaluation> {
    let judged = plan::judged(md, obs)?;
    let policy = match &obs.policy {
        Some(PolicyObservation::Found(p)) => p.as_ref(),
        _ => return None,
    };
    let provider = policy.provider.as_ref()?;
    let interval = parse_duration(&policy.interval.0)
        .filter(|d| d.is_positive())
        .unwrap_or(jiff::SignedDuration::from_secs(30));
    let status = md.status.clone().unwrap_or_default();
    let previous = |name: &str| {
        status
            .analysis
            .iter()
            .find(|a| a.trigger == name && a.revision == judged.revision)
    };
    let due = policy
        .triggers
        .iter()
        .any(|t| trigger::due(previous(&t.name), judged.revision, interval, obs.now));
    let next_in = interval.unsigned_abs();
    if !due {
        let analysis: Vec<_> = policy
            .triggers
            .iter()
            .filter_map(|t| previous(&t.name).cloned())
            .collect();
        let (decision, _) = trigger::decide(&policy.triggers, &analysis, policy.on_metrics_unavailable);
        let last = analysis
            .iter()
            .filter_map(|a| a.last_evaluated_at.as_ref().map(|t| t.0))
            .max();
        let next_in = last
            .and_then(|l| l.checked_add(interval).ok())
            .map(|at| obs.now.duration_until(at).unsigned_abs())
            .unwrap_or(next_in);
        return Some(Evaluation {
            metrics: MetricsObservation {
                judged,
                analysis,
                decision,
                notices: Vec::new(),
                fresh: false,
            },
            next_in,
        });
    }
    let timeout = parse_duration(&provider.prometheus.timeout.0)
        .filter(|d| d.is_positive())
        .map(|d| d.unsigned_abs())
        .unwrap_or(Duration::from_secs(5));
    let prometheus = providers.prometheus(&provider.prometheus.address, timeout);
    let vars = vars(md, obs, judged, policy);
    let outcomes: Vec<Outcome> = join_all(policy.triggers.iter().map(|t| {
        let query = render(&text_of(t), &vars);
        let prometheus = &prometheus;
        async move {
            match query {
                Ok(q) => prometheus.query(&q).await.map_err(EvaluationError::from),
                Err(e) => Err(EvaluationError::Invalid(format!("query cannot be built: {e}"))),
            }
        }
    }))
    .await;
    let analysis: Vec<_> = policy
        .triggers
        .iter()
        .zip(&outcomes)
        .map(|(t, outcome)| trigger::evaluate(t, judged.revision, outcome, previous(&t.name), obs.now))
        .collect();
    let (decision, notices) = trigger::decide(&policy.triggers, &analysis, policy.on_metrics_unavailable);
    tracing::debug!(
        revision = judged.revision,
        purpose = ?judged.purpose,
        ?decision,
        "triggers evaluated"
    );
    Some(Evaluation {
        metrics: MetricsObservation {
            judged,
            analysis,
            decision,
            notices,
            fresh: true,
        },
        next_in,
    })
}
