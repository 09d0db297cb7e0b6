//! The email-service against real neighbours: an aiosmtpd process
//! (`labrelay_testkit::smtp`) and real directories, over real HTTP; plus a
//! fast in-process tier that drives the router with `oneshot`.

mod dedupe;
mod handler;
mod helpers;
mod late_reply;
mod log_forging;
mod metrics;
mod outbox;
mod smtp;
mod suppression;
