//! The annotations a user writes (`rollback-to`, `promote`, `abort`, `retry`): parsed,
//! checked, handled once.

use super::annotations::{self, Request, RollbackTarget};
use super::planner::Planner;
use crate::api::{RevisionPhase, RollbackTrigger};
use crate::revision;

impl Planner<'_> {
    /// Handles the annotations present, in order: rollback-to, abort, retry, promote.
    ///
    /// Conflicting requests in one go have one outcome each, safety first: a rollback
    /// (`rollback-to`, or an `abort` that stops a rollout) wins over a `retry` and a
    /// `promote` written with it, which are consumed with a `RequestOverridden` Warning and
    /// change nothing. `rollback-to` with `abort` during a gradual rollback finishes that
    /// rollback at once, as `abort` alone does.
    pub(super) fn handle_annotations(&mut self) {
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
    pub(super) fn reject(&mut self, key: &'static str, note: String) {
        self.consume.push(key);
        self.annotation_condition = Some((false, "InvalidAnnotation", note.clone()));
        self.event(true, "InvalidAnnotation", note);
    }

    pub(super) fn resolve(&self, target: &RollbackTarget) -> Result<i64, String> {
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

    pub(super) fn accepted(&mut self, key: &'static str, reason: &'static str, note: String) {
        self.consume.push(key);
        self.annotation_condition = Some((true, "Handled", format!("{key}: {note}")));
        self.event(false, reason, note);
    }

    pub(super) fn manual_rollback(&mut self, key: &'static str, to: i64) {
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
        self.rollback_requested = Some(key);
    }

    pub(super) fn handle_request(&mut self, key: &'static str, request: Request) {
        if let (Request::Retry | Request::Promote(_), Some(by)) = (&request, self.rollback_requested) {
            let note = format!("{key} ignored: {by} in the same request rolls back, and a rollback wins");
            // Consumed; AnnotationAccepted keeps saying what the rollback did.
            self.consume.push(key);
            self.event(true, "RequestOverridden", note);
            return;
        }
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
                    self.rollback_requested = Some(key);
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
}
