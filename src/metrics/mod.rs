//! Metrics providers: where trigger queries run.
//!
//! [`MetricsProvider`] is the I/O seam; [`prometheus::Prometheus`] implements it with the
//! Prometheus HTTP API (instant queries). What a result means is decided by pure code in
//! [`prometheus::interpret`], so every result shape has one tested meaning:
//!
//! | result | meaning |
//! |---|---|
//! | a vector with one sample, or a scalar | [`Reading::Value`] |
//! | ±Inf | [`Reading::Value`]: a real, unbounded value (a latency with no end) compared as is |
//! | NaN (such as 0/0: no requests) | [`Reading::NoData`] |
//! | an empty vector | [`Reading::NoData`] |
//! | a vector with several series | [`MetricsError::Ambiguous`], naming the query |
//! | a PromQL error (HTTP 400/422, `status: error`) | [`MetricsError::Query`] |
//! | no answer, a timeout, HTTP 5xx or an unreadable body | [`MetricsError::Unavailable`] |

pub mod prometheus;
pub mod query;

use thiserror::Error;

/// What a query returned, when it returned something usable.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reading {
    /// One number (finite or infinite).
    Value(f64),
    /// Nothing to judge: no series, or NaN.
    NoData,
}

/// Why a query gave no reading.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum MetricsError {
    /// The provider could not be asked: down, unreachable, too slow or answering 5xx.
    #[error("metrics provider unavailable for query {query:?}: {reason}")]
    Unavailable {
        /// The query.
        query: String,
        /// What went wrong.
        reason: String,
    },
    /// The provider refused the query (a PromQL error).
    #[error("query {query:?} failed ({error_type}): {message}")]
    Query {
        /// The query.
        query: String,
        /// Prometheus' `errorType`, such as `bad_data`.
        error_type: String,
        /// Prometheus' `error`.
        message: String,
    },
    /// The query returned several series where one number was expected.
    #[error(
        "query {query:?} returned {series} series; a trigger query must return one number (aggregate it, e.g. with sum())"
    )]
    Ambiguous {
        /// The query.
        query: String,
        /// How many series came back.
        series: usize,
    },
}

impl MetricsError {
    /// A stable CamelCase reason for conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            MetricsError::Unavailable { .. } => "ProviderUnavailable",
            MetricsError::Query { .. } => "QueryFailed",
            MetricsError::Ambiguous { .. } => "AmbiguousResult",
        }
    }
}

/// Where trigger queries run.
pub trait MetricsProvider {
    /// Runs one instant query.
    fn query(&self, promql: &str) -> impl std::future::Future<Output = Result<Reading, MetricsError>> + Send;
}
