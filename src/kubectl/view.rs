//! `kubectl rollguard get` and `history`: what a ModelDeployment's status says, laid out
//! for a person (text) or a script (`-o json|yaml`, the [`Summary`] as it is).

use jiff::Timestamp;
use serde::Serialize;

use super::{ago, number, table};
use crate::api::{ModelDeployment, Phase, RevisionRecord, RollbackPolicy, RollbackRecord, TriggerVerdict};

/// One revision with its share of traffic.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Served {
    /// The revision number.
    pub revision: i64,
    /// Its `model.version`.
    pub version: String,
    /// Percent of traffic it gets.
    pub weight: i32,
}

/// Where the canary is in its steps.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepView {
    /// 1-based: step 2 of 5.
    pub number: i32,
    /// How many steps there are.
    pub of: i32,
    /// The step in words: `setWeight 50`, `pause 30s`, `pause (until promoted)`.
    pub step: String,
}

/// One trigger's latest evaluation, with the threshold it is held to.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerView {
    /// The trigger's name.
    pub trigger: String,
    /// The revision it judged.
    pub revision: i64,
    /// The value; absent without data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// `> 0.05`: the comparison that breaches, from the RollbackPolicy (absent when it
    /// could not be read or no longer names the trigger).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaches_when: Option<String>,
    /// The verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<TriggerVerdict>,
    /// Breaches in a row.
    pub consecutive_breaches: i32,
    /// Breaches in a row that fire it, from the RollbackPolicy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive: Option<i32>,
    /// The value in words, or why there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it was evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluated_at: Option<Timestamp>,
}

/// A revision in the `get` view and `history`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionView {
    /// The revision's record from status.
    #[serde(flatten)]
    pub record: RevisionRecord,
    /// `stable`, `canary`, `stable,spec` ...: what the revision is to the ModelDeployment now.
    pub role: Vec<&'static str>,
}

/// Everything `get` shows.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The ModelDeployment.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// `metadata.generation`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// `status.observedGeneration`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The phase; absent before the operator has written a status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The status message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `canary` or `blueGreen`.
    pub strategy: &'static str,
    /// The traffic-split object: `HTTPRoute/chat`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The RollbackPolicy's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The revision that serves (most) traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stable: Option<Served>,
    /// The revision being rolled out, while there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<Served>,
    /// The canary step, while one runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<StepView>,
    /// The triggers' latest evaluations.
    pub analysis: Vec<TriggerView>,
    /// The latest rollback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_rollback: Option<RollbackRecord>,
    /// The warm revisions kept for instant rollbacks and their pods.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm: Option<crate::api::WarmStatus>,
    /// Revisions, newest first.
    pub revisions: Vec<RevisionView>,
}

impl Summary {
    /// The view of `md`; `policy` is its RollbackPolicy when it could be read.
    pub fn new(md: &ModelDeployment, policy: Option<&RollbackPolicy>) -> Summary {
        let status = md.status.clone().unwrap_or_default();
        let version = |rev: i64| {
            status
                .history
                .iter()
                .find(|h| h.revision == rev)
                .map(|h| h.version.clone())
                .unwrap_or_default()
        };
        let canary_weight = status.canary_revision.map(|_| status.canary_weight.unwrap_or(0));
        let stable = status.stable_revision.map(|revision| Served {
            revision,
            version: version(revision),
            weight: 100 - canary_weight.unwrap_or(0),
        });
        let canary = status.canary_revision.map(|revision| Served {
            revision,
            version: version(revision),
            weight: canary_weight.unwrap_or(0),
        });
        let steps = md.spec.strategy.canary_steps();
        let step = match (status.canary_revision, status.current_step_index) {
            (Some(_), Some(i)) if i >= 0 && (i as usize) < steps.len() => Some(StepView {
                number: i + 1,
                of: steps.len() as i32,
                step: step_words(&steps[i as usize]),
            }),
            _ => None,
        };
        let triggers = policy.map(|p| p.spec.triggers.as_slice()).unwrap_or_default();
        let analysis = status
            .analysis
            .iter()
            .map(|a| {
                let t = triggers.iter().find(|t| t.name == a.trigger);
                TriggerView {
                    trigger: a.trigger.clone(),
                    revision: a.revision,
                    value: a.value,
                    breaches_when: t.map(|t| format!("{} {}", t.operator.symbol(), number(t.threshold))),
                    verdict: a.verdict,
                    consecutive_breaches: a.consecutive_breaches,
                    consecutive: t.map(|t| t.consecutive),
                    message: a.message.clone(),
                    evaluated_at: a.last_evaluated_at.as_ref().map(|t| t.0),
                }
            })
            .collect();
        let revisions = status
            .history
            .iter()
            .map(|h| RevisionView {
                record: h.clone(),
                role: roles(h.revision, &status),
            })
            .collect();
        let route = md.spec.traffic_routing.as_ref().and_then(|r| {
            r.gateway_api
                .as_ref()
                .map(|g| format!("HTTPRoute/{}", g.http_route))
                .or_else(|| r.smi.as_ref().map(|s| format!("TrafficSplit/{}", s.traffic_split)))
                .or_else(|| {
                    r.istio
                        .as_ref()
                        .map(|i| format!("VirtualService/{}", i.virtual_service))
                })
        });
        Summary {
            name: md.metadata.name.clone().unwrap_or_default(),
            namespace: md.metadata.namespace.clone().unwrap_or_default(),
            generation: md.metadata.generation,
            observed_generation: status.observed_generation,
            phase: status.phase,
            message: status.message.clone(),
            strategy: if md.spec.strategy.canary.is_some() {
                "canary"
            } else {
                "blueGreen"
            },
            route,
            policy: md.spec.rollback_policy_ref.as_ref().map(|r| r.name.clone()),
            stable,
            canary,
            step,
            analysis,
            last_rollback: status.last_rollback.clone(),
            warm: status.warm.clone(),
            revisions,
        }
    }

    /// The text view; `waiting_for` is the line [`super::explain`] gives, `now` ages times.
    pub fn render(&self, waiting_for: Option<&str>, now: Timestamp) -> String {
        let mut out = String::new();
        let mut field = |k: &str, v: &str| out.push_str(&format!("{:<15}{v}\n", format!("{k}:")));
        field("Name", &self.name);
        field("Namespace", &self.namespace);
        let phase = self.phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "-".into());
        let seen = match (self.generation, self.observed_generation) {
            (Some(g), Some(o)) if o >= g => String::new(),
            (Some(g), o) => format!(
                "  (generation {g} not observed yet: status is of {})",
                o.map(|o| o.to_string()).unwrap_or_else(|| "none".into())
            ),
            _ => String::new(),
        };
        field("Phase", &format!("{phase}{seen}"));
        field("Message", self.message.as_deref().unwrap_or("-"));
        let strategy = match (&self.route, self.strategy) {
            (Some(route), s) => format!("{s}, traffic on {route}"),
            (None, s) => format!("{s}, no traffic-split object (Service selector switch)"),
        };
        field("Strategy", &strategy);
        field("Policy", self.policy.as_deref().unwrap_or("-"));
        let served = |s: &Served| format!("revision {} ({}) {}%", s.revision, s.version, s.weight);
        let traffic = match (&self.stable, &self.canary) {
            (Some(s), Some(c)) => format!("stable {}, canary {}", served(s), served(c)),
            (Some(s), None) => format!("stable {}", served(s)),
            (None, Some(c)) => format!("canary {}", served(c)),
            (None, None) => "-".into(),
        };
        field("Traffic", &traffic);
        if let Some(w) = &self.warm {
            let revisions: Vec<String> = w.revisions.iter().map(|r| r.to_string()).collect();
            field(
                "Warm",
                &format!("revision {} ({} pods kept warm)", revisions.join(", "), w.replicas),
            );
        }
        if let Some(step) = &self.step {
            field("Step", &format!("{} of {}: {}", step.number, step.of, step.step));
        }
        if let Some(w) = waiting_for {
            field("Waiting for", w);
        }
        if let Some(r) = &self.last_rollback {
            field("Last rollback", &rollback_words(r, now));
        }
        if !self.analysis.is_empty() {
            out.push_str("\nAnalysis:\n");
            let rows: Vec<Vec<String>> = self
                .analysis
                .iter()
                .map(|a| {
                    vec![
                        a.trigger.clone(),
                        a.revision.to_string(),
                        a.value.map(number).unwrap_or_else(|| "-".into()),
                        a.breaches_when.clone().unwrap_or_else(|| "-".into()),
                        a.verdict.map(|v| format!("{v:?}")).unwrap_or_else(|| "-".into()),
                        match a.consecutive {
                            Some(n) => format!("{}/{n}", a.consecutive_breaches),
                            None => a.consecutive_breaches.to_string(),
                        },
                        ago(a.evaluated_at, now),
                    ]
                })
                .collect();
            out.push_str(&indent(&table(
                &[
                    "TRIGGER",
                    "REVISION",
                    "VALUE",
                    "BREACHES WHEN",
                    "VERDICT",
                    "IN A ROW",
                    "EVALUATED",
                ],
                &rows,
            )));
        }
        out.push_str("\nRevisions:\n");
        out.push_str(&indent(&history_table(&self.revisions, now)));
        out
    }
}

/// The `history` table: revisions newest first with their role, phase and times.
pub fn history_table(revisions: &[RevisionView], now: Timestamp) -> String {
    let rows: Vec<Vec<String>> = revisions
        .iter()
        .map(|r| {
            let h = &r.record;
            vec![
                h.revision.to_string(),
                h.version.clone(),
                format!("{:?}", h.phase),
                if r.role.is_empty() {
                    "-".into()
                } else {
                    r.role.join(",")
                },
                ago(h.created_at.as_ref().map(|t| t.0), now),
                ago(h.promoted_at.as_ref().map(|t| t.0), now),
                ago(h.rolled_back_at.as_ref().map(|t| t.0), now),
                h.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "REVISION",
            "VERSION",
            "PHASE",
            "ROLE",
            "CREATED",
            "PROMOTED",
            "ROLLED BACK",
            "REASON",
        ],
        &rows,
    )
}

/// The revisions of `md`'s history with their roles, for `history`.
pub fn revisions(md: &ModelDeployment) -> Vec<RevisionView> {
    Summary::new(md, None).revisions
}

/// `stable`, `canary` and `spec` (the revision the spec asks for) as they apply to `rev`.
fn roles(rev: i64, status: &crate::api::ModelDeploymentStatus) -> Vec<&'static str> {
    let mut out = Vec::new();
    if status.stable_revision == Some(rev) {
        out.push("stable");
    }
    if status.canary_revision == Some(rev) {
        out.push("canary");
    }
    if status.current_revision == Some(rev) {
        out.push("spec");
    }
    out
}

/// A canary step in words.
pub fn step_words(step: &crate::api::CanaryStep) -> String {
    match (&step.set_weight, &step.pause) {
        (Some(w), _) => format!("setWeight {w}"),
        (None, Some(p)) => match &p.duration {
            Some(d) => format!("pause {d}"),
            None => "pause (until promoted)".into(),
        },
        (None, None) => match &step.set_canary_scale {
            Some(crate::api::CanaryScale { replicas: Some(n), .. }) => format!("setCanaryScale {n} replicas"),
            Some(_) => "setCanaryScale matchTrafficWeight".into(),
            None => "(empty step)".into(),
        },
    }
}

/// A rollback record in one line: `revision 2 → 1, Metric error-rate (0.31 > 0.05), Gradual,
/// started 2m ago, completed 1m ago, verification Passed`.
pub fn rollback_words(r: &RollbackRecord, now: Timestamp) -> String {
    let mut out = format!("revision {} -> {}, {:?}", r.from_revision, r.to_revision, r.trigger);
    if let Some(name) = &r.trigger_name {
        out.push_str(&format!(" {name}"));
    }
    match (r.value, r.threshold) {
        (Some(v), Some(t)) => out.push_str(&format!(" (value {}, threshold {})", number(v), number(t))),
        (Some(v), None) => out.push_str(&format!(" (value {})", number(v))),
        _ => {}
    }
    out.push_str(&format!(", {:?}", r.mode));
    if let Some(t) = &r.started_at {
        out.push_str(&format!(", started {} ago", ago(Some(t.0), now)));
    }
    match &r.completed_at {
        Some(t) => out.push_str(&format!(", completed {} ago", ago(Some(t.0), now))),
        None => out.push_str(", in progress"),
    }
    if let Some(v) = r.verification {
        out.push_str(&format!(", verification {v:?}"));
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn canary_md() -> ModelDeployment {
        let mut md = ModelDeployment::example(
            "chat",
            "v2",
            2,
            json!({
                "strategy": {"canary": {"steps": [{"setWeight": 10}, {"pause": {"duration": "30s"}}, {"setWeight": 50}, {"pause": {}}]}},
                "trafficRouting": {"gatewayAPI": {"httpRoute": "chat"}},
                "rollbackPolicyRef": {"name": "strict"}
            }),
        )
        .expect("example");
        md.metadata.namespace = Some("prod".into());
        md.metadata.generation = Some(2);
        md.status = Some(
            serde_json::from_value(json!({
                "observedGeneration": 2, "phase": "Paused", "message": "canary revision 2 at 50% (step 4 of 4)",
                "currentRevision": 2, "stableRevision": 1, "canaryRevision": 2, "canaryWeight": 50, "currentStepIndex": 3,
                "warm": {"revisions": [1], "replicas": 1},
                "history": [
                    {"revision": 2, "version": "v2", "hash": "b", "deployment": "chat-r2", "phase": "Progressing", "createdAt": "2026-12-01T10:00:00Z"},
                    {"revision": 1, "version": "v1", "hash": "a", "deployment": "chat-r1", "phase": "Stable", "createdAt": "2026-12-01T09:00:00Z", "promotedAt": "2026-12-01T09:01:00Z"}
                ],
                "analysis": [{"trigger": "error-rate", "revision": 2, "value": 0.012, "breached": false, "verdict": "Healthy", "consecutiveBreaches": 0, "lastEvaluatedAt": "2026-12-01T10:04:55.000000Z"}]
            }))
            .expect("status"),
        );
        md
    }

    fn policy() -> RollbackPolicy {
        serde_json::from_value(json!({
            "apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackPolicy", "metadata": {"name": "strict"},
            "spec": {"triggers": [{"name": "error-rate", "query": "x", "operator": "Gt", "threshold": 0.05, "consecutive": 2}]}
        }))
        .expect("policy")
    }

    #[test]
    fn the_view_shows_weights_step_analysis_and_roles() {
        let md = canary_md();
        let s = Summary::new(&md, Some(&policy()));
        assert_eq!(
            s.stable,
            Some(Served {
                revision: 1,
                version: "v1".into(),
                weight: 50
            })
        );
        assert_eq!(
            s.canary,
            Some(Served {
                revision: 2,
                version: "v2".into(),
                weight: 50
            })
        );
        assert_eq!(
            s.step,
            Some(StepView {
                number: 4,
                of: 4,
                step: "pause (until promoted)".into()
            })
        );
        assert_eq!(s.analysis[0].breaches_when.as_deref(), Some("> 0.05"));
        assert_eq!(s.revisions[0].role, vec!["canary", "spec"]);
        assert_eq!(s.revisions[1].role, vec!["stable"]);
        let text = s.render(Some("a promotion"), at("2026-12-01T10:05:00Z"));
        for want in [
            "Phase:         Paused\n",
            "Traffic:       stable revision 1 (v1) 50%, canary revision 2 (v2) 50%\n",
            "Step:          4 of 4: pause (until promoted)\n",
            "Strategy:      canary, traffic on HTTPRoute/chat\n",
            "Waiting for:   a promotion\n",
            "Warm:          revision 1 (1 pods kept warm)\n",
            "error-rate  2         0.012  > 0.05         Healthy  0/2       5s",
            "2         v2       Progressing  canary,spec  5m0s",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn an_unobserved_generation_is_said_and_a_missing_policy_shows_dashes() {
        let mut md = canary_md();
        md.metadata.generation = Some(3);
        let s = Summary::new(&md, None);
        let text = s.render(None, at("2026-12-01T10:05:00Z"));
        assert!(
            text.contains("Paused  (generation 3 not observed yet: status is of 2)"),
            "{text}"
        );
        assert!(
            text.contains("error-rate  2         0.012  -              Healthy  0"),
            "{text}"
        );
        assert!(!text.contains("Waiting for"), "{text}");
    }

    #[test]
    fn a_rollback_reads_as_one_line() {
        let r = RollbackRecord {
            from_revision: 2,
            to_revision: 1,
            trigger: crate::api::RollbackTrigger::Metric,
            trigger_name: Some("error-rate".into()),
            value: Some(0.31),
            threshold: Some(0.05),
            mode: crate::api::RollbackMode::Gradual,
            started_at: Some(Time(at("2026-12-01T10:00:00Z"))),
            completed_at: None,
            verification: None,
        };
        assert_eq!(
            rollback_words(&r, at("2026-12-01T10:02:00Z")),
            "revision 2 -> 1, Metric error-rate (value 0.31, threshold 0.05), Gradual, started 2m0s ago, in progress"
        );
    }

    #[test]
    fn a_blue_green_without_status_renders() {
        let md = ModelDeployment::example("plain", "v1", 1, json!({})).expect("example");
        let text = Summary::new(&md, None).render(None, at("2026-12-01T10:00:00Z"));
        assert!(text.contains("Phase:         -\n"), "{text}");
        assert!(text.contains("blueGreen, no traffic-split object"), "{text}");
    }
}
