//! The rollout state machine for blue/green, instant rollback and the annotations.
//!
//! State lives in the ModelDeployment status (stable revision, history phases, a pending
//! rollback in `lastRollback`) and in the cluster (ControllerRevisions, Deployments,
//! Services), so a restarted operator picks up where the last one stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::annotations::{self, Request, RollbackTarget};
use super::{DesiredDeployment, Observed, Plan, PlannedEvent, ServiceTarget};
use crate::api::{
    ModelDeployment, Phase, RevisionPhase, RevisionRecord, RollbackMode, RollbackRecord, RollbackTrigger,
};
use crate::conditions::{self, Desired, reasons, types};
use crate::revision::{self, Snapshot};

/// Condition type that reports the last rollguard annotation handled.
pub const ANNOTATION_ACCEPTED: &str = "AnnotationAccepted";

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
    if !p.complete_pending_rollback() {
        p.progress();
    }
    p.finish()
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
    promote_requested: bool,
    reset_progress: BTreeSet<i64>,
    requeue_after: Option<Duration>,
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
                created_at: Some(Time(now)),
                promoted_at: None,
                rolled_back_at: None,
                reason: None,
            });
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
            promote_requested: false,
            reset_progress: BTreeSet::new(),
            requeue_after: None,
        }
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
        let now = Time(self.now);
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
            Request::Promote(_step_or_full) => {
                if self.rolling_out() {
                    // Handled in `progress` once the revision is Available; kept until then.
                    self.promote_requested = true;
                } else {
                    self.accepted(key, "NothingToPromote", "no rollout waiting for promotion".into());
                }
            }
        }
    }

    // ----- transitions -------------------------------------------------------------------

    fn start_rollback(&mut self, from: i64, to: i64, trigger: RollbackTrigger, trigger_name: &str) {
        self.last_rollback = Some(RollbackRecord {
            from_revision: from,
            to_revision: to,
            trigger,
            trigger_name: Some(trigger_name.to_string()),
            value: None,
            threshold: None,
            mode: RollbackMode::Instant,
            started_at: Some(Time(self.now)),
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
        if !self.available(to) {
            self.phase = Phase::RollingBack;
            self.message = format!("rolling back to revision {to}: {}", self.readiness(to));
            return true;
        }
        if let Some(old) = self.stable.filter(|s| *s != to && !self.held(*s)) {
            self.set_phase(
                old,
                RevisionPhase::Superseded,
                Some(format!("replaced by revision {to} in a rollback")),
            );
        }
        self.stable = Some(to);
        self.set_phase(to, RevisionPhase::Stable, Some("restored by a rollback".into()));
        let now = Time(self.now);
        let mut note = String::new();
        if let Some(r) = self.last_rollback.as_mut() {
            r.completed_at = Some(now);
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
        let Some(stable) = self.stable else {
            // The first revision: nothing to protect, promote once Available.
            if self.available(t) {
                self.promote(t, "first revision");
                self.phase = Phase::Healthy;
                self.message = format!("revision {t} (version {version}) serves all traffic");
            } else {
                self.wait_or_fail(t);
            }
            return;
        };
        // A spec that returns to a warm revision that served before (a Git revert).
        let served_before = self.history.get(&t).is_some_and(|h| h.promoted_at.is_some());
        if served_before && self.available(t) {
            self.promote(t, "warm revision, switched at once");
            self.phase = Phase::Healthy;
            self.message = format!("revision {t} (version {version}) serves all traffic");
            return;
        }
        if self.md.spec.strategy.canary.is_some() {
            self.phase = Phase::Paused;
            self.stalled_reason = "CanaryNotImplemented";
            self.message =
                format!("canary steps are not implemented in this build; revision {stable} keeps all traffic");
            return;
        }
        if !self.available(t) {
            self.wait_or_fail(t);
            return;
        }
        let auto = self.md.spec.strategy.blue_green.as_ref().is_none_or(|b| b.auto_promote);
        if self.md.spec.paused {
            self.phase = Phase::Paused;
            self.message = format!("revision {t} is Available; spec.paused is true");
        } else if auto || self.promote_requested {
            if self.promote_requested {
                self.consume.push(crate::api::annotations::PROMOTE);
                self.annotation_condition = Some((true, "Handled", format!("promoted revision {t}")));
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
            let promote = if self.promote_requested {
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
        if self.promote_requested {
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
        let t = self.target;
        let rolling_out = self.rolling_out();
        let mut live: BTreeSet<i64> = self.stable.into_iter().collect();
        if rolling_out || self.stable.is_none() || self.phase_of(t) == Some(RevisionPhase::Progressing) {
            live.insert(t);
        }
        if let Some(to) = self.pending_rollback() {
            live.insert(to);
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
            deployments.insert(
                rev,
                DesiredDeployment {
                    replicas,
                    create: running,
                    progress_started_at,
                },
            );
        }

        let port_of = |rev: i64| self.snapshots.get(&rev).map(|s| s.port).unwrap_or(self.md.spec.port);
        let stable_service = self.stable.map(|s| ServiceTarget {
            revision: s,
            port: port_of(s),
        });
        let preview = if rolling_out || self.stable.is_none() {
            Some(t)
        } else {
            self.stable
        };
        let canary_service = preview.map(|r| ServiceTarget {
            revision: r,
            port: port_of(r),
        });

        let generation = self.md.metadata.generation.unwrap_or(0);
        let current = self.md.status.clone().unwrap_or_default();
        let desired = self.conditions();
        let status = crate::api::ModelDeploymentStatus {
            observed_generation: Some(generation),
            phase: Some(self.phase),
            message: Some(self.message.clone()),
            current_revision: Some(t),
            stable_revision: self.stable,
            canary_revision: rolling_out.then_some(t),
            canary_weight: None,
            current_step_index: None,
            history: self.history.values().rev().cloned().collect(),
            last_rollback: self.last_rollback.clone(),
            analysis: current.analysis.clone(),
            conditions: conditions::merge(&current.conditions, &desired, generation, &Time(self.now)),
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
            requeue_after: self.requeue_after,
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
        if let Some((ok, reason, message)) = &self.annotation_condition {
            out.push(Desired::new(ANNOTATION_ACCEPTED, Some(*ok), reason, message.clone()));
        }
        out
    }
}

/// The Deployment (and ControllerRevision) name of a revision: `<name>-r<N>`.
pub fn deployment_name(name: &str, revision: i64) -> String {
    format!("{name}-r{revision}")
}
