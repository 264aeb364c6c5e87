//! The `ModelDeployment` custom resource: a model server and how to roll it out.

// Several `printcolumn(...)` in one `#[kube]` attribute repeat `type_ = ...` by design.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::LocalObjectReference;
use super::routing::{InferencePoolRouting, TrafficRouting};
use super::strategy::Strategy;

/// A model server (vLLM, SGLang, TGI...) that rollguard rolls out revision by revision and
/// rolls back when a revision misbehaves.
///
/// Every change of `model`, `template` or `port` is a new revision with its own Deployment
/// `<name>-r<N>`. Traffic reaches revisions through the Services `<name>` (stable) and
/// `<name>-canary`, and through the traffic-split object named in `trafficRouting`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rollguard.dev",
    version = "v1alpha1",
    kind = "ModelDeployment",
    plural = "modeldeployments",
    shortname = "md",
    category = "rollguard",
    namespaced,
    status = "ModelDeploymentStatus",
    derive = "PartialEq",
    doc = "A model server that rollguard rolls out safely and rolls back fast.",
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 56")
        .message("metadata.name must be a DNS label of at most 56 characters (lowercase letters, digits and '-', starting with a letter), so that the Service <name>-canary is valid"),
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model.name"),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.model.version"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Stable", type_ = "integer", json_path = ".status.stableRevision"),
    printcolumn(name = "Canary", type_ = "integer", json_path = ".status.canaryRevision"),
    printcolumn(name = "Weight", type_ = "integer", json_path = ".status.canaryWeight"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    )
)]
#[x_kube(
    validation = Rule::new("!has(self.strategy) || !has(self.strategy.canary) || has(self.trafficRouting)")
        .message("spec.trafficRouting is required when spec.strategy.canary is set")
        .field_path(".trafficRouting")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.warmRevisions) || self.warmRevisions <= (has(self.revisionHistoryLimit) ? self.revisionHistoryLimit : 3)")
        .message("spec.warmRevisions must not exceed spec.revisionHistoryLimit")
        .field_path(".warmRevisions")
)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentSpec {
    /// The model this server serves. A change here is a new revision.
    pub model: ModelSpec,

    /// Number of model server pods of each live revision. Defaults to 1. Also the scale
    /// subresource's replicas: an autoscaler that scales the ModelDeployment sets it, and a
    /// change of it is never a new revision.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,

    /// The port the model server listens on; the Services route to it. Defaults to 8000.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// The pod template of the model server (a core/v1 PodTemplateSpec). rollguard adds the
    /// labels `rollguard.dev/model-deployment` and `rollguard.dev/revision` and the env vars
    /// `MODEL_NAME`, `MODEL_VERSION` and `MODEL_URI`. A change here is a new revision.
    #[schemars(schema_with = "pod_template_schema")]
    pub template: PodTemplateSpec,

    /// How a new revision replaces the stable one: exactly one of `canary` or `blueGreen`.
    /// Defaults to `blueGreen: {autoPromote: true}`.
    #[serde(default)]
    pub strategy: Strategy,

    /// The traffic-split object that canary weights are written to: exactly one router.
    /// Required by the canary strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_routing: Option<TrafficRouting>,

    /// The RollbackPolicy (same namespace) that judges this model server's revisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_policy_ref: Option<LocalObjectReference>,

    /// How many revisions are kept restorable (1..50). Defaults to 3.
    #[serde(default = "default_revision_history_limit")]
    #[schemars(range(min = 1, max = 50))]
    pub revision_history_limit: i32,

    /// How many previous revisions are kept running, ready for an instant rollback
    /// (0..revisionHistoryLimit). Defaults to 1.
    #[serde(default = "default_warm_revisions")]
    #[schemars(range(min = 0, max = 50))]
    pub warm_revisions: i32,

    /// Pods of each warm revision: fewer than `replicas` keeps a revision partly warm, which
    /// trades standby GPUs for rollback speed (a rollback to it scales it to `replicas` first
    /// and waits for the pods it lacks). Defaults to `replicas` (fully warm); more than
    /// `replicas` counts as `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub warm_replicas: Option<i32>,

    /// Seconds a new revision has to become Available before it is rolled back
    /// (at least 30). Defaults to 1800.
    #[serde(default = "default_progress_deadline_seconds")]
    #[schemars(range(min = 30))]
    pub progress_deadline_seconds: i32,

    /// Stops the rollout where it is: no step advances while true. Rollbacks still happen.
    #[serde(default)]
    pub paused: bool,
}

fn default_replicas() -> i32 {
    1
}
impl ModelDeployment {
    /// The InferencePools of `spec.trafficRouting.gatewayAPI.inferencePool`, when the route's
    /// backends are InferencePools.
    pub fn gateway_inference_pools(&self) -> Option<&InferencePoolRouting> {
        self.spec
            .traffic_routing
            .as_ref()?
            .gateway_api
            .as_ref()?
            .inference_pool
            .as_ref()
    }

    /// A blue/green ModelDeployment `name` serving `version` of Llama 3.1 8B Instruct on vLLM
    /// with `replicas` pods (history 3, one warm revision, a 600 s progress deadline); `extra`
    /// is merged into the spec, one level deep. For examples and tests.
    ///
    /// ```
    /// use rollguard::api::ModelDeployment;
    /// let md = ModelDeployment::example("chat", "v2", 2, serde_json::json!({"paused": true})).unwrap();
    /// assert_eq!((md.spec.model.version.as_str(), md.spec.replicas, md.spec.paused), ("v2", 2, true));
    /// assert!(ModelDeployment::example("chat", "v2", 2, serde_json::json!({"replicas": "two"})).is_err());
    /// ```
    pub fn example(
        name: &str,
        version: &str,
        replicas: i32,
        extra: serde_json::Value,
    ) -> Result<ModelDeployment, serde_json::Error> {
        let mut spec = serde_json::json!({
            "model": {"name": "llama-3.1-8b-instruct", "version": version, "uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
            "replicas": replicas,
            "template": {"spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0"}]}},
            "strategy": {"blueGreen": {"autoPromote": true}},
            "revisionHistoryLimit": 3,
            "warmRevisions": 1,
            "progressDeadlineSeconds": 600
        });
        if let (Some(obj), serde_json::Value::Object(extra)) = (spec.as_object_mut(), extra) {
            obj.extend(extra);
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "rollguard.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name}, "spec": spec
        }))
    }
}

fn default_port() -> i32 {
    8000
}
fn default_revision_history_limit() -> i32 {
    3
}
fn default_warm_revisions() -> i32 {
    1
}
fn default_progress_deadline_seconds() -> i32 {
    1800
}

/// The model a revision serves.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// The served model name, as clients ask for it (for example `llama-3.1-8b-instruct`).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// A human version label, shown in status and usable in
    /// `rollguard.dev/rollback-to: version:<label>`. It has the syntax of a Kubernetes label
    /// value (1..63 characters: letters, digits, `-`, `_`, `.`, starting and ending with a
    /// letter or digit), so revisions are listable by version with a label selector.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
    )]
    pub version: String,

    /// Where the weights come from (for example `hf://meta-llama/Llama-3.1-8B-Instruct`).
    /// Passed to the server as `MODEL_URI`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub uri: Option<String>,
}

/// The schema of `spec.template`: the real core/v1 PodTemplateSpec schema, with its
/// upstream descriptions left out so the CRD stays small enough for client-side
/// `kubectl apply` (whose last-applied annotation is limited to 256 KiB).
fn pod_template_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut value = generator.subschema_for::<PodTemplateSpec>().to_value();
    strip_descriptions(&mut value);
    let mut schema = schemars::Schema::try_from(value).unwrap_or_default();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert(
            "description".into(),
            "The pod template of the model server (a core/v1 PodTemplateSpec). rollguard adds \
             the labels `rollguard.dev/model-deployment` and `rollguard.dev/revision` and the \
             env vars `MODEL_NAME`, `MODEL_VERSION` and `MODEL_URI`. A change here is a new \
             revision."
                .into(),
        );
    }
    schema
}

/// Removes `description` from a schema and all its subschemas, leaving properties that
/// happen to be named `description` alone.
fn strip_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if matches!(map.get("description"), Some(serde_json::Value::String(_))) {
                map.remove("description");
            }
            for (key, child) in map.iter_mut() {
                if key == "properties" {
                    if let serde_json::Value::Object(props) = child {
                        props.values_mut().for_each(strip_descriptions);
                    }
                } else {
                    strip_descriptions(child);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_descriptions),
        _ => {}
    }
}

/// What the operator observed and did. Written only by rollguard.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentStatus {
    /// The `metadata.generation` that this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Progressing, Paused, Healthy, RollingBack or Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// A sentence on what is happening, for `kubectl describe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// The revision the spec asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<i64>,

    /// The revision that serves (most) traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<i64>,

    /// The revision being rolled out, while there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_revision: Option<i64>,

    /// Percent of traffic on the canary revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_weight: Option<i32>,

    /// Index of the canary step being run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step_index: Option<i32>,

    /// Ready pods of the stable revision: the current size that the scale subresource
    /// reports to a HorizontalPodAutoscaler or KEDA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,

    /// The label selector of the stable revision's pods, for the scale subresource (the
    /// pods whose metrics an autoscaler averages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// The standby kept for instant rollbacks: the warm revisions and the pods they hold
    /// (their GPU cost). Absent when no revision is kept warm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm: Option<WarmStatus>,

    /// Revisions, newest first: at most revisionHistoryLimit, plus the live ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RevisionRecord>,

    /// The post-mortem record of the latest rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rollback: Option<RollbackRecord>,

    /// The latest evaluation of each trigger of the RollbackPolicy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis: Vec<TriggerAnalysis>,

    /// Ready, Reconciling, Stalled (kstatus) and MetricsAvailable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Warm revisions and their pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarmStatus {
    /// The warm revisions, newest first.
    pub revisions: Vec<i64>,
    /// The pods they are kept at, together: `warmReplicas` (or `replicas`) each.
    pub replicas: i32,
}

/// The phase of a ModelDeployment.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    /// A new revision is being rolled out.
    Progressing,
    /// The rollout waits: `spec.paused`, or a pause step without a duration.
    Paused,
    /// The revision the spec asks for serves all traffic.
    Healthy,
    /// Traffic is moving back to an earlier revision.
    RollingBack,
    /// The revision the spec asks for was rolled back and is not served.
    Degraded,
}

/// One revision of a ModelDeployment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRecord {
    /// The revision number: 1, 2, 3... never reused.
    pub revision: i64,
    /// `spec.model.version` of this revision.
    pub version: String,
    /// `spec.model.uri` of this revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_uri: Option<String>,
    /// Hash of the canonical JSON of model, template and port.
    pub hash: String,
    /// The Deployment that runs it, `<name>-r<N>`.
    pub deployment: String,
    /// Progressing, Stable, Superseded, RolledBack or Failed.
    pub phase: RevisionPhase,
    /// When the revision was first seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
    /// When it last became stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_at: Option<Time>,
    /// When it was last rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_at: Option<Time>,
    /// Why it is in its phase, for the post-mortem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The phase of one revision.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RevisionPhase {
    /// Being rolled out.
    Progressing,
    /// Serving as the stable revision.
    Stable,
    /// Replaced by a newer stable revision.
    Superseded,
    /// Rolled back; not deployed again until the spec changes or `retry` is annotated.
    RolledBack,
    /// Never became Available within the progress deadline.
    Failed,
}

/// The post-mortem record of a rollback.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackRecord {
    /// The revision traffic left.
    pub from_revision: i64,
    /// The revision traffic returned to.
    pub to_revision: i64,
    /// What started it: Manual, Metric, ProgressDeadline or Drill.
    pub trigger: RollbackTrigger,
    /// The trigger's name (a RollbackPolicy trigger, or the annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_name: Option<String>,
    /// The observed value that breached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The threshold it breached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Instant or Gradual.
    pub mode: RollbackMode,
    /// When the rollback started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When all traffic was back on the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Whether the restored revision stayed healthy for the verification window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
}

/// What started a rollback.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RollbackTrigger {
    /// A person: the `rollguard.dev/rollback-to` or `abort` annotation.
    Manual,
    /// A Critical trigger of the RollbackPolicy.
    Metric,
    /// The revision was not Available within `progressDeadlineSeconds`.
    ProgressDeadline,
    /// A rehearsal.
    Drill,
}

/// How a rollback moves traffic.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum RollbackMode {
    /// In one write.
    #[default]
    Instant,
    /// Down the policy's gradual steps.
    Gradual,
}

/// The result of checking a restored revision after a rollback.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Verification {
    /// The verification window has not ended.
    Pending,
    /// The restored revision stayed healthy.
    Passed,
    /// A trigger breached on the restored revision.
    Failed,
}

/// The latest evaluation of one trigger.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerAnalysis {
    /// The trigger's name.
    pub trigger: String,
    /// The revision it was evaluated on.
    pub revision: i64,
    /// The value the query returned; absent when there was no data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Whether the value breached the threshold.
    pub breached: bool,
    /// What the evaluation concluded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<TriggerVerdict>,
    /// The trigger's severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<super::Severity>,
    /// The value in words (NaN and ±Inf included), or why there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Breaches in a row.
    #[serde(default)]
    pub consecutive_breaches: i32,
    /// When it was last evaluated (microseconds: intervals can be a second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluated_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime>,
    /// When it last fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fired_at: Option<Time>,
}

/// What one evaluation of a trigger concluded.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum TriggerVerdict {
    /// The value is within the threshold.
    Healthy,
    /// The value breached, fewer times in a row than `consecutive`.
    Breached,
    /// The trigger fired: `consecutive` breaches in a row, outside its cooldown.
    Fired,
    /// The value breached, but the trigger fired less than `cooldown` ago.
    CoolingDown,
    /// The query returned no series, or NaN (such as no requests yet).
    NoData,
    /// The provider could not be asked.
    Unavailable,
    /// The query cannot be built or the provider refused it.
    Invalid,
}
