//! The Gateway API Inference Extension's `InferencePool` (`inference.networking.k8s.io/v1`),
//! as far as rollguard reads and writes it.
//!
//! With `trafficRouting.gatewayAPI.inferencePool`, rollguard owns two InferencePools,
//! `<name>` (stable) and `<name>-canary`, each selecting the pods of one revision as the
//! Services do, and weights the HTTPRoute backendRefs of kind `InferencePool` that name
//! them. Only the fields below are written (server-side apply, field manager `rollguard`);
//! anything else on the object (`appProtocol`, status written by the gateway) is left alone.
//!
//! The extension's Go module is not served by the module proxy this project builds with, so
//! these types are written from the published v1 API reference: `spec.selector.matchLabels`,
//! `spec.targetPorts[].number`, `spec.endpointPickerRef`.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::EndpointPickerRef;

/// The API group of the Inference Extension.
pub const GROUP: &str = "inference.networking.k8s.io";
/// The kind of the pool.
pub const KIND: &str = "InferencePool";
/// The served version.
pub const VERSION: &str = "v1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "inference.networking.k8s.io/v1";
/// The resource plural.
pub const PLURAL: &str = "inferencepools";

/// The fields of an InferencePool's spec that rollguard writes. Every field has a default so
/// that a pool someone else wrote differently is still read (and then corrected).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "inference.networking.k8s.io",
    version = "v1",
    kind = "InferencePool",
    plural = "inferencepools",
    namespaced,
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct InferencePoolSpec {
    /// Which pods are members of the pool (same namespace).
    #[serde(default)]
    pub selector: PoolSelector,
    /// The ports of the model servers (rollguard writes one).
    #[serde(default)]
    pub target_ports: Vec<TargetPort>,
    /// The Endpoint Picker of the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_picker_ref: Option<EndpointPickerRef>,
}

/// The pool's label selector: labels only, as a Service selector.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolSelector {
    /// The labels a member pod carries.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// A port of the pool's model servers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct TargetPort {
    /// The port number.
    pub number: i32,
}
