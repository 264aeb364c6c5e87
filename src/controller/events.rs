//! Events go out off the reconcile path. A reconcile hands its Events over and returns; under
//! load each Event costs the API server as much as a write, and publishing them inline kept
//! the next reconcile of the same ModelDeployment (an abort, a rollback) waiting for them.
//! One ModelDeployment's Events keep their order: all of them go through the same lane.

use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use super::recorder::Recorder;
use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::core::v1::ObjectReference;

use crate::plan::PlannedEvent;

/// How many ModelDeployments' Events are published at the same time.
pub const LANES: usize = 8;

type Batch = (ObjectReference, Vec<PlannedEvent>);

/// Lanes of Events, each published in order by a task of its own.
pub struct Events {
    lanes: Vec<UnboundedSender<Batch>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// The lane of an object: the same for all its Events.
fn lane_of(reference: &ObjectReference, lanes: usize) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (&reference.namespace, &reference.name).hash(&mut hasher);
    (hasher.finish() % lanes.max(1) as u64) as usize
}

impl Events {
    /// Starts `lanes` publishing tasks on the current runtime.
    pub fn start(recorder: Recorder, lanes: usize) -> Events {
        let mut senders = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..lanes.max(1) {
            let (tx, mut rx) = futures::channel::mpsc::unbounded::<Batch>();
            let recorder = recorder.clone();
            tasks.push(tokio::spawn(async move {
                while let Some((reference, events)) = rx.next().await {
                    for ev in &events {
                        super::apply::publish(&recorder, &reference, ev).await;
                    }
                }
            }));
            senders.push(tx);
        }
        Events {
            lanes: senders,
            tasks: Mutex::new(tasks),
        }
    }

    /// Queues `events` about `reference`, to be published after those queued before.
    pub fn send(&self, reference: ObjectReference, events: Vec<PlannedEvent>) {
        if events.is_empty() {
            return;
        }
        let lane = &self.lanes[lane_of(&reference, self.lanes.len())];
        if lane.unbounded_send((reference, events)).is_err() {
            tracing::warn!("Events are no longer published: the operator is stopping");
        }
    }

    /// Stops taking Events and waits up to `timeout` for those queued to be published.
    pub async fn flush(&self, timeout: Duration) {
        for lane in &self.lanes {
            lane.close_channel();
        }
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        if tokio::time::timeout(timeout, futures::future::join_all(tasks))
            .await
            .is_err()
        {
            tracing::warn!(?timeout, "stopped before every queued Event was published");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(namespace: &str, name: &str) -> ObjectReference {
        ObjectReference {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            ..Default::default()
        }
    }

    #[test]
    fn an_objects_events_always_take_the_same_lane_and_objects_spread_over_lanes() {
        let a = reference("ns", "chat");
        assert_eq!(lane_of(&a, LANES), lane_of(&a.clone(), LANES));
        let used: std::collections::BTreeSet<usize> = (0..200)
            .map(|i| lane_of(&reference("ns", &format!("m{i}")), LANES))
            .collect();
        assert_eq!(used.len(), LANES, "200 objects use every lane");
        assert!(used.iter().all(|l| *l < LANES));
        assert_eq!(lane_of(&a, 0), 0);
    }
}
