//! Rollbacks: starting one (instant or gradual), promoting, completing a pending rollback.

use super::RouteObservation;
use super::gradual::Walk;
use super::planner::{Planner, RESTORED, ShareTraffic, Traffic};
use crate::api::{GradualRollback, Phase, RevisionPhase, RollbackMode, RollbackRecord, RollbackTrigger, Verification};
use crate::conditions::stamp;

/// A rollback not yet completed, as one reconcile finds it.
enum Pending {
    /// None is pending.
    None,
    /// A gradual rollback: the walk decides (`gradual.rs`).
    Walk {
        /// The revision being left.
        from: i64,
        /// The target.
        to: i64,
        /// The policy's steps.
        spec: GradualRollback,
    },
    /// A gradual rollback whose policy no longer asks for one: it finishes instantly.
    NoLongerGradual {
        /// The target.
        to: i64,
    },
    /// An instant rollback.
    Instant {
        /// The target.
        to: i64,
    },
}

/// How a rollback whose traffic is off the revision left ends in this reconcile.
enum Completion {
    /// The target is not Available yet: phase RollingBack with this message.
    Waiting(String),
    /// The target is not Available yet, and a route object gives it the share of traffic
    /// its ready pods take.
    Share(ShareTraffic),
    /// The target takes the stable Service; the record is completed.
    Complete {
        /// The `RolledBack` Event's note.
        note: String,
        /// The policy judges: the restored revision's verification starts Pending.
        verify: bool,
    },
}

impl Planner<'_> {
    /// The policy's gradual steps, when rollbacks of this ModelDeployment run gradually.
    pub(super) fn gradual_spec(&self) -> Option<GradualRollback> {
        let spec = &self.rollback_spec;
        if spec.mode != RollbackMode::Gradual || self.md.spec.traffic_routing.is_none() {
            return None;
        }
        spec.gradual.clone()
    }

    pub(super) fn start_rollback(&mut self, from: i64, to: i64, trigger: RollbackTrigger, trigger_name: &str) {
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

    pub(super) fn promote(&mut self, rev: i64, how: &str) {
        self.replace_stable(rev, format!("superseded by revision {rev}"));
        self.set_phase(rev, RevisionPhase::Stable, Some(how.to_string()));
        let version = self.version_of(rev);
        self.event(
            false,
            "Promoted",
            format!("revision {rev} (version {version}) serves all traffic ({how})"),
        );
    }

    /// What the pending rollback (if any) asks of this reconcile. Reads the planner, changes
    /// nothing.
    fn pending(&self) -> Pending {
        let Some(r) = self.last_rollback.as_ref().filter(|r| r.completed_at.is_none()) else {
            return Pending::None;
        };
        let to = r.to_revision;
        if r.mode != RollbackMode::Gradual {
            return Pending::Instant { to };
        }
        match self.gradual_spec() {
            Some(spec) => Pending::Walk {
                from: r.from_revision,
                to,
                spec,
            },
            // The policy no longer asks for a gradual rollback: that takes effect now.
            None => Pending::NoLongerGradual { to },
        }
    }

    /// How a rollback to `to` ends once traffic has been walked off the revision left (or
    /// there was no walk): it waits until `to` is Available, unless the walk already moved
    /// all traffic onto it, then completes. Reads the planner, changes nothing.
    fn completion(&self, to: i64, walked: Walk) -> Completion {
        if walked == Walk::GaveWay && !self.available(to) {
            return match self.share_of(to) {
                Some(share) => Completion::Share(share),
                None => Completion::Waiting(format!("rolling back to revision {to}: {}", self.readiness(to))),
            };
        }
        let note = self.last_rollback.as_ref().map(|r| {
            format!(
                "rolled back from revision {} to revision {to} (trigger {:?}{})",
                r.from_revision,
                r.trigger,
                r.trigger_name.as_deref().map(|n| format!(", {n}")).unwrap_or_default()
            )
        });
        let verify = self
            .policy()
            .is_some_and(|p| !p.triggers.is_empty() && p.provider.is_some());
        Completion::Complete {
            note: note.unwrap_or_default(),
            verify,
        }
    }

    /// Follows [`Planner::pending`] and [`Planner::completion`]: walks a gradual rollback,
    /// finishes a rollback whose target is Available. Returns true while one is in flight.
    pub(super) fn complete_pending_rollback(&mut self) -> bool {
        let (to, walked) = match self.pending() {
            Pending::None => return false,
            Pending::Walk { from, to, spec } => (to, self.walk_gradual(from, to, &spec)),
            Pending::NoLongerGradual { to } => {
                if let Some(r) = self.last_rollback.as_mut() {
                    r.mode = RollbackMode::Instant;
                }
                (to, Walk::GaveWay)
            }
            Pending::Instant { to } => (to, Walk::GaveWay),
        };
        if walked == Walk::InFlight {
            return true;
        }
        match self.completion(to, walked) {
            Completion::Waiting(message) => {
                self.phase = Phase::RollingBack;
                self.message = message;
                true
            }
            Completion::Share(share) => {
                let (ready, full) = (self.ready_of(to), self.replicas);
                self.phase = Phase::RollingBack;
                self.message = format!(
                    "rolling back to revision {to}: {ready}/{full} replicas ready, {}% of traffic on it",
                    share.weight
                );
                self.requeue_after = Some(std::time::Duration::from_secs(1));
                self.traffic = Some(Traffic::Share(share));
                true
            }
            Completion::Complete { note, verify } => {
                self.take_stable(to);
                self.set_phase(to, RevisionPhase::Stable, Some(RESTORED.into()));
                let now = stamp(self.now);
                if let Some(r) = self.last_rollback.as_mut() {
                    r.completed_at = Some(now);
                    if verify {
                        r.verification = Some(Verification::Pending);
                    }
                }
                self.event(false, "RolledBack", note);
                false
            }
        }
    }

    /// Where traffic goes while a rollback to `to` waits for its pods, when a route object can
    /// send `to` the share its ready pods take (`floor(100 × ready / replicas)` percent), and
    /// `to` does not serve through the stable Service already. Another revision's canary
    /// weight goes to 0 first (a rollback takes traffic off a canary at once); then the canary
    /// Service selects `to` and carries its share. Reads the planner, changes nothing.
    fn share_of(&self, to: i64) -> Option<ShareTraffic> {
        self.md.spec.traffic_routing.as_ref()?;
        let Some(RouteObservation::Weights(w)) = &self.obs.route else {
            return None;
        };
        if self.replicas <= 0 || self.obs.stable_service.map(|s| s.revision) == Some(to) {
            return None;
        }
        let ready = self.ready_of(to).clamp(0, self.replicas);
        let share = i32::try_from(i64::from(ready) * 100 / i64::from(self.replicas)).unwrap_or(0);
        let canary = self.obs.canary_service.map(|s| s.revision);
        Some(if canary == Some(to) || w.canary == 0 {
            ShareTraffic {
                canary: Some(to),
                weight: share,
            }
        } else {
            ShareTraffic { canary, weight: 0 }
        })
    }

    /// `to` becomes the stable revision of a rollback; the one it replaces is Superseded.
    pub(super) fn take_stable(&mut self, to: i64) {
        self.replace_stable(to, format!("replaced by revision {to} in a rollback"));
    }

    /// `rev` becomes the stable revision; the one it replaces (unless held after a rollback)
    /// is Superseded, `why`.
    fn replace_stable(&mut self, rev: i64, why: String) {
        if let Some(old) = self.stable.filter(|s| *s != rev && !self.held(*s)) {
            self.set_phase(old, RevisionPhase::Superseded, Some(why));
        }
        self.stable = Some(rev);
    }
}
