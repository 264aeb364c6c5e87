//! The README stays true: the built-in signals it documents are the ones rollguard runs, and
//! its Prometheus scrape job gives the metric labels they select.

mod support;

use std::time::Duration;

use rollguard::api::SignalTemplate;
use rollguard::metrics::prometheus::Prometheus;
use rollguard::metrics::query::{Vars, builtin, render};
use rollguard::metrics::{MetricsProvider, Reading};
use support::prometheus::PrometheusServer;
use support::{repo_root, wait_for};

fn readme() -> String {
    std::fs::read_to_string(repo_root().join("README.md")).expect("README.md")
}

#[test]
fn the_readme_documents_every_builtin_signal_with_its_promql() {
    let text = readme();
    for t in SignalTemplate::ALL {
        let row = format!("| `{t:?}` |");
        let line = text
            .lines()
            .find(|l| l.starts_with(&row))
            .unwrap_or_else(|| panic!("README has no row for {t:?}"));
        assert!(
            line.contains(&format!("`{}`", builtin(t))),
            "README's PromQL for {t:?} differs from the code:\n{line}\n{}",
            builtin(t)
        );
    }
}

/// Debian's Prometheus has no Kubernetes discovery, so the README's job runs with its
/// `kubernetes_sd_configs` replaced by static targets that carry the labels discovery would
/// give a pod: Prometheus scraping itself, once as a model server pod of `llm/chat` revision
/// 3 and once as a pod without rollguard's labels.
#[tokio::test]
async fn the_readme_scrape_job_gives_the_labels_the_builtin_signals_select() {
    let text = readme();
    let start = text
        .find("```yaml\nscrape_configs:")
        .expect("README has the scrape job");
    let block = &text[start + "```yaml\n".len()..];
    let block = block[..block.find("```").expect("closed block")].to_string();
    let documented: serde_yaml::Value = serde_yaml::from_str(&block).expect("README's scrape job is YAML");
    let prometheus = PrometheusServer::start_with_config(|port| {
        let mut doc = documented.clone();
        let job = &mut doc["scrape_configs"][0];
        let mapping = job.as_mapping_mut().expect("a scrape job");
        assert!(
            mapping.remove("kubernetes_sd_configs").is_some(),
            "the job discovers pods"
        );
        mapping.insert("scrape_interval".into(), "1s".into());
        let static_configs: serde_yaml::Value = serde_yaml::from_str(&format!(
            "- targets: ['127.0.0.1:{port}']\n  labels:\n    __meta_kubernetes_namespace: llm\n    __meta_kubernetes_pod_label_rollguard_dev_model_deployment: chat\n    __meta_kubernetes_pod_label_rollguard_dev_revision: '3'\n- targets: ['localhost:{port}']\n  labels:\n    __meta_kubernetes_namespace: other\n"
        ))
        .expect("static targets");
        mapping.insert("static_configs".into(), static_configs);
        serde_yaml::to_string(&doc).expect("config")
    })
    .await;
    let provider = Prometheus::new(&prometheus.address, Duration::from_secs(5));
    let vars = Vars {
        namespace: "llm".into(),
        name: "chat".into(),
        revision: "3".into(),
        ..Vars::default()
    };
    let query = render(
        r#"up{namespace="{{namespace}}",rollguard_model_deployment="{{name}}",rollguard_revision="{{revision}}"}"#,
        &vars,
    )
    .expect("query");
    let scraped = wait_for(Duration::from_secs(30), || async {
        (provider.query(&query).await == Ok(Reading::Value(1.0))).then_some(())
    })
    .await;
    assert!(scraped.is_some(), "no series {query}: {}", prometheus.log());
    assert_eq!(
        provider.query("count(up)").await,
        Ok(Reading::Value(1.0)),
        "the pod without rollguard's labels is not scraped"
    );
}
