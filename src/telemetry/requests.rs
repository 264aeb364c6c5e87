//! Counts what the operator asks of the API server: a layer on the Kubernetes client, so no
//! call site counts by hand. Each request is `rollguard_kube_requests_total{verb, resource,
//! code}`, with the verb and resource named as in the API server's audit log.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response};

use super::Metrics;

/// The Kubernetes verb and resource of a request to `path?query` with `method`: `get`,
/// `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`; the resource
/// in the plural, with its subresource (`modeldeployments/status`).
///
/// ```
/// use http::Method;
/// use rollguard::telemetry::requests::classify;
/// let c = |m, p, q| classify(&m, p, q);
/// assert_eq!(c(Method::GET, "/apis/apps/v1/namespaces/a/deployments", None), ("list", "deployments".into()));
/// assert_eq!(c(Method::GET, "/apis/apps/v1/deployments", Some("watch=true&labelSelector=x")), ("watch", "deployments".into()));
/// assert_eq!(c(Method::GET, "/api/v1/namespaces/a/services/chat", None), ("get", "services".into()));
/// assert_eq!(
///     c(Method::PATCH, "/apis/rollguard.dev/v1alpha1/namespaces/a/modeldeployments/chat/status", None),
///     ("patch", "modeldeployments/status".into())
/// );
/// assert_eq!(c(Method::GET, "/api/v1/namespaces/a", None), ("get", "namespaces".into()));
/// assert_eq!(c(Method::POST, "/apis/events.k8s.io/v1/namespaces/a/events", None), ("create", "events".into()));
/// assert_eq!(c(Method::GET, "/version", None), ("get", "".into()));
/// ```
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> (&'static str, String) {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let rest: &[&str] = match segments.first() {
        Some(&"api") => segments.get(2..).unwrap_or(&[]),
        Some(&"apis") => segments.get(3..).unwrap_or(&[]),
        _ => &[],
    };
    let rest = match rest {
        ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let resource = match rest {
        [resource, _, sub, ..] => format!("{resource}/{sub}"),
        [resource, ..] => resource.to_string(),
        [] => String::new(),
    };
    let named = rest.len() >= 2;
    let watch = query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = match *method {
        Method::GET if watch => "watch",
        Method::GET if named || rest.is_empty() => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    };
    (verb, resource)
}

/// The layer that counts requests into [`Metrics`].
#[derive(Clone)]
pub struct CountRequestsLayer {
    metrics: Arc<Metrics>,
}

impl CountRequestsLayer {
    /// Counts into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        CountRequestsLayer { metrics }
    }
}

impl<S> tower::Layer<S> for CountRequestsLayer {
    type Service = CountRequests<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountRequests {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The client service wrapped by [`CountRequestsLayer`].
#[derive(Clone)]
pub struct CountRequests<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> tower::Service<Request<B>> for CountRequests<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    R: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (verb, resource) = classify(request.method(), request.uri().path(), request.uri().query());
        let metrics = self.metrics.clone();
        let sent = std::time::Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let result = answer.await;
            let seconds = sent.elapsed().as_secs_f64();
            let code = match &result {
                Ok(response) => response.status().as_u16().to_string(),
                Err(_) => "error".to_string(),
            };
            metrics.kube_request(verb, &resource, &code, seconds);
            result
        })
    }
}
