//! A manual rollback never waits for the metrics provider: trigger queries run off the
//! reconcile path. Against the local control plane, with a provider on loopback that hangs
//! or answers late while the stable revision is judged in its guard window.

mod support;

use std::time::Duration;

use support::slow_provider::{Answer, GuardedRollback};

/// Well inside the provider's 5 s timeout (the rollback took 8.1 s when queries ran inside
/// the reconcile; with a healthy provider it takes 0.1-0.3 s).
const QUICK: Duration = Duration::from_millis(2500);

#[tokio::test]
async fn a_manual_rollback_does_not_wait_for_a_hanging_provider() {
    let s = GuardedRollback::start("slow-hang", "5s").await;
    let took = s.rollback_once(Answer::Hang).await;
    assert!(s.provider.received() > 0, "the trigger was never queried");
    assert!(
        took < QUICK,
        "rollback-to=previous took {took:?} with a hanging provider (timeout 5s)"
    );
}

#[tokio::test]
async fn a_manual_rollback_does_not_wait_for_a_provider_that_answers_after_20s() {
    let s = GuardedRollback::start("slow-20s", "30s").await;
    let took = s.rollback_once(Answer::After(Duration::from_secs(20))).await;
    assert!(
        took < QUICK,
        "rollback-to=previous took {took:?} with a provider answering after 20 s"
    );
}
