//! Trigger queries: the built-in LLM signals and `{{variable}}` templating, with values
//! escaped for PromQL string literals.

use std::fmt::Write as _;

use thiserror::Error;

use crate::api::{RollbackPolicySpec, SignalTemplate, Trigger};

/// The values a query may use. Every one is escaped for a PromQL string literal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vars {
    /// `{{revision}}`: the revision number being judged.
    pub revision: String,
    /// `{{version}}`: its `spec.model.version`.
    pub version: String,
    /// `{{model}}`: its `spec.model.name`.
    pub model: String,
    /// `{{namespace}}`: the ModelDeployment's namespace.
    pub namespace: String,
    /// `{{name}}`: the ModelDeployment's name.
    pub name: String,
    /// `{{service}}`: the Service that reaches the revision being judged.
    pub service: String,
    /// `{{interval}}`: the policy's evaluation interval, such as `30s`.
    pub interval: String,
}

/// The variables a query may use, as written in a query.
pub const VARIABLES: [&str; 7] = [
    "revision",
    "version",
    "model",
    "namespace",
    "name",
    "service",
    "interval",
];

impl Vars {
    fn get(&self, name: &str) -> Option<&str> {
        Some(match name {
            "revision" => &self.revision,
            "version" => &self.version,
            "model" => &self.model,
            "namespace" => &self.namespace,
            "name" => &self.name,
            "service" => &self.service,
            "interval" => &self.interval,
            _ => return None,
        })
    }
}

/// A query that cannot be built.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum TemplateError {
    /// `{{x}}` where x is not one of [`VARIABLES`].
    #[error("unknown variable {{{{{name}}}}} at byte {at} (known: {})", VARIABLES.join(", "))]
    UnknownVariable {
        /// The name written.
        name: String,
        /// Its byte offset in the query.
        at: usize,
    },
    /// `{{` without a closing `}}`.
    #[error("unclosed {{{{ at byte {at}")]
    Unclosed {
        /// Byte offset of the `{{`.
        at: usize,
    },
    /// A variable inside a backtick (raw) string, where nothing can be escaped.
    #[error(
        "variable {{{{{name}}}}} at byte {at} is inside a backtick string, which cannot escape it; use double quotes"
    )]
    InRawString {
        /// The variable.
        name: String,
        /// Its byte offset in the query.
        at: usize,
    },
    /// A variable outside any string literal whose value is more than a bare word.
    #[error(
        "variable {{{{{name}}}}} at byte {at} is outside a string literal and its value {value:?} is not a plain word; put it in double quotes"
    )]
    Unsafe {
        /// The variable.
        name: String,
        /// Its byte offset in the query.
        at: usize,
        /// The value.
        value: String,
    },
}

/// Where a position in a PromQL query is, lexically.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Context {
    /// Not in a string literal.
    Bare,
    /// In a string literal opened by this quote (`"` or `'`).
    Quoted(char),
    /// In a backtick string: no escapes.
    Raw,
}

/// The lexical context after `text`, starting from `ctx`.
fn advance(mut ctx: Context, text: &str) -> Context {
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        ctx = match (ctx, c) {
            (Context::Bare, '"' | '\'') => Context::Quoted(c),
            (Context::Bare, '`') => Context::Raw,
            (Context::Quoted(_), '\\') => {
                chars.next();
                ctx
            }
            (Context::Quoted(q), c) if c == q => Context::Bare,
            (Context::Raw, '`') => Context::Bare,
            (ctx, _) => ctx,
        };
    }
    ctx
}

/// Escapes `value` for use inside a PromQL string literal opened by `quote` (`"` or `'`):
/// the value can never end the literal it sits in, and reads back unchanged.
///
/// ```
/// use rollguard::metrics::query::escape;
/// assert_eq!(escape(r#"a"b\c'd"#, '"'), r#"a\"b\\c'd"#);
/// assert_eq!(escape(r#"a"b'd"#, '\''), r#"a"b\'d"#);
/// assert_eq!(escape("line\nbreak", '"'), r"line\nbreak");
/// ```
pub fn escape(value: &str, quote: char) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '\n' => out.push_str(r"\n"),
            '\r' => out.push_str(r"\r"),
            '\t' => out.push_str(r"\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// A value that can stand outside a string literal: a number, a duration, a plain word.
fn bare_word(value: &str) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
        && !value.starts_with('-')
}

/// Substitutes every `{{variable}}` (spaces inside the braces allowed). Inside a `"` or `'`
/// string literal the value is escaped for that literal; outside one it must be a plain word
/// (a number, a duration such as `30s`); inside a backtick string it is refused.
///
/// ```
/// use rollguard::metrics::query::{render, Vars};
/// let vars = Vars { revision: "4".into(), namespace: "llm".into(), interval: "30s".into(), ..Vars::default() };
/// let q = render(r#"rate(up{rollguard_revision="{{revision}}",namespace='{{ namespace }}'}[{{interval}}])"#, &vars);
/// assert_eq!(q.as_deref(), Ok(r#"rate(up{rollguard_revision="4",namespace='llm'}[30s])"#));
/// assert!(render("up{a=\"{{nope}}\"}", &vars).is_err());
/// ```
pub fn render(template: &str, vars: &Vars) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    let mut offset = 0;
    let mut ctx = Context::Bare;
    while let Some(open) = rest.find("{{") {
        let before = &rest[..open];
        out.push_str(before);
        ctx = advance(ctx, before);
        let at = offset + open;
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or(TemplateError::Unclosed { at })?;
        let name = after[..close].trim();
        let value = vars.get(name).ok_or_else(|| TemplateError::UnknownVariable {
            name: name.to_string(),
            at,
        })?;
        match ctx {
            Context::Quoted(q) => out.push_str(&escape(value, q)),
            Context::Raw => {
                return Err(TemplateError::InRawString {
                    name: name.to_string(),
                    at,
                });
            }
            // Without values (a check), any placeholder word will do.
            Context::Bare if value.is_empty() => out.push('0'),
            Context::Bare if bare_word(value) => out.push_str(value),
            Context::Bare => {
                return Err(TemplateError::Unsafe {
                    name: name.to_string(),
                    at,
                    value: value.to_string(),
                });
            }
        }
        let consumed = open + 2 + close + 2;
        rest = &rest[consumed..];
        offset += consumed;
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks that a query template only uses known variables, without values.
pub fn check(template: &str) -> Result<(), TemplateError> {
    render(template, &Vars::default()).map(|_| ())
}

/// The selector of the revision being judged: the metric labels that the documented
/// Prometheus relabeling derives from the pod labels `rollguard.dev/model-deployment` and
/// `rollguard.dev/revision`, and from the pod's namespace.
const SELECTOR: &str =
    r#"namespace="{{namespace}}",rollguard_model_deployment="{{name}}",rollguard_revision="{{revision}}""#;

/// The PromQL of a built-in signal, with variables still to substitute. Rates and
/// quantiles use a one-minute window.
///
/// ```
/// use rollguard::api::SignalTemplate;
/// use rollguard::metrics::query::builtin;
/// assert!(builtin(SignalTemplate::VllmTtftP95).contains("vllm:time_to_first_token_seconds_bucket"));
/// ```
pub fn builtin(template: SignalTemplate) -> String {
    let p95 = |metric: &str| format!("histogram_quantile(0.95, sum by (le) (rate({metric}_bucket{{{SELECTOR}}}[1m])))");
    match template {
        SignalTemplate::VllmErrorRate => format!(
            r#"sum(rate(http_requests_total{{{SELECTOR},status=~"5.."}}[1m])) / sum(rate(http_requests_total{{{SELECTOR}}}[1m]))"#
        ),
        SignalTemplate::VllmTtftP95 => p95("vllm:time_to_first_token_seconds"),
        SignalTemplate::VllmItlP95 => p95("vllm:inter_token_latency_seconds"),
        SignalTemplate::VllmE2eP95 => p95("vllm:e2e_request_latency_seconds"),
        SignalTemplate::SglangTtftP95 => p95("sglang:time_to_first_token_seconds"),
        SignalTemplate::TgiErrorRate => format!(
            r#"sum(rate(tgi_request_failure{{{SELECTOR}}}[1m])) / sum(rate(tgi_request_count{{{SELECTOR}}}[1m]))"#
        ),
    }
}

/// The query text of a trigger: its own `query`, or its built-in template's PromQL.
pub fn text_of(trigger: &Trigger) -> String {
    match (&trigger.query, trigger.template) {
        (Some(q), _) => q.clone(),
        (None, Some(t)) => builtin(t),
        // The schema requires exactly one; an empty query fails as a PromQL error.
        (None, None) => String::new(),
    }
}

/// Checks every trigger's query of a policy; the error names the trigger and the problem.
///
/// ```
/// use rollguard::metrics::query::validate;
/// let spec = serde_json::from_value(serde_json::json!({
///     "provider": {"prometheus": {"address": "http://prometheus:9090"}},
///     "triggers": [{"name": "errors", "query": "x{r=\"{{revison}}\"}", "operator": "Gt", "threshold": 1}]
/// })).unwrap();
/// let err = validate(&spec).unwrap_err();
/// assert!(err.starts_with("spec.triggers[0] (errors): unknown variable {{revison}}"), "{err}");
/// ```
pub fn validate(spec: &RollbackPolicySpec) -> Result<(), String> {
    for (i, t) in spec.triggers.iter().enumerate() {
        check(&text_of(t)).map_err(|e| format!("spec.triggers[{i}] ({}): {e}", t.name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vars() -> Vars {
        Vars {
            revision: "4".into(),
            version: "2026-11-20".into(),
            model: "llama".into(),
            namespace: "llm".into(),
            name: "chat".into(),
            service: "chat-canary".into(),
            interval: "30s".into(),
        }
    }

    #[test]
    fn every_variable_is_substituted() {
        let q = VARIABLES
            .iter()
            .map(|v| format!("{{{{{v}}}}}"))
            .collect::<Vec<_>>()
            .join("|");
        assert_eq!(
            render(&q, &vars()).as_deref(),
            Ok("4|2026-11-20|llama|llm|chat|chat-canary|30s")
        );
    }

    #[test]
    fn an_unknown_variable_or_unclosed_brace_is_an_error_naming_it() {
        let err = render(r#"up{a="{{revison}}"}"#, &vars()).expect_err("typo");
        assert_eq!(
            err,
            TemplateError::UnknownVariable {
                name: "revison".into(),
                at: 6
            }
        );
        assert!(err.to_string().contains("{{revison}}"), "{err}");
        assert_eq!(render("up{{", &vars()), Err(TemplateError::Unclosed { at: 2 }));
    }

    #[test]
    fn a_value_with_quotes_and_backslashes_stays_inside_its_literal() {
        let mut v = vars();
        v.version = r#"x"} or vector(1) or up{a="\"#.into();
        let q = render(r#"up{version="{{version}}"}"#, &v).expect("render");
        assert_eq!(q, r#"up{version="x\"} or vector(1) or up{a=\"\\"}"#);
        v.version = r"it's\".into();
        let q = render(r"up{version='{{version}}'}", &v).expect("render");
        assert_eq!(q, r"up{version='it\'s\\'}");
    }

    #[test]
    fn outside_a_literal_only_plain_words_and_never_in_backticks() {
        let mut v = vars();
        assert_eq!(
            render("x[{{interval}}] > {{revision}}", &v).as_deref(),
            Ok("x[30s] > 4")
        );
        v.interval = "1m]) or vector(1".into();
        assert!(matches!(
            render("rate(x[{{interval}}])", &v),
            Err(TemplateError::Unsafe { .. })
        ));
        assert!(matches!(
            render("x{a=`{{model}}`}", &v),
            Err(TemplateError::InRawString { .. })
        ));
        assert_eq!(
            render(r#"x{a="\"{{model}}"}"#, &v).as_deref(),
            Ok(r#"x{a="\"llama"}"#),
            "an escaped quote does not end the literal"
        );
    }

    #[test]
    fn builtins_only_use_known_variables_and_select_the_revision() {
        for t in SignalTemplate::ALL {
            let q = render(&builtin(t), &vars()).expect("renders");
            assert!(q.contains(r#"rollguard_revision="4""#), "{t:?}: {q}");
            assert!(q.contains(r#"rollguard_model_deployment="chat""#), "{t:?}: {q}");
        }
    }

    /// Undoes PromQL string escaping as the PromQL lexer does (only the opening quote and
    /// the Go escapes may follow a backslash); returns the value and the rest after the
    /// closing quote.
    fn unquote(s: &str, quote: char) -> Option<(String, &str)> {
        let mut out = String::new();
        let mut chars = s.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                c if c == quote => return Some((out, &s[i + 1..])),
                '\\' => match chars.next()?.1 {
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'u' => {
                        let hex: String = (0..4).filter_map(|_| chars.next().map(|(_, c)| c)).collect();
                        out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                    }
                    '\\' => out.push('\\'),
                    q if q == quote => out.push(q),
                    _ => return None,
                },
                c => out.push(c),
            }
        }
        None
    }

    proptest! {
        /// Whatever a label value holds, the rendered literal ends where the template's
        /// quote ends and reads back as the value.
        #[test]
        fn any_value_round_trips_through_a_literal(value in any::<String>()) {
            let mut v = vars();
            v.model = value.clone();
            for quote in ['"', '\''] {
                let q = render(&format!("m{{model={quote}{{{{model}}}}{quote}}} > 0"), &v).expect("render");
                let inside = q.strip_prefix(&format!("m{{model={quote}")).expect("prefix");
                let (read, rest) = unquote(inside, quote).expect("closed literal");
                prop_assert_eq!(&read, &value);
                prop_assert_eq!(rest, "} > 0");
            }
        }
    }
}
