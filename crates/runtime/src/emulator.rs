//! `PUBSUB_EMULATOR_HOST`: where a process that publishes finds a local
//! broker (plaintext gRPC, anonymous credentials) instead of Google Cloud
//! Pub/Sub. The lab-report-service publishes reports through it; the push
//! receivers publish the dead letters they park.

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
