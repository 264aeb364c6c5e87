//! A metrics provider on loopback that speaks the Prometheus query API and can be told to
//! answer at once, after a delay, never (it accepts the connection and keeps it open), or
//! with any status and body.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the provider answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// At once, with the value 0.
    Now,
    /// With the value 0 after this long.
    After(Duration),
    /// Never.
    Hang,
    /// At once, with this HTTP status and body (a misbehaving provider).
    Respond(u16, &'static str),
}

struct Shared {
    answer: std::sync::Mutex<Answer>,
    in_flight: AtomicUsize,
    received: AtomicUsize,
}

/// The provider; stops with its runtime.
pub struct SlowProvider {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    shared: Arc<Shared>,
}

const BODY: &str =
    r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1795000000,"0"]}]}}"#;

impl SlowProvider {
    /// Starts answering `answer` on a free loopback port.
    pub async fn start(answer: Answer) -> SlowProvider {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding the provider");
        let address = format!("http://{}", listener.local_addr().expect("provider address"));
        let shared = Arc::new(Shared {
            answer: std::sync::Mutex::new(answer),
            in_flight: AtomicUsize::new(0),
            received: AtomicUsize::new(0),
        });
        let state = shared.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, state.clone()));
            }
        });
        SlowProvider { address, shared }
    }

    /// Changes how later queries are answered.
    pub fn set(&self, answer: Answer) {
        *self.shared.answer.lock().expect("provider mode") = answer;
    }

    /// Queries received but not answered yet.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Queries received.
    pub fn received(&self) -> usize {
        self.shared.received.load(Ordering::SeqCst)
    }

    /// Waits (up to `timeout`) until a query is waiting for its answer.
    pub async fn wait_in_flight(&self, timeout: Duration) {
        let waited = super::wait_for(timeout, || async { (self.in_flight() > 0).then_some(()) }).await;
        assert!(waited.is_some(), "no query reached the provider within {timeout:?}");
    }
}

/// Serves the requests of one connection in turn.
async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // One request: this client sends GETs without a body.
        while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buffer.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |p| p + 4);
        buffer.drain(..end);
        shared.received.fetch_add(1, Ordering::SeqCst);
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        let answer = *shared.answer.lock().expect("provider mode");
        let wait = async {
            match answer {
                Answer::Now | Answer::Respond(..) => {}
                Answer::After(d) => tokio::time::sleep(d).await,
                Answer::Hang => std::future::pending::<()>().await,
            }
        };
        // A client that gives up closes the connection: the query is no longer in flight.
        let gave_up = tokio::select! {
            _ = wait => false,
            read = stream.read(&mut chunk) => match read {
                Ok(0) | Err(_) => true,
                Ok(n) => {
                    buffer.extend_from_slice(&chunk[..n]);
                    false
                }
            },
        };
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        if gave_up {
            return;
        }
        let (status, body) = match answer {
            Answer::Respond(status, body) => (status, body),
            _ => (200, BODY),
        };
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A blue/green ModelDeployment `chat` (r2 stable, r1 warm) whose policy's only trigger
/// judges r2 in its guard window through a [`SlowProvider`], with the operator running.
pub struct GuardedRollback {
    /// The APIs of its namespace.
    pub apis: super::Apis,
    /// The provider the trigger queries.
    pub provider: SlowProvider,
    _op: super::Operator,
    _ns: super::TestNamespace,
}

impl GuardedRollback {
    /// Sets it up in a new namespace; the provider's queries time out after `timeout`
    /// (a Go-style duration) and run every 5 s.
    pub async fn start(prefix: &str, timeout: &str) -> GuardedRollback {
        let cluster = super::cluster().await;
        let ns = super::TestNamespace::create(&cluster.client, prefix).await;
        let apis = super::Apis::new(&cluster.client, &ns.name);
        let provider = SlowProvider::start(Answer::Now).await;
        let policy: rollguard::api::RollbackPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackPolicy", "metadata": {"name": "llm"},
            "spec": {
                "provider": {"prometheus": {"address": provider.address, "timeout": timeout}},
                "interval": "5s",
                "guardWindow": "1h",
                "triggers": [{"name": "error-rate", "query": "vector(0)", "operator": "Gt", "threshold": 0.1, "severity": "Critical"}]
            }
        }))
        .expect("policy");
        kube::Api::<rollguard::api::RollbackPolicy>::namespaced(cluster.client.clone(), &ns.name)
            .create(&Default::default(), &policy)
            .await
            .expect("creating the RollbackPolicy");
        let op = super::Operator::start(&ns.name);
        apis.roll_out(
            "chat",
            &["v1", "v2"],
            1,
            serde_json::json!({"rollbackPolicyRef": {"name": "llm"}}),
        )
        .await;
        GuardedRollback {
            apis,
            provider,
            _op: op,
            _ns: ns,
        }
    }

    /// With the provider answering `answer` (and, unless `Now`, a query of r2's guard window
    /// waiting for its answer), annotates `rollback-to=previous` and returns how long the
    /// stable Service took to select r1. Then retries r2 until it is Healthy again.
    pub async fn rollback_once(&self, answer: Answer) -> Duration {
        self.apis.wait_warm("chat-r1", 1).await;
        self.provider.set(answer);
        if matches!(answer, Answer::After(_) | Answer::Hang) {
            // The trigger is queried every 5 s: the next query hangs.
            self.provider.wait_in_flight(Duration::from_secs(20)).await;
        }
        let took = self
            .apis
            .time_until_selects(
                "chat",
                1,
                self.apis.annotate("chat", "rollguard.dev/rollback-to", "previous"),
            )
            .await;
        self.provider.set(Answer::Now);
        self.apis.annotate("chat", "rollguard.dev/retry", "true").await;
        self.apis.wait_healthy("chat", 2).await;
        took
    }
}
