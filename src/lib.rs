//! rollguard: a Kubernetes operator that rolls LLM model servers out safely and rolls them
//! back fast.
//!
//! Layout (functional core, imperative shell):
//! - [`api`]: the custom resource types, the only place the public API is defined;
//! - [`conditions`]: pure kstatus condition bookkeeping;
//! - [`controller`]: the reconcilers (observe, plan, apply) and the operator's run loop.

pub mod api;
pub mod conditions;
pub mod controller;
pub mod metrics;
pub mod plan;
pub mod revision;
pub mod telemetry;
pub mod traffic;
pub mod trigger;

/// The field manager of every write rollguard makes.
pub const FIELD_MANAGER: &str = "rollguard";
