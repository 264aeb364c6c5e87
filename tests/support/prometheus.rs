//! A real Prometheus (Debian's package) on loopback, with a generated config, for one test
//! binary. A missing Prometheus fails the test with how to install it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_for;

/// A running Prometheus; stopped and its data removed when dropped.
pub struct PrometheusServer {
    child: Option<Child>,
    dir: PathBuf,
    config: PathBuf,
    /// Its base URL, `http://127.0.0.1:<port>`.
    pub address: String,
}

fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("ROLLGUARD_PROMETHEUS") {
        return PathBuf::from(path);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let candidate = PathBuf::from(dir).join("prometheus");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "Prometheus is not installed: these tests need a real one. Run `make test` (it installs \
         Debian's package) or `bash hack/install-prometheus.sh`."
    );
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The scrape config of `targets` (`host:port`), every second.
fn config(targets: &[String]) -> String {
    let list = targets.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: model-servers\n    static_configs:\n      - targets: [{list}]\n"
    )
}

impl PrometheusServer {
    /// The value of the instant query `promql` now (the first series), None when it has no
    /// number yet.
    pub async fn value(&self, promql: &str) -> Option<f64> {
        let url = format!("{}/api/v1/query", self.address);
        let answer: serde_json::Value = reqwest::Client::new()
            .get(url)
            .query(&[("query", promql)])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        answer.pointer("/data/result/0/value/1")?.as_str()?.parse().ok()
    }

    /// Waits until the instant query `promql` is above `threshold`; panics after 60 s.
    pub async fn wait_above(&self, promql: &str, threshold: f64) {
        let seen = super::wait_for(Duration::from_secs(60), || async {
            self.value(promql).await.filter(|v| *v > threshold)
        })
        .await;
        assert!(seen.is_some(), "{promql} never went above {threshold}");
    }

    /// Starts Prometheus scraping `targets` every second, and waits until it is ready.
    pub async fn start(targets: &[String]) -> PrometheusServer {
        let targets = targets.to_vec();
        PrometheusServer::start_with_config(move |_| config(&targets)).await
    }

    /// Starts Prometheus with the config `make_config(its own port)` returns.
    pub async fn start_with_config(make_config: impl Fn(u16) -> String) -> PrometheusServer {
        let bin = binary();
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("rollguard-prometheus-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("Prometheus data dir");
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, make_config(port)).expect("Prometheus config");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("Prometheus log");
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-lifecycle")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let server = PrometheusServer {
            child: Some(child),
            dir,
            config: config_path,
            address: format!("http://127.0.0.1:{port}"),
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let url = format!("{}/-/ready", self.address);
        let ready = wait_for(Duration::from_secs(60), || async {
            let r = reqwest::get(&url).await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        assert!(ready.is_some(), "Prometheus did not become ready: {}", self.log());
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Stops it (an outage); [`PrometheusServer::restart`] brings it back on the same port.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again after [`PrometheusServer::stop`], on the same port and data.
    pub async fn restart(&mut self) {
        self.stop();
        let port = self.address.rsplit(':').next().unwrap_or_default().to_string();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("prometheus.log"))
            .expect("Prometheus log");
        let child = Command::new(binary())
            .arg(format!("--config.file={}", self.config.display()))
            .arg(format!("--storage.tsdb.path={}", self.dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-lifecycle")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("restarting Prometheus");
        self.child = Some(child);
        self.wait_ready().await;
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
