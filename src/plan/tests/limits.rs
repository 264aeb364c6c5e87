//! Limits: the largest history and trigger set the schema allows keep status well under
//! the API server's object size limit (1.5 MiB by default in etcd).

use super::*;

/// What the largest status weighs once serialized: `revisionHistoryLimit` 50 (52 rollouts,
/// so pruning runs), versions of 63 characters, model URIs of 2,048, and 32 triggers whose
/// provider answers with a 1 MB error each.
#[test]
fn status_stays_far_under_the_object_size_limit_with_50_revisions_and_32_triggers() {
    let uri = format!("hf://{}", "m".repeat(2043));
    let extra = serde_json::json!({"revisionHistoryLimit": 50, "warmRevisions": 50});
    let version = |i: usize| format!("{i:03}{}", "v".repeat(60));
    let mut w = World::new(md(&version(0), extra));
    w.md.spec.model.uri = Some(uri);
    let triggers: Vec<serde_json::Value> = (0..32)
        .map(|i| {
            serde_json::json!({"name": format!("trigger-{i:02}-{}", "t".repeat(40)), "query": "q".repeat(8192),
                               "operator": "Gt", "threshold": 0.05})
        })
        .collect();
    let policy: crate::api::RollbackPolicySpec = serde_json::from_value(serde_json::json!({
        "provider": {"prometheus": {"address": "http://prometheus:9090"}},
        "guardWindow": "1000h", "triggers": triggers
    }))
    .expect("policy");
    w.policy = Some(PolicyObservation::Found(Box::new(policy.clone())));
    let huge = crate::trigger::EvaluationError::Invalid("e".repeat(1_000_000));
    for i in 0..52 {
        if i > 0 {
            w.set_version(&version(i));
        }
        for _ in 0..4 {
            let obs = w.observed();
            w.metrics = judged(&w.md, &obs).map(|judged| {
                let analysis: Vec<_> = policy
                    .triggers
                    .iter()
                    .map(|t| crate::trigger::evaluate(t, judged.revision, &Err(huge.clone()), None, w.now))
                    .collect();
                let (decision, notices) =
                    crate::trigger::decide(&policy.triggers, &analysis, crate::api::OnMetricsUnavailable::Ignore);
                MetricsObservation {
                    judged,
                    analysis,
                    decision,
                    notices,
                    fresh: true,
                }
            });
            w.step();
        }
    }
    let status = w.status();
    // At most revisionHistoryLimit, plus the revisions in use that are not among them.
    assert!(
        (50..=52).contains(&status.history.len()),
        "history of {}",
        status.history.len()
    );
    assert_eq!(status.analysis.len(), 32);
    assert!(status.analysis.iter().all(|a| {
        a.message
            .as_ref()
            .is_some_and(|m| m.len() <= crate::trigger::MESSAGE_MAX)
    }));
    let bytes = serde_json::to_vec(&status).expect("status").len();
    println!(
        "largest status: {bytes} bytes ({} history entries, {} analysis entries)",
        status.history.len(),
        status.analysis.len()
    );
    assert!(bytes < 512 * 1024, "status of {bytes} bytes");
}
