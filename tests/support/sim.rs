//! The simulated model servers (`rollguard-model-sim`) and a Prometheus that scrapes them.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::prometheus::PrometheusServer;
use super::wait_for;

/// A running `rollguard-model-sim`; stopped when dropped.
pub struct ModelSim {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub address: String,
}

impl ModelSim {
    /// Starts the simulator on a free loopback port.
    pub async fn start() -> ModelSim {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let address = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_rollguard-model-sim"))
            .args(["--listen", &address])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting rollguard-model-sim");
        let sim = ModelSim { child, address };
        let url = format!("http://{}/control/x/x/0", sim.address);
        let up = wait_for(Duration::from_secs(30), || async {
            reqwest::get(&url)
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        })
        .await;
        assert!(up.is_some(), "rollguard-model-sim did not start");
        sim
    }

    /// Sets how revision `revision` of `namespace/name` behaves from now on, such as
    /// `{"errorRate": 0.5}` (unset fields take their defaults: 20 rps, no errors, TTFT 0.2 s).
    pub async fn set(&self, namespace: &str, name: &str, revision: i64, profile: serde_json::Value) {
        let url = format!("http://{}/control/{namespace}/{name}/{revision}", self.address);
        let r = reqwest::Client::new()
            .put(&url)
            .json(&profile)
            .send()
            .await
            .expect("setting the simulated profile");
        assert!(r.status().is_success(), "PUT {url}: {}", r.status());
    }

    /// A Prometheus scraping revisions `revisions` of `namespace/name` every second, each
    /// with the labels the documented relabeling gives a real pod.
    pub async fn prometheus(
        &self,
        namespace: &str,
        name: &str,
        revisions: std::ops::RangeInclusive<i64>,
    ) -> PrometheusServer {
        let mut targets = String::new();
        for rev in revisions {
            targets.push_str(&format!(
                "      - targets: ['{addr}']\n        labels:\n          __metrics_path__: /metrics/{namespace}/{name}/{rev}\n          namespace: {namespace}\n          rollguard_model_deployment: {name}\n          rollguard_revision: '{rev}'\n",
                addr = self.address
            ));
        }
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: model-servers\n    static_configs:\n{targets}"
        );
        PrometheusServer::start_with_config(move |_| config.clone()).await
    }
}

impl Drop for ModelSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
