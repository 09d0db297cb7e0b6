//! labrelay's wire contract: what crosses a process boundary, and nothing
//! else.
//!
//! A lab POSTs a lab report to the lab-report-service, which publishes it
//! unchanged to `new-lab-report`; the broker (or Pub/Sub) pushes it to the
//! email-service and the sms-service in a push envelope; their answers say
//! what became of it in a header the broker reads. Every process that
//! writes or reads one of these depends on this crate, so each shape is
//! defined once.
//!
//! Layout:
//! - [`report`]: the lab report a lab POSTs, validated once at ingest and
//!   carried unchanged as the Pub/Sub message data.
//! - [`push`]: the Pub/Sub push envelope (the body of every push request),
//!   written by the broker and read by the push receivers.
//! - [`dead_letter`]: the attributes a dead letter carries, whether the
//!   broker or a push receiver parked it.
//! - [`headers`]: the header names processes read from each other
//!   (`X-Labrelay-Outcome` and its values, the trace headers).
//! - [`receipt`]: a provider's delivery receipt as a channel service
//!   publishes it to `RECEIPTS_TOPIC` for the broker's console.
//! - [`up_file`]: `<data-dir>/up.json`, where a running `labrelay up`
//!   can be reached (written by `up`, read by `post`, `dead-letters`, the
//!   bench and the tests).

pub mod dead_letter;
pub mod headers;
pub mod push;
pub mod receipt;
pub mod report;
pub mod up_file;

pub use report::{LabReport, LanguageTag, ReportError, ReportId};
