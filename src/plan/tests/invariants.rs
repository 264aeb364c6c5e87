//! Properties that hold for any sequence of user actions and cluster events.

use super::*;

#[derive(Clone, Debug)]
enum Action {
    Version(u8),
    RollbackPrevious,
    RollbackTo(i64),
    RollbackGarbage,
    Abort,
    Retry,
    Promote,
    Block(i64),
    Fail(i64),
    Unblock,
    Tick,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0u8..5).prop_map(Action::Version),
        1 => Just(Action::RollbackPrevious),
        1 => (1i64..8).prop_map(Action::RollbackTo),
        1 => Just(Action::RollbackGarbage),
        1 => Just(Action::Abort),
        1 => Just(Action::Retry),
        1 => Just(Action::Promote),
        1 => (1i64..8).prop_map(Action::Block),
        1 => (1i64..8).prop_map(Action::Fail),
        1 => Just(Action::Unblock),
        3 => Just(Action::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200), ..ProptestConfig::default() })]

    /// Whatever a person and the cluster do, traffic never moves to an unavailable revision
    /// (asserted in `World::step`), revision numbers only grow, history stays bounded and
    /// unique, and a settled world is a fixed point.
    #[test]
    fn invariants_hold_for_any_sequence(actions in proptest::collection::vec(action(), 1..40), auto in any::<bool>(), warm in 0i32..3, mode in 0u8..4, gradual in any::<bool>(), warm_replicas in proptest::option::of(0i32..3)) {
        let mut extra = serde_json::json!({
            "strategy": {"blueGreen": {"autoPromote": auto}}, "warmRevisions": warm, "progressDeadlineSeconds": 30});
        if mode == 2 {
            extra["trafficRouting"] = serde_json::json!({"gatewayAPI": {"httpRoute": "chat"}});
        }
        if mode == 1 {
            extra["strategy"] = serde_json::json!({"canary": {"steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}, {"pause": {"duration": "10s"}}]}});
            extra["trafficRouting"] = serde_json::json!({"smi": {"trafficSplit": "chat"}});
        }
        if mode == 3 {
            // A canary that scales: a fixed size below what its weight takes, then with its weight.
            extra["replicas"] = serde_json::json!(5);
            extra["strategy"] = serde_json::json!({"canary": {"steps": [
                {"setCanaryScale": {"replicas": 1}}, {"setWeight": 40}, {"pause": {}},
                {"setCanaryScale": {"matchTrafficWeight": true}}, {"setWeight": 70}, {"pause": {"duration": "10s"}}]}});
            extra["trafficRouting"] = serde_json::json!({"gatewayAPI": {"httpRoute": "chat"}});
        }
        if let Some(n) = warm_replicas {
            // Warm revisions kept at fewer pods than full size (or at more: counted as full).
            extra["warmReplicas"] = serde_json::json!(n);
        }
        let mut w = World::new(md("v0", extra));
        if gradual {
            w.policy = Some(gradual_policy(if warm == 1 { "Instant" } else { "Pause" }));
        }
        for a in actions {
            match a {
                Action::Version(v) => w.set_version(&format!("v{v}")),
                Action::RollbackPrevious => w.annotate(ROLLBACK_TO, "previous"),
                Action::RollbackTo(n) => w.annotate(ROLLBACK_TO, &n.to_string()),
                Action::RollbackGarbage => w.annotate(ROLLBACK_TO, "yesterday"),
                Action::Abort => w.annotate(ABORT, "true"),
                Action::Retry => w.annotate(RETRY, "true"),
                Action::Promote => w.annotate(PROMOTE, "true"),
                Action::Block(r) => { w.blocked.insert(r); }
                Action::Fail(r) => {
                    // Its pods die and cannot come back until unblocked.
                    w.blocked.insert(r);
                    if let Some(d) = w.deployments.get_mut(&r) {
                        d.available = d.replicas == 0;
                        d.ready_replicas = 0;
                    }
                }
                Action::Unblock => w.blocked.clear(),
                Action::Tick => {}
            }
            w.step();
            let s = w.status();
            let revs: Vec<i64> = s.history.iter().map(|h| h.revision).collect();
            let mut sorted = revs.clone();
            sorted.sort_unstable_by(|a, b| b.cmp(a));
            sorted.dedup();
            prop_assert_eq!(&revs, &sorted, "history newest first, no duplicates");
            prop_assert!(revs.len() <= 3 + 3, "history bounded: {:?}", revs);
            if let Some(stable) = s.stable_revision {
                prop_assert!(revs.contains(&stable), "the stable revision is never pruned");
            }
            prop_assert!(s.current_revision.is_some_and(|c| revs.contains(&c)));
            let progressing: Vec<i64> = s.history.iter().filter(|h| h.phase == RevisionPhase::Progressing).map(|h| h.revision).collect();
            prop_assert!(progressing.iter().all(|r| Some(*r) == s.current_revision), "only the spec's revision progresses: {:?}", progressing);
        }
        w.blocked.clear();
        w.annotate(PROMOTE, "full");
        w.settle();
        // A gradual rollback takes four held steps of 60s.
        for _ in 0..4 {
            w.advance(60);
            w.settle();
        }
        let obs = w.observed();
        let again = plan(&w.md, &obs);
        prop_assert_eq!(Some(&again.status), w.md.status.as_ref(), "settled world is a fixed point");
        if mode > 0 && w.status().canary_revision.is_none() {
            prop_assert_eq!(w.route, Some(0), "no canary: all traffic on stable");
        }
    }
}
