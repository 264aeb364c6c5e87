//! Pure planning: `plan(&ModelDeployment, &Observed) -> Plan`. No client in here.
//!
//! The controller observes the cluster into an [`Observed`], asks [`plan`] what the world
//! should look like, and applies the [`Plan`], writing only what differs.

mod analysis;
pub mod annotations;
mod blue_green;
mod canary;
mod deadline;
mod gradual;
mod planner;
mod requests;
mod rollback;
mod status;
mod steps;

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use crate::api::ModelDeploymentStatus;
use crate::revision::Snapshot;

pub use planner::{RESTORED, deployment_name, judged, plan};
pub use status::{ANNOTATION_ACCEPTED, METRICS_WARNING, POLICY_RESOLVED, TRAFFIC_ROUTED};

/// A revision as stored in the cluster (its ControllerRevision).
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedRevision {
    /// Revision number.
    pub number: i64,
    /// Its hash.
    pub hash: String,
    /// What it is made of.
    pub snapshot: Snapshot,
}

/// The Deployment of a revision as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedDeployment {
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.readyReplicas`.
    pub ready_replicas: i32,
    /// Up to date (observedGeneration current, all replicas updated) and all available.
    pub available: bool,
    /// When the current rollout of this revision started (its annotation).
    pub progress_started_at: Option<Timestamp>,
    /// The canary step being run and when it started (its annotation).
    pub canary_step: Option<CanaryStepState>,
    /// The gradual-rollback step being held and when it started (its annotation).
    pub rollback_step: Option<CanaryStepState>,
    /// Someone else changed a field of rollguard's in its pod template: apply restores it.
    pub template_drifted: bool,
    /// `metadata.generation` (a restore that changed the spec moves it on).
    pub generation: i64,
}

/// Where a canary is in its steps: persisted on the canary Deployment so a restarted
/// operator resumes the same step with the same clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CanaryStepState {
    /// Index into `spec.strategy.canary.steps`.
    pub index: i32,
    /// When that step started.
    pub started_at: Timestamp,
}

/// A time as a label value: nanoseconds since the Unix epoch (a label value cannot hold
/// the `:` of RFC 3339). Times before the epoch are written as the epoch.
pub fn time_to_label(t: Timestamp) -> String {
    t.as_nanosecond().max(0).to_string()
}

/// Parses [`time_to_label`]'s format.
///
/// ```
/// use rollguard::plan::{time_from_label, time_to_label};
/// let t: jiff::Timestamp = "2026-11-23T10:00:00.123456789Z".parse().unwrap();
/// assert_eq!(time_from_label(&time_to_label(t)), Some(t));
/// assert_eq!(time_from_label("soon"), None);
/// ```
pub fn time_from_label(value: &str) -> Option<Timestamp> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Timestamp::from_nanosecond(value.parse().ok()?).ok()
}

impl CanaryStepState {
    /// The label value: `<index>.<unix nanos>` (digits and one dot, a valid label value).
    pub fn to_label(&self) -> String {
        format!("{}.{}", self.index.max(0), time_to_label(self.started_at))
    }

    /// Parses [`CanaryStepState::to_label`]'s format.
    ///
    /// ```
    /// use rollguard::plan::CanaryStepState;
    /// let s = CanaryStepState { index: 2, started_at: "2026-11-23T10:00:00Z".parse().unwrap() };
    /// assert_eq!(CanaryStepState::from_label(&s.to_label()), Some(s));
    /// assert_eq!(CanaryStepState::from_label("garbage"), None);
    /// ```
    pub fn from_label(value: &str) -> Option<CanaryStepState> {
        let (index, at) = value.split_once('.')?;
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(CanaryStepState {
            index: index.parse().ok()?,
            started_at: time_from_label(at)?,
        })
    }

    /// The format earlier versions wrote in an annotation: `<index> <RFC 3339 time>`.
    pub fn to_annotation(&self) -> String {
        format!("{} {}", self.index, self.started_at)
    }

    /// Parses [`CanaryStepState::to_annotation`]'s format.
    ///
    /// ```
    /// use rollguard::plan::CanaryStepState;
    /// let s = CanaryStepState { index: 2, started_at: "2026-11-23T10:00:00Z".parse().unwrap() };
    /// assert_eq!(CanaryStepState::from_annotation(&s.to_annotation()), Some(s));
    /// assert_eq!(CanaryStepState::from_annotation("garbage"), None);
    /// ```
    pub fn from_annotation(value: &str) -> Option<CanaryStepState> {
        let (index, at) = value.trim().split_once(' ')?;
        Some(CanaryStepState {
            index: index.parse().ok()?,
            started_at: at.trim().parse().ok()?,
        })
    }
}

/// What the traffic-split object showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteObservation {
    /// The weights on it.
    Weights(crate::traffic::Weights),
    /// It could not be used: a stable reason and a message.
    Fault {
        /// CamelCase reason, such as `RouteNotFound`.
        reason: &'static str,
        /// What is wrong, naming the object.
        message: String,
    },
}

/// What the controller saw for one ModelDeployment.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// The time of observation.
    pub now: Timestamp,
    /// Its ControllerRevisions.
    pub revisions: Vec<ObservedRevision>,
    /// Its Deployments, by revision.
    pub deployments: BTreeMap<i64, ObservedDeployment>,
    /// The revision the stable Service selects, if the Service exists.
    pub stable_service: Option<ServiceTarget>,
    /// The revision the canary Service selects, if the Service exists.
    pub canary_service: Option<ServiceTarget>,
    /// The traffic-split object, when `spec.trafficRouting` names one.
    pub route: Option<RouteObservation>,
    /// The RollbackPolicy, when `spec.rollbackPolicyRef` names one.
    pub policy: Option<PolicyObservation>,
    /// The latest evaluation of the policy's triggers, when a revision is being judged.
    pub metrics: Option<MetricsObservation>,
}

/// Why a revision is being judged by the policy's triggers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A canary, or a blue/green preview before promotion: a breach rolls it back.
    Rollout,
    /// The new stable revision within `guardWindow` after its promotion: a breach rolls back
    /// to the previous revision.
    Guard,
    /// The revision a rollback restored, within `verification.window`: a breach fails the
    /// verification.
    Verification,
    /// The target of a gradual rollback: a breach (or Hold) pauses the walk.
    GradualHealth,
}

/// The revision whose metrics matter now, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Judged {
    /// The revision.
    pub revision: i64,
    /// Why.
    pub purpose: Purpose,
    /// Whether its traffic is reached through the canary Service (else the stable one).
    pub via_canary: bool,
}

/// What the triggers said about the judged revision.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsObservation {
    /// The revision judged and why.
    pub judged: Judged,
    /// One entry per trigger (the new `status.analysis`).
    pub analysis: Vec<crate::api::TriggerAnalysis>,
    /// What they ask for.
    pub decision: crate::trigger::Decision,
    /// Warning and Info triggers that fired in this evaluation.
    pub notices: Vec<crate::trigger::Notice>,
    /// Whether the triggers were queried in this reconcile (else the last results stand).
    pub fresh: bool,
}

/// The RollbackPolicy a ModelDeployment references, as read.
#[derive(Clone, Debug, PartialEq)]
pub enum PolicyObservation {
    /// Its spec.
    Found(Box<crate::api::RollbackPolicySpec>),
    /// It does not exist: rollbacks run with the defaults (Instant) until it does.
    NotFound(String),
}

/// What a Service points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceTarget {
    /// The selected revision.
    pub revision: i64,
    /// The Service port (and target port).
    pub port: i32,
}

/// The desired Deployment of a revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredDeployment {
    /// Replicas.
    pub replicas: i32,
    /// Create it (from the revision's snapshot) when it does not exist.
    pub create: bool,
    /// The progress clock annotation to carry.
    pub progress_started_at: Option<Timestamp>,
    /// The canary step annotation to carry.
    pub canary_step: Option<CanaryStepState>,
    /// The gradual-rollback step annotation to carry.
    pub rollback_step: Option<CanaryStepState>,
}

/// An Event to publish after the status write succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEvent {
    /// Warning (true) or Normal.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// What happened.
    pub note: String,
}

/// What the world should look like.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// A new revision to record (its ControllerRevision), before anything else.
    pub new_revision: Option<(i64, Snapshot)>,
    /// Deployments to ensure, by revision.
    pub deployments: BTreeMap<i64, DesiredDeployment>,
    /// Revisions to prune: their Deployment and ControllerRevision are deleted.
    pub prune: Vec<i64>,
    /// What the stable Service `<name>` selects (None: leave it absent for now).
    pub stable_service: Option<ServiceTarget>,
    /// What the preview Service `<name>-canary` selects.
    pub canary_service: Option<ServiceTarget>,
    /// The status.
    pub status: ModelDeploymentStatus,
    /// Annotations handled and to be removed.
    pub consume: Vec<&'static str>,
    /// Events to publish.
    pub events: Vec<PlannedEvent>,
    /// When to look again at the latest (a deadline), besides watch events.
    pub requeue_after: Option<Duration>,
    /// The canary weight the traffic-split object should carry (None: leave it).
    pub route_weight: Option<i32>,
}

#[cfg(test)]
mod tests;
