//! The public API of rollguard: the `ModelDeployment` and `RollbackPolicy` custom resources
//! (group `rollguard.dev`, version `v1alpha1`) and the annotations of the kubectl interface.
//!
//! This module is the only place the API is defined; `rollguard crd` prints the CRDs generated
//! from these types and `crds/` holds that output.

pub mod common;
pub mod model_deployment;
pub mod rollback_policy;
pub mod routing;
pub mod strategy;

pub use common::*;
pub use model_deployment::*;
pub use rollback_policy::*;
pub use routing::*;
pub use strategy::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API version served and stored.
pub const VERSION: &str = "v1alpha1";

/// The finalizer a ModelDeployment carries while its traffic-split object sends traffic to
/// the canary Service: deleting it then first returns the weights to 100/0 on stable.
pub const TRAFFIC_FINALIZER: &str = "rollguard.dev/traffic";

/// Annotations that a person puts on a ModelDeployment with `kubectl annotate`.
pub mod annotations {
    /// `previous`, a revision number, or `version:<label>`: roll back now.
    pub const ROLLBACK_TO: &str = "rollguard.dev/rollback-to";
    /// `true` (leave the current pause) or `full` (skip all remaining steps).
    pub const PROMOTE: &str = "rollguard.dev/promote";
    /// `true`: stop the rollout, all traffic to stable.
    pub const ABORT: &str = "rollguard.dev/abort";
    /// `true`: retry a rolled-back revision that the spec still names.
    pub const RETRY: &str = "rollguard.dev/retry";
}

/// Labels that rollguard puts on the objects it owns.
pub mod labels {
    /// The name of the owning ModelDeployment.
    pub const MODEL_DEPLOYMENT: &str = "rollguard.dev/model-deployment";
    /// The revision number, as a decimal string.
    pub const REVISION: &str = "rollguard.dev/revision";
    /// `spec.model.version` of the revision (on its ControllerRevision).
    pub const VERSION: &str = "rollguard.dev/version";
    /// When the current rollout of a revision started (Deployment), in nanoseconds since
    /// the Unix epoch; the progress deadline counts from here.
    ///
    /// Rollout state lives in labels, not annotations: the API server moves a Deployment's
    /// `metadata.generation` on for every annotation change (they are copied to its
    /// ReplicaSets), which would make its status look stale after each step write.
    pub const PROGRESS_STARTED_AT: &str = "rollguard.dev/progress-started-at";
    /// The canary step being run and when it started (Deployment): `<index>.<unix nanos>`.
    pub const CANARY_STEP: &str = "rollguard.dev/canary-step";
    /// The gradual-rollback step being held and when it started (Deployment of the revision
    /// being left): `<index>.<unix nanos>`.
    pub const ROLLBACK_STEP: &str = "rollguard.dev/rollback-step";
}

/// Annotations that rollguard puts on the objects it owns.
pub mod owned_annotations {
    /// The revision hash (ControllerRevision, Deployment).
    pub const HASH: &str = "rollguard.dev/hash";
    /// Where earlier versions kept [`super::labels::PROGRESS_STARTED_AT`] (RFC 3339);
    /// read when the label is missing, so an upgrade mid-rollout resumes it.
    pub const PROGRESS_STARTED_AT: &str = "rollguard.dev/progress-started-at";
    /// Where earlier versions kept [`super::labels::CANARY_STEP`]: `<index> <RFC 3339>`.
    pub const CANARY_STEP: &str = "rollguard.dev/canary-step";
    /// Where earlier versions kept [`super::labels::ROLLBACK_STEP`]: `<index> <RFC 3339>`.
    pub const ROLLBACK_STEP: &str = "rollguard.dev/rollback-step";
}

/// Every CRD of the API, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![ModelDeployment::crd(), RollbackPolicy::crd()]
}

/// The CRDs as multi-document YAML, exactly as committed in `crds/`.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
