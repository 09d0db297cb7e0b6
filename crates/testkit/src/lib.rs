//! Test helpers for labrelay, in one place: real neighbours for the
//! service crates' tests, the whole system as processes for the tests in
//! `tests/`, and what several test suites build alike.
//!
//! Layout:
//! - `cli_doc`: a command's table in `docs/configuration.md` checked
//!   against the command's own `--help`.
//! - `logs`: a log captured in memory, for tests that read what was
//!   logged.
//! - `metrics`: a scrape of `GET /metrics`, asked for one series or a
//!   sum by label.
//! - `proxy`: a round-robin TCP proxy in front of several instances of a
//!   service, as a load balancer spreads connections over them.
//! - `push`: push bodies as the broker sends them, built from the
//!   contract's push envelope.
//! - `smtp`: a real SMTP server (Python's aiosmtpd, started as a process)
//!   whose answers can be switched between accept, 451, 550, 451 after the
//!   data and slow, with optional AUTH; accepted, refused and received
//!   messages are events a test can await.
//! - `strategies`: proptest strategies (arbitrary JSON favouring the
//!   field names a parser looks for).
//! - `twilio`: a real HTTP server playing Twilio's Messages API, checking
//!   method, path, auth and form fields, and answering 201 (whole, late or
//!   cut mid-body), 429, 500 or 400 with Twilio's error JSON on demand.
//! - `up`: `labrelay up` as a real process, found through its `up.json`.
//!
//! With the `system` feature, which builds the whole system (the root
//! package's tests turn it on):
//! - `process`: one `labrelay` subcommand (the broker, a service) as a
//!   real process that announces its address; free ports for restarts.
//! - `system`: the broker and the three services as separate processes
//!   wired as `up` wires them, with providers that fail on demand, a
//!   stream of reports posted as a lab posts them, and a tally of what
//!   arrived: the harness of the fault and resilience suites.

pub mod cli_doc;
pub mod logs;
pub mod metrics;
#[cfg(feature = "system")]
pub mod process;
pub mod proxy;
pub mod push;
pub mod smtp;
pub mod strategies;
#[cfg(feature = "system")]
pub mod system;
pub mod twilio;
pub mod up;
