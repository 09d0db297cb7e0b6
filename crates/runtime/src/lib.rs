//! What every labrelay process shares to run, whatever part of the data
//! flow it plays: the broker, the lab-report-service, the email-service and
//! the sms-service each start, log, trace and stop the same way.
//!
//! Layout:
//! - [`telemetry`]: the one tracing setup: text locally, JSON in Cloud
//!   Logging's shape on Cloud Run.
//! - [`shutdown`]: the one shutdown signal (SIGINT, SIGTERM).
//! - [`trace`]: the trace a request belongs to (`traceparent`,
//!   `X-Cloud-Trace-Context`), as span fields Cloud Logging correlates.
//! - [`secret`]: credentials read from the environment, never printed.

pub mod secret;
pub mod shutdown;
pub mod telemetry;
pub mod trace;
