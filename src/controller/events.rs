//! Events go out off the reconcile path. A reconcile hands its Events over and returns; under
//! load each Event costs the API server as much as a write, and publishing them inline kept
//! the next reconcile of the same ModelDeployment (an abort, a rollback) waiting for them.
//! One ModelDeployment's Events keep their order: all of them go through the same lane.
//!
//! What is queued is not yet durable: an operator killed before its lane reaches them loses
//! them, and its successor, reading a status that already records the happening, does not
//! publish them again. So a reconcile that is about to move an object's status on first
//! waits (bounded, [`Events::published`]) until the Events queued by the reconcile before it
//! are out: a status never runs more than one write ahead of its object's Events.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::recorder::Recorder;
use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::core::v1::ObjectReference;
use tokio::sync::watch;

use crate::plan::PlannedEvent;

/// How many ModelDeployments' Events are published at the same time.
pub const LANES: usize = 8;

/// An object's Events queued at once, with the batch's number in its lane.
struct Batch {
    reference: ObjectReference,
    events: Vec<PlannedEvent>,
    number: u64,
}

/// An object, as its Events name it.
type Key = (Option<String>, Option<String>);

fn key_of(reference: &ObjectReference) -> Key {
    (reference.namespace.clone(), reference.name.clone())
}

/// What has been queued and not yet published.
#[derive(Default)]
struct Queued {
    /// Per lane, how many batches were queued.
    sent: Vec<u64>,
    /// Per object, its lane and the number of its last batch not yet published.
    last: HashMap<Key, (usize, u64)>,
}

/// Lanes of Events, each published in order by a task of its own.
pub struct Events {
    lanes: Vec<UnboundedSender<Batch>>,
    /// Per lane, how many batches were published (or given up on).
    done: Vec<watch::Receiver<u64>>,
    queued: Arc<Mutex<Queued>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// The lane of an object: the same for all its Events.
fn lane_of(reference: &ObjectReference, lanes: usize) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (&reference.namespace, &reference.name).hash(&mut hasher);
    (hasher.finish() % lanes.max(1) as u64) as usize
}

fn lock(queued: &Mutex<Queued>) -> std::sync::MutexGuard<'_, Queued> {
    queued.lock().unwrap_or_else(|e| e.into_inner())
}

impl Events {
    /// Starts `lanes` publishing tasks on the current runtime.
    pub fn start(recorder: Recorder, lanes: usize) -> Events {
        Events::start_with(lanes, move |reference, event| {
            let recorder = recorder.clone();
            async move { super::apply::publish(&recorder, &reference, &event).await }
        })
    }

    /// Starts `lanes` tasks that hand each queued Event to `publish`, in order.
    fn start_with<P, F>(lanes: usize, publish: P) -> Events
    where
        P: Fn(ObjectReference, PlannedEvent) -> F + Clone + Send + 'static,
        F: std::future::Future<Output = ()> + Send,
    {
        let lanes = lanes.max(1);
        let queued = Arc::new(Mutex::new(Queued {
            sent: vec![0; lanes],
            last: HashMap::new(),
        }));
        let (mut senders, mut done, mut tasks) = (Vec::new(), Vec::new(), Vec::new());
        for lane in 0..lanes {
            let (tx, mut rx) = futures::channel::mpsc::unbounded::<Batch>();
            let (done_tx, done_rx) = watch::channel(0u64);
            let (publish, queued) = (publish.clone(), queued.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(batch) = rx.next().await {
                    for ev in batch.events {
                        publish(batch.reference.clone(), ev).await;
                    }
                    let key = key_of(&batch.reference);
                    {
                        let mut queued = lock(&queued);
                        if queued.last.get(&key) == Some(&(lane, batch.number)) {
                            queued.last.remove(&key);
                        }
                    }
                    done_tx.send_replace(batch.number);
                }
            }));
            senders.push(tx);
            done.push(done_rx);
        }
        Events {
            lanes: senders,
            done,
            queued,
            tasks: Mutex::new(tasks),
        }
    }

    /// Queues `events` about `reference`, to be published after those queued before.
    pub fn send(&self, reference: ObjectReference, events: Vec<PlannedEvent>) {
        if events.is_empty() {
            return;
        }
        let lane = lane_of(&reference, self.lanes.len());
        // Numbered and sent under the lock: a lane's batches arrive in their numbers' order.
        let mut queued = lock(&self.queued);
        let number = queued.sent[lane] + 1;
        let key = key_of(&reference);
        let batch = Batch {
            reference,
            events,
            number,
        };
        if self.lanes[lane].unbounded_send(batch).is_err() {
            tracing::warn!("Events are no longer published: the operator is stopping");
            return;
        }
        queued.sent[lane] = number;
        queued.last.insert(key, (lane, number));
    }

    /// Waits up to `timeout` until every Event queued about `reference` is published (or
    /// given up on). False when the time ran out first.
    pub async fn published(&self, reference: &ObjectReference, timeout: Duration) -> bool {
        let Some((lane, number)) = lock(&self.queued).last.get(&key_of(reference)).copied() else {
            return true;
        };
        let mut done = self.done[lane].clone();
        match tokio::time::timeout(timeout, done.wait_for(|n| *n >= number)).await {
            Ok(Ok(_)) => true,
            // The lane's task ended (the operator is stopping): nothing more will go out.
            Ok(Err(_)) => true,
            Err(_) => false,
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

    fn event(reason: &'static str) -> PlannedEvent {
        PlannedEvent {
            warning: false,
            reason,
            note: reason.to_string(),
        }
    }

    /// Lanes whose publishing waits for a permit of `gate` per Event, recording what went out.
    fn gated(lanes: usize) -> (Events, Arc<tokio::sync::Semaphore>, Arc<Mutex<Vec<String>>>) {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let out = Arc::new(Mutex::new(Vec::new()));
        let (g, o) = (gate.clone(), out.clone());
        let events = Events::start_with(lanes, move |reference, ev| {
            let (gate, out) = (g.clone(), o.clone());
            async move {
                if let Ok(permit) = gate.acquire().await {
                    permit.forget();
                }
                let name = reference.name.unwrap_or_default();
                out.lock().unwrap().push(format!("{name}:{}", ev.reason));
            }
        });
        (events, gate, out)
    }

    #[tokio::test]
    async fn an_object_counts_as_published_only_once_all_its_queued_events_are_out() {
        let (events, gate, out) = gated(1);
        let (chat, code) = (reference("ns", "chat"), reference("ns", "code"));
        let short = Duration::from_millis(50);
        assert!(events.published(&chat, short).await, "nothing queued: published");

        events.send(chat.clone(), vec![event("Aborted"), event("RollbackStarted")]);
        events.send(chat.clone(), vec![]);
        assert!(!events.published(&chat, short).await, "none out yet");
        gate.add_permits(1);
        assert!(!events.published(&chat, short).await, "one of the two out");
        assert!(
            events.published(&code, short).await,
            "another object has nothing queued"
        );

        events.send(code.clone(), vec![event("Promoted")]);
        gate.add_permits(1);
        assert!(events.published(&chat, Duration::from_secs(10)).await);
        assert!(!events.published(&code, short).await, "code's Event is still held");
        gate.add_permits(1);
        assert!(events.published(&code, Duration::from_secs(10)).await);
        assert_eq!(
            *out.lock().unwrap(),
            ["chat:Aborted", "chat:RollbackStarted", "code:Promoted"]
        );
        assert!(lock(&events.queued).last.is_empty(), "nothing kept once all is out");
    }

    #[tokio::test]
    async fn a_later_batch_of_the_same_object_is_waited_for_too() {
        let (events, gate, _) = gated(2);
        let chat = reference("ns", "chat");
        events.send(chat.clone(), vec![event("StepAdvanced")]);
        gate.add_permits(1);
        assert!(events.published(&chat, Duration::from_secs(10)).await);
        events.send(chat.clone(), vec![event("Aborted")]);
        assert!(!events.published(&chat, Duration::from_millis(50)).await);
        gate.add_permits(1);
        events.flush(Duration::from_secs(10)).await;
        assert!(events.published(&chat, Duration::from_millis(50)).await);
        events.send(chat.clone(), vec![event("RollbackCompleted")]);
        assert!(
            events.published(&chat, Duration::from_millis(50)).await,
            "after the flush nothing is queued, so nothing is waited for"
        );
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
