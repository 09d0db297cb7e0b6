//! The push-token verifier against a real JWKS server on port 0, with tokens
//! signed the way Pub/Sub (and labrelay's broker) signs them, and forged or
//! bent in every way the verifier must notice.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use labrelay_receiver::push_auth::{
    GOOGLE_ISSUERS, GOOGLE_JWKS_URL, PushAuth, PushAuthConfig, PushAuthSettingsError, Rejection,
    Verifier,
};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const ISSUER: &str = "http://127.0.0.1:8085";
const AUDIENCE: &str = "http://127.0.0.1:8081/";
const EMAIL: &str = "pubsub-cloud-run-invoker@labrelay-local.iam.gserviceaccount.com";

struct Key {
    encoding: EncodingKey,
    jwk: Jwk,
    kid: String,
}

fn rsa_key(kid: &str) -> Key {
    let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let der = pair.as_der().unwrap();
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in STANDARD.encode(der.as_ref()).as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some(kid.to_string());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Key {
        encoding,
        jwk,
        kid: kid.to_string(),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> Value {
    let iat = now();
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "azp": "123", "sub": "123",
        "email": EMAIL, "email_verified": true, "iat": iat, "exp": iat + 3600,
    })
}

fn sign(key: &Key, claims: &Value) -> String {
    let header = Header {
        kid: Some(key.kid.clone()),
        ..Header::new(Algorithm::RS256)
    };
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

/// A JWKS server that counts its fetches.
struct Jwks {
    url: String,
    fetches: Arc<AtomicUsize>,
}

async fn jwks_server(keys: Vec<Jwk>) -> Jwks {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let body = json!({ "keys": keys });
    let app = Router::new().route(
        "/.well-known/jwks.json",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            async move { axum::Json(body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Jwks {
        url: format!("http://{addr}/.well-known/jwks.json"),
        fetches,
    }
}

fn config(jwks_url: &str) -> PushAuthConfig {
    PushAuthConfig {
        audience: AUDIENCE.to_string(),
        allowed_service_accounts: HashSet::from([EMAIL.to_string()]),
        issuers: HashSet::from([ISSUER.to_string()]),
        jwks_url: jwks_url.to_string(),
    }
}

fn is_invalid(result: Result<(), Rejection>) -> bool {
    matches!(result, Err(Rejection::Invalid(_)))
}

#[tokio::test]
async fn accepts_a_token_of_the_allowed_account_and_nothing_bent() {
    let key = rsa_key("key-1");
    let other = rsa_key("key-2");
    let jwks = jwks_server(vec![key.jwk.clone()]).await;
    let verifier = Verifier::new(config(&jwks.url));

    verifier.verify(&sign(&key, &claims())).await.unwrap();

    let bent = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        sign(&key, &c)
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "wrong audience",
            bent(&|c| c["aud"] = json!("http://127.0.0.1:9999/")),
        ),
        (
            "wrong issuer",
            bent(&|c| c["iss"] = json!("https://evil.example")),
        ),
        (
            "other account",
            bent(&|c| c["email"] = json!("someone@evil.example")),
        ),
        (
            "no email",
            bent(&|c| {
                c.as_object_mut().unwrap().remove("email");
            }),
        ),
        (
            "unverified email",
            bent(&|c| c["email_verified"] = json!(false)),
        ),
        (
            "no email_verified",
            bent(&|c| {
                c.as_object_mut().unwrap().remove("email_verified");
            }),
        ),
        (
            "expired",
            bent(&|c| {
                c["iat"] = json!(now() - 7200);
                c["exp"] = json!(now() - 120);
            }),
        ),
        (
            "issued in the future",
            bent(&|c| c["iat"] = json!(now() + 600)),
        ),
        (
            "no iat",
            bent(&|c| {
                c.as_object_mut().unwrap().remove("iat");
            }),
        ),
        (
            "no exp",
            bent(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        ("signed by an unknown key with a known kid", {
            let header = Header {
                kid: Some("key-1".into()),
                ..Header::new(Algorithm::RS256)
            };
            jsonwebtoken::encode(&header, &claims(), &other.encoding).unwrap()
        }),
        ("unknown kid", sign(&other, &claims())),
        (
            "no kid",
            jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims(), &key.encoding).unwrap(),
        ),
        ("HS256 with the public modulus as the secret", {
            let n = match &key.jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::RSA(rsa) => rsa.n.clone(),
                _ => unreachable!(),
            };
            let header = Header {
                kid: Some("key-1".into()),
                ..Header::new(Algorithm::HS256)
            };
            jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(n.as_bytes()))
                .unwrap()
        }),
        ("alg none", {
            let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"key-1","typ":"JWT"}"#);
            let body = URL_SAFE_NO_PAD.encode(claims().to_string());
            format!("{header}.{body}.")
        }),
        ("signature of another token", {
            let good = sign(&key, &claims());
            let mut c = claims();
            c["email"] = json!("someone@evil.example");
            let forged = sign(&key, &c);
            let (head, _) = forged.rsplit_once('.').unwrap();
            let (_, signature) = good.rsplit_once('.').unwrap();
            format!("{head}.{signature}")
        }),
        ("garbage", "not.a.jwt".to_string()),
        ("empty", String::new()),
    ];
    for (what, token) in cases {
        assert!(
            is_invalid(verifier.verify(&token).await),
            "{what} was not refused"
        );
    }
}

#[tokio::test]
async fn fetches_the_keys_once_for_concurrent_requests_and_rate_limits_refreshes() {
    let key = rsa_key("key-1");
    let jwks = jwks_server(vec![key.jwk.clone()]).await;
    let verifier = Arc::new(Verifier::new(config(&jwks.url)));
    let token = sign(&key, &claims());

    let checks: Vec<_> = (0..20)
        .map(|_| {
            let verifier = verifier.clone();
            let token = token.clone();
            tokio::spawn(async move { verifier.verify(&token).await })
        })
        .collect();
    for check in checks {
        check.await.unwrap().unwrap();
    }
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1);

    // A token with an unknown kid right after a fetch does not refetch.
    let stranger = rsa_key("key-9");
    for _ in 0..5 {
        assert!(is_invalid(
            verifier.verify(&sign(&stranger, &claims())).await
        ));
    }
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1);
    verifier.verify(&token).await.unwrap();
}

#[tokio::test]
async fn unreachable_keys_are_our_problem_not_the_callers() {
    let key = rsa_key("key-1");
    let verifier = Verifier::new(config("http://127.0.0.1:9/jwks.json"));
    for _ in 0..2 {
        let result = verifier.verify(&sign(&key, &claims())).await;
        assert!(
            matches!(result, Err(Rejection::KeysUnavailable(_))),
            "{result:?}"
        );
    }
}

#[tokio::test]
async fn the_layer_answers_401_403_and_lets_valid_pushes_through() {
    let key = rsa_key("key-1");
    let jwks = jwks_server(vec![key.jwk.clone()]).await;
    let app = PushAuth::Verify(config(&jwks.url))
        .protect(Router::new().route("/", post(|| async { StatusCode::NO_CONTENT })))
        .route("/healthz", get(|| async { "ok" }));
    let call = |auth: Option<String>, path: &'static str| {
        let app = app.clone();
        async move {
            let mut request = Request::builder()
                .method(if path == "/" { "POST" } else { "GET" })
                .uri(path);
            if let Some(auth) = auth {
                request = request.header(header::AUTHORIZATION, auth);
            }
            app.oneshot(request.body(Body::empty()).unwrap())
                .await
                .unwrap()
        }
    };

    let missing = call(None, "/").await;
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(missing.headers()[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(
        call(Some("Basic abc".into()), "/").await.status(),
        StatusCode::UNAUTHORIZED
    );

    let mut other = claims();
    other["email"] = json!("someone@evil.example");
    let forbidden = call(Some(format!("Bearer {}", sign(&key, &other))), "/").await;
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    let body = axum::body::to_bytes(forbidden.into_body(), 1024)
        .await
        .unwrap();
    assert_eq!(body.as_ref(), br#"{"error":"forbidden"}"#);

    let ok = call(Some(format!("Bearer {}", sign(&key, &claims()))), "/").await;
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    assert_eq!(call(None, "/healthz").await.status(), StatusCode::OK);
}

fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}

#[test]
fn settings_default_to_verifying_against_google() {
    assert_eq!(
        PushAuth::from_vars(vars(&[])),
        Err(PushAuthSettingsError::NoAudience)
    );
    assert!(
        PushAuthSettingsError::NoAudience
            .to_string()
            .contains("PUSH_AUTH=off")
    );
    assert_eq!(
        PushAuth::from_vars(vars(&[("PUSH_AUDIENCE", AUDIENCE)])),
        Err(PushAuthSettingsError::NoServiceAccounts)
    );
    assert_eq!(
        PushAuth::from_vars(vars(&[("PUSH_AUTH", "off")])),
        Ok(PushAuth::Off)
    );
    assert!(PushAuth::from_vars(vars(&[("PUSH_AUTH", "maybe")])).is_err());

    let google = PushAuth::from_vars(vars(&[
        ("PUSH_AUDIENCE", "https://email-service-abc-uc.a.run.app/"),
        (
            "PUSH_ALLOWED_SERVICE_ACCOUNTS",
            " a@p.iam.gserviceaccount.com, b@p.iam.gserviceaccount.com ",
        ),
    ]))
    .unwrap();
    let PushAuth::Verify(google) = google else {
        panic!("expected verify")
    };
    assert_eq!(google.jwks_url, GOOGLE_JWKS_URL);
    assert_eq!(
        google.issuers,
        GOOGLE_ISSUERS.iter().map(|s| s.to_string()).collect()
    );
    assert_eq!(google.allowed_service_accounts.len(), 2);

    let local = PushAuth::from_vars(vars(&[
        ("PUSH_AUTH", "verify"),
        ("PUSH_AUDIENCE", AUDIENCE),
        ("PUSH_ALLOWED_SERVICE_ACCOUNTS", EMAIL),
        ("PUSH_TOKEN_ISSUERS", ISSUER),
        (
            "PUSH_JWKS_URL",
            "http://127.0.0.1:8085/.well-known/jwks.json",
        ),
    ]))
    .unwrap();
    assert_eq!(
        local,
        PushAuth::Verify(config("http://127.0.0.1:8085/.well-known/jwks.json"))
    );
}

#[test]
fn the_jwks_url_must_be_https_unless_on_loopback() {
    let with_jwks = |url: &str| {
        PushAuth::from_vars(vars(&[
            ("PUSH_AUDIENCE", AUDIENCE),
            ("PUSH_ALLOWED_SERVICE_ACCOUNTS", EMAIL),
            ("PUSH_JWKS_URL", url),
        ]))
    };
    for url in [
        "https://www.googleapis.com/oauth2/v3/certs",
        "https://keys.example.com:8443/jwks.json",
        "http://127.0.0.1:8085/.well-known/jwks.json",
        "http://127.9.8.7/jwks.json",
        "http://localhost:8085/.well-known/jwks.json",
        "http://LOCALHOST/jwks.json",
        "http://[::1]:8085/.well-known/jwks.json",
    ] {
        let settings = with_jwks(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        let PushAuth::Verify(config) = settings else {
            panic!("{url}: expected verify")
        };
        assert_eq!(config.jwks_url, url);
    }
    for url in [
        "http://www.googleapis.com/oauth2/v3/certs",
        "http://10.0.0.5/jwks.json",
        "http://192.168.1.2:8085/.well-known/jwks.json",
        "http://[::ffff:127.0.0.1]/jwks.json",
        "http://0.0.0.0:8085/jwks.json",
        "http://localhost.evil.example/jwks.json",
        "http://app.localhost/jwks.json",
    ] {
        let error = with_jwks(url).unwrap_err();
        assert_eq!(
            error,
            PushAuthSettingsError::InsecureJwksUrl(url.to_string()),
            "{url}"
        );
        let message = error.to_string();
        assert!(
            message.contains("PUSH_JWKS_URL must be https://") && message.contains("loopback"),
            "{message}"
        );
    }
    for url in [
        "ftp://127.0.0.1/jwks.json",
        "127.0.0.1:8085/jwks",
        "https://",
    ] {
        assert_eq!(
            with_jwks(url),
            Err(PushAuthSettingsError::JwksUrl(url.to_string())),
            "{url}"
        );
    }
}

/// A JWKS server whose keys are one redirect away: a verifier that
/// followed it would find a good key.
#[tokio::test]
async fn a_redirect_from_the_jwks_url_is_not_followed() {
    let key = rsa_key("key-1");
    let good = jwks_server(vec![key.jwk.clone()]).await;
    let target = good.url.clone();
    let redirects = Arc::new(AtomicUsize::new(0));
    let counter = redirects.clone();
    let app = Router::new().route(
        "/jwks.json",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let target = target.clone();
            async move { (StatusCode::FOUND, [(header::LOCATION, target)]) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let moved = format!("http://{addr}/jwks.json");

    let verifier = Verifier::new(config(&moved));
    let result = verifier.verify(&sign(&key, &claims())).await;
    let Err(Rejection::KeysUnavailable(why)) = result else {
        panic!("a redirect was followed or mistaken: {result:?}")
    };
    assert!(why.contains("302") && why.contains("not followed"), "{why}");

    // Through the layer, as a push would be: 503, so the broker retries.
    let app = PushAuth::Verify(config(&moved))
        .protect(Router::new().route("/", post(|| async { StatusCode::NO_CONTENT })));
    let response = app
        .oneshot(
            Request::builder()
                .method("POST")
                .uri("/")
                .header(
                    header::AUTHORIZATION,
                    format!("Bearer {}", sign(&key, &claims())),
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);

    assert_eq!(redirects.load(Ordering::SeqCst), 2);
    assert_eq!(
        good.fetches.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
    // The same keys at the configured URL are accepted: only the redirect
    // was refused.
    Verifier::new(config(&good.url))
        .verify(&sign(&key, &claims()))
        .await
        .unwrap();
}
