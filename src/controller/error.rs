//! Errors of the controller: one variant per failed operation.

use thiserror::Error;

/// A failed reconcile step.
#[derive(Debug, Error)]
pub enum Error {
    /// The object has no namespace although the resource is namespaced.
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),

    /// Writing the status of a ModelDeployment failed.
    #[error("failed to patch status of ModelDeployment {namespace}/{name}")]
    StatusPatchFailed {
        /// Namespace of the object.
        namespace: String,
        /// Name of the object.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// A stable, low-cardinality category for metric labels and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::MissingObjectKey(_) => "MissingObjectKey",
            Error::StatusPatchFailed { .. } => "StatusPatchFailed",
        }
    }
}
