//! The `rollguard` command: `rollguard run` runs the operator, `rollguard crd` prints the CRDs.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rollguard::telemetry::{self, LogFormat};

/// jemalloc instead of the system allocator: under a fleet's bursts of requests (many
/// connections, many short-lived objects) glibc's malloc kept the operator's RSS at more
/// than twice its live heap (heaptrack, `make bench-scale` at N = 250); see the README's
/// fleet figures.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "rollguard",
    version,
    about = "Rolls LLM model servers out safely and rolls them back fast"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator (kubeconfig from KUBECONFIG or ~/.kube/config, else in-cluster).
    Run {
        /// Watch only this namespace (default: all namespaces).
        #[arg(long, env = "ROLLGUARD_NAMESPACE")]
        namespace: Option<String>,
        /// Reconcile only the ModelDeployments that this label selector selects (such as
        /// `fleet=a` or `tier in (gold,silver)`), so that several operators can split a fleet.
        #[arg(long, env = "ROLLGUARD_SELECTOR")]
        selector: Option<String>,
        /// How many ModelDeployments are reconciled at the same time (0: no limit).
        #[arg(long, default_value_t = 0, env = "ROLLGUARD_CONCURRENCY")]
        concurrency: u16,
        /// Seconds between resyncs of every ModelDeployment without any event.
        #[arg(long, default_value_t = 300, env = "ROLLGUARD_RESYNC_SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
        resync_seconds: u64,
        /// Log format.
        #[arg(long, value_enum, default_value = "text", env = "ROLLGUARD_LOG_FORMAT")]
        log_format: LogFormat,
        /// Serve /metrics, /healthz and /readyz on this address, such as 0.0.0.0:8080
        /// (port 0 picks a free port; the log says which).
        #[arg(long, env = "ROLLGUARD_METRICS_ADDRESS")]
        metrics_address: Option<std::net::SocketAddr>,
        /// Elect a leader through a Lease, so that several replicas can run: only the holder
        /// reconciles.
        #[arg(long, env = "ROLLGUARD_LEADER_ELECT")]
        leader_elect: bool,
        /// Namespace of the leadership Lease (default: POD_NAMESPACE, else --namespace, else
        /// default).
        #[arg(long, env = "ROLLGUARD_LEADER_ELECTION_NAMESPACE")]
        leader_election_namespace: Option<String>,
        /// Name of the leadership Lease.
        #[arg(long, default_value = "rollguard", env = "ROLLGUARD_LEADER_ELECTION_LEASE")]
        leader_election_lease: String,
        /// Seconds a leader keeps the Lease without renewing it; a follower takes over after.
        #[arg(long, default_value_t = 15, env = "ROLLGUARD_LEADER_ELECTION_SECONDS", value_parser = clap::value_parser!(u64).range(2..=3600))]
        leader_election_seconds: u64,
    },
    /// Print every CRD as multi-document YAML.
    Crd,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match rollguard::api::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: cannot render the CRDs: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            namespace,
            selector,
            concurrency,
            resync_seconds,
            log_format,
            metrics_address,
            leader_elect,
            leader_election_namespace,
            leader_election_lease,
            leader_election_seconds,
        } => {
            telemetry::init(log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(err) => {
                    eprintln!("error: cannot start the async runtime: {err}");
                    return ExitCode::FAILURE;
                }
            };
            let leader_election = leader_elect.then(|| rollguard::controller::LeaderElection {
                namespace: leader_election_namespace
                    .or_else(|| std::env::var("POD_NAMESPACE").ok())
                    .or_else(|| namespace.clone())
                    .unwrap_or_else(|| "default".into()),
                lease: leader_election_lease,
                identity: std::env::var("POD_NAME")
                    .or_else(|_| std::env::var("HOSTNAME"))
                    .map(|h| format!("{h}-{}", std::process::id()))
                    .unwrap_or_else(|_| format!("rollguard-{}", std::process::id())),
                duration_seconds: leader_election_seconds,
            });
            runtime.block_on(run(rollguard::controller::Config {
                namespace,
                resync: std::time::Duration::from_secs(resync_seconds),
                metrics_address,
                leader_election,
                selector,
                concurrency,
            }))
        }
    }
}

async fn run(config: rollguard::controller::Config) -> ExitCode {
    // Every request the client makes is counted in rollguard_kube_requests_total.
    let metrics = std::sync::Arc::new(telemetry::Metrics::default());
    let client = match kube::Config::infer().await {
        Ok(kube_config) => rollguard::client::connect(kube_config, metrics.clone()),
        Err(err) => {
            tracing::error!(error = %err, "cannot read the Kubernetes client configuration (kubeconfig or in-cluster)");
            return ExitCode::FAILURE;
        }
    };
    let client = match client {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "cannot build a Kubernetes client");
            return ExitCode::FAILURE;
        }
    };
    match rollguard::controller::run(client, metrics, config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "rollguard stopped");
            ExitCode::FAILURE
        }
    }
}
