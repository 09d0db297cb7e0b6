//! The HTTP client of push delivery, and which HTTP it speaks to each
//! endpoint.
//!
//! Over `https`, TLS (ALPN) settles HTTP/2 or HTTP/1.1. Over cleartext
//! `http` nothing negotiates, so the first push to an `http` endpoint tries
//! HTTP/2 with prior knowledge (h2c), which labrelay's own receivers speak.
//! One connection then carries every push in flight to that endpoint, and a
//! busy window's pushes share reads and writes instead of taking a
//! connection and system calls each: about 7% less CPU per report end to
//! end and 8–13 MiB less memory per process (docs/benchmarks.md, "Changes tried"). The probe
//! goes through reqwest; once an endpoint is known to speak h2c, its pushes
//! go through the broker's own connection to it (`h2`), which costs
//! the broker 20–30% less CPU per report than reqwest's.
//!
//! An endpoint that does not answer h2c with HTTP/2 (a server of HTTP/1.1
//! only) is remembered as HTTP/1.1 and the same push goes out again at once
//! over HTTP/1.1, so nothing is nacked for it. Our request never reached
//! that server's application: an HTTP/1.1 server reads h2c's opening as a
//! malformed request and answers or closes before any frame of ours. The
//! verdict is looked at again after [`RECHECK_HTTP1`], so a receiver
//! replaced by one that speaks HTTP/2 is found. An endpoint that fails over
//! HTTP/2 in any other way than a refused connection or a timeout is asked
//! again by its next push, which falls back as above when it no longer
//! speaks HTTP/2.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use reqwest::header::HeaderValue;
use reqwest::{Client, Request, Response};

use super::PushFailure;
use super::h2::{H2Pushes, PING_INTERVAL, PING_TIMEOUT};

/// How long an endpoint found to speak only HTTP/1.1 is taken at its word.
const RECHECK_HTTP1: Duration = Duration::from_secs(60);

/// What pushes say they are, as Pub/Sub's do.
const USER_AGENT: &str =
    "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)";

/// What a cleartext endpoint has been found to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cleartext {
    Http2,
    Http1 { since: Instant },
}

/// Which HTTP the push client uses for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// `https`, or an `http` endpoint known to speak only HTTP/1.1.
    Negotiated,
    /// h2c to an endpoint known to speak it.
    Http2,
    /// h2c to an endpoint not yet asked; falls back to HTTP/1.1.
    Probe,
}

pub(crate) struct PushHttp {
    /// HTTP/1.1 for `http`; ALPN's choice for `https`.
    negotiated: Client,
    /// HTTP/2 with prior knowledge, for `http` endpoints not yet known to
    /// speak it (the probe).
    h2c: Client,
    /// h2c to `http` endpoints known to speak it.
    h2: H2Pushes,
    /// Per `host:port` of `http` endpoints.
    cleartext: RwLock<HashMap<String, Cleartext>>,
}

impl PushHttp {
    pub fn new() -> anyhow::Result<PushHttp> {
        let builder = || {
            Client::builder()
                .user_agent(USER_AGENT)
                // Pub/Sub acknowledges on 102/200/201/202/204 only, so a
                // redirect is a failure and a push is never re-sent
                // elsewhere. Following a 301/302/303 would turn the POST into
                // a GET of the new location, whose 200 would acknowledge a
                // message nobody received.
                .redirect(reqwest::redirect::Policy::none())
        };
        Ok(PushHttp {
            negotiated: builder()
                .pool_max_idle_per_host(1024)
                .build()
                .context("building the push HTTP client")?,
            h2c: builder()
                .http2_prior_knowledge()
                // One connection carries every push to the endpoint, so a
                // peer gone without a word (a host down, a dropped route)
                // must not keep it: unanswered pings close it, and the next
                // push connects afresh, as HTTP/1.1's dropped connections do.
                .http2_keep_alive_interval(PING_INTERVAL)
                .http2_keep_alive_timeout(PING_TIMEOUT)
                .http2_keep_alive_while_idle(true)
                .build()
                .context("building the push HTTP/2 client")?,
            h2: H2Pushes::new(HeaderValue::from_static(USER_AGENT)),
            cleartext: RwLock::default(),
        })
    }

    /// A POST to `url`, to be finished and given to [`send`](Self::send).
    pub fn post(&self, url: reqwest::Url) -> reqwest::RequestBuilder {
        self.negotiated.post(url)
    }

    /// Sends `request` over HTTP/2 where the endpoint speaks it.
    pub async fn send(&self, request: Request) -> Result<Response, PushFailure> {
        let Some(key) = cleartext_key(request.url()) else {
            return execute(&self.negotiated, request).await;
        };
        match self.route(&key, Instant::now()) {
            Route::Negotiated => execute(&self.negotiated, request).await,
            Route::Http2 => {
                let answer = self.h2.send(&key, request).await;
                if matches!(answer, Err(PushFailure::Failed)) {
                    // Perhaps no longer HTTP/2: the next push asks again.
                    self.forget(&key);
                }
                answer
            }
            Route::Probe => {
                let again = request.try_clone();
                match self.h2c.execute(request).await {
                    Ok(response) => {
                        self.learn(key, Cleartext::Http2);
                        Ok(response)
                    }
                    // Nobody to ask (down, or no answer in time): learn
                    // nothing, and the push fails as it would have anyway.
                    Err(error) if error.is_connect() || error.is_timeout() => {
                        Err(PushFailure::from(&error))
                    }
                    Err(error) => {
                        // Its text would carry the URL, and a URL may carry
                        // a password.
                        let error = error.without_url();
                        tracing::debug!(endpoint = %key, %error, "no HTTP/2 here; pushing over HTTP/1.1");
                        let since = Instant::now();
                        self.learn(key, Cleartext::Http1 { since });
                        match again {
                            Some(request) => execute(&self.negotiated, request).await,
                            None => Err(PushFailure::from(&error)),
                        }
                    }
                }
            }
        }
    }

    fn route(&self, key: &str, now: Instant) -> Route {
        let known = self
            .cleartext
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(key)
            .copied();
        match known {
            Some(Cleartext::Http2) => Route::Http2,
            Some(Cleartext::Http1 { since }) if now.duration_since(since) < RECHECK_HTTP1 => {
                Route::Negotiated
            }
            Some(Cleartext::Http1 { .. }) | None => Route::Probe,
        }
    }

    fn learn(&self, key: String, what: Cleartext) {
        self.cleartext
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(key, what);
    }

    fn forget(&self, key: &str) {
        self.cleartext
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(key);
    }
}

/// `request` through `client`, its error reduced to what the push path
/// needs to know.
async fn execute(client: &Client, request: Request) -> Result<Response, PushFailure> {
    client
        .execute(request)
        .await
        .map_err(|e| PushFailure::from(&e))
}

/// `host:port` of an `http` URL (never its user name or password, which
/// the debug log would show); `None` for `https` (and anything else), where
/// TLS negotiates.
fn cleartext_key(url: &reqwest::Url) -> Option<String> {
    if url.scheme() != "http" {
        return None;
    }
    Some(format!(
        "{}:{}",
        url.host_str()?,
        url.port_or_known_default()?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cleartext_endpoints_are_keyed_and_by_host_and_port_alone() {
        let key = |url: &str| cleartext_key(&reqwest::Url::parse(url).unwrap());
        assert_eq!(
            key("http://127.0.0.1:8081/push?x=1").as_deref(),
            Some("127.0.0.1:8081")
        );
        assert_eq!(key("http://email/").as_deref(), Some("email:80"));
        assert_eq!(
            key("http://user:secret@email:8080/").as_deref(),
            Some("email:8080")
        );
        assert_eq!(key("http://[::1]:9/").as_deref(), Some("[::1]:9"));
        assert_eq!(key("https://example.com/push"), None);
    }

    #[test]
    fn an_endpoint_is_probed_until_known_and_http1_is_rechecked_after_a_while() {
        let http = PushHttp::new().unwrap();
        let now = Instant::now();
        assert_eq!(http.route("a:1", now), Route::Probe);
        http.learn("a:1".into(), Cleartext::Http2);
        assert_eq!(http.route("a:1", now), Route::Http2);
        http.forget("a:1");
        assert_eq!(http.route("a:1", now), Route::Probe);
        http.learn("a:1".into(), Cleartext::Http1 { since: now });
        assert_eq!(http.route("a:1", now), Route::Negotiated);
        assert_eq!(http.route("a:1", now + RECHECK_HTTP1), Route::Probe);
        assert_eq!(http.route("b:2", now), Route::Probe);
    }
}
