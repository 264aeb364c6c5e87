//! The rollout state machine for blue/green, instant rollback and the annotations.
//!
//! State lives in the ModelDeployment status (stable revision, history phases, a pending
//! rollback in `lastRollback`) and in the cluster (ControllerRevisions, Deployments,
//! Services), so a restarted operator picks up where the last one stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::annotations::{self, Promote, Request, RollbackTarget};
use super::{
    CanaryStepState, DesiredDeployment, Judged, Observed, Plan, PlannedEvent, PolicyObservation, Purpose,
    RouteObservation, ServiceTarget,
};
use crate::api::{
    CanaryStep, GradualRollback, ModelDeployment, OnUnhealthy, Phase, RevisionPhase, RevisionRecord, RollbackMode,
    RollbackPolicySpec, RollbackRecord, RollbackSpec, RollbackTrigger, Severity, TriggerVerdict, Verification,
};
use crate::conditions::{self, Desired, reasons, stamp, types};
use crate::revision::{self, Snapshot};
use crate::trigger::Decision;

/// Condition type that reports the last rollguard annotation handled.
pub const ANNOTATION_ACCEPTED: &str = "AnnotationAccepted";

/// Condition type that reports whether the traffic-split object can be used.
pub const TRAFFIC_ROUTED: &str = "TrafficRouted";

/// Condition type that reports whether the referenced RollbackPolicy was found.
pub const POLICY_RESOLVED: &str = "PolicyResolved";

/// Condition type that is True while a Warning trigger has fired recently.
pub const METRICS_WARNING: &str = "MetricsWarning";

/// Restored by a rollback: the history reason that keeps a revision out of the guard window.
const RESTORED: &str = "restored by a rollback";

/// The outcome of one reconcile of a gradual rollback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Walk {
    /// Traffic is still being walked down.
    InFlight,
    /// The revision being left carries no traffic: complete the rollback.
    Done,
    /// The walk cannot go on: finish as an instant rollback does.
    GaveWay,
}

/// Where traffic stays during one reconcile of a gradual rollback.
#[derive(Clone, Copy, Debug)]
struct GradualTraffic {
    /// The revision being left; it holds the canary weight.
    from: i64,
    /// What the stable Service selects (None: leave it).
    stable: Option<i64>,
    /// What the canary Service selects.
    canary: i64,
    /// The canary weight to write (None: leave it).
    weight: Option<i32>,
    /// The step being held, persisted on the Deployment of `from`.
    step: Option<CanaryStepState>,
}

/// Decides what the world should look like for `md`, given what was observed.
///
/// Worked example (blue/green, autoPromote): stable r1, the spec now hashes to something new.
/// The plan records r2, asks for Deployment `<name>-r2` at `replicas`, points the preview
/// Service at r2 and keeps the stable Service on r1 (phase Progressing). Once r2 is
/// Available, the next plan points the stable Service at r2, marks r1 Superseded and keeps
/// it warm (phase Healthy).
pub fn plan(md: &ModelDeployment, obs: &Observed) -> Plan {
    let mut p = Planner::new(md, obs);
    p.handle_annotations();
    p.act_on_metrics();
    p.end_verification();
    if !p.complete_pending_rollback() {
        p.progress();
    }
    p.finish()
}

/// Which revision the policy's triggers should judge now, and why; None when there is no
/// policy with triggers or nothing to judge. The controller queries for this revision before
/// planning.
///
/// In order: the target of a gradual rollback under way; a canary (or blue/green preview)
/// being rolled out; the revision a rollback restored, until its verification ends; the new
/// stable revision within `guardWindow` after its promotion (when there is a previous one).
pub fn judged(md: &ModelDeployment, obs: &Observed) -> Option<Judged> {
    let policy = match &obs.policy {
        Some(PolicyObservation::Found(p)) if !p.triggers.is_empty() && p.provider.is_some() => p,
        _ => return None,
    };
    Planner::new(md, obs).judged(policy)
}

struct Planner<'a> {
    md: &'a ModelDeployment,
    obs: &'a Observed,
    now: Timestamp,
    replicas: i32,
    snapshots: BTreeMap<i64, Snapshot>,
    history: BTreeMap<i64, RevisionRecord>,
    new_revision: Option<(i64, Snapshot)>,
    target: i64,
    stable: Option<i64>,
    last_rollback: Option<RollbackRecord>,
    phase: Phase,
    message: String,
    stalled_reason: &'static str,
    events: Vec<PlannedEvent>,
    consume: Vec<&'static str>,
    annotation_condition: Option<(bool, &'static str, String)>,
    promote_requested: Option<Promote>,
    reset_progress: BTreeSet<i64>,
    requeue_after: Option<Duration>,
    /// Desired canary weight on the route object while a canary runs.
    canary_weight: Option<i32>,
    /// The canary step to persist on the canary Deployment.
    canary_step: Option<CanaryStepState>,
    /// How rollbacks run (the referenced RollbackPolicy's `rollback`, or the defaults).
    rollback_spec: RollbackSpec,
    /// Set while a gradual rollback holds traffic on the revision being left.
    gradual: Option<GradualTraffic>,
    /// `rollguard.dev/abort` during a gradual rollback: finish it at once.
    finish_gradual_now: bool,
    /// The policy's triggers say hold (metrics unavailable): nothing advances.
    metrics_hold: Option<String>,
    /// The policy's triggers judge the target of a gradual rollback unhealthy.
    gradual_unhealthy: Option<String>,
    /// When an open verification window ends.
    verification_requeue: Option<Duration>,
}

impl<'a> Planner<'a> {
    fn new(md: &'a ModelDeployment, obs: &'a Observed) -> Self {
        let status = md.status.clone().unwrap_or_default();
        let now = obs.now;
        let spec_snapshot = Snapshot::of(&md.spec);
        let spec_hash = spec_snapshot.hash();
        let mut snapshots: BTreeMap<i64, Snapshot> =
            obs.revisions.iter().map(|r| (r.number, r.snapshot.clone())).collect();
        let existing = obs
            .revisions
            .iter()
            .filter(|r| r.hash == spec_hash)
            .map(|r| r.number)
            .max();
        let mut events = Vec::new();
        let mut new_revision = None;
        let target = match existing {
            Some(n) => n,
            None => {
                let known = snapshots
                    .keys()
                    .copied()
                    .chain(status.history.iter().map(|h| h.revision))
                    .chain(status.current_revision)
                    .chain(status.stable_revision)
                    .chain(obs.deployments.keys().copied());
                let n = revision::next_revision_number(known);
                snapshots.insert(n, spec_snapshot.clone());
                new_revision = Some((n, spec_snapshot.clone()));
                events.push(PlannedEvent {
                    warning: false,
                    reason: "RevisionCreated",
                    note: format!("revision {n} (version {}) created", spec_snapshot.model.version),
                });
                n
            }
        };
        // History: what status says, for revisions that still exist, plus any revision found
        // in the cluster but missing from status (a status write lost to a restart).
        let mut history: BTreeMap<i64, RevisionRecord> = status
            .history
            .iter()
            .filter(|h| snapshots.contains_key(&h.revision))
            .map(|h| (h.revision, h.clone()))
            .collect();
        let name = md.metadata.name.clone().unwrap_or_default();
        for (n, snap) in &snapshots {
            history.entry(*n).or_insert_with(|| RevisionRecord {
                revision: *n,
                version: snap.model.version.clone(),
                model_uri: snap.model.uri.clone(),
                hash: snap.hash(),
                deployment: deployment_name(&name, *n),
                phase: if *n == target {
                    RevisionPhase::Progressing
                } else {
                    RevisionPhase::Superseded
                },
                created_at: Some(stamp(now)),
                promoted_at: None,
                rolled_back_at: None,
                reason: None,
            });
        }
        // A rollout the spec moved away from before it finished is over: that revision is
        // Superseded, so it is neither rolled out again nor counted as in progress.
        for h in history.values_mut() {
            if h.revision != target && h.phase == RevisionPhase::Progressing {
                h.phase = RevisionPhase::Superseded;
                h.reason = Some(format!("replaced by revision {target} before it was promoted"));
            }
        }
        // The stable revision: status, else what the stable Service selects.
        let stable = status
            .stable_revision
            .or(obs.stable_service.map(|s| s.revision))
            .filter(|s| snapshots.contains_key(s) || obs.deployments.contains_key(s));
        Planner {
            md,
            obs,
            now,
            replicas: md.spec.replicas,
            snapshots,
            history,
            new_revision,
            target,
            stable,
            last_rollback: status.last_rollback.clone(),
            phase: Phase::Progressing,
            message: String::new(),
            stalled_reason: "",
            events,
            consume: Vec::new(),
            annotation_condition: None,
            promote_requested: None,
            reset_progress: BTreeSet::new(),
            requeue_after: None,
            canary_weight: None,
            canary_step: None,
            rollback_spec: match &obs.policy {
                Some(PolicyObservation::Found(p)) => p.rollback.clone(),
                _ => RollbackSpec::default(),
            },
            gradual: None,
            finish_gradual_now: false,
            metrics_hold: None,
            gradual_unhealthy: None,
            verification_requeue: None,
        }
    }

    fn policy(&self) -> Option<&'a RollbackPolicySpec> {
        match &self.obs.policy {
            Some(PolicyObservation::Found(p)) => Some(p),
            _ => None,
        }
    }

    fn judged(&self, policy: &RollbackPolicySpec) -> Option<Judged> {
        let on_stable = |revision, purpose| Judged {
            revision,
            purpose,
            via_canary: false,
        };
        if let Some(r) = self.last_rollback.as_ref().filter(|r| r.completed_at.is_none()) {
            return (r.mode == RollbackMode::Gradual).then(|| on_stable(r.to_revision, Purpose::GradualHealth));
        }
        if self.rolling_out() {
            return Some(Judged {
                revision: self.target,
                purpose: Purpose::Rollout,
                via_canary: true,
            });
        }
        if let Some(r) = self.verifying(policy) {
            return Some(on_stable(r, Purpose::Verification));
        }
        let s = self.stable?;
        self.guard_ends(s, policy)
            .filter(|ends| self.now < *ends)
            .map(|_| on_stable(s, Purpose::Guard))
    }

    /// The restored revision while its verification window is open.
    fn verifying(&self, policy: &RollbackPolicySpec) -> Option<i64> {
        let r = self.last_rollback.as_ref()?;
        let completed = r.completed_at.as_ref()?.0;
        let ends = completed.checked_add(policy.verification.window.signed()).ok()?;
        (r.verification == Some(Verification::Pending) && self.now < ends).then_some(r.to_revision)
    }

    /// When the guard window of stable revision `s` ends: None when it was restored by a
    /// rollback or has no previous revision to return to.
    fn guard_ends(&self, s: i64, policy: &RollbackPolicySpec) -> Option<Timestamp> {
        let h = self.history.get(&s)?;
        if h.phase != RevisionPhase::Stable || h.reason.as_deref() == Some(RESTORED) {
            return None;
        }
        self.previous_of(s)?;
        let promoted = h.promoted_at.as_ref()?.0;
        promoted.checked_add(policy.guard_window.signed()).ok()
    }

    /// The newest restorable revision older than `rev`.
    fn previous_of(&self, rev: i64) -> Option<i64> {
        self.history
            .values()
            .filter(|h| h.revision < rev && revision::restorable(h.phase))
            .map(|h| h.revision)
            .max()
    }

    /// Acts on what the policy's triggers said about the judged revision.
    fn act_on_metrics(&mut self) {
        let Some(m) = &self.obs.metrics else {
            return;
        };
        let (judged, decision) = (m.judged, m.decision.clone());
        if m.fresh {
            for n in &m.notices {
                let warning = n.severity == Severity::Warning;
                let note = format!(
                    "trigger {} fired on revision {}: {}",
                    n.trigger, judged.revision, n.message
                );
                self.event(warning, "TriggerFired", note);
            }
        }
        let rev = judged.revision;
        match (judged.purpose, decision) {
            (_, Decision::Proceed) => {}
            (Purpose::Rollout, Decision::Hold { reason }) if rev == self.target => self.metrics_hold = Some(reason),
            (Purpose::GradualHealth, Decision::Hold { reason }) => self.gradual_unhealthy = Some(reason),
            (Purpose::GradualHealth, Decision::Rollback { trigger, detail, .. }) => {
                self.gradual_unhealthy = Some(format!("trigger {trigger}: {detail}"));
            }
            (Purpose::Verification, Decision::Rollback { trigger, detail, .. }) => {
                if let Some(r) = self.last_rollback.as_mut().filter(|r| r.to_revision == rev) {
                    r.verification = Some(Verification::Failed);
                }
                let note =
                    format!("revision {rev} failed its verification after a rollback: trigger {trigger}: {detail}");
                self.event(true, "VerificationFailed", note);
            }
            (
                purpose @ (Purpose::Rollout | Purpose::Guard),
                Decision::Rollback {
                    trigger,
                    value,
                    threshold,
                    detail,
                },
            ) => {
                // A canary returns to stable; a guarded stable revision to the previous one.
                let (to, how) = match purpose {
                    Purpose::Rollout if rev == self.target => (self.stable.filter(|s| *s != rev), "rolled back"),
                    Purpose::Guard if self.stable == Some(rev) => {
                        (self.previous_of(rev), "rolled back within its guard window")
                    }
                    _ => (None, ""),
                };
                let Some(to) = to else {
                    return;
                };
                let why = format!("{how} by trigger {trigger}: {detail}");
                self.set_phase(rev, RevisionPhase::RolledBack, Some(why.clone()));
                self.event(true, "MetricRollback", format!("revision {rev} {why}"));
                self.start_rollback(rev, to, RollbackTrigger::Metric, &trigger);
                if let Some(r) = self.last_rollback.as_mut() {
                    r.value = value;
                    r.threshold = threshold;
                }
            }
            _ => {}
        }
    }

    /// A verification whose window ended without a Critical breach has Passed.
    fn end_verification(&mut self) {
        let window = self
            .policy()
            .map(|p| p.verification.window.clone())
            .unwrap_or_else(|| crate::api::VerificationSpec::default().window);
        let now = self.now;
        let Some(r) = self.last_rollback.as_mut() else {
            return;
        };
        let Some(completed) = r.completed_at.as_ref().map(|t| t.0) else {
            return;
        };
        if r.verification != Some(Verification::Pending) {
            return;
        }
        let ends = completed.checked_add(window.signed()).unwrap_or(completed);
        if now < ends {
            self.verification_requeue = Some(now.duration_until(ends).unsigned_abs() + Duration::from_millis(500));
            return;
        }
        r.verification = Some(Verification::Passed);
        let note = format!(
            "revision {} stayed healthy for the verification window ({window}) after the rollback",
            r.to_revision
        );
        self.event(false, "VerificationPassed", note);
    }

    fn event(&mut self, warning: bool, reason: &'static str, note: String) {
        self.events.push(PlannedEvent { warning, reason, note });
    }

    fn version_of(&self, rev: i64) -> String {
        self.snapshots
            .get(&rev)
            .map(|s| s.model.version.clone())
            .unwrap_or_else(|| "?".into())
    }

    fn phase_of(&self, rev: i64) -> Option<RevisionPhase> {
        self.history.get(&rev).map(|h| h.phase)
    }

    fn set_phase(&mut self, rev: i64, phase: RevisionPhase, reason: Option<String>) {
        let now = stamp(self.now);
        if let Some(h) = self.history.get_mut(&rev) {
            h.phase = phase;
            match phase {
                RevisionPhase::Stable => h.promoted_at = Some(now),
                RevisionPhase::RolledBack | RevisionPhase::Failed => h.rolled_back_at = Some(now),
                _ => {}
            }
            if reason.is_some() {
                h.reason = reason;
            }
        }
    }

    fn held(&self, rev: i64) -> bool {
        matches!(
            self.phase_of(rev),
            Some(RevisionPhase::RolledBack | RevisionPhase::Failed)
        )
    }

    /// A rollout of the spec's revision towards stable is under way.
    fn rolling_out(&self) -> bool {
        self.stable.is_some_and(|s| s != self.target) && self.phase_of(self.target) == Some(RevisionPhase::Progressing)
    }

    fn gradual_in_flight(&self) -> bool {
        self.last_rollback
            .as_ref()
            .is_some_and(|r| r.completed_at.is_none() && r.mode == RollbackMode::Gradual)
    }

    fn pending_rollback(&self) -> Option<i64> {
        self.last_rollback
            .as_ref()
            .filter(|r| r.completed_at.is_none())
            .map(|r| r.to_revision)
    }

    /// Ready for traffic: the Deployment is up to date and all its replicas are available.
    fn available(&self, rev: i64) -> bool {
        self.obs
            .deployments
            .get(&rev)
            .is_some_and(|d| d.available && d.replicas >= self.replicas)
    }

    fn readiness(&self, rev: i64) -> String {
        let ready = self.obs.deployments.get(&rev).map(|d| d.ready_replicas).unwrap_or(0);
        format!("{ready}/{} replicas ready", self.replicas)
    }

    // ----- annotations -------------------------------------------------------------------

    fn handle_annotations(&mut self) {
        let annotations = self.md.metadata.annotations.clone().unwrap_or_default();
        for (key, parsed) in annotations::parse_all(&annotations) {
            match parsed {
                Err(bad) => self.reject(key, bad.to_string()),
                Ok(Request::RollbackTo(target)) => match self.resolve(&target) {
                    Ok(rev) => self.manual_rollback(key, rev),
                    Err(expected) => {
                        let value = annotations.get(key).cloned().unwrap_or_default();
                        self.reject(
                            key,
                            format!("annotation {key}={value:?} is not valid: expected {expected}"),
                        );
                    }
                },
                Ok(other) => self.handle_request(key, other),
            }
        }
    }

    /// A bad value: consumed, a Warning Event and a condition message, nothing else.
    fn reject(&mut self, key: &'static str, note: String) {
        self.consume.push(key);
        self.annotation_condition = Some((false, "InvalidAnnotation", note.clone()));
        self.event(true, "InvalidAnnotation", note);
    }

    fn resolve(&self, target: &RollbackTarget) -> Result<i64, String> {
        let known = || {
            self.snapshots
                .keys()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match target {
            RollbackTarget::Previous => self
                .history
                .values()
                .filter(|h| h.revision < self.target && revision::restorable(h.phase))
                .map(|h| h.revision)
                .max()
                .ok_or_else(|| {
                    format!(
                        "a restorable revision older than revision {}; there is none",
                        self.target
                    )
                }),
            RollbackTarget::Revision(n) => {
                if self.snapshots.contains_key(n) {
                    Ok(*n)
                } else {
                    Err(format!(
                        "a known revision; revision {n} is unknown or pruned (known: {})",
                        known()
                    ))
                }
            }
            RollbackTarget::Version(label) => self
                .snapshots
                .iter()
                .filter(|(_, s)| &s.model.version == label)
                .map(|(n, _)| *n)
                .max()
                .ok_or_else(|| format!("a known version; no revision has version {label:?}")),
        }
    }

    fn accepted(&mut self, key: &'static str, reason: &'static str, note: String) {
        self.consume.push(key);
        self.annotation_condition = Some((true, "Handled", format!("{key}: {note}")));
        self.event(false, reason, note);
    }

    fn manual_rollback(&mut self, key: &'static str, to: i64) {
        if self.pending_rollback() == Some(to) {
            self.accepted(
                key,
                "AlreadyRollingBack",
                format!("a rollback to revision {to} is already under way; nothing to do"),
            );
            return;
        }
        if self.stable == Some(to) && self.pending_rollback().is_none() && !self.rolling_out() {
            self.accepted(
                key,
                "AlreadyServing",
                format!("revision {to} already serves all traffic; nothing to do"),
            );
            return;
        }
        let from = if self.rolling_out() || self.stable.is_none() {
            self.target
        } else {
            self.stable.unwrap_or(self.target)
        };
        if self.target != to {
            let reason = format!("rolled back to revision {to} by {key}");
            self.set_phase(self.target, RevisionPhase::RolledBack, Some(reason));
        }
        if let Some(s) = self.stable.filter(|s| *s != to && *s != self.target) {
            self.set_phase(s, RevisionPhase::Superseded, None);
        }
        self.accepted(
            key,
            "RollbackRequested",
            format!("rolling back from revision {from} to revision {to}"),
        );
        self.start_rollback(from, to, RollbackTrigger::Manual, key);
    }

    fn handle_request(&mut self, key: &'static str, request: Request) {
        match request {
            Request::RollbackTo(_) => {}
            Request::Abort => match self.stable {
                Some(s) if self.rolling_out() => {
                    let t = self.target;
                    self.set_phase(t, RevisionPhase::RolledBack, Some(format!("aborted by {key}")));
                    self.accepted(
                        key,
                        "Aborted",
                        format!("rollout of revision {t} aborted; all traffic to revision {s}"),
                    );
                    self.start_rollback(t, s, RollbackTrigger::Manual, key);
                }
                _ if self.gradual_in_flight() => {
                    self.finish_gradual_now = true;
                    self.accepted(
                        key,
                        "Aborted",
                        "gradual rollback finishing at once: all traffic to the revision it restores".into(),
                    );
                }
                _ => self.accepted(key, "NothingToAbort", "no rollout in progress; nothing to abort".into()),
            },
            Request::Retry => {
                let t = self.target;
                if self.held(t) {
                    self.set_phase(t, RevisionPhase::Progressing, Some(format!("retried by {key}")));
                    self.reset_progress.insert(t);
                    self.accepted(key, "Retried", format!("rolling revision {t} out again"));
                } else {
                    self.accepted(
                        key,
                        "NothingToRetry",
                        format!("revision {t} was not rolled back; nothing to retry"),
                    );
                }
            }
            Request::Promote(how) => {
                if self.rolling_out() {
                    // Handled in `progress` once the revision is Available; kept until then.
                    self.promote_requested = Some(how);
                } else {
                    self.accepted(key, "NothingToPromote", "no rollout waiting for promotion".into());
                }
            }
        }
    }

    // ----- transitions -------------------------------------------------------------------

    /// The policy's gradual steps, when rollbacks of this ModelDeployment run gradually.
    fn gradual_spec(&self) -> Option<GradualRollback> {
        let spec = &self.rollback_spec;
        if spec.mode != RollbackMode::Gradual || self.md.spec.traffic_routing.is_none() {
            return None;
        }
        spec.gradual.clone()
    }

    fn start_rollback(&mut self, from: i64, to: i64, trigger: RollbackTrigger, trigger_name: &str) {
        let mode = if self.gradual_spec().is_some() && from != to {
            RollbackMode::Gradual
        } else {
            if self.rollback_spec.mode == RollbackMode::Gradual {
                self.event(
                    false,
                    "GradualRollbackUnavailable",
                    "the RollbackPolicy asks for a gradual rollback, which needs spec.trafficRouting; rolling back instantly"
                        .into(),
                );
            }
            RollbackMode::Instant
        };
        self.last_rollback = Some(RollbackRecord {
            from_revision: from,
            to_revision: to,
            trigger,
            trigger_name: Some(trigger_name.to_string()),
            value: None,
            threshold: None,
            mode,
            started_at: Some(stamp(self.now)),
            completed_at: None,
            verification: None,
        });
    }

    fn promote(&mut self, rev: i64, how: &str) {
        if let Some(old) = self.stable.filter(|s| *s != rev && !self.held(*s)) {
            self.set_phase(
                old,
                RevisionPhase::Superseded,
                Some(format!("superseded by revision {rev}")),
            );
        }
        self.stable = Some(rev);
        self.set_phase(rev, RevisionPhase::Stable, Some(how.to_string()));
        let version = self.version_of(rev);
        self.event(
            false,
            "Promoted",
            format!("revision {rev} (version {version}) serves all traffic ({how})"),
        );
    }

    /// Finishes a rollback whose target is Available. Returns true while one is in flight.
    fn complete_pending_rollback(&mut self) -> bool {
        let Some(to) = self.pending_rollback() else {
            return false;
        };
        let gradual = self
            .last_rollback
            .as_ref()
            .filter(|r| r.mode == RollbackMode::Gradual)
            .map(|r| r.from_revision);
        let walk = match (gradual, self.gradual_spec()) {
            (Some(from), Some(g)) => Some((from, g)),
            (Some(_), None) => {
                // The policy no longer asks for a gradual rollback: that takes effect now.
                if let Some(r) = self.last_rollback.as_mut() {
                    r.mode = RollbackMode::Instant;
                }
                None
            }
            (None, _) => None,
        };
        let walked = match walk {
            Some((from, g)) => self.walk_gradual(from, to, &g),
            None => Walk::GaveWay,
        };
        if walked == Walk::InFlight {
            return true;
        }
        if walked == Walk::GaveWay && !self.available(to) {
            self.phase = Phase::RollingBack;
            self.message = format!("rolling back to revision {to}: {}", self.readiness(to));
            return true;
        }
        self.take_stable(to);
        self.set_phase(to, RevisionPhase::Stable, Some(RESTORED.into()));
        let now = stamp(self.now);
        let mut note = String::new();
        let verify = self
            .policy()
            .is_some_and(|p| !p.triggers.is_empty() && p.provider.is_some());
        if let Some(r) = self.last_rollback.as_mut() {
            r.completed_at = Some(now);
            if verify {
                r.verification = Some(Verification::Pending);
            }
            note = format!(
                "rolled back from revision {} to revision {to} (trigger {:?}{})",
                r.from_revision,
                r.trigger,
                r.trigger_name.as_deref().map(|n| format!(", {n}")).unwrap_or_default()
            );
        }
        self.event(false, "RolledBack", note);
        false
    }

    /// One reconcile of a gradual rollback from `from` to `to`.
    ///
    /// Worked example: steps [50, 20, 5, 0], `from` = canary r4 at 60%, `to` = stable r3.
    /// The weight goes to 50 (the first step below 60); once read back, 50 is held for
    /// `stepDuration`, then, if r3's Deployment is Available, 20, and so on; 0 ends it. When
    /// `from` served all traffic through the stable Service, the canary Service takes it
    /// first (weight 100 on `from`), then the stable Service moves to `to`, then the walk.
    fn walk_gradual(&mut self, from: i64, to: i64, g: &GradualRollback) -> Walk {
        let weight = match &self.obs.route {
            Some(RouteObservation::Weights(w)) => w.canary,
            Some(RouteObservation::Fault { message, .. }) => {
                let why = format!("the traffic-split object cannot be used ({message})");
                self.gradual_gives_way(from, to, &why);
                return Walk::GaveWay;
            }
            None => {
                self.gradual_gives_way(from, to, "the traffic-split object was not read");
                return Walk::GaveWay;
            }
        };
        if self.finish_gradual_now {
            self.gradual_gives_way(from, to, "rollguard.dev/abort asked to finish it at once");
            return Walk::GaveWay;
        }
        let stable = self.obs.stable_service.map(|s| s.revision);
        let canary = self.obs.canary_service.map(|s| s.revision);
        let healthy = self.available(to) && self.gradual_unhealthy.is_none();
        let what = format!("rolling back gradually from revision {from} to revision {to}");
        let mut traffic = GradualTraffic {
            from,
            stable,
            canary: canary.unwrap_or(from),
            weight: None,
            step: None,
        };
        self.phase = Phase::RollingBack;
        if stable != Some(to) {
            if !healthy {
                self.message = format!("{what}: waiting for revision {to} ({})", self.readiness(to));
            } else if stable == Some(from) && (weight != 100 || canary != Some(from)) {
                // All traffic is on `from` through the stable Service: the canary Service
                // carries it first, so moving the stable Service shifts nothing yet.
                traffic.canary = from;
                traffic.weight = Some(100);
                self.message = format!("{what}: moving revision {from}'s traffic onto the canary Service");
                self.requeue_after = Some(Duration::from_millis(200));
            } else {
                traffic.stable = Some(to);
                self.take_stable(to);
                self.message = format!("{what}: revision {to} takes the stable Service");
                self.requeue_after = Some(Duration::from_millis(200));
            }
            self.gradual = Some(traffic);
            return Walk::InFlight;
        }
        if canary != Some(from) || weight <= 0 {
            return Walk::Done;
        }
        let total = g.steps.len();
        let held = g.steps.iter().position(|s| *s == weight).map(|i| {
            let index = i32::try_from(i).unwrap_or(i32::MAX);
            let observed = self.obs.deployments.get(&from).and_then(|d| d.rollback_step);
            observed.filter(|s| s.index == index).unwrap_or(CanaryStepState {
                index,
                started_at: self.now,
            })
        });
        traffic.step = held;
        let at = match held {
            Some(s) => format!("revision {from} at {weight}% (step {} of {total})", s.index + 1),
            None => format!("revision {from} at {weight}%"),
        };
        if let Some(s) = held {
            let hold = g.step_duration.signed();
            let ends = s.started_at.checked_add(hold).unwrap_or(s.started_at);
            if self.now < ends {
                let left = self.now.duration_until(ends).unsigned_abs();
                self.requeue_after = Some(left + Duration::from_millis(200));
                self.message = format!("{what}: {at}, next step at {ends}");
                self.gradual = Some(traffic);
                return Walk::InFlight;
            }
        }
        if !healthy {
            let why = match &self.gradual_unhealthy {
                Some(reason) if self.available(to) => format!("revision {to} is not healthy ({reason})"),
                _ => format!("revision {to} is not healthy ({})", self.readiness(to)),
            };
            if g.on_unhealthy == OnUnhealthy::Instant {
                // The policy prefers the stable revision, healthy or not, to the one left.
                self.event(
                    true,
                    "GradualRollbackJumped",
                    format!("{what}: {why}; onUnhealthy is Instant, so all traffic goes to revision {to} now"),
                );
                return Walk::Done;
            }
            self.phase = Phase::Paused;
            self.message = format!("{what}: paused at {weight}%: {why}");
            let before = self.md.status.as_ref();
            let was_paused = before.and_then(|s| s.phase) == Some(Phase::Paused)
                && before
                    .and_then(|s| s.last_rollback.as_ref())
                    .is_some_and(|r| r.completed_at.is_none() && r.mode == RollbackMode::Gradual);
            if !was_paused {
                self.event(true, "GradualRollbackPaused", self.message.clone());
            }
            self.gradual = Some(traffic);
            return Walk::InFlight;
        }
        let next = g.steps.iter().copied().find(|s| *s < weight).unwrap_or(0);
        traffic.weight = Some(next);
        self.message = format!("{what}: {at}, setting {next}%");
        self.requeue_after = Some(Duration::from_millis(200));
        self.gradual = Some(traffic);
        Walk::InFlight
    }

    /// `to` becomes the stable revision of a rollback; the one it replaces is Superseded.
    fn take_stable(&mut self, to: i64) {
        if let Some(old) = self.stable.filter(|s| *s != to && !self.held(*s)) {
            self.set_phase(
                old,
                RevisionPhase::Superseded,
                Some(format!("replaced by revision {to} in a rollback")),
            );
        }
        self.stable = Some(to);
    }

    /// A gradual rollback that cannot (or should not) go on finishes at once.
    fn gradual_gives_way(&mut self, from: i64, to: i64, why: &str) {
        if let Some(r) = self.last_rollback.as_mut() {
            r.mode = RollbackMode::Instant;
        }
        self.event(
            true,
            "GradualRollbackFinishedAtOnce",
            format!("rollback from revision {from} to revision {to} finished at once: {why}"),
        );
    }

    fn progress(&mut self) {
        let t = self.target;
        let version = self.version_of(t);
        if self.stable == Some(t) {
            if self.phase_of(t) != Some(RevisionPhase::Stable) {
                self.set_phase(t, RevisionPhase::Stable, None);
            }
            self.phase = Phase::Healthy;
            self.message = format!("revision {t} (version {version}) serves all traffic");
            return;
        }
        if self.held(t) {
            let reason = self.history.get(&t).and_then(|h| h.reason.clone()).unwrap_or_default();
            let serving = self
                .stable
                .map(|s| format!("revision {s} serves"))
                .unwrap_or_else(|| "nothing serves".into());
            self.phase = Phase::Degraded;
            self.stalled_reason = if self.phase_of(t) == Some(RevisionPhase::Failed) {
                "ProgressDeadlineExceeded"
            } else {
                "RolledBack"
            };
            self.message = format!(
                "revision {t} (version {version}) was rolled back ({reason}); {serving}. Change the spec, or annotate rollguard.dev/retry=true to roll it out again"
            );
            return;
        }
        if self.stable.is_none() {
            // The first revision: nothing to protect, promote once Available.
            if self.available(t) {
                self.promote(t, "first revision");
                self.phase = Phase::Healthy;
                self.message = format!("revision {t} (version {version}) serves all traffic");
            } else {
                self.wait_or_fail(t);
            }
            return;
        }
        // A spec that returns to a warm revision that served before (a Git revert).
        let served_before = self.history.get(&t).is_some_and(|h| h.promoted_at.is_some());
        if served_before && self.available(t) {
            self.promote(t, "warm revision, switched at once");
            self.phase = Phase::Healthy;
            self.message = format!("revision {t} (version {version}) serves all traffic");
            return;
        }
        if !self.available(t) {
            self.wait_or_fail(t);
            return;
        }
        if let Some(canary) = &self.md.spec.strategy.canary {
            let steps = canary.steps.clone();
            self.run_canary_steps(t, &steps);
            return;
        }
        let auto = self.md.spec.strategy.blue_green.as_ref().is_none_or(|b| b.auto_promote);
        if let Some(reason) = &self.metrics_hold {
            self.message = format!("revision {t} is Available; promotion holds: metrics unavailable ({reason})");
        } else if self.md.spec.paused {
            self.phase = Phase::Paused;
            self.message = format!("revision {t} is Available; spec.paused is true");
        } else if auto || self.promote_requested.is_some() || self.switch_started(t) {
            if self.promote_requested.is_some() {
                self.consume.push(crate::api::annotations::PROMOTE);
                self.annotation_condition = Some((true, "Handled", format!("promoted revision {t}")));
            }
            if self.md.spec.traffic_routing.is_some() {
                // With a traffic-split object, the switch is the weights going 0 -> 100 in
                // one write; once read back, the Services follow and weights return to stable.
                let switch = [CanaryStep {
                    set_weight: Some(100),
                    pause: None,
                }];
                self.run_canary_steps(t, &switch);
                return;
            }
            self.promote(
                t,
                if auto {
                    "autoPromote"
                } else {
                    "promoted by rollguard.dev/promote"
                },
            );
            self.phase = Phase::Healthy;
            self.message = format!("revision {t} (version {version}) serves all traffic");
        } else {
            self.phase = Phase::Paused;
            self.message = format!(
                "revision {t} (version {version}) is Available on the preview Service; annotate rollguard.dev/promote=true to switch traffic"
            );
        }
    }

    /// Whether a blue/green switch of `t` through the traffic-split object has begun.
    fn switch_started(&self, t: i64) -> bool {
        self.obs.deployments.get(&t).is_some_and(|d| d.canary_step.is_some())
    }

    /// Runs the canary steps of `t` (Available) against the stable revision: one reconcile moves as far
    /// as the steps allow, and the step and its start time go onto the canary Deployment.
    ///
    /// Worked example: steps [setWeight 10, pause 5m, setWeight 100]. At step 0 the plan
    /// asks for weight 10; once the route reads 10, step 1 starts and the phase is Paused
    /// until 5m have passed; step 2 asks for 100; once read back, the steps are done: the
    /// stable Service moves to `t`, the weights return to 100/0 on stable and `t` is promoted.
    fn run_canary_steps(&mut self, t: i64, steps: &[CanaryStep]) {
        let total = steps.len();
        let observed_step = self.obs.deployments.get(&t).and_then(|d| d.canary_step);
        let mut state = observed_step.unwrap_or(CanaryStepState {
            index: 0,
            started_at: self.now,
        });
        let current = match &self.obs.route {
            Some(RouteObservation::Weights(w)) => Some(w.canary),
            _ => None,
        };
        if let Some(RouteObservation::Fault { message, .. }) = &self.obs.route {
            self.canary_step = Some(state);
            self.phase = Phase::Progressing;
            self.message = format!("canary revision {t} waits: {message}");
            return;
        }
        if let Some(reason) = &self.metrics_hold {
            let at = current.unwrap_or(0);
            self.canary_step = Some(state);
            self.message = format!("canary revision {t} at {at}% holds: metrics unavailable ({reason})");
            return;
        }
        if self.promote_requested == Some(Promote::Full) {
            self.consume.push(crate::api::annotations::PROMOTE);
            self.annotation_condition = Some((true, "Handled", format!("promoted revision {t} fully")));
            state = CanaryStepState {
                index: total as i32,
                started_at: self.now,
            };
        }
        let step_of = |i: i32| usize::try_from(i).ok().and_then(|i| steps.get(i));
        let next = |i: i32, now| CanaryStepState {
            index: i + 1,
            started_at: now,
        };
        while let Some(step) = step_of(state.index) {
            let label = format!("step {} of {total}", state.index + 1);
            let at = current.unwrap_or(0);
            if let Some(weight) = step.set_weight {
                if current == Some(weight) {
                    state = next(state.index, self.now);
                    continue;
                }
                if self.md.spec.paused {
                    self.phase = Phase::Paused;
                    self.message = format!("canary revision {t} at {at}% ({label}); spec.paused is true");
                } else {
                    self.canary_weight = Some(weight);
                    self.phase = Phase::Progressing;
                    self.message = format!("canary revision {t} at {at}%, setting {weight}% ({label})");
                    self.requeue_after = Some(Duration::from_millis(200));
                }
                self.canary_step = Some(state);
                return;
            }
            let pause = step.pause.as_ref().and_then(|p| p.duration.as_ref());
            match pause.map(|d| d.signed()) {
                Some(d) => {
                    let ends = state.started_at.checked_add(d).unwrap_or(state.started_at);
                    if self.now >= ends && !self.md.spec.paused {
                        state = next(state.index, self.now);
                        continue;
                    }
                    if self.now < ends {
                        let left = self.now.duration_until(ends).unsigned_abs();
                        self.requeue_after = Some(left + Duration::from_millis(200));
                    }
                    self.phase = Phase::Paused;
                    self.message = format!("canary revision {t} at {at}% ({label}), paused until {ends}");
                }
                _ if self.promote_requested == Some(Promote::Step) && !self.md.spec.paused => {
                    self.consume.push(crate::api::annotations::PROMOTE);
                    self.annotation_condition = Some((true, "Handled", format!("{label} promoted")));
                    state = next(state.index, self.now);
                    continue;
                }
                _ => {
                    self.phase = Phase::Paused;
                    self.message = format!(
                        "canary revision {t} at {at}% ({label}), paused: annotate rollguard.dev/promote=true to go on"
                    );
                }
            }
            self.canary_step = Some(state);
            return;
        }
        // All steps done: the stable Service moves to t, then the weights return to stable.
        let version = self.version_of(t);
        self.promote(t, "canary steps completed");
        self.phase = Phase::Healthy;
        self.message = format!("revision {t} (version {version}) serves all traffic");
    }

    /// Waits for `rev` to become Available, or fails it at the progress deadline.
    fn wait_or_fail(&mut self, rev: i64) {
        let deadline_secs = i64::from(self.md.spec.progress_deadline_seconds.max(0));
        let started = self.progress_started_at(rev).unwrap_or(self.now);
        let deadline = started
            .checked_add(SignedDuration::from_secs(deadline_secs))
            .unwrap_or(started);
        if self.now < deadline {
            let left = self.now.duration_until(deadline).unsigned_abs();
            self.requeue_after = Some(left + Duration::from_millis(500));
            self.phase = Phase::Progressing;
            let promote = if self.promote_requested.is_some() {
                "; promote requested"
            } else {
                ""
            };
            self.message = format!(
                "revision {rev} (version {}) starting: {}{promote}",
                self.version_of(rev),
                self.readiness(rev)
            );
            return;
        }
        let reason = format!(
            "not Available within progressDeadlineSeconds={deadline_secs} ({})",
            self.readiness(rev)
        );
        self.set_phase(rev, RevisionPhase::Failed, Some(reason.clone()));
        if self.promote_requested.is_some() {
            self.consume.push(crate::api::annotations::PROMOTE);
        }
        self.event(true, "ProgressDeadlineExceeded", format!("revision {rev} {reason}"));
        if let Some(s) = self.stable.filter(|s| *s != rev) {
            self.start_rollback(rev, s, RollbackTrigger::ProgressDeadline, "progressDeadlineSeconds");
            // Blue/green never moved traffic to it: the rollback is complete at once.
            self.complete_pending_rollback();
        }
        self.progress();
    }

    fn progress_started_at(&self, rev: i64) -> Option<Timestamp> {
        if self.reset_progress.contains(&rev) {
            return Some(self.now);
        }
        match self.obs.deployments.get(&rev) {
            Some(d) if d.replicas > 0 || self.replicas == 0 => d.progress_started_at,
            _ => None,
        }
    }

    // ----- the desired world -------------------------------------------------------------

    fn finish(mut self) -> Plan {
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
        if let Some(g) = &self.gradual {
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
            let replicas = if running { self.replicas } else { 0 };
            let scaled_from_zero = observed.is_none_or(|d| d.replicas == 0) && replicas > 0;
            let progress_started_at = if self.reset_progress.contains(&rev) || (rev == t && scaled_from_zero) {
                Some(self.now)
            } else {
                observed.and_then(|d| d.progress_started_at)
            };
            // The step of a running canary; gone once it ends, so a later rollout starts at 0.
            let canary_step = if rev == t && rolling_out {
                self.canary_step.or(observed.and_then(|d| d.canary_step))
            } else {
                None
            };
            let rollback_step = self.gradual.filter(|g| g.from == rev).and_then(|g| g.step);
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
        let stable_service = match &self.gradual {
            Some(g) => g.stable.map(target_of),
            None => self.stable.map(target_of),
        };
        let preview = if let Some(g) = &self.gradual {
            Some(g.canary)
        } else if rolling_out || self.stable.is_none() {
            Some(t)
        } else {
            self.stable
        };
        let canary_service = preview.map(target_of);

        // The route carries canary weight only while a canary runs; otherwise all traffic
        // goes to the stable Service.
        let route_weight = match (&self.md.spec.traffic_routing, rolling_out, &self.gradual) {
            (None, _, _) => None,
            (Some(_), _, Some(g)) => g.weight,
            (Some(_), true, None) => self.canary_weight,
            (Some(_), false, None) => Some(0),
        };
        let observed_weight = match &self.obs.route {
            Some(RouteObservation::Weights(w)) => Some(w.canary),
            _ => None,
        };
        let canary_step_index = if rolling_out && self.md.spec.strategy.canary.is_some() {
            self.canary_step.map(|s| s.index)
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
            canary_revision: match &self.gradual {
                Some(g) => Some(g.from),
                None => rolling_out.then_some(t),
            },
            canary_weight: if rolling_out || self.gradual.is_some() {
                observed_weight
            } else {
                None
            },
            current_step_index: canary_step_index,
            history: self.history.values().rev().cloned().collect(),
            last_rollback: self.last_rollback.clone(),
            analysis: match &self.obs.metrics {
                Some(m) => m.analysis.clone(),
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

    fn conditions(&self) -> Vec<Desired> {
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

/// The Deployment (and ControllerRevision) name of a revision: `<name>-r<N>`.
pub fn deployment_name(name: &str, revision: i64) -> String {
    format!("{name}-r{revision}")
}
