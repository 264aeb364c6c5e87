//! `kubectl rollguard`: a kubectl plugin for ModelDeployments.
//!
//! It reads only the API and acts only through the `rollguard.dev/*` annotations, exactly as
//! `kubectl annotate` would: the operator does the rest. What it shows is computed in
//! `rollguard::kubectl`; this file talks to the API server and prints.
//!
//! Exit codes: 0 done (for `status`: Healthy); 1 `status` found it Degraded; 2 `status`
//! timed out; 3 the command could not run (bad arguments, not found, API errors).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{ListParams, Patch, PatchParams};
use kube::config::KubeConfigOptions;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use rollguard::api::{ModelDeployment, RollbackPolicy, labels};
use rollguard::kubectl::gate::{Verdict, exit, verdict};
use rollguard::kubectl::{Action, annotation, check_rollback_target, explain, view};

/// The field manager of the annotations this plugin writes.
const FIELD_MANAGER: &str = "kubectl-rollguard";

#[derive(Parser)]
#[command(
    name = "kubectl-rollguard",
    bin_name = "kubectl rollguard",
    version,
    about = "Watch, gate on, promote and roll back rollguard ModelDeployments",
    after_help = "Exit codes: 0 done (status: Healthy), 1 status: Degraded, 2 status: timed out, 3 could not run."
)]
struct Cli {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    /// Kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Text,
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum Command {
    /// Revisions, weights, step, phase, analysis and the last rollback.
    Get {
        name: String,
        /// Keep the view on screen and redraw it on every change.
        #[arg(short, long)]
        watch: bool,
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Wait until it is Healthy (exit 0) or Degraded (exit 1); exit 2 on --timeout.
    Status {
        name: String,
        /// How long to wait (Go duration: 90s, 10m); 0s waits for ever.
        #[arg(long, default_value = "0s")]
        timeout: rollguard::api::Duration,
    },
    /// Roll back now (rollguard.dev/rollback-to).
    Rollback {
        name: String,
        /// previous, a revision number, or version:<label>.
        #[arg(long, default_value = "previous")]
        to: String,
    },
    /// Leave the current pause (rollguard.dev/promote=true), or skip every step (--full).
    Promote {
        name: String,
        #[arg(long)]
        full: bool,
    },
    /// Stop the rollout: all traffic to the stable revision (rollguard.dev/abort).
    Abort { name: String },
    /// Roll a rolled-back revision that the spec still names out again (rollguard.dev/retry).
    Retry { name: String },
    /// The revisions, newest first.
    History {
        name: String,
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Why it is where it is, and what it waits for.
    Explain {
        name: String,
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help, --version.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(exit::ERROR);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(exit::ERROR);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit::ERROR)
        }
    }
}

struct Ctx {
    client: Client,
    namespace: String,
}

impl Ctx {
    fn mds(&self) -> Api<ModelDeployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn md(&self, name: &str) -> anyhow::Result<ModelDeployment> {
        self.mds()
            .get_opt(name)
            .await
            .with_context(|| format!("reading ModelDeployment {name} in namespace {}", self.namespace))?
            .ok_or_else(|| anyhow!("ModelDeployment {name} not found in namespace {}", self.namespace))
    }

    /// The RollbackPolicy `md` names, when it can be read (a view without thresholds is
    /// better than none).
    async fn policy(&self, md: &ModelDeployment) -> Option<RollbackPolicy> {
        let name = &md.spec.rollback_policy_ref.as_ref()?.name;
        let api: Api<RollbackPolicy> = Api::namespaced(self.client.clone(), &self.namespace);
        api.get_opt(name).await.ok().flatten()
    }

    /// The Deployments of `md`'s revisions (their labels hold the step clocks); none when
    /// they cannot be listed.
    async fn deployments(&self, md: &ModelDeployment) -> Vec<Deployment> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        let selector = format!(
            "{}={}",
            labels::MODEL_DEPLOYMENT,
            md.metadata.name.as_deref().unwrap_or_default()
        );
        api.list(&ListParams::default().labels(&selector))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    /// Everything a view needs, read now.
    async fn scene(&self, md: ModelDeployment) -> Scene {
        let policy = self.policy(&md).await;
        let deployments = self.deployments(&md).await;
        Scene {
            md,
            policy,
            deployments,
        }
    }
}

struct Scene {
    md: ModelDeployment,
    policy: Option<RollbackPolicy>,
    deployments: Vec<Deployment>,
}

impl Scene {
    fn get_text(&self, now: jiff::Timestamp) -> String {
        let why = explain::explain(&self.md, self.policy.as_ref(), &self.deployments, now);
        view::Summary::new(&self.md, self.policy.as_ref()).render(why.waiting_for.as_deref(), now)
    }
}

async fn client(context: Option<String>) -> anyhow::Result<(Client, String)> {
    let options = KubeConfigOptions {
        context,
        ..Default::default()
    };
    let config = match kube::Config::from_kubeconfig(&options).await {
        Ok(config) => config,
        Err(kubeconfig_err) if options.context.is_none() => kube::Config::incluster()
            .map_err(|_| anyhow!("cannot read the kubeconfig (KUBECONFIG or ~/.kube/config): {kubeconfig_err}"))?,
        Err(err) => bail!("cannot read the kubeconfig: {err}"),
    };
    let namespace = config.default_namespace.clone();
    Ok((Client::try_from(config)?, namespace))
}

fn print_as<T: serde::Serialize>(output: Output, value: &T, text: impl FnOnce() -> String) -> anyhow::Result<()> {
    let s = match output {
        Output::Text => text(),
        Output::Json => serde_json::to_string_pretty(value)? + "\n",
        Output::Yaml => serde_yaml::to_string(value)?,
    };
    print!("{s}");
    std::io::stdout().flush()?;
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let (client, default_ns) = client(cli.context).await?;
    let ctx = Ctx {
        client,
        namespace: cli.namespace.unwrap_or(default_ns),
    };
    match cli.command {
        Command::Get { name, watch, output } => {
            if watch {
                if output != Output::Text {
                    bail!("--watch shows the text view; use -o json|yaml without --watch");
                }
                return get_watch(&ctx, &name).await;
            }
            let scene = ctx.scene(ctx.md(&name).await?).await;
            let now = jiff::Timestamp::now();
            let summary = view::Summary::new(&scene.md, scene.policy.as_ref());
            print_as(output, &summary, || scene.get_text(now))?;
            Ok(exit::HEALTHY)
        }
        Command::Status { name, timeout } => status(&ctx, &name, timeout.get()).await,
        Command::Rollback { name, to } => act(&ctx, &name, Action::Rollback { to }).await,
        Command::Promote { name, full } => act(&ctx, &name, Action::Promote { full }).await,
        Command::Abort { name } => act(&ctx, &name, Action::Abort).await,
        Command::Retry { name } => act(&ctx, &name, Action::Retry).await,
        Command::History { name, output } => {
            let md = ctx.md(&name).await?;
            let revisions = view::revisions(&md);
            print_as(output, &revisions, || {
                view::history_table(&revisions, jiff::Timestamp::now())
            })?;
            Ok(exit::HEALTHY)
        }
        Command::Explain { name, output } => {
            let scene = ctx.scene(ctx.md(&name).await?).await;
            let why = explain::explain(
                &scene.md,
                scene.policy.as_ref(),
                &scene.deployments,
                jiff::Timestamp::now(),
            );
            print_as(output, &why, || why.render())?;
            Ok(exit::HEALTHY)
        }
    }
}

/// Writes the annotation that carries `action`, after checking it as the operator would.
async fn act(ctx: &Ctx, name: &str, action: Action) -> anyhow::Result<u8> {
    let (key, value) = annotation(&action).map_err(|e| anyhow!("{e}"))?;
    let md = ctx.md(name).await?;
    if let Action::Rollback { to } = &action {
        check_rollback_target(&md, to).map_err(|e| anyhow!(e))?;
    }
    let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
    ctx.mds()
        .patch(name, &PatchParams::apply(FIELD_MANAGER), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("annotating ModelDeployment {name}"))?;
    println!("modeldeployment.rollguard.dev/{name} annotated {key}={value}");
    Ok(exit::HEALTHY)
}

/// A watch on one ModelDeployment: every version of it, starting with the current one.
fn watch_one(ctx: &Ctx, name: &str) -> impl futures::Stream<Item = Result<ModelDeployment, watcher::Error>> + use<> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    watcher(ctx.mds(), config).applied_objects()
}

/// Blocks until the verdict is Healthy or Degraded, printing each new state on its own line.
async fn status(ctx: &Ctx, name: &str, timeout: Duration) -> anyhow::Result<u8> {
    ctx.md(name).await?;
    let wait = async {
        let mut last = String::new();
        let mut stream = std::pin::pin!(watch_one(ctx, name));
        while let Some(item) = stream.next().await {
            let md = match item {
                Ok(md) => md,
                // The watcher retries on its own.
                Err(err) => {
                    eprintln!("warning: watch: {err}");
                    continue;
                }
            };
            let (v, line) = verdict(&md);
            if line != last {
                println!("{line}");
                last = line;
            }
            match v {
                Verdict::Healthy => return Ok(exit::HEALTHY),
                Verdict::Degraded => return Ok(exit::DEGRADED),
                Verdict::Waiting => {}
            }
        }
        bail!("the watch on ModelDeployment {name} ended")
    };
    if timeout.is_zero() {
        return wait.await;
    }
    match tokio::time::timeout(timeout, wait).await {
        Ok(result) => result,
        Err(_) => {
            println!(
                "timed out after {}s waiting for ModelDeployment {name} to be Healthy or Degraded",
                timeout.as_secs()
            );
            Ok(exit::TIMED_OUT)
        }
    }
}

/// `get --watch`: the view, redrawn on every change of the ModelDeployment and every second
/// (for the ages and the time left in a pause), until interrupted.
async fn get_watch(ctx: &Ctx, name: &str) -> anyhow::Result<u8> {
    let mut scene = ctx.scene(ctx.md(name).await?).await;
    let terminal = std::io::stdout().is_terminal();
    let mut stream = std::pin::pin!(watch_one(ctx, name));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = String::new();
    loop {
        let text = scene.get_text(jiff::Timestamp::now());
        if text != last {
            let mut out = std::io::stdout().lock();
            if terminal {
                // Home, clear the screen: the view stays in place.
                write!(out, "\x1b[H\x1b[2J{text}")?;
            } else {
                writeln!(out, "{text}")?;
            }
            out.flush()?;
            last = text;
        }
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(md)) => scene = ctx.scene(md).await,
                Some(Err(err)) => eprintln!("warning: watch: {err}"),
                None => bail!("the watch on ModelDeployment {name} ended"),
            },
            _ = tick.tick() => {
                // The step clocks live on the Deployments, which move without the
                // ModelDeployment: read them again.
                scene.deployments = ctx.deployments(&scene.md).await;
            }
            _ = tokio::signal::ctrl_c() => return Ok(exit::HEALTHY),
        }
    }
}
