//! The plan and status a reconcile ends with: Deployments, Services, weights, conditions.

use std::collections::{BTreeMap, BTreeSet};

use super::planner::Planner;
use super::{DesiredDeployment, Plan, PolicyObservation, RouteObservation, ServiceTarget};
use crate::api::{Phase, RevisionPhase, Severity, TriggerVerdict};
use crate::conditions::{self, Desired, reasons, stamp, types};
use crate::revision;
use crate::trigger::Decision;

/// Condition type that reports the last rollguard annotation handled.
pub const ANNOTATION_ACCEPTED: &str = "AnnotationAccepted";

/// Condition type that reports whether the traffic-split object can be used.
pub const TRAFFIC_ROUTED: &str = "TrafficRouted";

/// Condition type that reports whether the referenced RollbackPolicy was found.
pub const POLICY_RESOLVED: &str = "PolicyResolved";

/// Condition type that is True while a Warning trigger has fired recently.
pub const METRICS_WARNING: &str = "MetricsWarning";

impl Planner<'_> {
    pub(super) fn finish(mut self) -> Plan {
        if let Some(RouteObservation::Fault { reason, message }) = &self.obs.route {
            let (reason, message) = (*reason, message.clone());
            self.event(true, reason, format!("{message}; traffic left unchanged, retrying"));
        }
        let t = self.target;
        let rolling_out = self.rolling_out();
        let mut live: BTreeSet<i64> = self.stable.into_iter().collect();
        if rolling_out || self.stable.is_none() || self.phase_of(t) == Some(RevisionPhase::Progressing) {
            live.insert(t);
        }
        if let Some(to) = self.pending_rollback() {
            live.insert(to);
        }
        let gradual = self.gradual();
        if let Some(g) = &gradual {
            live.insert(g.from);
        }
        let warm_count = usize::try_from(self.md.spec.warm_revisions.max(0)).unwrap_or(0);
        let warm: Vec<i64> = self
            .history
            .values()
            .rev()
            .filter(|h| !live.contains(&h.revision) && h.phase == RevisionPhase::Superseded)
            .map(|h| h.revision)
            .take(warm_count)
            .collect();
        let warm_size = self
            .md
            .spec
            .warm_replicas
            .map_or(self.replicas, |w| w.clamp(0, self.replicas));
        let keep: Vec<i64> = live.iter().chain(warm.iter()).copied().collect();
        // The spec's revision is never pruned either, even when held at 0 replicas: pruning
        // it would forget that it was rolled back and deploy it again as a new revision.
        let protected: Vec<i64> = keep.iter().copied().chain(std::iter::once(t)).collect();
        let newest_first: Vec<i64> = self.snapshots.keys().rev().copied().collect();
        let limit = usize::try_from(self.md.spec.revision_history_limit.max(1)).unwrap_or(1);
        let (_kept, prune) = revision::retain(&newest_first, &protected, limit);
        for p in &prune {
            self.history.remove(p);
        }

        let mut deployments = BTreeMap::new();
        for rev in self.history.keys().copied() {
            let observed = self.obs.deployments.get(&rev);
            let running = keep.contains(&rev);
            if !running && observed.is_none() {
                continue;
            }
            // A revision a gradual rollback walks traffic off keeps the pods it has (a
            // canary sized by its weight is not scaled up on its way out).
            let walked_off = gradual.is_some_and(|g| g.from == rev) && self.stable != Some(rev);
            let replicas = match (running, warm.contains(&rev)) {
                (false, _) => 0,
                (true, true) => warm_size,
                (true, false) if walked_off => observed.map_or(self.replicas, |d| d.replicas.min(self.replicas)),
                (true, false) => self.size_of(rev),
            };
            let scaled_from_zero = observed.is_none_or(|d| d.replicas == 0) && replicas > 0;
            // A scale-up of the spec's revision (a canary step, autoscaling) starts its clock
            // again: the new pods get the whole progress deadline to become ready.
            let scaled_up = observed.is_some_and(|d| replicas > d.replicas);
            let progress_started_at =
                if self.reset_progress.contains(&rev) || (rev == t && (scaled_from_zero || scaled_up)) {
                    Some(self.now)
                } else {
                    observed.and_then(|d| d.progress_started_at)
                };
            // The step of a running canary; gone once it ends, so a later rollout starts at 0.
            let canary_step = if rev == t && rolling_out {
                self.canary_step().or(observed.and_then(|d| d.canary_step))
            } else {
                None
            };
            let rollback_step = gradual.filter(|g| g.from == rev).and_then(|g| g.step);
            deployments.insert(
                rev,
                DesiredDeployment {
                    replicas,
                    create: running,
                    progress_started_at,
                    canary_step,
                    rollback_step,
                },
            );
        }

        let port_of = |rev: i64| self.snapshots.get(&rev).map(|s| s.port).unwrap_or(self.md.spec.port);
        let target_of = |r: i64| ServiceTarget {
            revision: r,
            port: port_of(r),
        };
        let stable_service = match &gradual {
            Some(g) => g.stable.map(target_of),
            None => self.stable.map(target_of),
        };
        let share = self.share();
        let preview = if let Some(sh) = &share {
            sh.canary.or(self.obs.canary_service.map(|s| s.revision))
        } else if let Some(g) = &gradual {
            Some(g.canary)
        } else if rolling_out || self.stable.is_none() {
            Some(t)
        } else {
            self.stable
        };
        let canary_service = preview.map(target_of);

        // The route carries canary weight only while a canary runs; otherwise all traffic
        // goes to the stable Service.
        let route_weight = match (&self.md.spec.traffic_routing, rolling_out, &gradual) {
            (None, _, _) => None,
            (Some(_), _, None) if share.is_some() => share.map(|s| s.weight),
            (Some(_), _, Some(g)) => g.weight,
            (Some(_), true, None) => self.canary_weight(),
            (Some(_), false, None) => Some(0),
        };
        let observed_weight = match &self.obs.route {
            Some(RouteObservation::Weights(w)) => Some(w.canary),
            _ => None,
        };
        let canary_step_index = if rolling_out && self.md.spec.strategy.canary.is_some() {
            self.canary_step().map(|s| s.index)
        } else {
            None
        };
        let generation = self.md.metadata.generation.unwrap_or(0);
        let current = self.md.status.clone().unwrap_or_default();
        let desired = self.conditions();
        let status = crate::api::ModelDeploymentStatus {
            observed_generation: Some(generation),
            phase: Some(self.phase),
            message: Some(self.message.clone()),
            current_revision: Some(t),
            stable_revision: self.stable,
            canary_revision: match (&gradual, &share) {
                (Some(g), _) => Some(g.from),
                (None, Some(sh)) => sh.canary,
                (None, None) => rolling_out.then_some(t),
            },
            canary_weight: if rolling_out || gradual.is_some() || share.is_some() {
                observed_weight
            } else {
                None
            },
            current_step_index: canary_step_index,
            replicas: self
                .stable
                .and_then(|s| self.obs.deployments.get(&s))
                .map(|d| d.ready_replicas),
            selector: self.stable.map(|s| {
                format!(
                    "{}={},{}={s}",
                    crate::api::labels::MODEL_DEPLOYMENT,
                    self.md.metadata.name.as_deref().unwrap_or_default(),
                    crate::api::labels::REVISION
                )
            }),
            warm: (!warm.is_empty()).then(|| crate::api::WarmStatus {
                revisions: warm.clone(),
                replicas: warm_size.saturating_mul(i32::try_from(warm.len()).unwrap_or(i32::MAX)),
            }),
            history: self.history.values().rev().cloned().collect(),
            last_rollback: self.last_rollback.clone(),
            analysis: match &self.obs.metrics {
                Some(m) => crate::trigger::to_record(&current.analysis, &m.analysis, self.analysis_refresh(), self.now),
                None => current.analysis.clone(),
            },
            // Conditions about a route, a policy or metrics that no longer apply are removed.
            conditions: conditions::merge(
                &current.conditions,
                &desired,
                &[
                    TRAFFIC_ROUTED,
                    POLICY_RESOLVED,
                    METRICS_WARNING,
                    crate::conditions::types::METRICS_AVAILABLE,
                ],
                generation,
                &stamp(self.now),
            ),
        };
        Plan {
            new_revision: self.new_revision,
            deployments,
            prune,
            stable_service,
            canary_service,
            status,
            consume: self.consume,
            events: self.events,
            requeue_after: match (self.requeue_after, self.verification_requeue) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            route_weight,
        }
    }

    /// How old the recorded trigger results may grow while only their values and times
    /// change: [`crate::trigger::REFRESH_EVALUATIONS`] intervals of the policy.
    fn analysis_refresh(&self) -> jiff::SignedDuration {
        let interval = self
            .policy()
            .map(|p| p.interval.signed())
            .unwrap_or_default()
            .max(jiff::SignedDuration::from_secs(1));
        interval
            .checked_mul(crate::trigger::REFRESH_EVALUATIONS)
            .unwrap_or(interval)
    }

    pub(super) fn conditions(&self) -> Vec<Desired> {
        let msg = self.message.clone();
        let mut out = match self.phase {
            Phase::Healthy => vec![
                Desired::new(types::READY, Some(true), reasons::RECONCILED, msg.clone()),
                Desired::new(types::RECONCILING, Some(false), reasons::RECONCILED, ""),
                Desired::new(types::STALLED, Some(false), reasons::RECONCILED, ""),
            ],
            Phase::Degraded => vec![
                Desired::new(types::READY, Some(false), self.stalled_reason, msg.clone()),
                Desired::new(types::RECONCILING, Some(false), self.stalled_reason, ""),
                Desired::new(types::STALLED, Some(true), self.stalled_reason, msg.clone()),
            ],
            Phase::Paused if !self.stalled_reason.is_empty() => vec![
                Desired::new(types::READY, Some(false), self.stalled_reason, msg.clone()),
                Desired::new(types::RECONCILING, Some(false), self.stalled_reason, ""),
                Desired::new(types::STALLED, Some(true), self.stalled_reason, msg.clone()),
            ],
            phase => {
                let reason = match phase {
                    Phase::RollingBack => "RollingBack",
                    // The rollout stands still until the provider answers: GitOps health
                    // reads this reason (Suspended), kubectl rollguard explain says so.
                    _ if self.metrics_hold().is_some() => reasons::METRICS_HOLD,
                    Phase::Paused => "Paused",
                    _ => reasons::PROGRESSING,
                };
                vec![
                    Desired::new(types::READY, Some(false), reason, msg.clone()),
                    Desired::new(types::RECONCILING, Some(true), reason, msg.clone()),
                    Desired::new(types::STALLED, Some(false), reason, ""),
                ]
            }
        };
        match &self.obs.route {
            Some(RouteObservation::Fault { reason, message }) => {
                out.push(Desired::new(TRAFFIC_ROUTED, Some(false), reason, message.clone()));
            }
            Some(RouteObservation::Weights(_)) => {
                out.push(Desired::new(
                    TRAFFIC_ROUTED,
                    Some(true),
                    "RouteReady",
                    "the traffic-split object is usable",
                ));
            }
            None => {}
        }
        if let Some(m) = &self.obs.metrics {
            out.extend(metrics_conditions(m));
        }
        match &self.obs.policy {
            Some(PolicyObservation::NotFound(message)) => {
                out.push(Desired::new(
                    POLICY_RESOLVED,
                    Some(false),
                    "PolicyNotFound",
                    format!("{message}; rollbacks run with the defaults (Instant)"),
                ));
            }
            Some(PolicyObservation::Found(_)) => {
                out.push(Desired::new(
                    POLICY_RESOLVED,
                    Some(true),
                    "PolicyFound",
                    "the RollbackPolicy is in use",
                ));
            }
            None => {}
        }
        if let Some((ok, reason, message)) = &self.annotation_condition {
            out.push(Desired::new(ANNOTATION_ACCEPTED, Some(*ok), reason, message.clone()));
        }
        out
    }
}

/// `MetricsAvailable` (False with the reason while a query cannot run) and `MetricsWarning`
/// (True while a Warning trigger has fired recently).
fn metrics_conditions(m: &super::MetricsObservation) -> Vec<Desired> {
    let rev = m.judged.revision;
    if m.analysis.is_empty() {
        // The first evaluation of this revision has not answered yet.
        let message = match &m.decision {
            Decision::Hold { reason } => reason.clone(),
            _ => format!("the triggers on revision {rev} are being evaluated"),
        };
        return vec![
            Desired::new(crate::conditions::types::METRICS_AVAILABLE, None, "Evaluating", message),
            Desired::new(METRICS_WARNING, Some(false), "NoWarning", ""),
        ];
    }
    let broken = m
        .analysis
        .iter()
        .find(|a| matches!(a.verdict, Some(TriggerVerdict::Unavailable | TriggerVerdict::Invalid)));
    let available = match broken {
        Some(a) => {
            let reason = if a.verdict == Some(TriggerVerdict::Invalid) {
                "QueryFailed"
            } else {
                "ProviderUnavailable"
            };
            let then = match &m.decision {
                Decision::Hold { .. } => "; holding (onMetricsUnavailable: Hold)",
                Decision::Rollback { .. } => "",
                Decision::Proceed => "; carrying on (onMetricsUnavailable: Ignore)",
            };
            let message = format!(
                "trigger {} on revision {rev}: {}{then}",
                a.trigger,
                a.message.clone().unwrap_or_default()
            );
            Desired::new(
                crate::conditions::types::METRICS_AVAILABLE,
                Some(false),
                reason,
                message,
            )
        }
        None => Desired::new(
            crate::conditions::types::METRICS_AVAILABLE,
            Some(true),
            "MetricsAvailable",
            format!("the triggers were evaluated on revision {rev}"),
        ),
    };
    let warned: Vec<&str> = m
        .analysis
        .iter()
        .filter(|a| matches!(a.verdict, Some(TriggerVerdict::Fired | TriggerVerdict::CoolingDown)))
        .filter(|a| a.severity == Some(Severity::Warning))
        .map(|a| a.trigger.as_str())
        .collect();
    let warning = if warned.is_empty() {
        Desired::new(METRICS_WARNING, Some(false), "NoWarning", "")
    } else {
        Desired::new(
            METRICS_WARNING,
            Some(true),
            "WarningTriggerFired",
            format!("revision {rev}: {}", warned.join(", ")),
        )
    };
    vec![available, warning]
}
