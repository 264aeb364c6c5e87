//! Rollbacks: starting one (instant or gradual), promoting, completing a pending rollback.

use super::gradual::Walk;
use super::planner::{Planner, RESTORED};
use crate::api::{GradualRollback, Phase, RevisionPhase, RollbackMode, RollbackRecord, RollbackTrigger, Verification};
use crate::conditions::stamp;

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

    /// Finishes a rollback whose target is Available. Returns true while one is in flight.
    pub(super) fn complete_pending_rollback(&mut self) -> bool {
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
