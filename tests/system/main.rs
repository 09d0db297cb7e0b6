//! The whole-system tests: the real `labrelay` binary run as processes
//! (`labrelay up`, or the broker and each service on its own) with real
//! neighbours, compiled as one test binary so that the system is linked
//! once, not once per suite. nextest still runs each test in a process of
//! its own. One suite per module; run one with
//! `cargo nextest run --test system faults::`.
//!
//! - `broker_durability`: the broker SIGKILLed mid-publish keeps every
//!   acknowledged message.
//! - `browser_attacks`: what a hostile web page can do to `labrelay up`.
//! - `configuration_doc`: `docs/configuration.md` against the CLI's own
//!   `--help`.
//! - `conformance`: Google's official clients and the official emulator
//!   against a real broker.
//! - `console`: the broker's console in headless chromium.
//! - `data_at_rest`: the data directory and everything in it private.
//! - `dead_letters`: `labrelay dead-letters` and the console's replay.
//! - `deploy`: the Cloud Run kit in `deploy/cloudrun/`, without a cloud.
//! - `faults`: one fault per test while reports stream through the system.
//! - `hostile`: hostile requests at every endpoint of `labrelay up`.
//! - `lab_outage`: the lab's outage under `labrelay up`'s own settings.
//! - `logs`: what a full run writes to its logs, and what it never writes.
//! - `receipts`: Twilio's delivery receipts as steps of a report's journey
//!   on the console, and how long a callback takes to show there.
//! - `resilience`: the lab's resilience test (SMTP failing, then healing).
//! - `suppressions`: `labrelay suppressions` beside a running `labrelay up`.
//! - `up`: `labrelay up` and `labrelay post` as a newcomer runs them.

/// The `labrelay` binary the tests run.
const LABRELAY: &str = env!("CARGO_BIN_EXE_labrelay");

mod broker_durability;
mod browser_attacks;
mod configuration_doc;
mod conformance;
mod console;
mod data_at_rest;
mod dead_letters;
mod deploy;
mod faults;
mod hostile;
mod lab_outage;
mod logs;
mod receipts;
mod resilience;
mod suppressions;
mod templates;
mod up;
