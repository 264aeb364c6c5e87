//! rollguard: a Kubernetes operator that rolls LLM model servers out safely and rolls them
//! back fast.
//!
//! Layout (functional core, imperative shell):
//! - [`api`]: the custom resource types, the only place the public API is defined;
//! - [`conditions`]: pure kstatus condition bookkeeping;
//! - [`controller`]: the reconcilers (observe, plan, apply) and the operator's run loop.

pub mod api;
pub mod client;
pub mod conditions;
pub mod controller;
pub mod kubectl;
pub mod metrics;
pub mod plan;
pub mod revision;
pub mod telemetry;
pub mod traffic;
pub mod trigger;

/// `s` cut to at most `max` bytes, on a character boundary.
///
/// ```
/// assert_eq!(rollguard::truncate("héllo", 2), "h");
/// assert_eq!(rollguard::truncate("hello", 10), "hello");
/// ```
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The field manager of every write rollguard makes.
pub const FIELD_MANAGER: &str = "rollguard";
