//! The service over real HTTP, publishing to a real broker.

mod helpers;
mod ingest;
mod keys;
mod logging;
mod metrics;
mod outage;
mod rate_limit;
mod rejections;
mod slow_bodies;
