//! The operator's Kubernetes client. kube's own client speaks HTTP/1.1 only, so every request
//! in flight holds a connection of its own, with its TLS session and buffers: hundreds of them
//! while a fleet-wide change is written. This client offers HTTP/2 as well (by ALPN, as
//! client-go does), so the API server carries every request and watch over one connection,
//! checked by HTTP/2 pings. Where HTTP/2 is not offered (plain HTTP, such as a proxy on
//! loopback) it speaks HTTP/1.1 as before. Every request is counted
//! ([`crate::telemetry::requests`]).

use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::{ClientBuilder, ConfigExt};
use tower::{BoxError, ServiceBuilder};

use crate::telemetry::Metrics;
use crate::telemetry::requests::CountRequestsLayer;

/// How long an HTTP/2 connection may stay silent before it is pinged, and how long the
/// answer to a ping may take before the connection is dropped and its requests and watches
/// fail and are retried on a new one (client-go's ReadIdleTimeout and PingTimeout).
pub const PING_AFTER: Duration = Duration::from_secs(30);
pub const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// A Kubernetes client from `config` that speaks HTTP/2 where the API server offers it and
/// counts its requests into `metrics`. It honours the config's URL, TLS (certificates, server
/// name, insecure), credentials (refreshed tokens, exec plugins), extra headers, connect
/// timeout and default retries, as kube's own client does.
pub fn connect(config: kube::Config, metrics: Arc<Metrics>) -> Result<kube::Client, kube::Error> {
    // kube's own builder installs aws-lc-rs as rustls' default provider; so does this one
    // (the answer is an error only when another was installed meanwhile, which is as good).
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    let tls = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_or_http();
    let tls = match &config.tls_server_name {
        Some(name) => {
            let name = rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|err| kube::Error::RustlsTls(kube::client::RustlsTlsError::InvalidServerName(err)))?;
            tls.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => tls,
    };
    let connector = tls.enable_all_versions().wrap_connector(http);
    let hyper_client = hyper_util::client::legacy::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .http2_keep_alive_interval(PING_AFTER)
        .http2_keep_alive_timeout(PING_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .build::<_, kube::client::Body>(connector);
    let retry = config
        .default_retry
        .then(|| tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry()));
    let service = ServiceBuilder::new()
        .layer(CountRequestsLayer::new(metrics))
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(hyper_client);
    Ok(ClientBuilder::new(service, config.default_namespace.clone()).build())
}
