//! OIDC ID tokens for push requests, minted the way Google Cloud Pub/Sub mints
//! them, and the discovery documents receivers use to verify them.
//!
//! The RSA signing key lives in the data directory so that tokens stay
//! verifiable across restarts, and receivers that cached the JWKS keep working.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use axum::extract::State;
use axum::http::header::CACHE_CONTROL;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use labrelay_runtime::private_fs;
use reqwest::header::HeaderValue;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const KEY_FILE: &str = "oidc-signing-key.pem";
/// As Google's push tokens: `exp - iat` is one hour.
const TOKEN_LIFETIME: Duration = Duration::from_hours(1);
/// A cached token is replaced this long before it expires, so that a token
/// attached to a slow push, or checked by a receiver whose clock runs ahead,
/// is still valid.
const RENEW_BEFORE_EXPIRY: Duration = Duration::from_mins(5);
/// The key only changes when the data directory is recreated; verifiers
/// refetch on an unknown `kid` anyway.
const DISCOVERY_CACHE_CONTROL: &str = "public, max-age=3600";

/// Signs push tokens with the broker's RSA key and publishes its public half.
pub(crate) struct OidcSigner {
    issuer: String,
    key: EncodingKey,
    header: Header,
    jwk: Jwk,
    /// email → audience → token; nested so a lookup needs no allocation.
    cache: RwLock<HashMap<String, HashMap<String, CachedToken>>>,
}

struct CachedToken {
    token: Arc<str>,
    /// `Bearer <token>`, built once: it is sent with every push.
    bearer: HeaderValue,
    renew_at: SystemTime,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    azp: &'a str,
    sub: &'a str,
    email: &'a str,
    email_verified: bool,
    iat: u64,
    exp: u64,
}

impl OidcSigner {
    /// Loads the RSA signing key from `<data_dir>/oidc-signing-key.pem`, or
    /// generates a 2048-bit key once and writes it there (mode 0600, through
    /// a temporary file and a rename so a crash never leaves half a key:
    /// `private_fs::write_atomic`). A key file with group or other
    /// permissions is tightened; a symlink is refused.
    /// `issuer` is the issuer URL, e.g. `http://127.0.0.1:8085`; a trailing
    /// `/` is dropped so that `iss` and the discovery URLs agree.
    pub(crate) fn load_or_create(data_dir: &Path, mut issuer: String) -> anyhow::Result<Self> {
        issuer.truncate(issuer.trim_end_matches('/').len());
        let path = data_dir.join(KEY_FILE);
        let existing = private_fs::read_private(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let pem = match existing {
            Some(pem) => pem,
            None => {
                private_fs::create_dir_all(data_dir)
                    .with_context(|| format!("creating {}", data_dir.display()))?;
                let pem = create_key_file(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                tracing::info!(path = %path.display(), "generated a new OIDC signing key");
                pem
            }
        };
        let key = EncodingKey::from_rsa_pem(&pem)
            .with_context(|| format!("{} is not an RSA private key in PEM", path.display()))?;
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256)
            .with_context(|| format!("{} is not a usable RSA key", path.display()))?;
        let kid = jwk.thumbprint(ThumbprintHash::SHA256);
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_id = Some(kid.clone());
        Ok(Self {
            issuer,
            key,
            header: Header {
                kid: Some(kid),
                ..Header::new(Algorithm::RS256)
            },
            jwk,
            cache: RwLock::default(),
        })
    }

    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The bare token that [`OidcSigner::authorization`] carries, for tests
    /// to decode.
    #[cfg(test)]
    pub(crate) fn token(
        &self,
        service_account_email: &str,
        audience: &str,
    ) -> anyhow::Result<Arc<str>> {
        self.token_at(service_account_email, audience, SystemTime::now())
            .map(|(token, _)| token)
    }

    /// The `Authorization` header of a push to `audience` on behalf of
    /// `service_account_email`: `Bearer <token>`. Tokens are cached per
    /// (email, audience) because an RSA signature costs about a millisecond
    /// and pushes may run at tens of thousands per second.
    pub(crate) fn authorization(
        &self,
        service_account_email: &str,
        audience: &str,
    ) -> anyhow::Result<HeaderValue> {
        self.token_at(service_account_email, audience, SystemTime::now())
            .map(|(_, bearer)| bearer)
    }

    fn token_at(
        &self,
        email: &str,
        audience: &str,
        now: SystemTime,
    ) -> anyhow::Result<(Arc<str>, HeaderValue)> {
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(cached) = cache
            .get(email)
            .and_then(|by_audience| by_audience.get(audience))
            && now < cached.renew_at
        {
            return Ok((cached.token.clone(), cached.bearer.clone()));
        }
        drop(cache);

        // Signing happens outside the lock; two pushes racing on a miss both
        // sign, which is cheaper than making every other lookup wait.
        let iat = now
            .duration_since(UNIX_EPOCH)
            .context("the system clock is before 1970")?
            .as_secs();
        let exp = iat + TOKEN_LIFETIME.as_secs();
        let id = numeric_id(email);
        let claims = Claims {
            iss: &self.issuer,
            aud: audience,
            azp: &id,
            sub: &id,
            email,
            email_verified: true,
            iat,
            exp,
        };
        let token: Arc<str> = jsonwebtoken::encode(&self.header, &claims, &self.key)
            .context("signing a push token")?
            .into();
        let mut bearer = HeaderValue::try_from(format!("Bearer {token}"))
            .context("a push token that is not a header value")?;
        bearer.set_sensitive(true);

        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        // Pairs of deleted or reconfigured subscriptions would otherwise stay forever.
        for by_audience in cache.values_mut() {
            by_audience.retain(|_, cached| now < cached.renew_at);
        }
        cache.entry(email.to_owned()).or_default().insert(
            audience.to_owned(),
            CachedToken {
                token: token.clone(),
                bearer: bearer.clone(),
                renew_at: UNIX_EPOCH + Duration::from_secs(exp) - RENEW_BEFORE_EXPIRY,
            },
        );
        Ok((token, bearer))
    }

    /// The JWK Set with the one public key: `{"keys":[{kty,alg,use,kid,n,e}]}`.
    pub(crate) fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk] })
    }

    /// The OpenID Provider metadata, enough for generic OIDC verifiers to find the keys.
    pub(crate) fn openid_configuration(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/.well-known/jwks.json", self.issuer),
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "claims_supported": ["aud", "azp", "email", "email_verified", "exp", "iat", "iss", "sub"],
        })
    }
}

/// `GET /.well-known/jwks.json` and `GET /.well-known/openid-configuration`.
pub(crate) fn routes(signer: Arc<OidcSigner>) -> Router {
    async fn jwks(State(signer): State<Arc<OidcSigner>>) -> impl IntoResponse {
        (
            [(CACHE_CONTROL, DISCOVERY_CACHE_CONTROL)],
            Json(signer.jwks()),
        )
    }
    async fn openid_configuration(State(signer): State<Arc<OidcSigner>>) -> impl IntoResponse {
        (
            [(CACHE_CONTROL, DISCOVERY_CACHE_CONTROL)],
            Json(signer.openid_configuration()),
        )
    }
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route(
            "/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .with_state(signer)
}

/// Stands in for the service account's numeric id, which Google puts in `sub`
/// and `azp`: stable per email, and numeric like Google's.
fn numeric_id(email: &str) -> String {
    let digest = Sha256::digest(email.as_bytes());
    let (first, _) = digest
        .split_first_chunk::<8>()
        .expect("SHA-256 has 32 bytes");
    u64::from_be_bytes(*first).to_string()
}

/// Generates a PKCS#8 RSA key and writes it to `path` as PEM, returning the PEM.
fn create_key_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let key = KeyPair::generate(KeySize::Rsa2048).context("generating an RSA key")?;
    let der = key.as_der().context("encoding the RSA key")?;
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in BASE64_STANDARD.encode(der.as_ref()).as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");

    private_fs::write_atomic(path, pem.as_bytes())?;
    Ok(pem.into_bytes())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
    use tower::ServiceExt;

    const EMAIL: &str = "pubsub-cloud-run-invoker@labrelay-local.iam.gserviceaccount.com";
    const AUDIENCE: &str = "http://127.0.0.1:8081/";
    const ISSUER: &str = "http://127.0.0.1:8085";

    fn signer() -> (tempfile::TempDir, OidcSigner) {
        let dir = tempfile::tempdir().unwrap();
        let signer = OidcSigner::load_or_create(dir.path(), ISSUER.to_owned()).unwrap();
        (dir, signer)
    }

    /// Verifies as a receiver would: the key comes only from the JWKS JSON.
    fn verify(jwks: &Value, token: &str) -> jsonwebtoken::errors::Result<Value> {
        let header = decode_header(token)?;
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"].as_str() == header.kid.as_deref())
            .expect("the token's kid is in the JWKS");
        let key = DecodingKey::from_rsa_components(
            jwk["n"].as_str().unwrap(),
            jwk["e"].as_str().unwrap(),
        )?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        Ok(decode::<Value>(token, &key, &validation)?.claims)
    }

    #[test]
    fn token_verifies_against_the_jwks_with_google_shaped_claims() {
        let (_dir, signer) = signer();
        let token = signer.token(EMAIL, AUDIENCE).unwrap();

        let header = decode_header(&*token).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let jwks = signer.jwks();
        let jwk = &jwks["keys"][0];
        assert_eq!(header.kid.as_deref(), jwk["kid"].as_str());
        assert_eq!(
            (&jwk["kty"], &jwk["alg"], &jwk["use"]),
            (&json!("RSA"), &json!("RS256"), &json!("sig"))
        );

        let claims = verify(&jwks, &token).unwrap();
        let iat = claims["iat"].as_u64().unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(iat.abs_diff(now) <= 5);
        let id = numeric_id(EMAIL);
        assert!(id.parse::<u64>().is_ok());
        assert_eq!(
            claims,
            json!({
                "iss": ISSUER, "aud": AUDIENCE, "azp": id, "sub": id,
                "email": EMAIL, "email_verified": true, "iat": iat, "exp": iat + 3600,
            })
        );
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        let (_dir, signer) = signer();
        let jwk = &signer.jwks()["keys"][0];
        let (n, e) = (jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap());
        let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let thumbprint =
            base64::prelude::BASE64_URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        assert_eq!(jwk["kid"], thumbprint);
        assert_eq!(e, "AQAB");
        let modulus = base64::prelude::BASE64_URL_SAFE_NO_PAD.decode(n).unwrap();
        assert_eq!(modulus.len(), 256, "2048 bits, no leading zero byte");
    }

    #[test]
    fn the_key_is_created_once_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let first = OidcSigner::load_or_create(dir.path(), ISSUER.to_owned()).unwrap();
        let second = OidcSigner::load_or_create(dir.path(), format!("{ISSUER}/")).unwrap();
        assert_eq!(first.jwks(), second.jwks());
        assert_eq!(second.issuer(), ISSUER);
        let token = first.token(EMAIL, AUDIENCE).unwrap();
        assert!(verify(&second.jwks(), &token).is_ok());

        let entries: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "no temporary file is left behind");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_loose_key_is_tightened_and_a_symlinked_one_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let first = OidcSigner::load_or_create(dir.path(), ISSUER.to_owned()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let again = OidcSigner::load_or_create(dir.path(), ISSUER.to_owned()).unwrap();
        assert_eq!(first.jwks(), again.jwks());
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let elsewhere = tempfile::tempdir().unwrap();
        fs::rename(&path, elsewhere.path().join(KEY_FILE)).unwrap();
        std::os::unix::fs::symlink(elsewhere.path().join(KEY_FILE), &path).unwrap();
        let refused = OidcSigner::load_or_create(dir.path(), ISSUER.to_owned())
            .err()
            .expect("a symlinked key is refused");
        assert!(format!("{refused:#}").contains("symlink"), "{refused:#}");
    }

    #[test]
    fn tokens_are_cached_per_email_and_audience_until_near_expiry() {
        let (_dir, signer) = signer();
        let t0 = SystemTime::now();
        let minutes = |m: u64| t0 + Duration::from_secs(m * 60);
        let first = signer.token_at(EMAIL, AUDIENCE, t0).unwrap();
        let (token, bearer) = &first;
        assert_eq!(bearer.to_str().unwrap(), format!("Bearer {token}"));
        assert!(bearer.is_sensitive(), "kept out of debug output");

        assert_eq!(
            signer.token_at(EMAIL, AUDIENCE, minutes(54)).unwrap(),
            first
        );
        assert_ne!(
            signer
                .token_at(EMAIL, "https://other.example/", t0)
                .unwrap(),
            first
        );
        assert_ne!(
            signer.token_at("other@example.com", AUDIENCE, t0).unwrap(),
            first
        );

        let renewed = signer.token_at(EMAIL, AUDIENCE, minutes(56)).unwrap();
        assert_ne!(renewed, first);
        assert_eq!(
            signer.token_at(EMAIL, AUDIENCE, minutes(57)).unwrap(),
            renewed
        );
    }

    #[test]
    fn a_token_from_another_key_does_not_verify() {
        let (_dir, ours) = signer();
        let (_other_dir, theirs) = signer();
        let forged = theirs.token(EMAIL, AUDIENCE).unwrap();
        let mut jwks = ours.jwks();
        // Even with a matching kid, the signature must be checked against our key.
        jwks["keys"][0]["kid"] = decode_header(&*forged).unwrap().kid.unwrap().into();
        assert!(verify(&jwks, &forged).is_err());
    }

    #[tokio::test]
    async fn routes_serve_the_discovery_documents() {
        let (_dir, signer) = signer();
        let signer = Arc::new(signer);
        for (path, expected) in [
            ("/.well-known/jwks.json", signer.jwks()),
            (
                "/.well-known/openid-configuration",
                signer.openid_configuration(),
            ),
        ] {
            let request = Request::get(path).body(Body::empty()).unwrap();
            let response = routes(signer.clone()).oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()[CACHE_CONTROL], DISCOVERY_CACHE_CONTROL);
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), expected);
        }
        let config = signer.openid_configuration();
        assert_eq!(
            config["jwks_uri"],
            format!("{ISSUER}/.well-known/jwks.json")
        );
    }
}
