//! Push-token verification: who may POST to a push endpoint.
//!
//! Pub/Sub attaches `Authorization: Bearer <OIDC ID token>` to every push of
//! a subscription with `oidcToken` set; Google signs it with RS256 and
//! publishes the keys as a JWKS, and labrelay's broker does the same
//! (`/.well-known/jwks.json`). A receiver that checks the token knows the
//! push came from the subscription's service account and was meant for it.
//!
//! What is checked, in order: the header names RS256 and a `kid`; the
//! signature against that key of the JWKS (fetched from [`PushAuthConfig::jwks_url`],
//! cached, refetched on an unknown `kid` at most once per
//! [`MIN_REFRESH_INTERVAL`]); `iss` in the configured set; `aud` equal to the
//! configured audience; `exp` and `iat` within [`CLOCK_SKEW`]; `email` one of
//! the allowed service accounts; `email_verified` true.
//!
//! A token that passed every check is remembered, by its exact text, in a
//! small cache ([`VERIFIED_CACHE_CAPACITY`] tokens): the broker pushes with
//! one token per subscription for up to an hour, so without it every push
//! paid for the same RSA signature check. A remembered token skips only the
//! signature check; its claims (`exp`, `iat`, `iss`, `aud`, `email`,
//! `email_verified`) are checked again on every push, so it stops being
//! accepted when it expires. Only tokens that passed are remembered.
//!
//! Answers: no bearer token → 401; any check failed → 403; the keys cannot
//! be fetched → 503 (the broker retries). Bodies never say which check
//! failed; the reason is logged, the token never is.
//!
//! Settings (read by [`PushAuth::from_vars`]): `PUSH_AUTH` (`verify` or
//! `off`), `PUSH_AUDIENCE`, `PUSH_ALLOWED_SERVICE_ACCOUNTS`,
//! `PUSH_TOKEN_ISSUERS`, `PUSH_JWKS_URL`.
//!
//! The JWKS decides whose tokens are believed, so whoever can change it in
//! transit can push anything. `PUSH_JWKS_URL` must therefore be https,
//! except on a loopback host (`localhost`, 127.0.0.0/8, `[::1]`), where
//! `labrelay up` serves the broker's keys over http and no network is
//! crossed. The fetch follows no redirect: a 3xx is a failed fetch (503),
//! so the configured URL is the only place keys come from.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use labrelay_runtime::secret::bearer_token;
use serde::Deserialize;

/// `PUSH_TOKEN_ISSUERS` when unset: Google's two spellings of its issuer.
pub const GOOGLE_ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];
/// `PUSH_JWKS_URL` when unset: Google's OIDC signing keys.
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";
/// Tolerated difference between our clock and the token minter's.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// An unknown `kid` refetches the JWKS at most this often, so a stream of
/// forged tokens cannot turn into a stream of requests to the key server.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Verified tokens remembered at most. The broker mints one token per
/// (service account, audience) and renews it before it expires, so a
/// receiver sees a handful at a time.
pub const VERIFIED_CACHE_CAPACITY: usize = 64;

/// Whether and how push requests are authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushAuth {
    /// Every caller is believed (`PUSH_AUTH=off`); logs a warning at start.
    Off,
    /// Every push must carry a valid token.
    Verify(PushAuthConfig),
}

/// What a valid push token looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushAuthConfig {
    /// The exact `aud` (the subscription's audience, by default its push
    /// endpoint URL).
    pub audience: String,
    /// Accepted `email` claims: the subscriptions' service accounts.
    pub allowed_service_accounts: HashSet<String>,
    /// Accepted `iss` claims.
    pub issuers: HashSet<String>,
    /// Where the signing keys are published.
    pub jwks_url: String,
}

/// Settings that make no valid [`PushAuth`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PushAuthSettingsError {
    #[error("PUSH_AUTH must be `verify` or `off`, not {0:?}")]
    Mode(String),
    #[error(
        "PUSH_AUDIENCE is required while push requests are verified: set it to the push \
         subscription's audience (its --push-auth-token-audience, by default the push endpoint \
         URL such as https://email-service-xyz-uc.a.run.app/), or set PUSH_AUTH=off to accept \
         unauthenticated pushes"
    )]
    NoAudience,
    #[error(
        "PUSH_ALLOWED_SERVICE_ACCOUNTS is required while push requests are verified: a comma \
         list of the push subscriptions' service accounts, e.g. \
         pubsub-cloud-run-invoker@PROJECT.iam.gserviceaccount.com"
    )]
    NoServiceAccounts,
    #[error("PUSH_TOKEN_ISSUERS names no issuer")]
    NoIssuers,
    #[error("PUSH_JWKS_URL must be an http:// or https:// URL, not {0:?}")]
    JwksUrl(String),
    #[error(
        "PUSH_JWKS_URL must be https:// (http:// is accepted only for a loopback host: \
         localhost, 127.0.0.0/8 or [::1]), not {0:?}"
    )]
    InsecureJwksUrl(String),
}

impl PushAuth {
    /// Reads the `PUSH_*` settings through `get`. Blank values count as unset.
    ///
    /// `PUSH_AUDIENCE` has no default: a service on Cloud Run does not know
    /// its own URL, and guessing it from the request's `Host` would let the
    /// caller choose what is checked. So with verification on, a missing
    /// audience stops the service at start.
    pub fn from_vars(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<PushAuth, PushAuthSettingsError> {
        let get = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        match get("PUSH_AUTH").map(|v| v.to_ascii_lowercase()).as_deref() {
            None | Some("verify") => {}
            Some("off") => return Ok(PushAuth::Off),
            Some(other) => return Err(PushAuthSettingsError::Mode(other.to_string())),
        }
        let list = |value: String| -> HashSet<String> {
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        let audience = get("PUSH_AUDIENCE").ok_or(PushAuthSettingsError::NoAudience)?;
        let allowed_service_accounts = get("PUSH_ALLOWED_SERVICE_ACCOUNTS")
            .map(list)
            .filter(|set| !set.is_empty())
            .ok_or(PushAuthSettingsError::NoServiceAccounts)?;
        let issuers = match get("PUSH_TOKEN_ISSUERS") {
            None => GOOGLE_ISSUERS.iter().map(|s| s.to_string()).collect(),
            Some(value) => list(value),
        };
        if issuers.is_empty() {
            return Err(PushAuthSettingsError::NoIssuers);
        }
        let jwks_url = get("PUSH_JWKS_URL").unwrap_or_else(|| GOOGLE_JWKS_URL.to_string());
        check_jwks_url(&jwks_url)?;
        Ok(PushAuth::Verify(PushAuthConfig {
            audience,
            allowed_service_accounts,
            issuers,
            jwks_url,
        }))
    }

    /// Puts the check in front of every route of `router` (add `/healthz`
    /// after calling this, so probes stay open). With [`PushAuth::Off`] the
    /// router is returned unchanged and a warning is logged: call it once, at
    /// start.
    pub fn protect<S: Clone + Send + Sync + 'static>(self, router: Router<S>) -> Router<S> {
        match self {
            PushAuth::Off => {
                tracing::warn!(
                    "PUSH_AUTH=off: push requests are NOT authenticated; anyone who can reach \
                     this service can make it send messages"
                );
                router
            }
            PushAuth::Verify(config) => {
                tracing::info!(
                    audience = %config.audience,
                    jwks_url = %config.jwks_url,
                    "push requests must carry a valid OIDC token"
                );
                let verifier = Arc::new(Verifier::new(config));
                router.route_layer(axum::middleware::from_fn_with_state(
                    verifier,
                    require_token,
                ))
            }
        }
    }
}

/// `https://` anywhere, `http://` only to a loopback host.
fn check_jwks_url(jwks_url: &str) -> Result<(), PushAuthSettingsError> {
    let url = reqwest::Url::parse(jwks_url)
        .ok()
        .filter(|url| matches!(url.scheme(), "https" | "http") && url.has_host())
        .ok_or_else(|| PushAuthSettingsError::JwksUrl(jwks_url.to_string()))?;
    let host = url.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if url.scheme() == "https" || loopback {
        Ok(())
    } else {
        Err(PushAuthSettingsError::InsecureJwksUrl(jwks_url.to_string()))
    }
}

/// Why a push was refused. The [`fmt::Display`] text is for logs only.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("no bearer token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("the signing keys are unavailable: {0}")]
    KeysUnavailable(String),
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::Missing => StatusCode::UNAUTHORIZED,
            Rejection::Invalid(_) => StatusCode::FORBIDDEN,
            Rejection::KeysUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match self {
            Rejection::Missing => "authentication required",
            Rejection::Invalid(_) => "forbidden",
            Rejection::KeysUnavailable(_) => "temporarily unavailable",
        };
        let mut response =
            (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

async fn require_token(
    State(verifier): State<Arc<Verifier>>,
    request: Request,
    next: Next,
) -> Response {
    match verifier.verify_headers(request.headers()).await {
        Ok(()) => next.run(request).await,
        Err(rejection) => {
            match &rejection {
                Rejection::KeysUnavailable(_) => {
                    tracing::warn!(
                        reason = rejection.to_string(),
                        "push refused: cannot verify its token"
                    )
                }
                _ => tracing::warn!(
                    status = rejection.status().as_u16(),
                    reason = rejection.to_string(),
                    "push refused"
                ),
            }
            rejection.into_response()
        }
    }
}

/// The claims a push token must carry.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<bool>,
    iat: u64,
    exp: u64,
    iss: String,
    aud: Audience,
}

/// `aud`: one audience or a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(one) => one == audience,
            Audience::Many(many) => many.iter().any(|a| a == audience),
        }
    }
}

/// Checks push tokens against one [`PushAuthConfig`], with the JWKS cached.
pub struct Verifier {
    config: PushAuthConfig,
    validation: Validation,
    client: reqwest::Client,
    keys: RwLock<Arc<HashMap<String, DecodingKey>>>,
    /// Held while fetching, so concurrent misses share one fetch; holds the
    /// time of the last fetch and whether it failed.
    fetch: tokio::sync::Mutex<Option<(Instant, Option<String>)>>,
    /// Tokens whose signature was verified, by their exact text, with
    /// their claims (checked again on every use).
    verified: Mutex<HashMap<Box<str>, Claims>>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(config: PushAuthConfig) -> Verifier {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = CLOCK_SKEW.as_secs();
        validation.validate_exp = true;
        validation.validate_aud = true;
        validation.set_audience(&[&config.audience]);
        validation.iss = Some(config.issuers.clone());
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
        // A redirect could send the fetch to keys nobody configured (or an
        // https URL down to http): it is a failed fetch instead.
        let client = reqwest::Client::builder()
            .timeout(JWKS_FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            // Fails only where `Client::new` would panic too (no TLS
            // backend); a default client would follow redirects.
            .expect("building the JWKS client");
        Verifier {
            config,
            validation,
            client,
            keys: RwLock::default(),
            fetch: tokio::sync::Mutex::new(None),
            verified: Mutex::default(),
        }
    }

    /// Checks the `Authorization` header of a push request.
    pub async fn verify_headers(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        let token = bearer_token(headers).ok_or(Rejection::Missing)?;
        self.verify(token).await
    }

    /// Checks one token (without the `Bearer ` prefix).
    pub async fn verify(&self, token: &str) -> Result<(), Rejection> {
        self.verify_at(token, unix_now()).await
    }

    /// [`Verifier::verify`] with the claims checked against `now` (seconds
    /// since the epoch).
    async fn verify_at(&self, token: &str, now: u64) -> Result<(), Rejection> {
        if let Some(checked) = self
            .verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token)
            .map(|claims| self.check_claims(claims, now))
        {
            return checked;
        }
        let claims = self.verify_signature(token).await?;
        self.check_claims(&claims, now)?;
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= VERIFIED_CACHE_CAPACITY {
            verified.retain(|_, claims| !expired(claims, now));
        }
        if verified.len() >= VERIFIED_CACHE_CAPACITY {
            verified.clear();
        }
        verified.insert(token.into(), claims);
        Ok(())
    }

    /// The claims of `token` once its header and signature check out, and
    /// its claims pass `jsonwebtoken`'s validation.
    async fn verify_signature(&self, token: &str) -> Result<Claims, Rejection> {
        let invalid = |why: &str| Rejection::Invalid(why.to_string());
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| Rejection::Invalid(format!("unreadable header: {e}")))?;
        if header.alg != Algorithm::RS256 {
            return Err(Rejection::Invalid(format!(
                "algorithm {:?} is not RS256",
                header.alg
            )));
        }
        let kid = header.kid.ok_or_else(|| invalid("the header has no kid"))?;
        let key = self.key(&kid).await?;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
            .map_err(|e| Rejection::Invalid(e.to_string()))?;
        Ok(data.claims)
    }

    /// The checks of a token's claims that a remembered token must pass
    /// again: they depend on the time, or would matter if the settings
    /// changed.
    fn check_claims(&self, claims: &Claims, now: u64) -> Result<(), Rejection> {
        let invalid = |why: &str| Rejection::Invalid(why.to_string());
        if expired(claims, now) {
            return Err(invalid("the token has expired"));
        }
        if claims.iat > now.saturating_add(CLOCK_SKEW.as_secs()) {
            return Err(invalid("iat is in the future"));
        }
        if !self.config.issuers.contains(&claims.iss) {
            return Err(invalid("iss is not an accepted issuer"));
        }
        if !claims.aud.contains(&self.config.audience) {
            return Err(invalid("aud is not this service"));
        }
        match &claims.email {
            Some(email) if self.config.allowed_service_accounts.contains(email) => {}
            Some(_) => return Err(invalid("email is not an allowed service account")),
            None => return Err(invalid("no email claim")),
        }
        if claims.email_verified != Some(true) {
            return Err(invalid("email_verified is not true"));
        }
        Ok(())
    }

    /// The key named `kid`, fetching the JWKS when it is not known yet.
    async fn key(&self, kid: &str) -> Result<DecodingKey, Rejection> {
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        let mut last_fetch = self.fetch.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        if let Some((at, failure)) = &*last_fetch
            && at.elapsed() < MIN_REFRESH_INTERVAL
        {
            return Err(match failure {
                Some(failure) => Rejection::KeysUnavailable(failure.clone()),
                None => Rejection::Invalid("unknown kid".to_string()),
            });
        }
        let fetched = self.fetch_keys().await;
        // A failed fetch also counts, so an unreachable key server is not
        // asked again for every push.
        *last_fetch = Some((Instant::now(), fetched.as_ref().err().cloned()));
        let keys = fetched.map_err(Rejection::KeysUnavailable)?;
        tracing::info!(keys = keys.len(), url = %self.config.jwks_url, "fetched push-token signing keys");
        let key = keys.get(kid).cloned();
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
        key.ok_or_else(|| Rejection::Invalid("unknown kid".to_string()))
    }

    fn cached(&self, kid: &str) -> Option<DecodingKey> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(kid)
            .cloned()
    }

    async fn fetch_keys(&self) -> Result<HashMap<String, DecodingKey>, String> {
        let response = self
            .client
            .get(&self.config.jwks_url)
            .send()
            .await
            .map_err(|e| format!("fetching {}: {e}", self.config.jwks_url))?;
        // Not `error_for_status`: a 3xx (not followed) is no JWKS either.
        let status = response.status();
        if !status.is_success() {
            let redirect = if status.is_redirection() {
                ", a redirect, not followed"
            } else {
                ""
            };
            return Err(format!(
                "fetching {}: HTTP {status}{redirect}",
                self.config.jwks_url
            ));
        }
        let set: JwkSet = response
            .json()
            .await
            .map_err(|e| format!("reading {}: {e}", self.config.jwks_url))?;
        Ok(usable_keys(&set))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Past `exp` by more than [`CLOCK_SKEW`], as `jsonwebtoken` counts it.
fn expired(claims: &Claims, now: u64) -> bool {
    claims.exp.saturating_add(CLOCK_SKEW.as_secs()) < now
}

/// The RS256 signing keys of a JWKS, by `kid`; other keys are ignored.
fn usable_keys(set: &JwkSet) -> HashMap<String, DecodingKey> {
    set.keys
        .iter()
        .filter(|jwk| is_rs256_signing_key(jwk))
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some((kid, key))
        })
        .collect()
}

fn is_rs256_signing_key(jwk: &Jwk) -> bool {
    matches!(jwk.algorithm, AlgorithmParameters::RSA(_))
        && matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::RS256))
        && !matches!(
            jwk.common.public_key_use,
            Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
        )
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::encoding::AsDer as _;
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    use base64::Engine as _;
    use jsonwebtoken::{EncodingKey, Header};

    use super::*;

    const ISSUER: &str = "http://127.0.0.1:8085";
    const AUDIENCE: &str = "http://127.0.0.1:8081/";
    const EMAIL: &str = "invoker@labrelay-local.iam.gserviceaccount.com";

    /// A verifier that knows the key `kid` and cannot fetch any other: its
    /// JWKS URL is unreachable and it fetched a moment ago.
    fn verifier_with_key(kid: &str) -> (Verifier, EncodingKey) {
        let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
        let der = pair.as_der().unwrap();
        let der = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in der.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
        let jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).unwrap();
        let verifier = Verifier::new(PushAuthConfig {
            audience: AUDIENCE.into(),
            allowed_service_accounts: HashSet::from([EMAIL.to_string()]),
            issuers: HashSet::from([ISSUER.to_string()]),
            jwks_url: "http://127.0.0.1:9/unreachable".into(),
        });
        let keys = HashMap::from([(kid.to_string(), DecodingKey::from_jwk(&jwk).unwrap())]);
        *verifier.keys.write().unwrap() = Arc::new(keys);
        *verifier.fetch.try_lock().unwrap() = Some((Instant::now(), Some("unreachable".into())));
        (verifier, encoding)
    }

    fn sign(key: &EncodingKey, kid: &str, iat: u64, exp: u64) -> String {
        let header = Header {
            kid: Some(kid.into()),
            ..Header::new(Algorithm::RS256)
        };
        let claims = serde_json::json!({
            "iss": ISSUER, "aud": AUDIENCE, "email": EMAIL, "email_verified": true,
            "iat": iat, "exp": exp,
        });
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }

    fn forget_keys(verifier: &Verifier) {
        *verifier.keys.write().unwrap() = Arc::default();
    }

    #[tokio::test]
    async fn a_verified_token_is_remembered_until_it_expires() {
        let (verifier, key) = verifier_with_key("k1");
        let now = unix_now();
        let exp = now + 300;
        let token = sign(&key, "k1", now, exp);
        verifier.verify_at(&token, now).await.unwrap();
        // Without its key the token can only pass from the cache.
        forget_keys(&verifier);
        verifier.verify_at(&token, now + 10).await.unwrap();
        let skew = CLOCK_SKEW.as_secs();
        verifier.verify_at(&token, exp + skew).await.unwrap();
        let late = verifier.verify_at(&token, exp + skew + 1).await;
        assert!(
            matches!(&late, Err(Rejection::Invalid(why)) if why.contains("expired")),
            "{late:?}"
        );
        // Expiry does not evict a token that is checked again later.
        assert!(verifier.verify_at(&token, exp + skew + 60).await.is_err());
    }

    #[tokio::test]
    async fn only_tokens_that_pass_are_remembered() {
        let (verifier, key) = verifier_with_key("k1");
        let now = unix_now();
        let token = sign(&key, "k1", now, now + 300);
        // Its signature broken: refused, and not remembered.
        let forged = format!("{}A", &token[..token.len() - 1]);
        let forged = if forged == token {
            format!("{}B", &token[..token.len() - 1])
        } else {
            forged
        };
        assert!(matches!(
            verifier.verify_at(&forged, now).await,
            Err(Rejection::Invalid(_))
        ));
        // A token issued in the future by more than the skew: refused,
        // and still refused once the clock reaches it.
        let early = sign(&key, "k1", now + 600, now + 900);
        assert!(verifier.verify_at(&early, now).await.is_err());
        assert!(verifier.verify_at(&token, now).await.is_ok());
        assert_eq!(verifier.verified.lock().unwrap().len(), 1);
        forget_keys(&verifier);
        assert!(verifier.verify_at(&forged, now).await.is_err());
        assert!(verifier.verify_at(&early, now + 600).await.is_err());
        assert!(verifier.verify_at(&token, now).await.is_ok());
    }

    #[tokio::test]
    async fn the_cache_stays_bounded() {
        let (verifier, key) = verifier_with_key("k1");
        let now = unix_now();
        for i in 0..(VERIFIED_CACHE_CAPACITY as u64 * 2 + 1) {
            let token = sign(&key, "k1", now, now + 300 + i);
            verifier.verify_at(&token, now).await.unwrap();
            assert!(verifier.verified.lock().unwrap().len() <= VERIFIED_CACHE_CAPACITY);
        }
    }
}
