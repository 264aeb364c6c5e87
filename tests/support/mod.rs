//! Test support for tests against the local control plane (`make cluster-up`).
//!
//! [`cluster`] connects to it and applies the CRDs; [`TestNamespace`] gives each test its own
//! namespace, deleted when the test ends, pass or fail. A missing cluster fails the test with
//! a message that says how to start one: a test never passes without its cluster.
#![allow(dead_code)]

pub mod apis;
pub mod cluster;
pub mod fault_proxy;
pub mod httproute;
pub mod lua;
pub mod operator;
pub mod yaml;

pub use apis::*;
pub use cluster::*;
pub use operator::*;
pub use yaml::*;

pub mod prometheus;
pub mod sim;
pub mod slow_provider;
pub mod telemetry;
pub mod watch;

pub use watch::*;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Client, Config, Discovery};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A duration in milliseconds with one decimal, for benchmark output.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// How many runs a benchmark makes: the environment variable `var`, else `default`, kept
/// within `min..=max`.
pub fn runs_from_env(var: &str, default: usize, min: usize, max: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .clamp(min, max)
}

/// Polls `f` every 100 ms until it returns Some, or `timeout` passes: for what has no watch
/// (logs, scrapes, processes); API objects are waited for on a watch ([`watch`]).
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Nearest-rank percentile of sorted samples (benchmarks).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::core::v1::Service;
use rollguard::api::ModelDeployment;
