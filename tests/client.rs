//! The operator's Kubernetes client (`rollguard::client`) against the real API server of the
//! local control plane: HTTP/2, every request and watch over one connection, each counted.
//! A file of its own, so that no other test of this process opens connections while the
//! connections are counted.

mod support;

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use rollguard::telemetry::Metrics;
use support::cluster::{TestNamespace, cluster, kubeconfig_path};

/// The inodes of this process's open sockets.
fn own_sockets() -> HashSet<String> {
    let mut inodes = HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd").into_iter().flatten().flatten() {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let target = target.to_string_lossy().into_owned();
            if let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
                inodes.insert(inode.to_string());
            }
        }
    }
    inodes
}

/// How many of this process's TCP connections are established to `port`.
fn connections_to(port: u16) -> usize {
    let own = own_sockets();
    let mut count = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local, remote (hex address:port), state (01 = established), ..., inode (10th)
            let (Some(remote), Some(state), Some(inode)) = (fields.get(2), fields.get(3), fields.get(9)) else {
                continue;
            };
            let remote_port = remote.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if remote_port == Some(port) && *state == "01" && own.contains(*inode) {
                count += 1;
            }
        }
    }
    count
}

fn counted(text: &str, verb: &str, resource: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("rollguard_kube_requests_total{"))
        .filter(|l| l.contains(&format!("verb=\"{verb}\"")) && l.contains(&format!("resource=\"{resource}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn the_operator_client_carries_requests_and_watches_over_one_http2_connection() {
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "client").await;
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path).expect("the test kubeconfig reads");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("the test kubeconfig is valid");
    assert_eq!(
        config.cluster_url.scheme_str(),
        Some("https"),
        "the local control plane serves TLS"
    );
    let port = config.cluster_url.port_u16().unwrap_or(443);
    let before = connections_to(port);

    let metrics = Arc::new(Metrics::default());
    let client = rollguard::client::connect(config, metrics.clone()).expect("the client builds");
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);

    // A watch that stays open while 40 requests are in flight at once.
    let mut watch = maps
        .watch(&WatchParams::default().timeout(60), "0")
        .await
        .expect("watch starts")
        .boxed();
    let writes = (0..20).map(|i| {
        let maps = maps.clone();
        async move {
            let map: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": format!("m{i}")}}))
                .expect("a ConfigMap");
            maps.create(&PostParams::default(), &map).await
        }
    });
    let reads = (0..20).map(|_| {
        let client = client.clone();
        async move {
            let request = http::Request::get("/version").body(Vec::new()).expect("a request");
            client
                .send(request.map(kube::client::Body::from))
                .await
                .map(|r| r.version())
        }
    });
    let (created, versions) = futures::join!(futures::future::join_all(writes), futures::future::join_all(reads));
    for c in created {
        c.expect("create through the operator's client");
    }
    for v in versions {
        assert_eq!(
            v.expect("GET /version"),
            http::Version::HTTP_2,
            "the API server answered over HTTP/2"
        );
    }
    // The watch saw the creates over the same connection.
    let mut added = 0;
    while added < 20 {
        match tokio::time::timeout(std::time::Duration::from_secs(30), watch.next()).await {
            Ok(Some(Ok(WatchEvent::Added(_)))) => added += 1,
            Ok(Some(Ok(_))) => {}
            other => panic!("the watch ended or failed after {added} of 20 creates: {other:?}"),
        }
    }
    let after = connections_to(port);
    assert_eq!(
        after - before.min(after),
        1,
        "41 requests at once (a watch, 20 creates, 20 reads) took {} new connections to the API server (before {before}, after {after})",
        after.saturating_sub(before)
    );

    let text = metrics.text().expect("the metrics encode");
    assert_eq!(counted(&text, "create", "configmaps"), 20.0, "creates counted:\n{text}");
    assert_eq!(counted(&text, "get", ""), 20.0, "reads counted:\n{text}");
    assert_eq!(counted(&text, "watch", "configmaps"), 1.0, "the watch counted:\n{text}");
}
