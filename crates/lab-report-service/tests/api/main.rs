//! The service over real HTTP, publishing to a real broker.

mod helpers;
mod ingest;
mod keys;
mod logging;
mod outage;
mod rejections;
