//! What `kubectl rollguard` shows and asks for. Pure: the plugin binary
//! (`src/bin/kubectl-rollguard.rs`) reads the objects from the API, passes them here, and
//! prints what comes back; requests are the `rollguard.dev/*` annotations, nothing else.
//!
//! - [`view`]: the `get` view (revisions, weights, step, analysis, last rollback) and the
//!   `history` table;
//! - [`explain`]: why a ModelDeployment is where it is and what it waits for;
//! - [`gate`]: the verdict `status` exits with.

pub mod explain;
pub mod gate;
pub mod view;

use jiff::{SignedDuration, Timestamp};

use crate::api::ModelDeployment;
use crate::api::annotations::{ABORT, PROMOTE, RETRY, ROLLBACK_TO};
use crate::plan::annotations::{BadValue, parse_rollback_to};

/// What a person asks of a ModelDeployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `rollback [--to previous|N|version:<label>]`.
    Rollback {
        /// The `--to` value as typed.
        to: String,
    },
    /// `promote [--full]`.
    Promote {
        /// Skip every remaining step.
        full: bool,
    },
    /// `abort`.
    Abort,
    /// `retry`.
    Retry,
}

/// The annotation (key, value) that carries `action`, checked as the operator would check it,
/// so that a typo fails here, before anything is written.
///
/// ```
/// use rollguard::kubectl::{Action, annotation};
/// assert_eq!(annotation(&Action::Rollback { to: "3".into() }), Ok(("rollguard.dev/rollback-to", "3".into())));
/// assert_eq!(annotation(&Action::Promote { full: true }), Ok(("rollguard.dev/promote", "full".into())));
/// assert!(annotation(&Action::Rollback { to: "yesterday".into() }).is_err());
/// ```
pub fn annotation(action: &Action) -> Result<(&'static str, String), BadValue> {
    Ok(match action {
        Action::Rollback { to } => {
            parse_rollback_to(to)?;
            (ROLLBACK_TO, to.trim().to_string())
        }
        Action::Promote { full } => (PROMOTE, if *full { "full" } else { "true" }.to_string()),
        Action::Abort => (ABORT, "true".to_string()),
        Action::Retry => (RETRY, "true".to_string()),
    })
}

/// Whether a rollback target names a revision the history holds: `Err` with the revisions
/// it could name, so that the person learns it now rather than from an Event.
pub fn check_rollback_target(md: &ModelDeployment, to: &str) -> Result<(), String> {
    use crate::plan::annotations::RollbackTarget;
    let history = md.status.as_ref().map(|s| s.history.as_slice()).unwrap_or_default();
    let known = || {
        let list: Vec<String> = history
            .iter()
            .map(|h| format!("{} ({})", h.revision, h.version))
            .collect();
        if list.is_empty() {
            "it has no revisions yet".to_string()
        } else {
            format!("its revisions are {}", list.join(", "))
        }
    };
    match parse_rollback_to(to).map_err(|e| e.to_string())? {
        RollbackTarget::Previous => Ok(()),
        RollbackTarget::Revision(n) if history.iter().any(|h| h.revision == n) => Ok(()),
        RollbackTarget::Revision(n) => Err(format!(
            "--to {n}: ModelDeployment {} has no revision {n}; {}",
            md.metadata.name.as_deref().unwrap_or_default(),
            known()
        )),
        RollbackTarget::Version(v) if history.iter().any(|h| h.version == v) => Ok(()),
        RollbackTarget::Version(v) => Err(format!(
            "--to version:{v}: ModelDeployment {} has no revision of version {v:?}; {}",
            md.metadata.name.as_deref().unwrap_or_default(),
            known()
        )),
    }
}

/// A span of time the way kubectl prints ages: `45s`, `3m12s`, `2h5m`, `3d4h`.
///
/// ```
/// use jiff::SignedDuration;
/// use rollguard::kubectl::age;
/// assert_eq!(age(SignedDuration::from_secs(45)), "45s");
/// assert_eq!(age(SignedDuration::from_secs(192)), "3m12s");
/// assert_eq!(age(SignedDuration::from_secs(7500)), "2h5m");
/// assert_eq!(age(SignedDuration::from_secs(273600)), "3d4h");
/// assert_eq!(age(SignedDuration::from_secs(-5)), "0s");
/// ```
pub fn age(d: SignedDuration) -> String {
    let s = d.as_secs().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// How long ago `t` was, as [`age`], or `-`.
pub fn ago(t: Option<Timestamp>, now: Timestamp) -> String {
    t.map(|t| age(now.duration_since(t))).unwrap_or_else(|| "-".into())
}

/// A number as the status holds it, short: `0.031`, `1.5e-5`, `NaN`.
pub fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else if v != 0.0 && v.abs() < 1e-3 {
        format!("{v:.2e}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Rows as columns padded to their widest cell, two spaces apart; no trailing spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 < cells.len() {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            } else {
                out.push_str(cell);
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_short_and_name_the_odd_values() {
        assert_eq!(number(0.05), "0.05");
        assert_eq!(number(0.3125), "0.3125");
        assert_eq!(number(12.0), "12");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(0.00002), "2.00e-5");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn tables_pad_every_column_but_the_last() {
        let t = table(
            &["A", "LONGER"],
            &[vec!["wide cell".into(), "x".into()], vec!["b".into(), "".into()]],
        );
        assert_eq!(t, "A          LONGER\nwide cell  x\nb\n");
    }

    #[test]
    fn a_rollback_target_must_be_in_the_history() {
        let mut md = ModelDeployment::example("chat", "v2", 1, serde_json::json!({})).expect("example");
        md.status = Some(crate::api::ModelDeploymentStatus {
            history: vec![crate::api::RevisionRecord {
                revision: 1,
                version: "v1".into(),
                model_uri: None,
                hash: "h".into(),
                deployment: "chat-r1".into(),
                phase: crate::api::RevisionPhase::Stable,
                created_at: None,
                promoted_at: None,
                rolled_back_at: None,
                reason: None,
            }],
            ..Default::default()
        });
        assert_eq!(check_rollback_target(&md, "previous"), Ok(()));
        assert_eq!(check_rollback_target(&md, "1"), Ok(()));
        assert_eq!(check_rollback_target(&md, "version:v1"), Ok(()));
        let err = check_rollback_target(&md, "7").unwrap_err();
        assert!(err.contains("no revision 7") && err.contains("1 (v1)"), "{err}");
        let err = check_rollback_target(&md, "version:v9").unwrap_err();
        assert!(err.contains("\"v9\""), "{err}");
        let err = check_rollback_target(&md, "soon").unwrap_err();
        assert!(
            err.contains("rollguard.dev/rollback-to") && err.contains("\"soon\""),
            "{err}"
        );
    }
}
