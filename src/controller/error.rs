//! Errors of the controller: one variant per failed operation.

use thiserror::Error;

/// A failed reconcile step.
#[derive(Debug, Error)]
pub enum Error {
    /// The object lacks a field the API server always sets.
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),

    /// Writing the status of a RollbackPolicy failed.
    #[error("failed to patch status of RollbackPolicy {0}")]
    PatchPolicyStatus(String, #[source] kube::Error),

    /// Creating the ControllerRevision of a new revision failed.
    #[error("failed to create ControllerRevision {0}")]
    CreateRevision(String, #[source] kube::Error),

    /// A ControllerRevision of that number exists with another hash (a concurrent writer).
    #[error("ControllerRevision {0} exists with another hash; will number the revision again")]
    RevisionConflict(String),

    /// Applying a Deployment failed.
    #[error("failed to apply Deployment {0}")]
    ApplyDeployment(String, #[source] kube::Error),

    /// Applying a Service failed.
    #[error("failed to apply Service {0}")]
    ApplyService(String, #[source] kube::Error),

    /// Applying an InferencePool failed.
    #[error("failed to apply InferencePool {0}")]
    ApplyInferencePool(String, #[source] kube::Error),

    /// Deleting a pruned object failed.
    #[error("failed to delete {0}")]
    Prune(String, #[source] kube::Error),

    /// Writing the status of a ModelDeployment failed.
    #[error("failed to patch status of ModelDeployment {0}")]
    PatchStatus(String, #[source] kube::Error),

    /// The traffic-split object could not be read or written.
    #[error("traffic routing of ModelDeployment {0}")]
    Route(String, #[source] crate::traffic::RouterError),

    /// The traffic-split object cannot be used (reported in status; retried with backoff).
    #[error("traffic-split object of ModelDeployment {0} cannot be used ({1}): {2}")]
    RouteUnusable(String, &'static str, String),

    /// An annotation changed between observe and apply; planned again from fresh state.
    #[error("annotation {1} of ModelDeployment {0} changed while it was handled")]
    AnnotationChanged(String, &'static str),

    /// Adding or removing the traffic finalizer failed.
    #[error("failed to {1} the finalizer {finalizer} of ModelDeployment {0}", finalizer = crate::api::TRAFFIC_FINALIZER)]
    Finalizer(String, &'static str, #[source] kube::Error),

    /// Removing a handled annotation failed.
    #[error("failed to remove annotation {1} from ModelDeployment {0}")]
    ConsumeAnnotation(String, &'static str, #[source] kube::Error),

    /// The abort lane took the weight off the canary while this reconcile was under way: it
    /// planned from what came before, so it stops and is run again at once.
    #[error("the abort lane wrote the route of ModelDeployment {0} meanwhile; planned again")]
    Superseded(String),
}

impl Error {
    /// Whether a user should see the failure as a Warning Event: not when the plan already
    /// reported it in status and Events (a traffic-split object that cannot be used), nor
    /// when it needs no one (a request that changed while it was handled, or a route the
    /// abort lane wrote meanwhile: planned again).
    pub fn needs_event(&self) -> bool {
        !matches!(
            self,
            Error::RouteUnusable(..) | Error::AnnotationChanged(..) | Error::Superseded(..)
        )
    }

    /// A stable, low-cardinality category for metric labels and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::MissingObjectKey(_) => "MissingObjectKey",
            Error::PatchPolicyStatus(..) => "PatchRollbackPolicyStatusFailed",
            Error::CreateRevision(..) => "CreateRevisionFailed",
            Error::RevisionConflict(..) => "RevisionConflict",
            Error::ApplyDeployment(..) => "ApplyDeploymentFailed",
            Error::ApplyService(..) => "ApplyServiceFailed",
            Error::ApplyInferencePool(..) => "ApplyInferencePoolFailed",
            Error::Prune(..) => "PruneFailed",
            Error::PatchStatus(..) => "PatchStatusFailed",
            Error::ConsumeAnnotation(..) => "ConsumeAnnotationFailed",
            Error::Finalizer(..) => "FinalizerFailed",
            Error::Route(_, e) => e.reason(),
            Error::RouteUnusable(_, reason, _) => reason,
            Error::AnnotationChanged(..) => "AnnotationChanged",
            Error::Superseded(..) => "Superseded",
        }
    }
}

/// An error with every cause after it: `a: b: c`. Display alone drops the causes (the
/// `kube::Error` under a failed write says what the API server answered).
///
/// ```
/// use rollguard::controller::error::chain;
/// #[derive(Debug, thiserror::Error)]
/// #[error("failed to apply Service a/chat")]
/// struct Apply(#[source] std::io::Error);
/// let err = Apply(std::io::Error::other("range is full"));
/// assert_eq!(err.to_string(), "failed to apply Service a/chat");
/// assert_eq!(chain(&err), "failed to apply Service a/chat: range is full");
/// // A message that already ends with its cause keeps it once.
/// let err = rollguard::controller::RunError::Metrics(std::io::Error::other("address in use"));
/// assert_eq!(chain(&err), "cannot serve the metrics endpoint: address in use");
/// ```
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Some errors repeat their cause in their own message; keep each text once.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}
