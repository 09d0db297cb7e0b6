//! Push delivery.

pub(crate) mod endpoints;
pub(crate) mod h2;
pub(crate) mod http;
pub(crate) mod worker;
