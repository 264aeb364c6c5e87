//! The planner: what it reads (the ModelDeployment, what was observed) and what it builds
//! up in one reconcile, with the small questions every concern asks (is a revision available,
//! held, rolling out).
//!
//! State lives in the ModelDeployment status (stable revision, history phases, a pending
//! rollback in `lastRollback`) and in the cluster (ControllerRevisions, Deployments,
//! Services), so a restarted operator picks up where the last one stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;

use super::annotations::Promote;
use super::gradual::GradualTraffic;
use super::{CanaryStepState, Judged, Observed, Plan, PlannedEvent, PolicyObservation, RouteObservation};
use crate::api::{
    ModelDeployment, Phase, RevisionPhase, RevisionRecord, RollbackMode, RollbackPolicySpec, RollbackRecord,
    RollbackSpec,
};
use crate::conditions::stamp;
use crate::revision::{self, Snapshot};

/// Restored by a rollback: the history reason that keeps a revision out of the guard window.
pub const RESTORED: &str = "restored by a rollback";

/// Decides what the world should look like for `md`, given what was observed.
///
/// Worked example (blue/green, autoPromote): stable r1, the spec now hashes to something new.
/// The plan records r2, asks for Deployment `<name>-r2` at `replicas`, points the preview
/// Service at r2 and keeps the stable Service on r1 (phase Progressing). Once r2 is
/// Available, the next plan points the stable Service at r2, marks r1 Superseded and keeps
/// it warm (phase Healthy).
///
/// A canary's weight step costs one reconcile: a plan that writes a weight step's weight
/// goes on from that weight as the route shows it once written (the pause after it starts,
/// or the canary scales for the step after). The step after is recorded on the canary
/// Deployment before the route is written, as every step is: an operator stopped between
/// the two finds the pause with the route short of its weight and writes the weight again
/// (a RouteWeightRestored Event), rather than running the weight step again from the
/// weight before it. It does not go on when it handles a request (an annotation is consumed
/// once), records a revision, or when what comes next writes another weight or moves the
/// stable Service: those wait until the route reads the weight back.
pub fn plan(md: &ModelDeployment, obs: &Observed) -> Plan {
    let (first, step_weight) = plan_once(md, obs);
    if !step_weight {
        return first;
    }
    past_step_weight(md, obs, &first).unwrap_or(first)
}

/// One pass of the planner; true when the weight it writes is a weight step's.
fn plan_once(md: &ModelDeployment, obs: &Observed) -> (Plan, bool) {
    let mut p = Planner::new(md, obs);
    p.handle_annotations();
    p.act_on_metrics();
    p.end_verification();
    if !p.complete_pending_rollback() {
        p.progress();
    }
    let step_weight = p.step_weight;
    (p.finish(), step_weight)
}

/// The plan after `first`'s weight step, as if the route read its weight: None when the
/// steps do not simply go on from there (see [`plan`]).
fn past_step_weight(md: &ModelDeployment, obs: &Observed, first: &Plan) -> Option<Plan> {
    let weight = first.route_weight?;
    let canary = first.status.canary_revision?;
    if !first.consume.is_empty() || first.new_revision.is_some() {
        return None;
    }
    let mut after = obs.clone();
    after.route = Some(RouteObservation::Weights(crate::traffic::Weights::canary_at(weight)));
    let step = first.deployments.get(&canary)?.canary_step;
    after.deployments.get_mut(&canary)?.canary_step = step;
    let (mut next, _) = plan_once(md, &after);
    let goes_on = next.route_weight.is_none_or(|w| w == weight)
        && next.status.canary_revision == Some(canary)
        && next.stable_service == first.stable_service
        && next.consume.is_empty();
    if !goes_on {
        return None;
    }
    next.route_weight = Some(weight);
    let mut events = first.events.clone();
    events.extend(next.events.into_iter().filter(|e| !first.events.contains(e)));
    next.events = events;
    Some(next)
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

pub(super) struct Planner<'a> {
    pub(super) md: &'a ModelDeployment,
    pub(super) obs: &'a Observed,
    pub(super) now: Timestamp,
    pub(super) replicas: i32,
    pub(super) snapshots: BTreeMap<i64, Snapshot>,
    pub(super) history: BTreeMap<i64, RevisionRecord>,
    pub(super) new_revision: Option<(i64, Snapshot)>,
    pub(super) target: i64,
    pub(super) stable: Option<i64>,
    pub(super) last_rollback: Option<RollbackRecord>,
    pub(super) phase: Phase,
    pub(super) message: String,
    pub(super) stalled_reason: &'static str,
    pub(super) events: Vec<PlannedEvent>,
    pub(super) consume: Vec<&'static str>,
    pub(super) annotation_condition: Option<(bool, &'static str, String)>,
    pub(super) promote_requested: Option<Promote>,
    /// The annotation that started a rollback in this reconcile: it wins over a `retry` or
    /// a `promote` written with it.
    pub(super) rollback_requested: Option<&'static str>,
    pub(super) reset_progress: BTreeSet<i64>,
    pub(super) requeue_after: Option<Duration>,
    /// What the strategy that runs wants of traffic (None: none runs).
    pub(super) traffic: Option<Traffic>,
    /// How rollbacks run (the referenced RollbackPolicy's `rollback`, or the defaults).
    pub(super) rollback_spec: RollbackSpec,
    /// `rollguard.dev/abort` during a gradual rollback: finish it at once.
    pub(super) finish_gradual_now: bool,
    /// When an open verification window ends.
    pub(super) verification_requeue: Option<Duration>,
    /// The canary weight this plan writes is a weight step's (see [`plan`]).
    pub(super) step_weight: bool,
}

/// What the strategy that runs in this reconcile wants of traffic.
#[derive(Clone, Copy, Debug)]
pub(super) enum Traffic {
    /// Canary steps (or a blue/green switch on a route): the weight to write (None: leave
    /// it) and the step to persist on the canary Deployment (None once they are done).
    Canary {
        /// The weight.
        weight: Option<i32>,
        /// The step.
        step: Option<CanaryStepState>,
    },
    /// A gradual rollback holds traffic on the revision being left.
    Gradual(GradualTraffic),
    /// A rollback to a revision still scaling up: the share of traffic its ready pods take.
    Share(ShareTraffic),
}

/// Where traffic goes while a rollback waits for its target's pods, with a route object: the
/// canary Service selects the target and the canary weight is the share its ready pods take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ShareTraffic {
    /// What the canary Service selects: the target, or (while another revision still has
    /// canary weight, which goes to 0 first) what it selects now.
    pub(super) canary: Option<i64>,
    /// The canary weight to write.
    pub(super) weight: i32,
}

impl<'a> Planner<'a> {
    pub(super) fn new(md: &'a ModelDeployment, obs: &'a Observed) -> Self {
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
            rollback_requested: None,
            reset_progress: BTreeSet::new(),
            requeue_after: None,
            traffic: None,
            rollback_spec: match &obs.policy {
                Some(PolicyObservation::Found(p)) => p.rollback.clone(),
                _ => RollbackSpec::default(),
            },
            finish_gradual_now: false,
            verification_requeue: None,
            step_weight: false,
        }
    }

    /// The canary weight the route should carry, when a canary runs.
    pub(super) fn canary_weight(&self) -> Option<i32> {
        match self.traffic {
            Some(Traffic::Canary { weight, .. }) => weight,
            _ => None,
        }
    }

    /// The canary step to persist, when a canary runs.
    pub(super) fn canary_step(&self) -> Option<CanaryStepState> {
        match self.traffic {
            Some(Traffic::Canary { step, .. }) => step,
            _ => None,
        }
    }

    /// Where a rollback waiting for its target's pods sends traffic, when it does.
    pub(super) fn share(&self) -> Option<ShareTraffic> {
        match self.traffic {
            Some(Traffic::Share(s)) => Some(s),
            _ => None,
        }
    }

    /// Where a gradual rollback holds traffic, when one runs.
    pub(super) fn gradual(&self) -> Option<GradualTraffic> {
        match self.traffic {
            Some(Traffic::Gradual(g)) => Some(g),
            _ => None,
        }
    }

    pub(super) fn policy(&self) -> Option<&'a RollbackPolicySpec> {
        match &self.obs.policy {
            Some(PolicyObservation::Found(p)) => Some(p),
            _ => None,
        }
    }

    pub(super) fn event(&mut self, warning: bool, reason: &'static str, note: String) {
        self.events.push(PlannedEvent { warning, reason, note });
    }

    pub(super) fn version_of(&self, rev: i64) -> String {
        self.snapshots
            .get(&rev)
            .map(|s| s.model.version.clone())
            .unwrap_or_else(|| "?".into())
    }

    pub(super) fn phase_of(&self, rev: i64) -> Option<RevisionPhase> {
        self.history.get(&rev).map(|h| h.phase)
    }

    pub(super) fn set_phase(&mut self, rev: i64, phase: RevisionPhase, reason: Option<String>) {
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

    pub(super) fn held(&self, rev: i64) -> bool {
        matches!(
            self.phase_of(rev),
            Some(RevisionPhase::RolledBack | RevisionPhase::Failed)
        )
    }

    /// A rollout of the spec's revision towards stable is under way.
    pub(super) fn rolling_out(&self) -> bool {
        self.stable.is_some_and(|s| s != self.target) && self.phase_of(self.target) == Some(RevisionPhase::Progressing)
    }

    pub(super) fn gradual_in_flight(&self) -> bool {
        self.last_rollback
            .as_ref()
            .is_some_and(|r| r.completed_at.is_none() && r.mode == RollbackMode::Gradual)
    }

    pub(super) fn pending_rollback(&self) -> Option<i64> {
        self.last_rollback
            .as_ref()
            .filter(|r| r.completed_at.is_none())
            .map(|r| r.to_revision)
    }

    /// Ready for traffic: the Deployment is up to date and all the replicas it should have
    /// now are available.
    pub(super) fn available(&self, rev: i64) -> bool {
        let size = self.size_of(rev);
        self.obs
            .deployments
            .get(&rev)
            .is_some_and(|d| d.available && d.replicas >= size)
    }

    pub(super) fn readiness(&self, rev: i64) -> String {
        format!("{}/{} replicas ready", self.ready_of(rev), self.size_of(rev))
    }

    /// The ready pods of `rev`'s Deployment.
    pub(super) fn ready_of(&self, rev: i64) -> i32 {
        self.obs.deployments.get(&rev).map_or(0, |d| d.ready_replicas)
    }

    /// The replicas a running revision should have: the canary's size while its steps run,
    /// full size otherwise.
    pub(super) fn size_of(&self, rev: i64) -> i32 {
        self.canary_replicas(rev).unwrap_or(self.replicas)
    }

    /// The size of `rev` while it is the canary being rolled out and not the target of a
    /// rollback (None otherwise): from its
    /// step (planned in this reconcile, else the one on its Deployment) and the traffic on
    /// it. When the route cannot be read, the canary keeps at least the replicas it has.
    pub(super) fn canary_replicas(&self, rev: i64) -> Option<i32> {
        // A rollback to it wants it at full size; so does a return to a revision that served
        // before, which switches at once.
        let served_before = self.history.get(&rev).is_some_and(|h| h.promoted_at.is_some());
        if rev != self.target || !self.rolling_out() || self.pending_rollback() == Some(rev) || served_before {
            return None;
        }
        let steps = self.md.spec.strategy.canary.as_ref()?.steps.as_slice();
        let observed = self.obs.deployments.get(&rev);
        let index = self
            .canary_step()
            .or_else(|| observed.and_then(|d| d.canary_step))
            .map_or(0, |s| s.index);
        let (route, floor) = match &self.obs.route {
            Some(RouteObservation::Weights(w)) => (w.canary, 0),
            _ => (0, observed.map_or(0, |d| d.replicas)),
        };
        let route = route.max(self.canary_weight().unwrap_or(0));
        let size = super::canary::canary_size(steps, index, route, self.replicas, self.md.spec.paused);
        Some(size.max(floor.min(self.replicas)))
    }
}

/// The Deployment (and ControllerRevision) name of a revision: `<name>-r<N>`.
pub fn deployment_name(name: &str, revision: i64) -> String {
    format!("{name}-r{revision}")
}
