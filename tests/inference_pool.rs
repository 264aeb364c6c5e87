//! The InferencePools rollguard owns for a ModelDeployment routed through the Gateway API
//! Inference Extension, against the local control plane (with the InferencePool CRD of
//! `tests/crds`). The rollout scenarios on InferencePool backends are in canary.rs,
//! gradual.rs and metrics.rs, beside the same scenarios on Services.

mod support;

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use rollguard::api::Phase;
use rollguard::traffic::BackendKind;
use rollguard::traffic::inference_pool::InferencePool;
use serde_json::json;
use support::httproute::*;
use support::*;

const SECS_60: Duration = Duration::from_secs(60);

fn revision_of(pool: &InferencePool) -> Option<i64> {
    rollguard::controller::resources::pool_revision("chat", pool)
}

#[tokio::test]
async fn the_pools_select_the_revisions_carry_the_endpoint_pickers_and_are_kept_so() {
    let (_ns, apis, _op) = with_route_to(BackendKind::InferencePool, "pool-objects", &["--resync-seconds", "2"]).await;
    let spec = json!({"strategy": {"canary": {"steps": [{"setWeight": 30}, {"pause": {}}]}},
                      "trafficRouting": routing(&apis)});
    apis.roll_out("chat", &["v1"], 1, spec).await;
    apis.patch_spec("chat", json!({"model": {"version": "v2"}})).await;
    wait_weight(&apis, 30).await;

    // The route's rule names the two pools, weighted; no Service backendRef is added.
    let route = serde_json::to_value(routes(&apis).get("chat").await.expect("route")).expect("json");
    let pool_ref = |name: &str, weight: i32| json!({"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": name, "weight": weight});
    assert_eq!(
        route["spec"]["rules"][0]["backendRefs"],
        json!([pool_ref("chat", 70), pool_ref("chat-canary", 30)])
    );

    let md = apis.md.get("chat").await.expect("md");
    let uid = md.metadata.uid.clone().expect("uid");
    let stable = pools(&apis).get("chat").await.expect("stable pool");
    let canary = pools(&apis).get("chat-canary").await.expect("canary pool");
    assert_eq!((revision_of(&stable), revision_of(&canary)), (Some(1), Some(2)));
    for (pool, picker, mode) in [
        (&stable, "chat-epp", "FailClose"),
        (&canary, "chat-canary-epp", "FailOpen"),
    ] {
        let value = serde_json::to_value(pool).expect("json");
        assert_eq!(value["spec"]["targetPorts"], json!([{"number": 8000}]));
        let epp = &value["spec"]["endpointPickerRef"];
        assert_eq!(epp["name"], picker);
        assert_eq!(epp["port"], json!({"number": 9002}));
        // FailClose is the CRD's default; FailOpen was asked for.
        assert_eq!(epp["failureMode"], mode);
        let owner = pool.metadata.owner_references.clone().unwrap_or_default();
        assert!(
            owner.iter().any(|o| o.uid == uid && o.controller == Some(true)),
            "{owner:?}"
        );
        let labels = pool.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("rollguard.dev/model-deployment").map(String::as_str),
            Some("chat")
        );
    }

    // Someone points the canary pool at the stable pods: rollguard puts it back.
    let edit = json!({"spec": {"selector": {"matchLabels": {"rollguard.dev/revision": "1"}}}});
    pools(&apis)
        .patch("chat-canary", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .expect("editing the canary pool");
    let restored = wait_object(&pools(&apis), "chat-canary", SECS_60, |p| revision_of(p) == Some(2)).await;
    assert!(restored.is_some(), "the canary pool selects revision 2 again");

    // A new Endpoint Picker in the spec is written to the pool; it is not a new revision.
    let before = apis
        .md
        .get("chat")
        .await
        .expect("md")
        .status
        .expect("status")
        .history
        .len();
    let picker = json!({"name": "chat-epp-v2", "port": {"number": 9003}});
    let mut routing = routing(&apis);
    routing["gatewayAPI"]["inferencePool"]["endpointPickerRef"] = picker;
    apis.patch_spec("chat", json!({"trafficRouting": routing})).await;
    let moved = wait_object(&pools(&apis), "chat", SECS_60, |p| {
        p.spec
            .endpoint_picker_ref
            .as_ref()
            .is_some_and(|e| e.name == "chat-epp-v2")
    })
    .await;
    let moved = moved.expect("the stable pool names the new Endpoint Picker");
    assert_eq!(revision_of(&moved), Some(1));
    let md = apis.md.get("chat").await.expect("md");
    let status = md.status.expect("status");
    assert_eq!(status.history.len(), before, "no new revision");
    assert_eq!(status.canary_weight, Some(30));

    apis.annotate("chat", "rollguard.dev/promote", "true").await;
    apis.wait_healthy("chat", 2).await;
    wait_weight(&apis, 0).await;
    let stable = pools(&apis).get("chat").await.expect("stable pool");
    assert_eq!(
        revision_of(&stable),
        Some(2),
        "the stable pool selects the promoted revision"
    );
}

#[tokio::test]
async fn a_route_naming_services_does_not_count_as_routing_to_the_pools() {
    // The ModelDeployment asks for InferencePools; the HTTPRoute names the Service `chat`.
    let (_ns, apis, _op) = with_route("pool-mismatch", &["--resync-seconds", "2"]).await;
    let written = routes(&apis)
        .get("chat")
        .await
        .expect("route")
        .metadata
        .resource_version;
    let spec = json!({"strategy": {"canary": {"steps": [{"setWeight": 10}]}},
                      "trafficRouting": routing(&apis.clone().routing_to(BackendKind::InferencePool))});
    apis.create(&model_deployment("chat", "v1", 1, spec)).await;
    let md = apis
        .wait_md(
            "chat",
            "TrafficRouted=False (RouteNotReferencingServices)",
            SECS_60,
            |md| {
                condition(md, "TrafficRouted")
                    .is_some_and(|(s, r, _)| s == "False" && r == "RouteNotReferencingServices")
            },
        )
        .await;
    let (_, _, message) = condition(&md, "TrafficRouted").expect("condition");
    assert!(
        message.contains("does not reference the InferencePool chat"),
        "{message}"
    );
    assert_ne!(md.status.and_then(|s| s.phase), Some(Phase::Healthy));
    // The route is left as the user wrote it.
    let route = routes(&apis).get("chat").await.expect("route");
    assert_eq!(route.metadata.resource_version, written);
}
