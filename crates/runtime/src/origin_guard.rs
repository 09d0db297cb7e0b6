//! Refuses the requests a web page can make a browser send to a labrelay
//! port, before any handler runs. [`crate::serve`] puts it in front of every
//! router, so no port can be served without it.
//!
//! Two attacks reach servers on 127.0.0.1 through the operator's own
//! browser, and the broker's API has no authentication of its own:
//!
//! - **Cross-site requests.** Any page can `fetch()` a POST to
//!   `http://127.0.0.1:8085/...` (`mode: "no-cors"` needs no preflight).
//!   Browsers mark such requests: `Origin` names the page's origin, and
//!   `Sec-Fetch-Site` says `cross-site` or `same-site` (another port of the
//!   same host). Either is refused, on every port, loopback or not: no
//!   labrelay endpoint is meant for another site's pages. Clients that are
//!   not browsers (the official Pub/Sub clients, `curl`, `labrelay post`,
//!   the broker's pushes) send neither, and the console's own requests are
//!   same-origin.
//! - **DNS rebinding.** A page on `attacker.example` whose name is made to
//!   resolve to 127.0.0.1 is same-origin with whatever listens there, so the
//!   browser lets it read the answers. Its requests still carry its own
//!   name in `Host` (HTTP/2 and gRPC: `:authority`), so a port answers only
//!   the names it expects: loopback names and addresses always
//!   (`localhost`, `*.localhost`, `127.0.0.0/8`, `[::1]`), and whatever the
//!   operator allowed ([`AllowedHosts`], the `ALLOWED_HOSTS` setting), which
//!   beyond loopback is the names clients use to reach it.
//!
//! A refused request gets 403 and a message naming what was refused and the
//! setting that allows it; a gRPC request gets `PERMISSION_DENIED` in gRPC's
//! own shape, so clients show the message.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

/// The environment variable (and, for the broker and `up`, the flag
/// `--allowed-hosts`) that names the hosts a port answers beyond loopback.
pub const ALLOWED_HOSTS: &str = "ALLOWED_HOSTS";

/// The host names a port answers, besides loopback names and addresses,
/// which it always answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    /// `*`: any host (a service with authentication of its own, reached by
    /// a name the operator need not know, as on Cloud Run).
    any: bool,
    names: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// `clinic.example`: that name.
    Exact(String),
    /// `.clinic.example`: that name and every name under it.
    Domain(String),
}

/// A malformed `ALLOWED_HOSTS` entry.
#[derive(Debug, thiserror::Error)]
#[error(
    "{ALLOWED_HOSTS}: {entry:?} is not a host name, an address, `.domain` or `*` \
     (a comma-separated list, without ports)"
)]
pub struct AllowedHostsError {
    entry: String,
}

impl AllowedHosts {
    /// The `ALLOWED_HOSTS` setting, if it is set.
    pub fn from_vars(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<AllowedHosts>, AllowedHostsError> {
        get(ALLOWED_HOSTS)
            .filter(|list| !list.trim().is_empty())
            .map(|list| AllowedHosts::parse(&list))
            .transpose()
    }

    /// Loopback names and addresses only.
    pub fn loopback() -> AllowedHosts {
        AllowedHosts::default()
    }

    /// Every host.
    pub fn any() -> AllowedHosts {
        AllowedHosts {
            any: true,
            names: Vec::new(),
        }
    }

    /// A comma-separated list: host names (`clinic.example`), addresses
    /// (`10.0.0.5`, `[fd00::5]`), domains (`.clinic.example`: the name and
    /// everything under it), or `*` for any host. Ports are not part of an
    /// entry: a name is allowed on whatever port the service listens on.
    pub fn parse(list: &str) -> Result<AllowedHosts, AllowedHostsError> {
        let mut allowed = AllowedHosts::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                allowed.any = true;
                continue;
            }
            let bad = || AllowedHostsError {
                entry: entry.to_string(),
            };
            let lower = entry.to_ascii_lowercase();
            let (domain, name) = match lower.strip_prefix('.') {
                Some(rest) => (true, rest),
                None => (false, lower.as_str()),
            };
            let name = name.trim_end_matches('.');
            let name = name
                .strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .unwrap_or(name);
            let valid = name.parse::<IpAddr>().is_ok() && !domain
                || !name.is_empty()
                    && name.split('.').all(|label| {
                        !label.is_empty()
                            && label.len() <= 63
                            && label
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    });
            if !valid {
                return Err(bad());
            }
            let name = match name.parse::<IpAddr>() {
                Ok(ip) => ip.to_string(),
                Err(_) => name.to_string(),
            };
            allowed.names.push(if domain {
                Pattern::Domain(name)
            } else {
                Pattern::Exact(name)
            });
        }
        Ok(allowed)
    }

    /// The setting a service was given, or, without one, what suits where
    /// it listens: loopback names on a loopback address (the services under
    /// `labrelay up`), any host beyond it (Cloud Run's URLs are the
    /// service's business, and each service authenticates its callers).
    pub fn or_default_for(configured: Option<AllowedHosts>, local: SocketAddr) -> AllowedHosts {
        configured.unwrap_or_else(|| {
            if local.ip().is_loopback() {
                AllowedHosts::loopback()
            } else {
                AllowedHosts::any()
            }
        })
    }

    /// Whether a request naming `host` (as `Host` or `:authority` carry it,
    /// with or without a port) is answered.
    pub fn allows(&self, host: &str) -> bool {
        let Some(name) = host_name(host) else {
            return false;
        };
        if self.any || is_loopback_name(&name) {
            return true;
        }
        self.names.iter().any(|pattern| match pattern {
            Pattern::Exact(allowed) => *allowed == name,
            Pattern::Domain(domain) => {
                name == *domain
                    || name
                        .strip_suffix(domain.as_str())
                        .is_some_and(|head| head.ends_with('.'))
            }
        })
    }

    /// Whether hosts beyond loopback are answered at all.
    pub fn beyond_loopback(&self) -> bool {
        self.any || !self.names.is_empty()
    }

    /// Puts the checks in front of every route of `router`.
    pub fn guard(self, router: Router) -> Router {
        let allowed = Arc::new(self);
        router.layer(middleware::from_fn(move |request: Request, next: Next| {
            let allowed = allowed.clone();
            async move {
                match refusal(&allowed, &request) {
                    None => next.run(request).await,
                    Some(why) => refuse(request.headers(), why),
                }
            }
        }))
    }
}

impl std::fmt::Display for AllowedHosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.any {
            return f.write_str("any host");
        }
        f.write_str("loopback names")?;
        for pattern in &self.names {
            match pattern {
                Pattern::Exact(name) => write!(f, ", {name}")?,
                Pattern::Domain(domain) => write!(f, ", .{domain}")?,
            }
        }
        Ok(())
    }
}

/// Why `request` is refused, if it is.
fn refusal(allowed: &AllowedHosts, request: &Request) -> Option<String> {
    let headers = request.headers();
    // HTTP/2 (gRPC included) carries the host as `:authority`, which hyper
    // puts in the URI; HTTP/1.1 carries `Host`. Both are checked when both
    // are there.
    let authority = request.uri().authority().map(|a| a.as_str());
    let host = headers.get(header::HOST).map(|h| h.to_str().unwrap_or(""));
    if authority.is_none() && host.is_none() {
        return Some("a request without a Host header is refused".to_string());
    }
    for name in [authority, host].into_iter().flatten() {
        if !allowed.allows(name) {
            return Some(format!(
                "host {name:?} is not allowed here (this port answers {allowed}); \
                 name it in {ALLOWED_HOSTS} (or --allowed-hosts) to allow it"
            ));
        }
    }
    let own = authority.or(host).unwrap_or_default();
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
            return Some(format!(
                "a {site} request from a web page is refused (Sec-Fetch-Site: {site})"
            ));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !same_origin(origin, own) {
            return Some(format!(
                "a request from another site's page is refused (Origin {origin:?})"
            ));
        }
    }
    None
}

/// Whether `origin` (`scheme://host[:port]`) is the origin of a page served
/// by this port, reached as `host`. The scheme is not compared: behind a
/// TLS-terminating front (Cloud Run) pages are `https` while the service
/// sees `http`.
fn same_origin(origin: &str, host: &str) -> bool {
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
}

fn refuse(headers: &HeaderMap, why: String) -> Response {
    tracing::warn!(why = ?why, "refused a request a browser could have been made to send");
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|t| t.to_str().ok())
        .is_some_and(|t| t.starts_with("application/grpc"));
    if grpc {
        // Trailers-only: HTTP 200 with the status in the headers.
        let mut response = Response::new(Body::empty());
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from_static("7"));
        if let Ok(message) = HeaderValue::from_str(&percent_encode(&why)) {
            headers.insert("grpc-message", message);
        }
        return response;
    }
    (
        StatusCode::FORBIDDEN,
        axum::Json(serde_json::json!({ "error": why })),
    )
        .into_response()
}

/// gRPC's `grpc-message` encoding: printable ASCII but `%` as is, the rest
/// percent-encoded.
fn percent_encode(message: &str) -> String {
    let mut encoded = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The host of a `Host` value (`name`, `name:port`, `1.2.3.4:port`,
/// `[::1]:port`), lowercased, without a trailing dot; addresses in their
/// canonical form.
fn host_name(host: &str) -> Option<String> {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.starts_with(':')) {
            return None;
        }
        return inside
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|ip| IpAddr::V6(ip).to_canonical().to_string());
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return None,
            None => host,
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return None;
    }
    Some(match name.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().to_string(),
        Err(_) => name,
    })
}

fn is_loopback_name(name: &str) -> bool {
    match name.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => name == "localhost" || name.ends_with(".localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use tower::ServiceExt as _;

    #[test]
    fn loopback_names_are_always_allowed_and_nothing_else_by_default() {
        let allowed = AllowedHosts::loopback();
        for host in [
            "localhost",
            "localhost:8085",
            "LOCALHOST.:1",
            "console.localhost:8085",
            "127.0.0.1",
            "127.0.0.1:8085",
            "127.9.8.7:1",
            "[::1]:8085",
            "[::1]",
            "[::ffff:127.0.0.1]:8085",
        ] {
            assert!(allowed.allows(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8085",
            "localhost.evil.example",
            "evillocalhost",
            "10.0.0.1:8085",
            "0.0.0.0:8085",
            "[::]:8085",
            "[fe80::1]",
            "",
            ":8085",
            "localhost:http",
            "[::1]x",
        ] {
            assert!(!allowed.allows(host), "{host}");
        }
    }

    #[test]
    fn configured_names_domains_addresses_and_any() {
        let allowed = AllowedHosts::parse(" broker , .clinic.example,10.0.0.5,[fd00::5] ").unwrap();
        for host in [
            "broker:8085",
            "BROKER",
            "clinic.example",
            "relay.clinic.example:443",
            "10.0.0.5:8085",
            "[fd00::5]:8085",
            "localhost:8085",
        ] {
            assert!(allowed.allows(host), "{host}");
        }
        for host in ["broker.evil", "evilclinic.example", "10.0.0.6", "[fd00::6]"] {
            assert!(!allowed.allows(host), "{host}");
        }
        assert!(
            AllowedHosts::parse("*")
                .unwrap()
                .allows("anything.example:1")
        );
        assert_eq!(AllowedHosts::parse("").unwrap(), AllowedHosts::loopback());
        for bad in ["http://x", "x:8085", "a b", ".", "[::1", "*.x", "x/y"] {
            let error = AllowedHosts::parse(bad).unwrap_err().to_string();
            assert!(
                error.contains(ALLOWED_HOSTS) && error.contains(bad),
                "{error}"
            );
        }
    }

    #[test]
    fn the_default_depends_on_the_listener() {
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let everywhere: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(!AllowedHosts::or_default_for(None, loopback).allows("svc.run.app"));
        assert!(AllowedHosts::or_default_for(None, everywhere).allows("svc.run.app"));
        let configured = AllowedHosts::parse("clinic.example").unwrap();
        assert!(!AllowedHosts::or_default_for(Some(configured), everywhere).allows("svc.run.app"));
    }

    fn app() -> Router {
        AllowedHosts::loopback().guard(
            Router::new()
                .route("/", post(|| async { "posted" }))
                .route("/page", get(|| async { "page" })),
        )
    }

    async fn status(request: axum::http::Request<Body>) -> (StatusCode, String) {
        let response = app().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn refuses_cross_site_and_foreign_hosts_and_lets_the_rest_through() {
        let post = |host: &str| {
            axum::http::Request::post("/")
                .header(header::HOST, host)
                .body(Body::from("{}"))
                .unwrap()
        };
        assert_eq!(status(post("127.0.0.1:8085")).await.0, StatusCode::OK);

        // What `fetch(url, {method: "POST", mode: "no-cors"})` sends.
        let mut browser = post("127.0.0.1:8085");
        let headers = browser.headers_mut();
        headers.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        headers.insert("sec-fetch-site", "cross-site".parse().unwrap());
        headers.insert("sec-fetch-mode", "no-cors".parse().unwrap());
        let (code, body) = status(browser).await;
        assert_eq!(code, StatusCode::FORBIDDEN);
        assert!(
            body.contains("another site") || body.contains("cross-site"),
            "{body}"
        );

        // Another port of the same host is same-site, not same-origin.
        let mut other_port = post("127.0.0.1:8085");
        other_port
            .headers_mut()
            .insert("sec-fetch-site", "same-site".parse().unwrap());
        assert_eq!(status(other_port).await.0, StatusCode::FORBIDDEN);
        let mut other_port = post("127.0.0.1:8085");
        other_port
            .headers_mut()
            .insert(header::ORIGIN, "http://127.0.0.1:3000".parse().unwrap());
        assert_eq!(status(other_port).await.0, StatusCode::FORBIDDEN);
        let mut sandboxed = post("127.0.0.1:8085");
        sandboxed
            .headers_mut()
            .insert(header::ORIGIN, "null".parse().unwrap());
        assert_eq!(status(sandboxed).await.0, StatusCode::FORBIDDEN);

        // The console's own requests: same origin.
        let mut console = post("127.0.0.1:8085");
        let headers = console.headers_mut();
        headers.insert(header::ORIGIN, "http://127.0.0.1:8085".parse().unwrap());
        headers.insert("sec-fetch-site", "same-origin".parse().unwrap());
        assert_eq!(status(console).await.0, StatusCode::OK);

        // DNS rebinding: the page's own name in Host.
        let (code, body) = status(post("rebind.attacker.example:8085")).await;
        assert_eq!(code, StatusCode::FORBIDDEN);
        assert!(body.contains(ALLOWED_HOSTS) && body.contains("rebind.attacker.example"));
        let no_host = axum::http::Request::get("/page")
            .body(Body::empty())
            .unwrap();
        assert_eq!(status(no_host).await.0, StatusCode::FORBIDDEN);

        // HTTP/2 and gRPC: the authority is in the URI.
        let grpc = axum::http::Request::post("http://evil.example:8085/")
            .header(header::CONTENT_TYPE, "application/grpc")
            .body(Body::empty())
            .unwrap();
        let response = app().oneshot(grpc).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "7");
        let message = response.headers()["grpc-message"].to_str().unwrap();
        assert!(message.contains("evil.example") && message.contains(ALLOWED_HOSTS));
        let grpc = axum::http::Request::post("http://localhost:8085/")
            .header(header::CONTENT_TYPE, "application/grpc")
            .body(Body::empty())
            .unwrap();
        assert_eq!(status(grpc).await.0, StatusCode::OK);
    }

    #[test]
    fn origins_compare_host_and_port_not_scheme() {
        assert!(same_origin("http://127.0.0.1:8085", "127.0.0.1:8085"));
        assert!(same_origin(
            "https://svc-abc.a.run.app",
            "svc-abc.a.run.app"
        ));
        assert!(!same_origin("http://127.0.0.1:8086", "127.0.0.1:8085"));
        assert!(!same_origin("http://localhost:8085", "127.0.0.1:8085"));
        assert!(!same_origin("null", "127.0.0.1:8085"));
    }
}
