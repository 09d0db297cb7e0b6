//! Real neighbours for labrelay's tests, shared by the service crates and
//! the whole-system tests in `tests/`.
//!
//! Layout:
//! - `cli_doc`: a command's table in `docs/configuration.md` checked
//!   against the command's own `--help`.
//! - `metrics`: a scrape of `GET /metrics`, asked for one series or a
//!   sum by label.
//! - `smtp`: a real SMTP server (Python's aiosmtpd, started as a process)
//!   whose answers can be switched between accept, 451, 550 and slow, with
//!   optional AUTH; accepted, refused and received messages are events a
//!   test can await.
//! - `twilio`: a real HTTP server playing Twilio's Messages API, checking
//!   method, path, auth and form fields, and answering 201, 429, 500 or 400
//!   with Twilio's error JSON on demand.
//! - `up`: `labrelay up` as a real process, found through its `up.json`.

pub mod cli_doc;
pub mod metrics;
pub mod smtp;
pub mod twilio;
pub mod up;
