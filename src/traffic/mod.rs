//! Traffic routers: the cluster's traffic-split objects that canary weights are written to.
//!
//! A [`TrafficRouter`] sets the weights of the stable and canary Services on one object and
//! reads them back. Writes are server-side apply with the field manager `rollguard` and touch
//! only backends and weights; everything else the user wrote stays.

pub mod gateway_api;

use kube::Client;
use kube::core::{ApiResource, GroupVersionKind};
use thiserror::Error;

/// The Services a route splits traffic between.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backends {
    /// The stable Service, `<name>`.
    pub stable: String,
    /// The canary Service, `<name>-canary`.
    pub canary: String,
}

/// Weights as seen on a route object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weights {
    /// Weight of the stable Service.
    pub stable: i32,
    /// Weight of the canary Service.
    pub canary: i32,
}

impl Weights {
    /// The weights of a canary at `canary` percent: stable gets the rest.
    pub fn canary_at(canary: i32) -> Weights {
        let canary = canary.clamp(0, 100);
        Weights {
            stable: 100 - canary,
            canary,
        }
    }
}

/// What went wrong with a route object. Every variant leaves traffic as it was.
#[derive(Debug, Error)]
pub enum RouterError {
    /// The named object does not exist.
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        /// Kind of the route object.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The object exists but no route in it sends traffic to the stable Service.
    #[error("{kind} {namespace}/{name} does not reference the Service {stable}")]
    NotReferenced {
        /// Kind of the route object.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The stable Service it should reference.
        stable: String,
    },
    /// The API of the route object is not served: its CRD is not installed.
    #[error("the {kind} API ({api_version}) is not installed in the cluster")]
    NotInstalled {
        /// Kind of the route object.
        kind: &'static str,
        /// The API version looked for.
        api_version: &'static str,
    },
    /// Reading the object failed.
    #[error("failed to read {kind} {name}")]
    Read {
        /// Kind of the route object.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing the weights failed.
    #[error("failed to write weights to {kind} {name}")]
    Write {
        /// Kind of the route object.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl RouterError {
    /// A stable category for conditions, Events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            RouterError::NotFound { .. } => "RouteNotFound",
            RouterError::NotReferenced { .. } => "RouteNotReferencingServices",
            RouterError::NotInstalled { .. } => "RouterNotInstalled",
            RouterError::Read { .. } => "RouteReadFailed",
            RouterError::Write { .. } => "RouteWriteFailed",
        }
    }
}

/// Sets and reads the weights on one traffic-split object.
pub trait TrafficRouter {
    /// Sends `weight` percent to the canary and the rest to stable; returns the weights read
    /// back from the object after the write.
    fn set_weight(&self, weight: i32) -> impl std::future::Future<Output = Result<Weights, RouterError>> + Send;

    /// The weights on the object now.
    fn weights(&self) -> impl std::future::Future<Output = Result<Weights, RouterError>> + Send;
}

/// Whether the API server serves `resource` in `gvk`'s group and version. Used to tell a
/// missing object from a missing CRD after a 404.
pub async fn api_served(client: &Client, gvk: &GroupVersionKind, plural: &str) -> bool {
    let api_version = ApiResource::from_gvk(gvk).api_version;
    match client.list_api_group_resources(&api_version).await {
        Ok(list) => list.resources.iter().any(|r| r.name == plural),
        Err(_) => false,
    }
}
