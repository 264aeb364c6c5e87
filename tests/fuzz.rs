//! Fuzzing of everything that parses user (or provider) text, with proptest: the kubectl
//! annotations, durations, the step annotations on child Deployments, query templates and
//! their PromQL-literal escaping, and Prometheus answers. No cluster.
//!
//! Each target runs `ROLLGUARD_FUZZ_CASES` cases (default 2,000; `make test` keeps the
//! default, a few seconds in all). A case that fails is shrunk and written to
//! `proptest-regressions/fuzz.txt`, which proptest replays first on every later run: a
//! found crash stays a regression test.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rollguard::api::Duration;
use rollguard::api::annotations::{ABORT, PROMOTE, RETRY, ROLLBACK_TO};
use rollguard::metrics::Reading;
use rollguard::metrics::prometheus::interpret;
use rollguard::metrics::query::{TemplateError, Vars, check, escape, render};
use rollguard::plan::CanaryStepState;
use rollguard::plan::annotations::{Request, RollbackTarget, parse_all, parse_rollback_to};

fn config() -> ProptestConfig {
    let cases = std::env::var("ROLLGUARD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::Direct(
            concat!(env!("CARGO_MANIFEST_DIR"), "/proptest-regressions/fuzz.txt"),
        ))),
        ..ProptestConfig::default()
    }
}

/// Text a user might type: printable ASCII, whitespace, some Unicode, control characters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        "[ -~]{0,40}",
        "[0-9a-z:.\\- ]{0,20}",
        any::<String>().prop_map(|s| s.chars().take(60).collect()),
    ]
}

/// A value close to what the annotations accept, so the fuzzer reaches every branch.
fn annotation_value() -> impl Strategy<Value = String> {
    prop_oneof![
        text(),
        Just("previous".to_string()),
        Just("true".to_string()),
        Just("full".to_string()),
        (-5i64..100).prop_map(|n| n.to_string()),
        text().prop_map(|t| format!("version:{t}")),
        text().prop_map(|t| format!(" {t} ")),
    ]
}

/// A template: bare PromQL text, literals holding variables, stray braces and quotes.
fn template() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-z_:(){}\\[\\], =~!0-9.]{0,12}",
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("`".to_string()),
        Just("\\".to_string()),
        Just("{{".to_string()),
        Just("}}".to_string()),
        prop_oneof![
            Just("revision"),
            Just("version"),
            Just("model"),
            Just("namespace"),
            Just("name"),
            Just("service"),
            Just("interval"),
            Just(" model "),
            Just("nope"),
        ]
        .prop_map(|v| format!("{{{{{v}}}}}")),
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|p| p.concat())
}

fn vars() -> impl Strategy<Value = Vars> {
    (text(), text(), text(), text(), text(), text(), text()).prop_map(
        |(revision, version, model, namespace, name, service, interval)| Vars {
            revision,
            version,
            model,
            namespace,
            name,
            service,
            interval,
        },
    )
}

/// A Prometheus answer: arbitrary bytes, or an envelope of any status and result shape.
fn answer() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        any::<f64>().prop_map(|f| f.to_string()),
        Just("NaN".to_string()),
        Just("+Inf".to_string()),
        Just("-Inf".to_string()),
        text(),
    ];
    let sample =
        (text(), number.clone()).prop_map(|(pod, v)| serde_json::json!({"metric": {"pod": pod}, "value": [1.7e9, v]}));
    let result = prop_oneof![
        proptest::collection::vec(sample, 0..4).prop_map(serde_json::Value::from),
        number.prop_map(|v| serde_json::json!([1.7e9, v])),
        text().prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
    ];
    let kind = prop_oneof![Just("vector"), Just("scalar"), Just("matrix"), Just("string"), Just("")];
    let status = prop_oneof![Just("success"), Just("error"), Just("")];
    let error_type = prop_oneof![Just("bad_data"), Just("execution"), Just("timeout"), Just("internal")];
    let envelope = (status, error_type, kind, result, text()).prop_map(|(status, error_type, kind, result, error)| {
        serde_json::json!({"status": status, "errorType": error_type, "error": error,
                               "data": {"resultType": kind, "result": result}})
        .to_string()
    });
    prop_oneof![
        envelope,
        text(),
        any::<Vec<u8>>().prop_map(|b| String::from_utf8_lossy(&b).into_owned())
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Any set of annotation values: never a panic; every rollguard annotation present is
    /// either a request or a bad value that names the annotation and the value as written.
    #[test]
    fn annotations_are_a_request_or_a_named_bad_value(
        values in proptest::collection::btree_map(
            prop_oneof![Just(ROLLBACK_TO), Just(ABORT), Just(RETRY), Just(PROMOTE), Just("rollguard.dev/other")],
            annotation_value(),
            0..5,
        )
    ) {
        let annotations: BTreeMap<String, String> =
            values.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let parsed = parse_all(&annotations);
        let ours = values.keys().filter(|k| **k != "rollguard.dev/other").count();
        prop_assert_eq!(parsed.len(), ours, "each rollguard annotation is handled once");
        for (key, result) in parsed {
            let value = &annotations[key];
            match result {
                Ok(Request::RollbackTo(RollbackTarget::Revision(n))) => prop_assert!(n > 0),
                Ok(Request::RollbackTo(RollbackTarget::Version(label))) => prop_assert!(!label.is_empty()),
                Ok(_) => {}
                Err(bad) => {
                    let message = bad.to_string();
                    prop_assert!(message.contains(key), "{}", message);
                    prop_assert!(message.contains(&format!("{value:?}")), "{}", message);
                }
            }
        }
    }

    /// A revision number written with any padding is that revision.
    #[test]
    fn a_padded_revision_number_is_that_revision(n in 1i64..i64::MAX, left in "[ \t]{0,3}", right in "[ \t]{0,3}") {
        prop_assert_eq!(parse_rollback_to(&format!("{left}{n}{right}")), Ok(RollbackTarget::Revision(n)));
    }

    /// Any text as a duration: never a panic; accepted text keeps what the user wrote and
    /// parses again to the same value; refused text is named in the error.
    #[test]
    fn durations_round_trip_or_name_the_text(s in prop_oneof![text(), "([0-9]{1,25}(\\.[0-9]{1,12})?(ns|us|ms|s|m|h)){1,4}", "-?[0-9]{1,4}[a-z]{0,2}"]) {
        match s.parse::<Duration>() {
            Ok(d) => {
                prop_assert_eq!(d.as_str(), s.as_str());
                let again: Duration = d.as_str().parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
                prop_assert_eq!(again.get(), d.get());
                let json: Duration = serde_json::from_value(serde_json::Value::from(s.clone()))
                    .map_err(|e| TestCaseError::fail(format!("{e}")))?;
                prop_assert_eq!(json, d);
            }
            Err(e) => prop_assert!(e.to_string().contains(&format!("{s:?}")), "{}", e),
        }
    }

    /// What the CRD schema lets through (digits, an optional fraction, ms/s/m/h) within
    /// sane sizes, the parser accepts.
    #[test]
    fn durations_the_schema_accepts_parse(s in "([0-9]{1,6}(\\.[0-9]{1,3})?(ms|s|m|h)){1,3}") {
        prop_assert!(s.parse::<Duration>().is_ok(), "{} refused", s);
    }

    /// The step annotation on a child Deployment (anyone can edit it): never a panic, and
    /// what rollguard writes reads back.
    #[test]
    fn step_annotations_read_back_or_are_ignored(s in text(), index in 0i32..1000, secs in 0i64..4_000_000_000) {
        let _ = CanaryStepState::from_annotation(&s);
        let state = CanaryStepState {
            index,
            started_at: jiff::Timestamp::from_second(secs).map_err(|e| TestCaseError::fail(format!("{e}")))?,
        };
        prop_assert_eq!(CanaryStepState::from_annotation(&state.to_annotation()), Some(state));
    }

    /// Step and time labels: any text (a label someone else edited) is a state or nothing;
    /// what rollguard writes is a valid label value (at most 63 characters, alphanumeric at
    /// both ends, only `-_.` between) and reads back to the nanosecond.
    #[test]
    fn step_labels_are_valid_label_values_and_read_back(s in text(), index in 0i32..i32::MAX, nanos in 0i128..253_402_300_799_000_000_000) {
        let _ = CanaryStepState::from_label(&s);
        let _ = rollguard::plan::time_from_label(&s);
        let state = CanaryStepState {
            index,
            started_at: jiff::Timestamp::from_nanosecond(nanos).map_err(|e| TestCaseError::fail(format!("{e}")))?,
        };
        let value = state.to_label();
        prop_assert!(value.len() <= 63, "{value} is longer than a label value may be");
        prop_assert!(value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)), "{value}");
        prop_assert!(value.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric()), "{value}");
        prop_assert!(value.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric()), "{value}");
        prop_assert_eq!(CanaryStepState::from_label(&value), Some(state));
        let t = rollguard::plan::time_to_label(state.started_at);
        prop_assert_eq!(rollguard::plan::time_from_label(&t), Some(state.started_at));
    }

    /// Any template with any values: never a panic; a template that passes the check
    /// without values fails with values only because a value cannot stand bare.
    #[test]
    fn templates_render_or_say_why(t in template(), v in vars()) {
        let checked = check(&t);
        match render(&t, &v) {
            Ok(q) => prop_assert!(checked.is_ok(), "rendered {:?} but the check refused it", q),
            Err(e) => {
                prop_assert!(!e.to_string().is_empty());
                if checked.is_ok() {
                    prop_assert!(matches!(e, TemplateError::Unsafe { .. }),
                        "only a value that cannot stand bare fails a checked template: {}", e);
                }
            }
        }
    }

    /// A variable inside a literal never ends that literal, whatever the value: the text
    /// after the literal is the template's.
    #[test]
    fn a_value_never_escapes_its_literal(value in any::<String>(), quote in prop_oneof![Just('"'), Just('\'')]) {
        let escaped = escape(&value, quote);
        let mut chars = escaped.chars();
        while let Some(c) = chars.next() {
            prop_assert!(c != quote, "an unescaped quote in {:?}", escaped);
            prop_assert!(!c.is_control(), "a raw control character in {:?}", escaped);
            if c == '\\' {
                prop_assert!(chars.next().is_some(), "a trailing backslash in {:?}", escaped);
            }
        }
    }

    /// Any answer from a provider: never a panic; an HTTP error is never a reading, and a
    /// reading is a number or no data (NaN is no data).
    #[test]
    fn provider_answers_are_a_reading_or_an_error(status in prop_oneof![Just(200u16), Just(400), Just(422), Just(500), Just(503), 100u16..600], body in answer()) {
        match interpret("q", status, &body) {
            Ok(Reading::Value(v)) => {
                prop_assert!(status < 300, "HTTP {} read as {}", status, v);
                prop_assert!(!v.is_nan());
            }
            Ok(Reading::NoData) => prop_assert!(status < 300, "HTTP {} read as no data", status),
            Err(e) => prop_assert!(!e.reason().is_empty()),
        }
    }
}
