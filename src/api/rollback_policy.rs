//! The `RollbackPolicy` custom resource: how rollguard judges revisions and rolls them back.

// Several `printcolumn(...)` in one `#[kube]` attribute repeat `type_ = ...` by design.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::Duration;
use super::model_deployment::RollbackMode;

/// How to judge the revisions of the ModelDeployments that reference it, and how to roll
/// them back.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rollguard.dev",
    version = "v1alpha1",
    kind = "RollbackPolicy",
    plural = "rollbackpolicies",
    shortname = "rbp",
    category = "rollguard",
    namespaced,
    status = "RollbackPolicyStatus",
    derive = "PartialEq",
    doc = "How rollguard judges model server revisions and rolls them back.",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.rollback.mode"),
    printcolumn(name = "Interval", type_ = "string", json_path = ".spec.interval"),
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Valid\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("!has(self.triggers) || size(self.triggers) == 0 || has(self.provider)")
        .message("spec.provider is required when spec.triggers is not empty")
        .field_path(".provider")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.triggers) || self.triggers.all(t, self.triggers.exists_one(u, u.name == t.name))")
        .message("spec.triggers names must be unique")
        .field_path(".triggers")
)]
#[serde(rename_all = "camelCase")]
pub struct RollbackPolicySpec {
    /// Where trigger queries run. Required when there are triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<MetricsProvider>,

    /// How often triggers are evaluated (Go duration). Defaults to `30s`.
    #[serde(default = "default_interval")]
    pub interval: Duration,

    /// What to do while the metrics provider cannot be queried: Hold (the default: nothing
    /// advances and nothing rolls back), Rollback, or Ignore (carry on as if healthy).
    #[serde(default)]
    pub on_metrics_unavailable: OnMetricsUnavailable,

    /// The signals that judge a revision (at most 32, names unique).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub triggers: Vec<Trigger>,

    /// How every rollback of a referencing ModelDeployment runs, manual ones too.
    #[serde(default)]
    pub rollback: RollbackSpec,

    /// After a rollback, how long the restored revision must stay healthy.
    #[serde(default)]
    pub verification: VerificationSpec,

    /// After a promotion, how long the new stable revision stays guarded: a Critical breach
    /// in this window rolls back to the previous revision. Defaults to `10m`.
    #[serde(default = "default_guard_window")]
    pub guard_window: Duration,
}

fn default_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_guard_window() -> Duration {
    Duration::from_mins(10)
}
fn default_cooldown() -> Duration {
    Duration::from_mins(5)
}
fn default_step_duration() -> Duration {
    Duration::from_secs(60)
}
fn default_verification_window() -> Duration {
    Duration::from_mins(5)
}
fn default_consecutive() -> i32 {
    1
}

/// A metrics provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsProvider {
    /// A Prometheus server (HTTP API, instant queries).
    pub prometheus: PrometheusProvider,
}

/// A Prometheus server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusProvider {
    /// Base URL, such as `http://prometheus.monitoring:9090`.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub address: String,

    /// How long one query may take (Go duration). Defaults to `5s`.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

/// What to do while metrics cannot be read.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum OnMetricsUnavailable {
    /// Nothing advances and nothing rolls back; MetricsAvailable=False says why.
    #[default]
    Hold,
    /// Roll back, as if a Critical trigger breached.
    Rollback,
    /// Carry on as if every trigger were healthy.
    Ignore,
}

/// One signal that judges a revision: exactly one of `query` or `template`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.query) != has(self.template)")
    .message("each spec.triggers entry must set exactly one of query or template"))]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    /// Unique name (a DNS label), used in status, Events and `lastRollback.triggerName`.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,

    /// A PromQL instant query returning one number. Variables `{{revision}}`,
    /// `{{version}}`, `{{model}}`, `{{namespace}}`, `{{name}}`, `{{service}}` and
    /// `{{interval}}` are substituted, escaped for a PromQL string literal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 8192))]
    pub query: Option<String>,

    /// A built-in LLM signal instead of a query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<SignalTemplate>,

    /// How the value compares to the threshold to count as a breach.
    pub operator: Operator,

    /// The threshold.
    pub threshold: f64,

    /// Critical rolls back; Warning raises an Event and a condition; Info raises an Event.
    /// Defaults to Critical.
    #[serde(default)]
    pub severity: Severity,

    /// After firing, how long the trigger stays quiet (Go duration). Defaults to `5m`.
    #[serde(default = "default_cooldown")]
    pub cooldown: Duration,

    /// Breaches in a row before the trigger fires (1..100). Defaults to 1.
    #[serde(default = "default_consecutive")]
    #[schemars(range(min = 1, max = 100))]
    pub consecutive: i32,
}

/// A built-in LLM signal.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum SignalTemplate {
    /// Share of vLLM responses with HTTP status 5xx (`http_requests_total`).
    VllmErrorRate,
    /// vLLM time to first token, p95 seconds.
    VllmTtftP95,
    /// vLLM inter-token latency, p95 seconds.
    VllmItlP95,
    /// vLLM end-to-end request latency, p95 seconds.
    VllmE2eP95,
    /// SGLang time to first token, p95 seconds.
    SglangTtftP95,
    /// Share of failed TGI requests.
    TgiErrorRate,
}

impl SignalTemplate {
    /// Every built-in signal.
    pub const ALL: [SignalTemplate; 6] = [
        SignalTemplate::VllmErrorRate,
        SignalTemplate::VllmTtftP95,
        SignalTemplate::VllmItlP95,
        SignalTemplate::VllmE2eP95,
        SignalTemplate::SglangTtftP95,
        SignalTemplate::TgiErrorRate,
    ];
}

/// A comparison of a value with a threshold.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Operator {
    /// value > threshold
    Gt,
    /// value >= threshold
    Ge,
    /// value < threshold
    Lt,
    /// value <= threshold
    Le,
    /// value == threshold
    Eq,
    /// value != threshold
    Ne,
}

impl Operator {
    /// The comparison as a symbol: `>`, `>=`, `<`, `<=`, `==`, `!=`.
    pub fn symbol(self) -> &'static str {
        match self {
            Operator::Gt => ">",
            Operator::Ge => ">=",
            Operator::Lt => "<",
            Operator::Le => "<=",
            Operator::Eq => "==",
            Operator::Ne => "!=",
        }
    }
}

/// What a trigger does when it fires.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Severity {
    /// Roll back.
    #[default]
    Critical,
    /// Raise a Warning Event and a condition; no rollback.
    Warning,
    /// Raise a Normal Event.
    Info,
}

/// How rollbacks run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.mode) || self.mode != 'Gradual' || has(self.gradual)")
    .message("spec.rollback.gradual is required when spec.rollback.mode is Gradual")
    .field_path(".gradual")
    .reason(Reason::FieldValueRequired))]
#[serde(rename_all = "camelCase")]
pub struct RollbackSpec {
    /// Instant (the default: traffic returns in one write) or Gradual (down `gradual.steps`).
    #[serde(default)]
    pub mode: RollbackMode,

    /// The steps of a gradual rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradual: Option<GradualRollback>,
}

/// A gradual rollback: the canary weight walks down `steps`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.steps[size(self.steps) - 1] == 0")
        .message("spec.rollback.gradual.steps must end at 0")
        .field_path(".steps"),
    validation = Rule::new("self.steps.all(s, self.steps.exists_one(t, t == s)) && self.steps.map(s, -s).isSorted()")
        .message("spec.rollback.gradual.steps must be strictly decreasing")
        .field_path(".steps")
)]
#[serde(rename_all = "camelCase")]
pub struct GradualRollback {
    /// Canary weights (0..100), strictly decreasing and ending at 0, such as `[50, 20, 5, 0]`.
    #[schemars(length(min = 1, max = 20), inner(range(min = 0, max = 100)))]
    pub steps: Vec<i32>,

    /// How long each step is held (Go duration). Defaults to `60s`.
    #[serde(default = "default_step_duration")]
    pub step_duration: Duration,

    /// What to do when the stable revision is unhealthy between steps: Pause (the default)
    /// or Instant (jump to 0).
    #[serde(default)]
    pub on_unhealthy: OnUnhealthy,
}

/// What a gradual rollback does when the stable revision is unhealthy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum OnUnhealthy {
    /// Hold the current step until the stable revision is healthy again.
    #[default]
    Pause,
    /// Send all traffic to the stable revision at once.
    Instant,
}

/// Checking a restored revision after a rollback.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationSpec {
    /// How long the restored revision must stay healthy (Go duration). Defaults to `5m`.
    #[serde(default = "default_verification_window")]
    pub window: Duration,
}

impl Default for VerificationSpec {
    fn default() -> Self {
        VerificationSpec {
            window: default_verification_window(),
        }
    }
}

/// What the operator concluded about the policy. Written only by rollguard.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackPolicyStatus {
    /// The `metadata.generation` that this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The ModelDeployments (same namespace) that reference this policy. A set: operators
    /// that split a fleet (`--selector`) each apply the names of their shard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub model_deployments: Vec<String>,

    /// Valid: whether every trigger's query can be built, with the reason when not; Ready
    /// and Stalled say the same in kstatus terms (an invalid policy is Stalled).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
