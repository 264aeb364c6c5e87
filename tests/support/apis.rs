//! ModelDeployments: the one builder, typed APIs of a test namespace and the waits on them.

use super::*;

/// The shared example ModelDeployment ([`ModelDeployment::example`]): blue/green `name`
/// serving `version` with `replicas` pods; `extra` is merged into the spec.
pub fn model_deployment(name: &str, version: &str, replicas: i32, extra: serde_json::Value) -> ModelDeployment {
    ModelDeployment::example(name, version, replicas, extra).expect("a valid ModelDeployment")
}

/// Typed APIs of one test namespace.
#[derive(Clone)]
pub struct Apis {
    pub md: Api<ModelDeployment>,
    pub deployments: Api<Deployment>,
    pub services: Api<Service>,
    pub revisions: Api<ControllerRevision>,
    pub client: Client,
    pub namespace: String,
    /// What the HTTPRoute `chat` routes to: the Services (default) or the InferencePools.
    pub backend: rollguard::traffic::BackendKind,
}

impl Apis {
    pub fn new(client: &Client, namespace: &str) -> Apis {
        Apis {
            md: Api::namespaced(client.clone(), namespace),
            deployments: Api::namespaced(client.clone(), namespace),
            services: Api::namespaced(client.clone(), namespace),
            revisions: Api::namespaced(client.clone(), namespace),
            client: client.clone(),
            namespace: namespace.to_string(),
            backend: rollguard::traffic::BackendKind::Service,
        }
    }

    /// The same APIs, for a ModelDeployment whose HTTPRoute routes to `backend`.
    pub fn routing_to(mut self, backend: rollguard::traffic::BackendKind) -> Apis {
        self.backend = backend;
        self
    }

    pub async fn create(&self, md: &ModelDeployment) -> ModelDeployment {
        self.md
            .create(&PostParams::default(), md)
            .await
            .expect("creating the ModelDeployment")
    }

    /// Creates the RollbackPolicy `name` with `spec`.
    pub async fn create_policy(&self, name: &str, spec: serde_json::Value) {
        let policy: rollguard::api::RollbackPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackPolicy",
            "metadata": {"name": name}, "spec": spec
        }))
        .expect("a valid RollbackPolicy");
        Api::<rollguard::api::RollbackPolicy>::namespaced(self.client.clone(), &self.namespace)
            .create(&PostParams::default(), &policy)
            .await
            .expect("creating the RollbackPolicy");
    }

    /// Creates the RollbackPolicy `gradual`: gradual rollbacks down `steps`, each held
    /// `step_duration`.
    pub async fn create_gradual_policy(&self, steps: &[i32], step_duration: &str) {
        let spec = serde_json::json!({"rollback": {"mode": "Gradual",
            "gradual": {"steps": steps, "stepDuration": step_duration}}});
        self.create_policy("gradual", spec).await;
    }

    /// Waits until a rollback to `to` has completed (by `trigger`, when given), and returns
    /// its record.
    pub async fn wait_rolled_back(
        &self,
        name: &str,
        to: i64,
        trigger: Option<rollguard::api::RollbackTrigger>,
    ) -> rollguard::api::RollbackRecord {
        let md = self
            .wait_md(
                name,
                &format!("rolled back to revision {to}"),
                Duration::from_secs(90),
                |md| {
                    md.status.as_ref().is_some_and(|s| {
                        s.stable_revision == Some(to)
                            && s.last_rollback.as_ref().is_some_and(|r| {
                                r.to_revision == to
                                    && r.completed_at.is_some()
                                    && trigger.is_none_or(|t| r.trigger == t)
                            })
                    })
                },
            )
            .await;
        md.status.and_then(|s| s.last_rollback).expect("lastRollback")
    }

    /// The step label `key` (canary or rollback step) on the Deployment `name`.
    pub async fn step_on(&self, name: &str, key: &str) -> Option<rollguard::plan::CanaryStepState> {
        let d = self.deployments.get(name).await.expect("reading the Deployment");
        step_label(&d, key)
    }

    /// Merge-patches the spec.
    pub async fn patch_spec(&self, name: &str, spec: serde_json::Value) {
        self.md
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": spec})),
            )
            .await
            .expect("patching spec");
    }

    /// Sets an annotation, as `kubectl annotate --overwrite` does.
    pub async fn annotate(&self, name: &str, key: &str, value: &str) {
        let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
        self.md
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect("annotating");
    }

    /// Creates `name` at `versions[0]` and rolls out each later version in turn, waiting
    /// until each is Healthy (revision i+1). Returns the last state.
    pub async fn roll_out(
        &self,
        name: &str,
        versions: &[&str],
        replicas: i32,
        extra: serde_json::Value,
    ) -> ModelDeployment {
        self.create(&model_deployment(name, versions[0], replicas, extra)).await;
        let mut md = self.wait_healthy(name, 1).await;
        for (i, v) in versions.iter().enumerate().skip(1) {
            self.patch_spec(name, serde_json::json!({"model": {"version": v}}))
                .await;
            md = self.wait_healthy(name, i as i64 + 1).await;
        }
        md
    }

    /// Waits until `pred` holds for the ModelDeployment, and returns it.
    pub async fn wait_md<F>(&self, name: &str, what: &str, timeout: Duration, pred: F) -> ModelDeployment
    where
        F: Fn(&ModelDeployment) -> bool,
    {
        // A watch (kube's await_condition) sees every state the object passes through.
        let holds = |md: Option<&ModelDeployment>| md.is_some_and(&pred);
        let seen = tokio::time::timeout(
            timeout,
            kube::runtime::wait::await_condition(self.md.clone(), name, holds),
        )
        .await;
        match seen {
            Ok(Ok(Some(md))) => md,
            Ok(Ok(None)) => panic!("{name} is gone while waiting for: {what}"),
            Ok(Err(e)) => panic!("watching {name} failed while waiting for {what}: {e}"),
            Err(_) => {
                let status = self
                    .md
                    .get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|m| m.status)
                    .map(|s| serde_json::to_string_pretty(&s).unwrap_or_default());
                panic!("timed out after {timeout:?} waiting for {name}: {what}; last status: {status:?}");
            }
        }
    }

    /// Waits until the Deployment `name` runs `replicas` pods, all available (a warm revision).
    pub async fn wait_warm(&self, name: &str, replicas: i32) {
        let warm = wait_object(&self.deployments, name, Duration::from_secs(60), |d| {
            let available = d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
            available >= replicas && d.spec.replicas == Some(replicas)
        })
        .await;
        assert!(warm.is_some(), "{name} is not warm ({replicas} available replicas)");
    }

    /// Waits until the operator removed the annotation `key`.
    pub async fn wait_consumed(&self, name: &str, key: &str) -> ModelDeployment {
        self.wait_md(
            name,
            &format!("annotation {key} consumed"),
            Duration::from_secs(60),
            |md| !md.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(key)),
        )
        .await
    }

    /// Waits until the stable revision is `rev` and the phase is Healthy.
    pub async fn wait_healthy(&self, name: &str, rev: i64) -> ModelDeployment {
        self.wait_md(
            name,
            &format!("Healthy on revision {rev}"),
            Duration::from_secs(60),
            |md| {
                md.status
                    .as_ref()
                    .is_some_and(|s| s.stable_revision == Some(rev) && s.phase == Some(rollguard::api::Phase::Healthy))
            },
        )
        .await
    }

    /// The revision the Service selects.
    pub async fn service_revision(&self, service: &str) -> Option<i64> {
        let svc = self.services.get_opt(service).await.expect("reading Service")?;
        svc.spec?.selector?.get("rollguard.dev/revision")?.parse().ok()
    }

    /// Runs `act` and returns how long after it started the Service `service` selected
    /// `revision` (seen through a watch opened before `act`); panics after 30 s.
    pub async fn time_until_selects<F: std::future::Future<Output = ()>>(
        &self,
        service: &str,
        revision: i64,
        act: F,
    ) -> Duration {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, watcher};
        let watch = watcher(
            self.services.clone(),
            watcher::Config::default().fields(&format!("metadata.name={service}")),
        )
        .applied_objects()
        .boxed();
        let mut watch = watch.peekable();
        // The first event is the current state; wait for it so the watch is established.
        let _ = std::pin::Pin::new(&mut watch).peek().await;
        let wanted = revision.to_string();
        let start = std::time::Instant::now();
        act.await;
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(Ok(svc)) = watch.next().await {
                let selected = svc
                    .spec
                    .and_then(|s| s.selector)
                    .and_then(|s| s.get("rollguard.dev/revision").cloned());
                if selected.as_deref() == Some(wanted.as_str()) {
                    return Some(start.elapsed());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("the Service {service} did not select revision {revision} within 30s"))
    }

    /// `spec.replicas` of a Deployment, None when it does not exist.
    pub async fn deployment_replicas(&self, name: &str) -> Option<i32> {
        let d = self.deployments.get_opt(name).await.expect("reading Deployment")?;
        d.spec.replicas
    }

    /// The Events about a ModelDeployment with the given reason (Normal and Warning).
    pub async fn events(&self, name: &str, reason: &str) -> Vec<k8s_openapi::api::events::v1::Event> {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), &self.namespace);
        api.list(&Default::default())
            .await
            .expect("listing Events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect()
    }

    /// Waits up to 60 s for an Event `reason` about `name`, of type `type_` (any when None).
    pub async fn wait_event(
        &self,
        name: &str,
        reason: &str,
        type_: Option<&str>,
    ) -> Option<k8s_openapi::api::events::v1::Event> {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let wanted = |e: &k8s_openapi::api::events::v1::Event| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.reason.as_deref() == Some(reason)
                && (type_.is_none() || e.type_.as_deref() == type_)
        };
        let seen = wait_list(&api, Default::default(), Duration::from_secs(60), |events| {
            events.iter().any(|e| wanted(e))
        })
        .await?;
        seen.iter().find(|e| wanted(e)).map(|e| e.as_ref().clone())
    }
}

/// The condition `type_` of a ModelDeployment: (status, reason, message).
pub fn condition(md: &ModelDeployment, type_: &str) -> Option<(String, String, String)> {
    md.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// When a step started, as a system time (to compare with `SystemTime::now()`).
pub fn started(step: &rollguard::plan::CanaryStepState) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(step.started_at.as_millisecond()).unwrap_or(0))
}

/// Whether the ModelDeployment still carries the annotation `key`.
pub fn has_annotation(md: &ModelDeployment, key: &str) -> bool {
    md.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(key))
}

/// The step label `key` (canary or rollback step) on the Deployment `d`.
pub fn step_label(d: &Deployment, key: &str) -> Option<rollguard::plan::CanaryStepState> {
    rollguard::plan::CanaryStepState::from_label(d.metadata.labels.as_ref()?.get(key)?)
}
