//! The sms-service over real HTTP, against a real HTTP server playing
//! Twilio (`labrelay_testkit::twilio`) or a real directory outbox.

mod countries;
mod dedupe;
mod helpers;
mod log_forging;
mod logs;
mod metrics;
mod oneshot;
mod opt_out;
mod outbox;
mod receipts;
mod shutdown;
mod twilio;
