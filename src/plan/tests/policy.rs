//! A ModelDeployment whose policy is missing.

use super::*;

#[test]
fn a_missing_policy_is_a_condition_and_rollbacks_run_instantly() {
    let mut w = canary_at_60("Pause");
    w.policy = Some(PolicyObservation::NotFound(
        "spec.rollbackPolicyRef.name: RollbackPolicy \"llm\" not found in namespace llm".into(),
    ));
    w.annotate(ABORT, "true");
    let p = w.step();
    assert_eq!(p.route_weight, Some(0));
    let c = crate::conditions::find(&p.status.conditions, POLICY_RESOLVED).expect("PolicyResolved");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "PolicyNotFound"));
    assert!(c.message.contains("RollbackPolicy \"llm\" not found"), "{}", c.message);
}
