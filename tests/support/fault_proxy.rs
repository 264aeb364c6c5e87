//! A proxy between the operator and the API server that stops the operator at an exact
//! point: after the API server has carried out the Nth request that matches a rule, and
//! before the operator hears the answer.
//!
//! The operator talks plain HTTP to the proxy on loopback (its kubeconfig names the proxy);
//! the proxy forwards every request, watches included, through the test's own client (TLS
//! and credentials of the local control plane). Nothing is mocked: every request reaches the
//! real API server. When a rule fires, the request has been carried out, the operator is
//! killed (SIGKILL) before the answer reaches it, and the test is told.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Body as AxumBody;
use axum::extract::{Request, State};
use axum::response::Response;
use futures::StreamExt;
use kube::Client;
use tokio::sync::oneshot;

/// What a rule looks at: the method, the path (with query) and the body of a request.
pub struct Seen<'a> {
    pub method: &'a http::Method,
    pub path: &'a str,
    pub body: &'a str,
}

impl Seen<'_> {
    /// A write (POST, PUT, PATCH, DELETE) to a path that contains `fragment`.
    pub fn write_to(&self, fragment: &str) -> bool {
        self.method != http::Method::GET && self.path.contains(fragment)
    }
}

type Matcher = Box<dyn Fn(&Seen<'_>) -> bool + Send + Sync>;

struct Rule {
    matches: Matcher,
    nth: usize,
    seen: usize,
    pid: u32,
    fired: Option<oneshot::Sender<String>>,
}

/// A request held back before it is forwarded, until the [`Hold`] is released.
struct HoldRule {
    matches: Matcher,
    arrived: Option<oneshot::Sender<String>>,
    released: tokio::sync::watch::Receiver<bool>,
}

struct Shared {
    rule: Mutex<Option<Rule>>,
    hold: Mutex<Option<HoldRule>>,
    /// A fragment of the paths whose watches deliver nothing for now.
    stalled: tokio::sync::watch::Sender<Option<String>>,
    /// Chunks of watch answers held back while stalled.
    held_back: std::sync::atomic::AtomicUsize,
}

/// Watches stalled by [`FaultProxy::stall_watches`]; they deliver again when this is dropped.
pub struct Stall {
    shared: Arc<Shared>,
}

impl Stall {
    /// How many chunks of watch answers (events) have been held back so far.
    pub fn held_back(&self) -> usize {
        self.shared.held_back.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Stall {
    fn drop(&mut self) {
        self.shared.stalled.send_replace(None);
    }
}

/// The first request a [`FaultProxy::hold`] rule matched: it waits in the proxy, not sent to
/// the API server, until this is released or dropped.
pub struct Hold {
    arrived: Option<oneshot::Receiver<String>>,
    release: tokio::sync::watch::Sender<bool>,
}

impl Hold {
    /// Waits (60 s at most) until the request arrived; returns its method and path.
    pub async fn arrived(&mut self) -> String {
        let arrived = self.arrived.take().expect("Hold::arrived is awaited once");
        tokio::time::timeout(std::time::Duration::from_secs(60), arrived)
            .await
            .unwrap_or_else(|_| panic!("no matching request reached the proxy within 60s"))
            .expect("the proxy reports the held request")
    }

    /// Sends the request on to the API server.
    pub fn release(&self) {
        self.release.send_replace(true);
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.release();
    }
}

/// The proxy; it stops when dropped.
pub struct FaultProxy {
    shared: Arc<Shared>,
    /// A kubeconfig that points at the proxy.
    pub kubeconfig: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to the API server that `client` reaches.
    pub async fn start(client: &Client) -> FaultProxy {
        let shared = Arc::new(Shared {
            rule: Mutex::new(None),
            hold: Mutex::new(None),
            stalled: tokio::sync::watch::Sender::new(None),
            held_back: std::sync::atomic::AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the fault proxy");
        let address = listener.local_addr().expect("the proxy's address");
        let app = axum::Router::new()
            .fallback(forward)
            .with_state((client.clone(), shared.clone()));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let kubeconfig = std::env::temp_dir().join(format!(
            "rollguard-proxy-{}-{}.kubeconfig",
            std::process::id(),
            super::unique()
        ));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: proxy\n  cluster: {{server: \"http://{address}\"}}\n\
             contexts:\n- name: proxy\n  context: {{cluster: proxy, user: proxy}}\ncurrent-context: proxy\n\
             users:\n- name: proxy\n  user: {{}}\n"
        );
        std::fs::write(&kubeconfig, text).expect("writing the proxy kubeconfig");
        FaultProxy {
            shared,
            kubeconfig,
            task,
        }
    }

    /// Arms the proxy to kill `op` after the first request `matches` accepts, runs `act`,
    /// and waits (60 s at most) until the kill happened; reaps `op`. Returns the request
    /// after which it died.
    pub async fn kill_during<F, A>(&self, op: &mut super::Operator, matches: F, act: A) -> String
    where
        F: Fn(&Seen<'_>) -> bool + Send + Sync + 'static,
        A: std::future::Future<Output = ()>,
    {
        let fired = self.kill_after(op.child.id(), 1, matches);
        act.await;
        let request = tokio::time::timeout(std::time::Duration::from_secs(60), fired)
            .await
            .unwrap_or_else(|_| panic!("the operator was not stopped at its point within 60s"))
            .expect("the proxy reports the kill");
        op.kill();
        request
    }

    /// Kills process `pid` (SIGKILL) right after the API server has carried out the `nth`
    /// request that `matches` (counted from now), before its answer is passed on. The
    /// receiver gets the request line once that happened.
    pub fn kill_after<F>(&self, pid: u32, nth: usize, matches: F) -> oneshot::Receiver<String>
    where
        F: Fn(&Seen<'_>) -> bool + Send + Sync + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let rule = Rule {
            matches: Box::new(matches),
            nth,
            seen: 0,
            pid,
            fired: Some(tx),
        };
        if let Ok(mut slot) = self.shared.rule.lock() {
            *slot = Some(rule);
        }
        rx
    }
}

impl FaultProxy {
    /// Holds the next request that `matches` accepts in the proxy, before the API server sees
    /// it, until the returned [`Hold`] is released (as a write stuck on a slow API server
    /// would be): the operator's reconcile that made it waits, the rest of the operator goes on.
    pub fn hold<F>(&self, matches: F) -> Hold
    where
        F: Fn(&Seen<'_>) -> bool + Send + Sync + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let (release, released) = tokio::sync::watch::channel(false);
        if let Ok(mut slot) = self.shared.hold.lock() {
            *slot = Some(HoldRule {
                matches: Box::new(matches),
                arrived: Some(tx),
                released,
            });
        }
        Hold {
            arrived: Some(rx),
            release,
        }
    }

    /// Holds back what the watches whose path contains `fragment` deliver (their connections
    /// stay open, as a congested or half-dead connection would) until the returned guard is
    /// dropped; then they deliver everything held back, in order.
    pub fn stall_watches(&self, fragment: &str) -> Stall {
        self.shared.held_back.store(0, std::sync::atomic::Ordering::SeqCst);
        self.shared.stalled.send_replace(Some(fragment.to_string()));
        Stall {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

async fn forward(State((client, shared)): State<(Client, Arc<Shared>)>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return answer(http::StatusCode::BAD_REQUEST, format!("reading the request: {e}")),
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let text = String::from_utf8_lossy(&body);
    let seen = Seen {
        method: &parts.method,
        path: &path,
        body: &text,
    };
    // Whether this request is the one after which the operator dies.
    let kill = match shared.rule.lock() {
        Ok(mut slot) => {
            let hit = slot.as_mut().is_some_and(|rule| {
                if (rule.matches)(&seen) {
                    rule.seen += 1;
                }
                rule.seen == rule.nth
            });
            if hit { slot.take() } else { None }
        }
        Err(_) => None,
    };
    // Whether this request is the one to hold back.
    let held = match shared.hold.lock() {
        Ok(mut slot) => {
            if slot.as_ref().is_some_and(|rule| (rule.matches)(&seen)) {
                slot.take()
            } else {
                None
            }
        }
        Err(_) => None,
    };
    if let Some(mut rule) = held {
        if let Some(tx) = rule.arrived.take() {
            let _ = tx.send(format!("{} {path}", parts.method));
        }
        let _ = rule.released.wait_for(|released| *released).await;
    }
    let mut builder = http::Request::builder().method(parts.method.clone()).uri(path.as_str());
    for (name, value) in &parts.headers {
        if name != http::header::HOST && name != http::header::CONTENT_LENGTH {
            builder = builder.header(name, value);
        }
    }
    let outgoing = match builder.body(kube::client::Body::from(body.to_vec())) {
        Ok(r) => r,
        Err(e) => return answer(http::StatusCode::BAD_REQUEST, format!("building the request: {e}")),
    };
    let response = client.send(outgoing).await;
    if let Some(mut rule) = kill {
        // The API server has carried the request out; the operator never hears of it.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &rule.pid.to_string()])
            .status();
        if let Some(tx) = rule.fired.take() {
            let _ = tx.send(format!("{} {path}", parts.method));
        }
        return answer(http::StatusCode::BAD_GATEWAY, "the operator was killed".into());
    }
    match response {
        Ok(r) if path.contains("watch=true") => {
            let (parts, body) = r.into_parts();
            let stalled = shared.stalled.subscribe();
            let chunks = AxumBody::new(body).into_data_stream().then(move |chunk| {
                let shared = shared.clone();
                let path = path.clone();
                let mut stalled = stalled.clone();
                async move {
                    let blocks = |f: &Option<String>| f.as_deref().is_some_and(|f| path.contains(f));
                    let now = blocks(&stalled.borrow());
                    if now {
                        shared.held_back.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let _ = stalled.wait_for(|f| !blocks(f)).await;
                    }
                    chunk
                }
            });
            Response::from_parts(parts, AxumBody::from_stream(chunks))
        }
        Ok(r) => {
            let (parts, body) = r.into_parts();
            Response::from_parts(parts, AxumBody::new(body))
        }
        Err(e) => answer(http::StatusCode::BAD_GATEWAY, format!("forwarding: {e}")),
    }
}

fn answer(status: http::StatusCode, text: String) -> Response {
    let mut r = Response::new(AxumBody::from(text));
    *r.status_mut() = status;
    r
}
