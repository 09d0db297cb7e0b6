//! Publishing, the same way in every process that publishes (the
//! lab-report-service its reports, the push receivers their dead letters
//! and receipts): `PUBSUB_EMULATOR_HOST`, where a local broker is found
//! (plaintext gRPC, anonymous credentials) instead of Google Cloud
//! Pub/Sub, and [`publisher`], the official client's Publisher set up for
//! it.

use std::time::Duration;

use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::retry_policy::RetryPolicyExt as _;
use google_cloud_pubsub::builder::publisher::PublisherBuilder;
use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::retry_policy::RetryableErrors;

/// A Publisher for `topic` (its full name), at `emulator` (a local
/// broker's URL, from [`endpoint`]) with anonymous credentials, else at
/// Google Cloud Pub/Sub with Application Default Credentials. It retries
/// what the client counts as retryable for at most `time_limit` (so its
/// background retries stop when the caller stops waiting), backing off
/// from 50 ms to at most 1 s (so a broker that comes back is used again
/// soon). The caller adds its own settings and builds it; it connects on
/// the first publish.
pub fn publisher(topic: &str, emulator: Option<&str>, time_limit: Duration) -> PublisherBuilder {
    let backoff = ExponentialBackoffBuilder::new()
        .with_initial_delay(Duration::from_millis(50))
        .with_maximum_delay(Duration::from_secs(1))
        .with_scaling(2.0)
        .clamp();
    let builder = Publisher::builder(topic)
        .with_retry_policy(RetryableErrors.with_time_limit(time_limit))
        .with_backoff_policy(backoff);
    match emulator {
        Some(endpoint) => builder
            .with_endpoint(endpoint)
            .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build()),
        None => builder,
    }
}

/// The gRPC endpoint URL of `host`: `host:port` by convention, and a value
/// that already carries a scheme is taken as the URL.
pub fn endpoint(host: &str) -> Result<String, InvalidEmulatorHost> {
    let url = if host.contains("://") {
        host.to_string()
    } else {
        format!("http://{host}")
    };
    let invalid = || InvalidEmulatorHost(host.to_string());
    let uri: axum::http::Uri = url.parse().map_err(|_| invalid())?;
    if uri.host().is_none() || uri.port_u16().is_none() {
        return Err(invalid());
    }
    Ok(url)
}

/// `PUBSUB_EMULATOR_HOST` is not `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PUBSUB_EMULATOR_HOST must be host:port, not {0:?}")]
pub struct InvalidEmulatorHost(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_or_a_url() {
        assert_eq!(endpoint("127.0.0.1:8085").unwrap(), "http://127.0.0.1:8085");
        assert_eq!(endpoint("http://[::1]:8085").unwrap(), "http://[::1]:8085");
        for bad in ["localhost", "", "http://", "a b:1"] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
    }
}
