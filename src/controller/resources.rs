//! Builders of the objects rollguard owns. Pure: the same input gives the same object, so
//! server-side apply of the result is a no-op when nothing changed.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{EnvVar, PodTemplateSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::{labels, owned_annotations};
use crate::plan::{DesiredDeployment, ServiceTarget, time_to_label};
use crate::revision::Snapshot;
use crate::traffic::inference_pool::{InferencePool, InferencePoolSpec, PoolSelector, TargetPort};

/// Identity of the owning ModelDeployment.
#[derive(Clone, Debug)]
pub struct Owner {
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The owner reference children carry (controller, blockOwnerDeletion).
    pub reference: OwnerReference,
}

/// `<name>-r<N>`.
pub fn revision_object_name(name: &str, revision: i64) -> String {
    crate::plan::deployment_name(name, revision)
}

/// The selector labels of a revision's pods.
fn revision_labels(name: &str, revision: i64) -> BTreeMap<String, String> {
    [
        (labels::MODEL_DEPLOYMENT.to_string(), name.to_string()),
        (labels::REVISION.to_string(), revision.to_string()),
    ]
    .into()
}

fn meta(owner: &Owner, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(owner.namespace.clone()),
        labels: Some(labels),
        owner_references: Some(vec![owner.reference.clone()]),
        ..Default::default()
    }
}

/// The ControllerRevision that holds a revision's full snapshot.
pub fn controller_revision(owner: &Owner, revision: i64, snapshot: &Snapshot) -> ControllerRevision {
    let mut labels = revision_labels(&owner.name, revision);
    labels.insert(labels::VERSION.to_string(), snapshot.model.version.clone());
    let mut metadata = meta(owner, revision_object_name(&owner.name, revision), labels);
    metadata.annotations = Some([(owned_annotations::HASH.to_string(), snapshot.hash())].into());
    ControllerRevision {
        metadata,
        revision: Some(revision),
        data: RawExtension(serde_json::to_value(snapshot).unwrap_or_default()),
    }
}

/// The Deployment `<name>-r<N>` of a revision: the user's pod template with the revision
/// labels and the `MODEL_*` env vars added to every container.
pub fn deployment(owner: &Owner, revision: i64, snapshot: &Snapshot, desired: &DesiredDeployment) -> Deployment {
    let selector = revision_labels(&owner.name, revision);
    let template = pod_template(&owner.name, revision, snapshot);
    // Rollout state goes in labels: an annotation change would move the generation on.
    let mut state = BTreeMap::new();
    if let Some(t) = desired.progress_started_at {
        state.insert(labels::PROGRESS_STARTED_AT.to_string(), time_to_label(t));
    }
    if let Some(step) = desired.canary_step {
        state.insert(labels::CANARY_STEP.to_string(), step.to_label());
    }
    if let Some(step) = desired.rollback_step {
        state.insert(labels::ROLLBACK_STEP.to_string(), step.to_label());
    }
    let mut metadata = meta(owner, revision_object_name(&owner.name, revision), selector.clone());
    metadata.labels.get_or_insert_with(Default::default).extend(state);
    metadata.annotations = Some([(owned_annotations::HASH.to_string(), snapshot.hash())].into());
    Deployment {
        metadata,
        spec: DeploymentSpec {
            replicas: Some(desired.replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            template,
            ..Default::default()
        },
        status: None,
    }
}

/// The pod template of revision `revision` of the ModelDeployment `name`: the user's
/// template with the revision's labels and the model's environment variables.
pub fn pod_template(name: &str, revision: i64, snapshot: &Snapshot) -> PodTemplateSpec {
    let selector = revision_labels(name, revision);
    let mut template = snapshot.template.clone();
    let template_meta = template.metadata.get_or_insert_with(Default::default);
    template_meta
        .labels
        .get_or_insert_with(Default::default)
        .extend(selector);
    let model_env = [
        ("MODEL_NAME", Some(snapshot.model.name.clone())),
        ("MODEL_VERSION", Some(snapshot.model.version.clone())),
        ("MODEL_URI", Some(snapshot.model.uri.clone().unwrap_or_default())),
    ];
    if let Some(pod) = template.spec.as_mut() {
        for container in &mut pod.containers {
            let env = container.env.get_or_insert_with(Vec::new);
            env.retain(|e| !model_env.iter().any(|(k, _)| e.name == *k));
            env.extend(model_env.iter().map(|(k, v)| EnvVar {
                name: k.to_string(),
                value: v.clone(),
                ..Default::default()
            }));
        }
    }
    template
}

/// Where `observed` does not hold a field of `desired` with the same value (objects by key,
/// lists element by element): each such place as a JSON pointer, with what `observed` has
/// there (null when it has nothing). Fields the API server defaulted, or someone else added,
/// are not a difference; a value of rollguard's that someone changed is.
///
/// ```
/// use rollguard::controller::resources::differences;
/// use serde_json::json;
/// let desired = json!({"containers": [{"name": "vllm", "image": "vllm:v1"}]});
/// let defaulted = json!({"containers": [{"name": "vllm", "image": "vllm:v1", "imagePullPolicy": "IfNotPresent"}]});
/// assert!(differences(&defaulted, &desired).is_empty());
/// let edited = json!({"containers": [{"name": "vllm", "image": "vllm:v2"}]});
/// assert_eq!(differences(&edited, &desired), vec![("/containers/0/image".to_string(), json!("vllm:v2"))]);
/// assert_eq!(differences(&json!({"containers": []}), &desired).len(), 1);
/// ```
pub fn differences(observed: &serde_json::Value, desired: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    fn walk(
        observed: &serde_json::Value,
        desired: &serde_json::Value,
        path: &mut String,
        out: &mut Vec<(String, serde_json::Value)>,
    ) {
        use serde_json::Value;
        let len = path.len();
        match (observed, desired) {
            (Value::Object(o), Value::Object(d)) => {
                for (k, v) in d {
                    path.push('/');
                    path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    match o.get(k) {
                        Some(ov) => walk(ov, v, path, out),
                        None if v.is_null() => {}
                        None => out.push((path.clone(), Value::Null)),
                    }
                    path.truncate(len);
                }
            }
            (Value::Array(o), Value::Array(d)) if o.len() == d.len() => {
                for (i, (ov, dv)) in o.iter().zip(d).enumerate() {
                    path.push('/');
                    path.push_str(&i.to_string());
                    walk(ov, dv, path, out);
                    path.truncate(len);
                }
            }
            (o, d) if o == d => {}
            (o, _) => out.push((path.clone(), o.clone())),
        }
    }
    let mut out = Vec::new();
    walk(observed, desired, &mut String::new(), &mut out);
    out
}

/// The Service `service_name` selecting `target`'s pods on its port.
pub fn service(owner: &Owner, service_name: &str, target: ServiceTarget) -> Service {
    let labels = BTreeMap::from([(labels::MODEL_DEPLOYMENT.to_string(), owner.name.clone())]);
    Service {
        metadata: meta(owner, service_name.to_string(), labels),
        spec: Some(ServiceSpec {
            selector: Some(revision_labels(&owner.name, target.revision)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: target.port,
                target_port: Some(IntOrString::Int(target.port)),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The InferencePool `pool_name` selecting `target`'s pods on its port, with the Endpoint
/// Picker `picker`. Same name, labels and selector as the Service of the same role.
pub fn inference_pool(
    owner: &Owner,
    pool_name: &str,
    target: ServiceTarget,
    picker: &crate::api::EndpointPickerRef,
) -> InferencePool {
    let labels = BTreeMap::from([(labels::MODEL_DEPLOYMENT.to_string(), owner.name.clone())]);
    let mut pool = InferencePool::new(
        pool_name,
        InferencePoolSpec {
            selector: PoolSelector {
                match_labels: revision_labels(&owner.name, target.revision),
            },
            target_ports: vec![TargetPort { number: target.port }],
            endpoint_picker_ref: Some(picker.clone()),
        },
    );
    pool.metadata = meta(owner, pool_name.to_string(), labels);
    pool
}

/// The revision an InferencePool of the ModelDeployment `name` selects, when it selects one.
pub fn pool_revision(name: &str, pool: &InferencePool) -> Option<i64> {
    let labels = &pool.spec.selector.match_labels;
    if labels.get(labels::MODEL_DEPLOYMENT).map(String::as_str) != Some(name) {
        return None;
    }
    labels.get(labels::REVISION)?.parse().ok()
}

/// The stable Service name: `<name>`.
pub fn stable_service_name(name: &str) -> String {
    name.to_string()
}

/// The preview/canary Service name: `<name>-canary`.
pub fn canary_service_name(name: &str) -> String {
    format!("{name}-canary")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ModelSpec;

    fn owner() -> Owner {
        Owner {
            name: "chat".into(),
            namespace: "llm".into(),
            reference: OwnerReference {
                api_version: "rollguard.dev/v1alpha1".into(),
                kind: "ModelDeployment".into(),
                name: "chat".into(),
                uid: "u1".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            model: ModelSpec { name: "llama".into(), version: "v2".into(), uri: Some("hf://a/b".into()) },
            template: serde_json::from_value(serde_json::json!({
                "metadata": {"labels": {"app": "chat"}},
                "spec": {"containers": [{"name": "s", "image": "i", "env": [{"name": "MODEL_NAME", "value": "stale"}, {"name": "X", "value": "1"}]}]}
            }))
            .expect("template"),
            port: 8000,
        }
    }

    #[test]
    fn deployment_carries_labels_env_and_owner() {
        let desired = DesiredDeployment {
            replicas: 2,
            create: true,
            progress_started_at: None,
            canary_step: None,
            rollback_step: None,
        };
        let d = deployment(&owner(), 3, &snapshot(), &desired);
        assert_eq!(d.metadata.name.as_deref(), Some("chat-r3"));
        let spec = d.spec;
        assert_eq!(spec.replicas, Some(2));
        let pod_labels = spec.template.metadata.and_then(|m| m.labels).expect("labels");
        assert_eq!(pod_labels.get("app").map(String::as_str), Some("chat"));
        assert_eq!(pod_labels.get(labels::REVISION).map(String::as_str), Some("3"));
        assert_eq!(
            pod_labels.get(labels::MODEL_DEPLOYMENT).map(String::as_str),
            Some("chat")
        );
        let env = spec.template.spec.expect("pod").containers[0].env.clone().expect("env");
        let get = |k: &str| {
            env.iter()
                .filter(|e| e.name == k)
                .map(|e| e.value.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("MODEL_NAME"), vec![Some("llama".to_string())]);
        assert_eq!(get("MODEL_VERSION"), vec![Some("v2".to_string())]);
        assert_eq!(get("MODEL_URI"), vec![Some("hf://a/b".to_string())]);
        assert_eq!(get("X"), vec![Some("1".to_string())]);
        assert_eq!(d.metadata.owner_references.expect("owner")[0].uid, "u1");
    }

    #[test]
    fn controller_revision_is_listable_by_version_and_restores_the_snapshot() {
        let cr = controller_revision(&owner(), 3, &snapshot());
        assert_eq!(
            cr.metadata
                .labels
                .expect("labels")
                .get(labels::VERSION)
                .map(String::as_str),
            Some("v2")
        );
        let back: Snapshot = serde_json::from_value(cr.data.0).expect("snapshot");
        assert_eq!(back, snapshot());
    }
}
