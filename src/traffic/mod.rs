//! Traffic routers: the cluster's traffic-split objects that canary weights are written to.
//!
//! A [`TrafficRouter`] sets the weights of the stable and canary Services on one object and
//! reads them back. Writes are server-side apply with the field manager `rollguard` and touch
//! only backends and weights; everything else the user wrote stays.

pub mod gateway_api;
pub mod inference_pool;
pub mod istio;
pub mod smi;

use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};
use thiserror::Error;

use crate::api::TrafficRouting;

/// The backends a route splits traffic between: two Services, or (Gateway API only) two
/// InferencePools.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backends {
    /// The stable backend, `<name>`.
    pub stable: String,
    /// The canary backend, `<name>-canary`.
    pub canary: String,
    /// What the backends are.
    pub kind: BackendKind,
}

impl Backends {
    /// The Services `stable` and `canary`.
    pub fn services(stable: impl Into<String>, canary: impl Into<String>) -> Backends {
        Backends {
            stable: stable.into(),
            canary: canary.into(),
            kind: BackendKind::Service,
        }
    }
}

/// The kind of object a route's backends are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// A core/v1 Service.
    Service,
    /// An InferencePool of the Gateway API Inference Extension
    /// (`inference.networking.k8s.io`).
    InferencePool,
}

impl BackendKind {
    /// The API group a backendRef names (empty for the core group).
    pub fn group(self) -> &'static str {
        match self {
            BackendKind::Service => "",
            BackendKind::InferencePool => inference_pool::GROUP,
        }
    }

    /// The kind a backendRef names.
    pub fn kind(self) -> &'static str {
        match self {
            BackendKind::Service => "Service",
            BackendKind::InferencePool => inference_pool::KIND,
        }
    }
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
    /// The object exists but no route in it sends traffic to the stable backend.
    #[error("{kind} {namespace}/{name} does not reference the {backend} {stable}")]
    NotReferenced {
        /// Kind of the route object.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The kind of the backend (`Service`, `InferencePool`).
        backend: &'static str,
        /// The stable backend it should reference.
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
    /// The watch of the backends (InferencePools) has not listed them yet.
    #[error(
        "the {kind} objects have not been listed (waited {waited:?}); the operator log says why (is listing and watching them allowed?); looking again"
    )]
    NotListed {
        /// Kind of the backends.
        kind: &'static str,
        /// How long the reconcile waited.
        waited: std::time::Duration,
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
            RouterError::NotListed { .. } => "BackendsNotListed",
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

/// Where a route object is and what it should weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Namespace of the route object (and of the Services).
    pub namespace: String,
    /// Name of the route object.
    pub name: String,
    /// The stable and canary Services.
    pub backends: Backends,
    /// Istio only: names of the HTTP routes to weight; empty means every route with our
    /// Services as destinations.
    pub routes: Vec<String>,
}

/// One kind of traffic-split object: how to find it and how to edit its weights.
pub struct RouteKind {
    /// Kind, such as `HTTPRoute`.
    pub kind: &'static str,
    /// API group.
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// `apiVersion` as written in manifests.
    pub api_version: &'static str,
    /// Resource plural.
    pub plural: &'static str,
    /// The field of `spec` rollguard applies whole (an atomic list in the upstream schema).
    pub field: &'static str,
    /// The new value of `spec.<field>` with the weights set; None when the object does not
    /// reference the stable Service.
    pub edit: fn(&Value, &Target, i32) -> Option<Value>,
    /// The weights on the object; None when it does not reference the stable Service.
    pub read: fn(&Value, &Target) -> Option<Weights>,
}

/// A route object of some [`RouteKind`], read and written as a dynamic object.
pub struct Router {
    client: Client,
    kind: &'static RouteKind,
    target: Target,
}

impl Router {
    /// A router for one object.
    pub fn new(client: Client, kind: &'static RouteKind, target: Target) -> Router {
        Router { client, kind, target }
    }

    /// The router a ModelDeployment's `trafficRouting` names; `backends` are Services, made
    /// InferencePools when the routing says so.
    pub fn for_routing(
        client: Client,
        routing: &TrafficRouting,
        namespace: &str,
        backends: Backends,
    ) -> Option<Router> {
        let mut backends = backends;
        let (kind, name, routes) = if let Some(g) = &routing.gateway_api {
            if g.inference_pool.is_some() {
                backends.kind = BackendKind::InferencePool;
            }
            (&gateway_api::ROUTE_KIND, g.http_route.clone(), Vec::new())
        } else if let Some(s) = &routing.smi {
            (&smi::ROUTE_KIND, s.traffic_split.clone(), Vec::new())
        } else if let Some(i) = &routing.istio {
            (&istio::ROUTE_KIND, i.virtual_service.clone(), i.routes.clone())
        } else {
            return None;
        };
        let target = Target {
            namespace: namespace.to_string(),
            name,
            backends,
            routes,
        };
        Some(Router::new(client, kind, target))
    }

    fn gvk(&self) -> GroupVersionKind {
        GroupVersionKind::gvk(self.kind.group, self.kind.version, self.kind.kind)
    }

    /// The API resource of the object.
    pub fn resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(&self.gvk(), self.kind.plural)
    }

    /// Where the object is: its namespace and name.
    pub fn object_key(&self) -> (&str, &str) {
        (&self.target.namespace, &self.target.name)
    }

    fn api(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.target.namespace, &self.resource())
    }

    async fn get(&self) -> Result<Value, RouterError> {
        match self.api().get_opt(&self.target.name).await {
            Ok(Some(obj)) => Ok(serde_json::to_value(obj).unwrap_or_default()),
            Ok(None) => Err(self.not_found().await),
            Err(kube::Error::Api(s)) if s.code == 404 => Err(self.not_found().await),
            Err(source) => Err(RouterError::Read {
                kind: self.kind.kind,
                name: self.target.name.clone(),
                source,
            }),
        }
    }

    async fn not_found(&self) -> RouterError {
        if api_served(&self.client, &self.gvk(), self.kind.plural).await {
            RouterError::NotFound {
                kind: self.kind.kind,
                namespace: self.target.namespace.clone(),
                name: self.target.name.clone(),
            }
        } else {
            RouterError::NotInstalled {
                kind: self.kind.kind,
                api_version: self.kind.api_version,
            }
        }
    }

    fn not_referenced(&self) -> RouterError {
        RouterError::NotReferenced {
            kind: self.kind.kind,
            namespace: self.target.namespace.clone(),
            name: self.target.name.clone(),
            backend: self.target.backends.kind.kind(),
            stable: self.target.backends.stable.clone(),
        }
    }
}

/// A route object as read: the object (its resourceVersion guards the next write) and the
/// weights on it.
#[derive(Clone, Debug)]
pub struct Route {
    object: Value,
    /// The weights on it.
    pub weights: Weights,
}

impl Route {
    /// The object as read, or as the API server returned it after a write.
    pub fn object(&self) -> &Value {
        &self.object
    }
}

/// What [`Router::write_unless`] did.
#[derive(Clone, Debug)]
pub enum Written {
    /// The weights are on the route (written, or there already): the route as it is now.
    Route(Route),
    /// Nothing written: the weight was superseded. The route as last read.
    Superseded(Route),
}

/// How often a weight write is tried again after someone else changed the object between
/// its read and the write.
const WRITE_ATTEMPTS: usize = 4;

impl Router {
    /// Reads the object and its weights.
    pub async fn read(&self) -> Result<Route, RouterError> {
        let object = self.get().await?;
        self.route_from(object)
    }

    /// The route `object` (as read elsewhere: a cache) and its weights.
    pub fn route_from(&self, object: Value) -> Result<Route, RouterError> {
        let weights = (self.kind.read)(&object, &self.target).ok_or_else(|| self.not_referenced())?;
        Ok(Route { object, weights })
    }

    /// Sends `weight` percent to the canary on `route` as read. The write carries the
    /// resourceVersion read: when someone else changed the object meanwhile, the API server
    /// refuses it (409) and the object is read again and the weights set on what it is now,
    /// so no edit of theirs is overwritten. Returns the route as the API server wrote it (as
    /// read, when its weights were `weight` already).
    pub async fn write(&self, route: Route, weight: i32) -> Result<Route, RouterError> {
        match self.write_unless(route, weight, || false).await? {
            Written::Route(route) | Written::Superseded(route) => Ok(route),
        }
    }

    /// [`Router::write`], unless `superseded()` says, before a write is sent, that the weight
    /// is no longer wanted (another writer took the weight off the canary since it was
    /// planned): then nothing is written, not even again after a conflict, and the route
    /// is returned as last read.
    pub async fn write_unless(
        &self,
        route: Route,
        weight: i32,
        superseded: impl Fn() -> bool,
    ) -> Result<Written, RouterError> {
        let mut object = route.object;
        let mut attempt = 1;
        loop {
            let field = (self.kind.edit)(&object, &self.target, weight).ok_or_else(|| self.not_referenced())?;
            if object.get("spec").and_then(|s| s.get(self.kind.field)) == Some(&field) {
                return self.route_from(object).map(Written::Route);
            }
            if superseded() {
                return self.route_from(object).map(Written::Superseded);
            }
            // The field is an atomic list upstream: apply it whole, as read, with only the
            // backends and weights changed.
            let version = object
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(Value::Null);
            let patch = json!({
                "apiVersion": self.kind.api_version,
                "kind": self.kind.kind,
                "metadata": {"name": self.target.name, "namespace": self.target.namespace, "resourceVersion": version},
                "spec": {self.kind.field: field},
            });
            let applied = self
                .api()
                .patch(
                    &self.target.name,
                    &PatchParams::apply(crate::FIELD_MANAGER).force(),
                    &Patch::Apply(&patch),
                )
                .await;
            match applied {
                // Read back from what the API server returned for the write: no second GET.
                Ok(applied) => {
                    return self
                        .route_from(serde_json::to_value(applied).unwrap_or_default())
                        .map(Written::Route);
                }
                Err(kube::Error::Api(s)) if s.code == 409 && attempt < WRITE_ATTEMPTS => {
                    tracing::debug!(route = %self.target.name, attempt, "the route changed since it was read; reading it again");
                    attempt += 1;
                    object = self.get().await?;
                }
                Err(source) => {
                    return Err(RouterError::Write {
                        kind: self.kind.kind,
                        name: self.target.name.clone(),
                        source,
                    });
                }
            }
        }
    }
}

impl TrafficRouter for Router {
    async fn set_weight(&self, weight: i32) -> Result<Weights, RouterError> {
        let route = self.read().await?;
        Ok(self.write(route, weight).await?.weights)
    }

    async fn weights(&self) -> Result<Weights, RouterError> {
        Ok(self.read().await?.weights)
    }
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
