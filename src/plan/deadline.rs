//! The progress deadline: a revision that does not become Available in time fails.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::planner::Planner;
use crate::api::{Phase, RevisionPhase, RollbackTrigger};

impl Planner<'_> {
    /// Waits for `rev` to become Available, or fails it at the progress deadline.
    pub(super) fn wait_or_fail(&mut self, rev: i64) {
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
            self.message = match self.canary_waits(rev) {
                Some(waits) => format!("{waits}{promote}"),
                None => format!(
                    "revision {rev} (version {}) starting: {}{promote}",
                    self.version_of(rev),
                    self.readiness(rev)
                ),
            };
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

    pub(super) fn progress_started_at(&self, rev: i64) -> Option<Timestamp> {
        if self.reset_progress.contains(&rev) {
            return Some(self.now);
        }
        match self.obs.deployments.get(&rev) {
            Some(d) if d.replicas > 0 || self.replicas == 0 => d.progress_started_at,
            _ => None,
        }
    }
}
