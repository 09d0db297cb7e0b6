//! The service over real HTTP, publishing to a real broker.

mod helpers;
mod ingest;
mod keys;
mod logging;
mod metrics;
mod outage;
mod rejections;
mod slow_bodies;
