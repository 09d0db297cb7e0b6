//! What the broker observes about its traffic.

pub(crate) mod journal;
pub(crate) mod metrics;
pub(crate) mod stats;
