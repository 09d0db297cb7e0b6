//! Which push endpoints the broker may send requests to.
//!
//! Whoever can reach the broker's admin API can create a push
//! subscription, and so make the broker send POST requests, with a body
//! and (with `noWrapper.writeMetadata`) headers of their choosing, to any
//! address the broker can reach: services on its loopback interface, the
//! cloud metadata server, machines on its private network. The allowlist
//! bounds that: an endpoint outside it is refused when a subscription is
//! created or changed (`PERMISSION_DENIED`, naming the setting), and a
//! stored subscription whose endpoint is outside it (created under a
//! looser setting) is not pushed to; each attempt fails with that reason
//! and, with a dead-letter policy, ends on the dead-letter topic.
//!
//! `labrelay up` allows only its own services' addresses;
//! `labrelay broker` alone allows any endpoint unless told otherwise
//! (`--allowed-push-endpoints`), as an emulator must push to whatever the
//! developer runs.

use std::fmt;

/// The setting, as a flag (`--allowed-push-endpoints`) and an environment
/// variable.
pub const ALLOWED_PUSH_ENDPOINTS: &str = "ALLOWED_PUSH_ENDPOINTS";

/// The hosts (and ports) push endpoints may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEndpoints {
    /// `None`: any endpoint.
    allowed: Option<Vec<Entry>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    host: String,
    /// `None`: any port.
    port: Option<u16>,
}

/// A malformed allowlist entry.
#[derive(Debug, thiserror::Error)]
#[error(
    "{ALLOWED_PUSH_ENDPOINTS}: {entry:?} is not `host`, `host:port` or `*` \
     (a comma-separated list)"
)]
pub struct PushEndpointsError {
    entry: String,
}

impl Default for PushEndpoints {
    fn default() -> Self {
        PushEndpoints::any()
    }
}

impl PushEndpoints {
    /// Any endpoint.
    pub fn any() -> PushEndpoints {
        PushEndpoints { allowed: None }
    }

    /// Exactly these `host:port` pairs (a push to a service's own port).
    pub fn only(addresses: impl IntoIterator<Item = std::net::SocketAddr>) -> PushEndpoints {
        PushEndpoints {
            allowed: Some(
                addresses
                    .into_iter()
                    .map(|addr| Entry {
                        host: canonical_host(&addr.ip().to_string()),
                        port: Some(addr.port()),
                    })
                    .collect(),
            ),
        }
    }

    /// A comma-separated list of `host` (any port), `host:port` and
    /// `[v6]:port` entries, or `*` for any endpoint.
    pub fn parse(list: &str) -> Result<PushEndpoints, PushEndpointsError> {
        let mut entries = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                return Ok(PushEndpoints::any());
            }
            let bad = || PushEndpointsError {
                entry: entry.to_string(),
            };
            let url = reqwest::Url::parse(&format!("http://{entry}/")).map_err(|_| bad())?;
            let host = url.host_str().ok_or_else(bad)?;
            if url.path() != "/" || !url.username().is_empty() || url.query().is_some() {
                return Err(bad());
            }
            // `Url` drops the port 80 of `http`; an explicit `:80` must stay.
            let port = url.port().or_else(|| entry.ends_with(":80").then_some(80));
            entries.push(Entry {
                host: canonical_host(host),
                port,
            });
        }
        Ok(PushEndpoints {
            allowed: Some(entries),
        })
    }

    /// Adds the entries of `other` (an operator's additions to `up`'s own).
    pub fn extend(&mut self, other: PushEndpoints) {
        match (&mut self.allowed, other.allowed) {
            (Some(mine), Some(theirs)) => mine.extend(theirs),
            (allowed, None) => *allowed = None,
            (None, Some(_)) => {}
        }
    }

    /// Whether a push may go to `url`.
    pub fn allows(&self, url: &reqwest::Url) -> bool {
        let Some(entries) = &self.allowed else {
            return true;
        };
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return false;
        };
        let host = canonical_host(host);
        entries
            .iter()
            .any(|entry| entry.host == host && entry.port.is_none_or(|p| p == port))
    }

    /// Why an endpoint is refused, or `None` if it is allowed.
    pub fn refusal(&self, endpoint: &str) -> Option<String> {
        let allowed = reqwest::Url::parse(endpoint)
            .map(|url| self.allows(&url))
            .unwrap_or(false);
        (!allowed).then(|| {
            format!(
                "push endpoint {endpoint:?} is not allowed by this broker (it pushes to {self}); \
                 add its host:port to --allowed-push-endpoints ({ALLOWED_PUSH_ENDPOINTS})"
            )
        })
    }
}

impl fmt::Display for PushEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(entries) = &self.allowed else {
            return f.write_str("any endpoint");
        };
        if entries.is_empty() {
            return f.write_str("no endpoint");
        }
        for (i, entry) in entries.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let host = if entry.host.contains(':') {
                format!("[{}]", entry.host)
            } else {
                entry.host.clone()
            };
            match entry.port {
                Some(port) => write!(f, "{host}:{port}")?,
                None => write!(f, "{host}")?,
            }
        }
        Ok(())
    }
}

/// Lowercase, without the brackets of an IPv6 literal or a trailing dot.
fn canonical_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).unwrap()
    }

    #[test]
    fn only_the_listed_hosts_and_ports() {
        let allowed = PushEndpoints::only([
            "127.0.0.1:8081".parse().unwrap(),
            "[::1]:8082".parse().unwrap(),
        ]);
        assert!(allowed.allows(&url("http://127.0.0.1:8081/")));
        assert!(allowed.allows(&url("http://127.0.0.1:8081/push?x=1")));
        assert!(allowed.allows(&url("http://[::1]:8082/")));
        for refused in [
            "http://127.0.0.1:8082/",
            "http://127.0.0.1/",
            "http://localhost:8081/",
            "http://169.254.169.254/computeMetadata/v1/",
            "https://evil.example:8081/",
        ] {
            assert!(!allowed.allows(&url(refused)), "{refused}");
            let why = allowed.refusal(refused).unwrap();
            assert!(why.contains(ALLOWED_PUSH_ENDPOINTS) && why.contains("127.0.0.1:8081"));
        }
        assert_eq!(allowed.refusal("http://127.0.0.1:8081/"), None);
        assert!(allowed.refusal("not a url").is_some());
    }

    #[test]
    fn parses_hosts_ports_and_any() {
        let allowed = PushEndpoints::parse(" receiver , 10.0.0.5:8443, [fd00::1]:80,x:80").unwrap();
        assert!(allowed.allows(&url("http://receiver:1234/")));
        assert!(allowed.allows(&url("https://RECEIVER./")));
        assert!(allowed.allows(&url("https://10.0.0.5:8443/")));
        assert!(!allowed.allows(&url("https://10.0.0.5/")));
        assert!(allowed.allows(&url("http://[fd00::1]/")));
        assert!(allowed.allows(&url("http://x/")));
        assert!(!allowed.allows(&url("https://x/")));
        assert_eq!(PushEndpoints::parse("a, *").unwrap(), PushEndpoints::any());
        assert!(!PushEndpoints::parse("").unwrap().allows(&url("http://a/")));
        for bad in ["http://x/", "x/y", "u@x", "x:port", "x:99999"] {
            let error = PushEndpoints::parse(bad).unwrap_err().to_string();
            assert!(error.contains(ALLOWED_PUSH_ENDPOINTS), "{error}");
        }
    }

    #[test]
    fn extending_adds_entries_and_any_wins() {
        let mut allowed = PushEndpoints::only(["127.0.0.1:8081".parse().unwrap()]);
        allowed.extend(PushEndpoints::parse("receiver:9000").unwrap());
        assert!(allowed.allows(&url("http://receiver:9000/")));
        assert!(allowed.allows(&url("http://127.0.0.1:8081/")));
        allowed.extend(PushEndpoints::any());
        assert!(allowed.allows(&url("http://anything/")));
    }
}
