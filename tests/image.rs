//! The container image `make image` builds (`hack/image.sh`, into `target/image/oci`): its
//! config, that the binary in its layers runs on the image's own files alone (chroot into
//! the unpacked layers, as the non-root user), that there is no shell, and its size
//! (printed), and that the binary of the image, so run, reconciles a rollout against the local
//! control plane. `make test` builds the image before the tests; on its own: `make image`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn layout() -> PathBuf {
    let layout = root().join("target/image/oci");
    assert!(
        layout.join("index.json").is_file(),
        "no image at {}: run `make image` first (make test does)",
        layout.display()
    );
    layout
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The blob `digest` (`sha256:<hex>`) of the layout.
fn blob(layout: &Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').expect("a digest algorithm:hex");
    layout.join("blobs").join(algorithm).join(hex)
}

/// The manifest tagged with the crate's version, and its config.
fn manifest_and_config(layout: &Path) -> (Value, Value) {
    let index = read_json(&layout.join("index.json"));
    let version = env!("CARGO_PKG_VERSION");
    let entry = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == version)
        .unwrap_or_else(|| panic!("no manifest tagged {version} in index.json: {index}"));
    let manifest = read_json(&blob(layout, entry["digest"].as_str().expect("digest")));
    let config = read_json(&blob(
        layout,
        manifest["config"]["digest"].as_str().expect("config digest"),
    ));
    (manifest, config)
}

/// The image's layers unpacked, in order, into a fresh directory named after `what`.
fn unpack(layout: &Path, manifest: &Value, what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rollguard-image-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the unpack directory");
    for layer in manifest["layers"].as_array().expect("layers") {
        let media = layer["mediaType"].as_str().unwrap_or_default();
        assert_eq!(media, "application/vnd.oci.image.layer.v1.tar+gzip", "{layer}");
        let path = blob(layout, layer["digest"].as_str().expect("layer digest"));
        let status = Command::new("tar")
            .arg("-xzf")
            .arg(&path)
            .arg("-C")
            .arg(&dir)
            .status()
            .expect("running tar");
        assert!(status.success(), "unpacking {}", path.display());
    }
    dir
}

/// Runs `args` inside `rootfs` (chroot, with an empty environment but the image's) as the
/// image's user; stdout, or a panic with what went wrong.
fn run_in(rootfs: &Path, user: &str, args: &[&str]) -> String {
    // By absolute path: the environment is cleared, PATH with it.
    let out = Command::new("/usr/sbin/chroot")
        .arg(format!("--userspec={user}"))
        .arg(rootfs)
        .args(args)
        .env_clear()
        .env("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
        .output()
        .expect("running chroot (the image test runs as root, as make test does here)");
    assert!(
        out.status.success(),
        "{args:?} in the image failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_image_runs_rollguard_as_a_non_root_user_from_its_own_files_and_has_no_shell() {
    let layout = layout();
    let (manifest, config) = manifest_and_config(&layout);
    assert_eq!(
        (config["os"].as_str(), config["architecture"].as_str()),
        (Some("linux"), Some("amd64"))
    );
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532", "non-root: {c}");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/usr/local/bin/rollguard"]), "{c}");
    assert_eq!(c["Cmd"], serde_json::json!(["run"]), "{c}");
    let labels = &c["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION"),
        "{labels}"
    );
    assert!(
        labels["org.opencontainers.image.source"]
            .as_str()
            .is_some_and(|s| s.starts_with("https://")),
        "{labels}"
    );

    let rootfs = unpack(&layout, &manifest, "files");
    for shell in ["bin/sh", "usr/bin/sh", "bin/bash", "usr/bin/bash"] {
        assert!(!rootfs.join(shell).exists(), "the image has a shell: {shell}");
    }
    let version = run_in(&rootfs, "65532:65532", &["/usr/local/bin/rollguard", "--version"]);
    assert_eq!(version.trim(), format!("rollguard {}", env!("CARGO_PKG_VERSION")));
    let crds = run_in(&rootfs, "65532:65532", &["/usr/local/bin/rollguard", "crd"]);
    let committed = std::fs::read_to_string(root().join("crds/rollguard.yaml")).expect("crds/rollguard.yaml");
    assert_eq!(crds, committed, "the image's binary prints the committed CRDs");

    let compressed: u64 = manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["size"].as_u64())
        .sum();
    let unpacked = Command::new("du")
        .args(["-sb"])
        .arg(&rootfs)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    println!(
        "image size: layers {:.1} MiB compressed, {:.1} MiB unpacked",
        compressed as f64 / 1048576.0,
        unpacked as f64 / 1048576.0
    );
    assert!(
        compressed > 0 && unpacked > compressed,
        "sizes {compressed} / {unpacked}"
    );
    let _ = std::fs::remove_dir_all(&rootfs);
}

#[test]
fn deploy_and_the_chart_name_the_image_make_image_builds() {
    let name_file = root().join("target/image/name");
    let name = std::fs::read_to_string(&name_file)
        .unwrap_or_else(|e| panic!("{}: {e}: run `make image` first (make test does)", name_file.display()));
    let name = name.trim();
    let deploy = std::fs::read_to_string(root().join("deploy/rollguard.yaml")).expect("deploy/rollguard.yaml");
    assert!(
        deploy.lines().any(|l| l.trim() == format!("image: {name}")),
        "deploy/rollguard.yaml does not run {name}"
    );
    let values: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root().join("charts/rollguard/values.yaml")).expect("values"))
            .expect("values.yaml");
    let chart: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root().join("charts/rollguard/Chart.yaml")).expect("Chart.yaml"))
            .expect("Chart.yaml");
    let repository = values["image"]["repository"].as_str().unwrap_or_default();
    let tag = match values["image"]["tag"].as_str() {
        Some("") | None => chart["appVersion"].as_str().unwrap_or_default(),
        Some(t) => t,
    };
    assert_eq!(format!("{repository}:{tag}"), name, "the chart's default image");
}

#[tokio::test]
async fn the_binary_of_the_image_run_as_its_user_reconciles_a_rollout() {
    use support::*;
    let layout = layout();
    let (manifest, _) = manifest_and_config(&layout);
    let rootfs = unpack(&layout, &manifest, "operator");
    // The image's files only (chroot), as its user, with a kubeconfig whose credentials are
    // inline: what a Pod would have, but for the ServiceAccount.
    let flat = Command::new(kubectl_path())
        .args(["config", "view", "--minify", "--flatten", "--raw", "--kubeconfig"])
        .arg(kubeconfig_path())
        .output()
        .expect("kubectl config view");
    assert!(flat.status.success(), "{}", String::from_utf8_lossy(&flat.stderr));
    std::fs::write(rootfs.join("tmp/kubeconfig"), &flat.stdout).expect("writing the kubeconfig");
    let cluster = cluster().await;
    let ns = TestNamespace::create(&cluster.client, "image").await;
    let apis = Apis::new(&cluster.client, &ns.name);
    let log = std::env::temp_dir().join(format!("rollguard-image-operator-{}.log", std::process::id()));
    let child = Command::new("/usr/sbin/chroot")
        .arg("--userspec=65532:65532")
        .arg(&rootfs)
        .args([
            "/usr/local/bin/rollguard",
            "run",
            "--namespace",
            &ns.name,
            "--resync-seconds",
            "2",
        ])
        .env_clear()
        .env("KUBECONFIG", "/tmp/kubeconfig")
        .env("RUST_LOG", "warn,rollguard=debug")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("the log file"))
        .spawn()
        .expect("running the image's binary under chroot");
    let _op = Operator { child, log };
    let md = apis.roll_out("chat", &["v1", "v2"], 1, serde_json::json!({})).await;
    assert_eq!(md.status.and_then(|s| s.stable_revision), Some(2));
    assert_eq!(apis.service_revision("chat").await, Some(2));
    let _ = std::fs::remove_dir_all(&rootfs);
}
