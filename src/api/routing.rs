//! `spec.trafficRouting` of a ModelDeployment: the traffic-split object canary weights are
//! written to (Gateway API HTTPRoute, to Services or InferencePools; SMI TrafficSplit; Istio
//! VirtualService).

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The traffic-split object of the cluster: exactly one router.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("(has(self.gatewayAPI) ? 1 : 0) + (has(self.smi) ? 1 : 0) + (has(self.istio) ? 1 : 0) == 1")
    .message("spec.trafficRouting must set exactly one of gatewayAPI, smi or istio"))]
#[serde(rename_all = "camelCase")]
pub struct TrafficRouting {
    /// A Gateway API HTTPRoute (`gateway.networking.k8s.io/v1`) whose backendRefs name the
    /// Services `<name>` and `<name>-canary`, or with `inferencePool` the InferencePools of
    /// those names.
    #[serde(default, rename = "gatewayAPI", skip_serializing_if = "Option::is_none")]
    pub gateway_api: Option<GatewayApiRouting>,

    /// An SMI TrafficSplit (`split.smi-spec.io`) whose backends are the Services `<name>`
    /// and `<name>-canary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smi: Option<SmiRouting>,

    /// An Istio VirtualService (`networking.istio.io`) whose HTTP routes have destinations
    /// `<name>` and `<name>-canary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istio: Option<IstioRouting>,
}

/// Gateway API routing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayApiRouting {
    /// Name of the HTTPRoute in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub http_route: String,

    /// Route to InferencePools of the Gateway API Inference Extension instead of Services:
    /// rollguard owns the InferencePools `<name>` (stable) and `<name>-canary`
    /// (`inference.networking.k8s.io/v1`), each selecting the pods of its revision, and
    /// weights the HTTPRoute backendRefs of kind `InferencePool` that name them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_pool: Option<InferencePoolRouting>,
}

/// The two InferencePools rollguard owns. Each pool has its own Endpoint Picker (an
/// Endpoint Picker serves one pool), named here.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InferencePoolRouting {
    /// The Endpoint Picker of the stable InferencePool `<name>`.
    pub endpoint_picker_ref: EndpointPickerRef,

    /// The Endpoint Picker of the canary InferencePool `<name>-canary`.
    pub canary_endpoint_picker_ref: EndpointPickerRef,
}

/// A reference to an Endpoint Picker extension, written as is into the InferencePool's
/// `spec.endpointPickerRef` (the Inference Extension's v1 `EndpointPickerRef`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("(has(self.kind) && self.kind != 'Service') || has(self.port)")
    .message("endpointPickerRef.port is required when the Endpoint Picker is a Service")
    .field_path(".port")
    .reason(Reason::FieldValueRequired))]
#[serde(rename_all = "camelCase")]
pub struct EndpointPickerRef {
    /// API group of the referent. Empty (the default) is the core group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub group: Option<String>,

    /// Kind of the referent. Defaults to `Service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub kind: Option<String>,

    /// Name of the referent, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// The port of the Endpoint Picker: the Service port when the referent is a Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortNumber>,

    /// What the gateway does when the Endpoint Picker does not answer: `FailOpen` or
    /// `FailClose`. Defaults to `FailClose`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_mode: Option<EndpointPickerFailureMode>,
}

/// A port number.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortNumber {
    /// The port number (1..65535).
    #[schemars(range(min = 1, max = 65535))]
    pub number: i32,
}

/// What a gateway does when the Endpoint Picker does not answer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum EndpointPickerFailureMode {
    /// Forward the request to an endpoint of the gateway's own choosing.
    FailOpen,
    /// Drop the request.
    FailClose,
}

/// SMI routing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmiRouting {
    /// Name of the TrafficSplit in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub traffic_split: String,
}

/// Istio routing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IstioRouting {
    /// Name of the VirtualService in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub virtual_service: String,

    /// Names of the HTTP routes to weight. Empty means every HTTP route that has the
    /// stable and canary Services as destinations.
    #[serde(default)]
    #[schemars(length(max = 32), inner(length(min = 1, max = 253)))]
    pub routes: Vec<String>,
}
