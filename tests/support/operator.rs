//! The operator binary of this build, run against the local control plane.

use super::*;

/// A running `rollguard run`, killed when dropped. Its log goes to a file.
pub struct Operator {
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl Operator {
    /// Starts the operator binary of this build against the local cluster, watching `namespace`.
    pub fn start(namespace: &str) -> Operator {
        Operator::start_with(namespace, &[])
    }

    /// Starts it with extra arguments (for example `--resync-seconds 1`).
    pub fn start_with(namespace: &str, extra: &[&str]) -> Operator {
        Operator::start_as(namespace, &kubeconfig_path(), extra)
    }

    /// Starts it with the identity of `kubeconfig` (such as a ServiceAccount token).
    pub fn start_as(namespace: &str, kubeconfig: &Path, extra: &[&str]) -> Operator {
        let log = std::env::temp_dir().join(format!("rollguard-{namespace}-{}.log", unique()));
        let file = std::fs::File::create(&log).expect("creating the operator log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_rollguard"))
            .args(["run", "--namespace", namespace])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn,rollguard=debug")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .expect("starting the rollguard binary");
        Operator { child, log }
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many reconciles of the ModelDeployment `name` it finished so far, writes or not:
    /// its `reconciled object=...` debug lines, and `reconcile failed; retrying` for those
    /// that ended in an error.
    pub fn reconciles(&self, name: &str) -> usize {
        let done = format!("reconciled object=ModelDeployment.v1alpha1.rollguard.dev/{name}.");
        let failed = format!(" name={name} ");
        self.log_text()
            .lines()
            .filter(|l| l.contains(&done) || (l.contains("reconcile failed; retrying") && l.contains(&failed)))
            .count()
    }

    /// Waits until it finished `n` more reconciles of `name` from now: the event that proves
    /// it looked again, before a test asserts that nothing changed. Panics after 60 s.
    pub async fn wait_reconciles(&self, name: &str, n: usize) {
        let from = self.reconciles(name);
        let seen = wait_for(Duration::from_secs(60), || async {
            (self.reconciles(name) >= from + n).then_some(())
        })
        .await;
        assert!(
            seen.is_some(),
            "the operator did not reconcile {name} {n} more times within 60s:\n{}",
            self.log_text()
        );
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- operator log ({}) ----\n{}", self.log.display(), self.log_text());
        }
    }
}
