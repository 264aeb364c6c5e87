//! Revision identity and history bookkeeping. Pure: no client.
//!
//! A revision is one distinct (model, template, port) of a ModelDeployment. Its identity is
//! [`revision_hash`]; its number is assigned once, in order, and never reused.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::{ModelDeploymentSpec, ModelSpec, RevisionPhase, RevisionRecord};

/// Everything a revision is made of: enough to rebuild its Deployment after it was pruned.
/// Stored as the `data` of the revision's ControllerRevision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The model.
    pub model: ModelSpec,
    /// The user's pod template, as written.
    pub template: PodTemplateSpec,
    /// The server port.
    pub port: i32,
}

impl Snapshot {
    /// The snapshot of what a spec asks for.
    pub fn of(spec: &ModelDeploymentSpec) -> Snapshot {
        Snapshot {
            model: spec.model.clone(),
            template: spec.template.clone(),
            port: spec.port,
        }
    }

    /// Its hash; see [`revision_hash`].
    pub fn hash(&self) -> String {
        revision_hash(&self.model, &self.template, self.port)
    }
}

/// The identity of a revision: the first 16 hex digits of the SHA-256 of the canonical JSON
/// of `{"model": ..., "port": ..., "template": ...}`.
///
/// Canonical JSON: object keys sorted by their UTF-8 bytes at every level, no whitespace,
/// absent optional fields left out (never `null`), numbers as serde_json writes them. The
/// function is pinned by test vectors and must never change: a new hash for the same spec
/// would roll every ModelDeployment out again.
///
/// ```
/// use rollguard::api::ModelSpec;
/// use rollguard::revision::revision_hash;
/// let model = ModelSpec { name: "m".into(), version: "1".into(), uri: None };
/// let a = revision_hash(&model, &Default::default(), 8000);
/// assert_eq!(a.len(), 16);
/// assert_ne!(a, revision_hash(&model, &Default::default(), 8001));
/// ```
pub fn revision_hash(model: &ModelSpec, template: &PodTemplateSpec, port: i32) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert("model".into(), serde_json::to_value(model).unwrap_or(Value::Null));
    obj.insert("port".into(), Value::from(port));
    obj.insert("template".into(), serde_json::to_value(template).unwrap_or(Value::Null));
    let canonical = canonical_json(&Value::Object(obj));
    let digest = Sha256::digest(canonical.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Canonical JSON text of a value: keys sorted at every level, no whitespace, nulls in
/// objects dropped.
///
/// ```
/// use rollguard::revision::canonical_json;
/// let v = serde_json::json!({"b": 1, "a": {"d": [true, null], "c": null}});
/// assert_eq!(canonical_json(&v), r#"{"a":{"d":[true,null]},"b":1}"#);
/// ```
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().filter(|(_, v)| !v.is_null()).collect();
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The number for a new revision: one more than every number ever seen (in status history
/// and in the cluster), so numbers increase monotonically and are never reused.
///
/// ```
/// use rollguard::revision::next_revision_number;
/// assert_eq!(next_revision_number([]), 1);
/// assert_eq!(next_revision_number([3, 1, 7]), 8);
/// ```
pub fn next_revision_number(known: impl IntoIterator<Item = i64>) -> i64 {
    known.into_iter().max().unwrap_or(0).max(0) + 1
}

/// Whether a revision in this phase may be restored by `rollback-to=previous`.
pub fn restorable(phase: RevisionPhase) -> bool {
    matches!(
        phase,
        RevisionPhase::Stable | RevisionPhase::Superseded | RevisionPhase::Progressing
    )
}

/// Which revisions to keep: the `live` ones always, then the newest others up to `limit`
/// entries in all. Returns (kept, pruned), both newest first.
///
/// ```
/// use rollguard::revision::retain;
/// // Limit 3, revisions 1..=6, stable 2 is live: keep 6, 5, 2; prune 4, 3, 1.
/// let (kept, pruned) = retain(&[6, 5, 4, 3, 2, 1], &[2], 3);
/// assert_eq!(kept, vec![6, 5, 2]);
/// assert_eq!(pruned, vec![4, 3, 1]);
/// ```
pub fn retain(revisions_newest_first: &[i64], live: &[i64], limit: usize) -> (Vec<i64>, Vec<i64>) {
    let live_count = revisions_newest_first.iter().filter(|r| live.contains(r)).count();
    let mut room = limit.saturating_sub(live_count);
    let mut kept = Vec::new();
    let mut pruned = Vec::new();
    for &r in revisions_newest_first {
        if live.contains(&r) {
            kept.push(r);
        } else if room > 0 {
            room -= 1;
            kept.push(r);
        } else {
            pruned.push(r);
        }
    }
    (kept, pruned)
}

/// The history entry of `revision`, if any.
pub fn find(history: &[RevisionRecord], revision: i64) -> Option<&RevisionRecord> {
    history.iter().find(|r| r.revision == revision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn model(version: &str) -> ModelSpec {
        ModelSpec {
            name: "llama-3.1-8b-instruct".into(),
            version: version.into(),
            uri: Some("hf://meta-llama/Llama-3.1-8B-Instruct".into()),
        }
    }

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "chat"}},
            "spec": {"containers": [{"name": "vllm", "image": image,
                                      "resources": {"limits": {"nvidia.com/gpu": 1}}}]}
        }))
        .expect("valid template")
    }

    /// Pinned vectors: these values must never change (see `revision_hash`). They were
    /// cross-checked with an independent implementation: Python's
    /// `hashlib.sha256(json.dumps(o, sort_keys=True, separators=(",", ":")))`.
    #[test]
    fn hash_is_pinned_by_vectors() {
        assert_eq!(
            canonical_json(&serde_json::json!({"model": {"name": "m", "version": "1"}, "port": 8000, "template": {}})),
            r#"{"model":{"name":"m","version":"1"},"port":8000,"template":{}}"#
        );
        let empty = ModelSpec {
            name: "m".into(),
            version: "1".into(),
            uri: None,
        };
        assert_eq!(
            revision_hash(&empty, &PodTemplateSpec::default(), 8000),
            "7d82045e34a1b891"
        );
        assert_eq!(
            revision_hash(&model("2026-11-01"), &template("vllm/vllm-openai:v0.11.0"), 8000),
            "85850eea52437cf2"
        );
        assert_eq!(
            revision_hash(&model("2026-11-20"), &template("vllm/vllm-openai:v0.11.0"), 8000),
            "146c6610d90585a1"
        );
    }

    #[test]
    fn hash_ignores_key_order_of_the_input() {
        let a: PodTemplateSpec = serde_json::from_str(
            r#"{"spec":{"containers":[{"name":"s","image":"i"}]},"metadata":{"labels":{"b":"2","a":"1"}}}"#,
        )
        .expect("json");
        let b: PodTemplateSpec = serde_json::from_str(
            r#"{"metadata":{"labels":{"a":"1","b":"2"}},"spec":{"containers":[{"image":"i","name":"s"}]}}"#,
        )
        .expect("json");
        let m = model("1");
        assert_eq!(revision_hash(&m, &a, 8000), revision_hash(&m, &b, 8000));
    }

    #[test]
    fn every_part_changes_the_hash() {
        let base = revision_hash(&model("1"), &template("a"), 8000);
        assert_ne!(base, revision_hash(&model("2"), &template("a"), 8000));
        assert_ne!(base, revision_hash(&model("1"), &template("b"), 8000));
        assert_ne!(base, revision_hash(&model("1"), &template("a"), 8001));
    }

    proptest! {
        #[test]
        fn canonical_json_round_trips_and_is_key_order_free(entries in proptest::collection::btree_map("[a-z]{1,6}", any::<i64>(), 0..8)) {
            let forward: serde_json::Map<String, Value> = entries.iter().map(|(k, v)| (k.clone(), Value::from(*v))).collect();
            let text = canonical_json(&Value::Object(forward.clone()));
            let parsed: Value = serde_json::from_str(&text).expect("canonical JSON parses");
            prop_assert_eq!(parsed, Value::Object(forward));
        }

        #[test]
        fn next_number_is_above_every_known(known in proptest::collection::vec(0i64..1_000_000, 0..20)) {
            let n = next_revision_number(known.clone());
            prop_assert!(known.iter().all(|k| n > *k));
            prop_assert!(n >= 1);
        }

        #[test]
        fn retain_keeps_live_and_bounds_the_rest(n in 1i64..30, limit in 1usize..10, live in proptest::collection::vec(1i64..30, 0..3)) {
            let revisions: Vec<i64> = (1..=n).rev().collect();
            let (kept, pruned) = retain(&revisions, &live, limit);
            prop_assert_eq!(kept.len() + pruned.len(), revisions.len());
            for r in &live {
                if revisions.contains(r) { prop_assert!(kept.contains(r)); }
            }
            let live_present = revisions.iter().filter(|r| live.contains(r)).count();
            prop_assert!(kept.len() <= limit.max(live_present));
            // What is pruned is never newer than a kept non-live revision.
            let oldest_kept_other = kept.iter().filter(|r| !live.contains(r)).min().copied();
            if let Some(oldest) = oldest_kept_other {
                prop_assert!(pruned.iter().all(|p| *p < oldest));
            }
        }
    }
}
