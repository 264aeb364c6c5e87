//! `spec.strategy` of a ModelDeployment: how a new revision is rolled out (canary steps of
//! weights, pauses and canary sizes, or blue/green).

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::Duration;

/// The rollout strategy: exactly one of `canary` or `blueGreen`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.canary) != has(self.blueGreen)")
    .message("spec.strategy must set exactly one of canary or blueGreen"))]
#[serde(rename_all = "camelCase")]
pub struct Strategy {
    /// Shift traffic to the new revision step by step on the traffic-split object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStrategy>,

    /// Bring the new revision up beside the stable one, then switch all traffic at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreenStrategy>,
}

impl Strategy {
    /// The canary steps; none for blue/green.
    pub fn canary_steps(&self) -> &[CanaryStep] {
        self.canary.as_ref().map(|c| c.steps.as_slice()).unwrap_or_default()
    }
}

impl Default for Strategy {
    fn default() -> Self {
        Strategy {
            canary: None,
            blue_green: Some(BlueGreenStrategy { auto_promote: true }),
        }
    }
}

/// Canary steps, run in order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStrategy {
    /// The steps, in order (at least one, at most 64). Each is exactly one of `setWeight`,
    /// `pause` or `setCanaryScale`.
    #[schemars(length(min = 1, max = 64))]
    pub steps: Vec<CanaryStep>,
}

/// One canary step: exactly one of `setWeight`, `pause` or `setCanaryScale`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("[has(self.setWeight), has(self.pause), has(self.setCanaryScale)].filter(x, x).size() == 1")
    .message("each spec.strategy.canary.steps entry must set exactly one of setWeight, pause or setCanaryScale"))]
#[serde(rename_all = "camelCase")]
pub struct CanaryStep {
    /// Percent of traffic (0..100) sent to the canary revision. It is written only once the
    /// canary has the ready replicas that share takes (`ceil(replicas × weight / 100)`);
    /// until then the canary scales up and traffic stays where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub set_weight: Option<i32>,

    /// Wait: for `duration`, or without one until the `rollguard.dev/promote` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseStep>,

    /// Size the canary from here on, instead of the full `replicas` it runs at by default.
    /// The step is done once that many canary replicas are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_canary_scale: Option<CanaryScale>,
}

/// The size of the canary: exactly one of `replicas` or `matchTrafficWeight: true`. Either
/// way the canary never has fewer replicas than its traffic share takes
/// (`ceil(replicas × weight / 100)`) nor more than `replicas`, and before promotion it
/// scales to the full `replicas`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.replicas) != has(self.matchTrafficWeight)")
    .message("setCanaryScale must set exactly one of replicas or matchTrafficWeight"))]
#[x_kube(validation = Rule::new("!has(self.matchTrafficWeight) || self.matchTrafficWeight")
    .message("setCanaryScale.matchTrafficWeight must be true when set (leave it out, or set replicas)"))]
#[serde(rename_all = "camelCase")]
pub struct CanaryScale {
    /// This many canary replicas (at most `spec.replicas`), or more when the weight needs them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,

    /// As many canary replicas as the traffic weight takes: `ceil(replicas × weight / 100)`,
    /// following each later `setWeight` (and `spec.replicas` when it is autoscaled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_traffic_weight: Option<bool>,
}

/// A pause between canary steps.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PauseStep {
    /// How long to wait (Go duration such as `5m`). Without it, wait for the
    /// `rollguard.dev/promote` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
}

/// Blue/green: the new revision comes up beside the stable one, then takes all traffic.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenStrategy {
    /// Switch traffic as soon as the new revision is Available. When false, wait for the
    /// `rollguard.dev/promote` annotation. Defaults to true.
    #[serde(default = "default_true")]
    pub auto_promote: bool,
}

fn default_true() -> bool {
    true
}
