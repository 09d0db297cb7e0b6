//! Criterion micro-benchmarks for the contract's hot paths: the push envelope
//! (encoded as an owned `PushEnvelope` and as the broker writes it, a
//! `PushEnvelopeRef`; parse + decode on the service side) and push
//! token signing and verification (RS256, 2048-bit key, as the broker mints).
//!
//! `cargo bench -p labrelay-contract`

use std::collections::{BTreeMap, HashSet};
use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jsonwebtoken::jwk::{Jwk, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use labrelay_contract::push::{PushEnvelope, PushEnvelopeRef, PushMessage, PushMessageRef};
use labrelay_contract::push_auth::{PushAuthConfig, VERIFIED_CACHE_CAPACITY, Verifier};
use serde_json::json;

const SUBSCRIPTION: &str = "projects/labrelay-local/subscriptions/email-service-sub";
const AUDIENCE: &str = "http://127.0.0.1:8081/";
const EMAIL: &str = "pubsub-push@labrelay-local.iam.gserviceaccount.com";

/// A realistic lab report padded to exactly 1 KiB (1024 bytes of JSON).
fn report_1kib() -> Vec<u8> {
    let tests: Vec<_> = [
        ("ALT", 42, "U/L", "10-100"),
        ("AST", 31, "U/L", "0-50"),
        ("BUN", 18, "mg/dL", "7-27"),
        ("CREA", 1, "mg/dL", "0-2"),
        ("GLU", 96, "mg/dL", "70-143"),
    ]
    .iter()
    .map(|(name, value, unit, range)| {
        json!({"name": name, "value": value, "unit": unit, "range": range, "flag": "normal"})
    })
    .collect();
    let mut report = json!({
        "id": "LR-2026-000123",
        "clinic": {"name": "Pet Theory Downtown", "phone": "+15551230000"},
        "pet": {"name": "Max", "species": "dog"},
        "owner": {"name": "Alex Kim", "email": "alex@example.com", "phone": "+15551234567"},
        "tests": tests,
        "issuedAt": "2026-11-24T10:00:00Z",
        "notes": "",
    });
    let len = serde_json::to_vec(&report).expect("json").len();
    assert!(len < 1024, "the base report is {len} bytes");
    report["notes"] = json!("x".repeat(1024 - len));
    let bytes = serde_json::to_vec(&report).expect("json");
    assert_eq!(bytes.len(), 1024);
    bytes
}

fn envelope(c: &mut Criterion) {
    let data = report_1kib();
    let attributes = BTreeMap::from([("reportId".to_string(), "LR-2026-000123".to_string())]);
    let build = |data: &[u8]| PushEnvelope {
        message: PushMessage::new(
            data,
            attributes.clone(),
            "2070443601311540".into(),
            "2026-11-25T17:00:00.123456789Z".into(),
            None,
        ),
        subscription: SUBSCRIPTION.into(),
        delivery_attempt: Some(1),
    };
    let body = serde_json::to_vec(&build(&data)).expect("json");
    assert!(PushEnvelope::parse(&body).expect("parse").report().is_ok());

    let mut group = c.benchmark_group("push_envelope_1KiB");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode (build + serialize)", |b| {
        b.iter(|| serde_json::to_vec(&build(black_box(&data))).expect("json"))
    });
    // What the broker does per push: the body written from the fields of its
    // stored message (attributes in a HashMap, as prost keeps them).
    let stored: std::collections::HashMap<String, String> =
        attributes.clone().into_iter().collect();
    let borrowed = |data: &[u8]| {
        PushEnvelopeRef {
            message: PushMessageRef::new(
                data,
                stored.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                "2070443601311540",
                "2026-11-25T17:00:00.123456789Z",
                "",
            ),
            subscription: SUBSCRIPTION,
            delivery_attempt: Some(1),
        }
        .to_vec()
    };
    assert_eq!(borrowed(&data), body);
    group.bench_function("encode (borrowed, as the broker writes it)", |b| {
        b.iter(|| borrowed(black_box(&data)))
    });
    group.bench_function("parse", |b| {
        b.iter(|| PushEnvelope::parse(black_box(&body)).expect("parse"))
    });
    group.bench_function("parse + decode report", |b| {
        b.iter(|| {
            PushEnvelope::parse(black_box(&body))
                .and_then(|e| e.report())
                .expect("report")
        })
    });
    group.finish();
}

struct Keys {
    encoding: EncodingKey,
    header: Header,
    jwk: Jwk,
}

/// A 2048-bit RSA key generated as the broker generates its signing key.
fn keys() -> Keys {
    let pair = KeyPair::generate(KeySize::Rsa2048).expect("rsa key");
    let der = pair.as_der().expect("der");
    // PKCS#8 in PEM, exactly as the broker stores and loads its key.
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in STANDARD.encode(der.as_ref()).as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("rsa pem");
    let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).expect("jwk");
    let kid = jwk.thumbprint(ThumbprintHash::SHA256);
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_id = Some(kid.clone());
    Keys {
        encoding,
        header: Header {
            kid: Some(kid),
            ..Header::new(Algorithm::RS256)
        },
        jwk,
    }
}

fn sign(keys: &Keys, issuer: &str) -> String {
    sign_issued_ago(keys, issuer, 0)
}

/// A token issued `ago` seconds before now: distinct `ago`s give distinct
/// tokens with the same claims otherwise.
fn sign_issued_ago(keys: &Keys, issuer: &str, ago: u64) -> String {
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - ago;
    let claims = json!({
        "iss": issuer, "aud": AUDIENCE, "azp": "1234567890", "sub": "1234567890",
        "email": EMAIL, "email_verified": true, "iat": iat, "exp": iat + 3600,
    });
    jsonwebtoken::encode(&keys.header, &claims, &keys.encoding).expect("sign")
}

fn jwt(c: &mut Criterion) {
    let keys = keys();
    let issuer = "http://127.0.0.1:8085";
    let token = sign(&keys, issuer);
    let decoding = DecodingKey::from_jwk(&keys.jwk).expect("decoding key");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[issuer]);

    let mut group = c.benchmark_group("jwt_rs256_2048");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sign (jsonwebtoken::encode)", |b| {
        b.iter(|| sign(black_box(&keys), issuer))
    });
    group.bench_function("verify (jsonwebtoken::decode)", |b| {
        b.iter(|| {
            jsonwebtoken::decode::<serde_json::Value>(black_box(&token), &decoding, &validation)
                .expect("verify")
        })
    });

    // The receiving services' check: push_auth::Verifier with the JWKS served
    // locally; it is fetched once, so every measured call is a cache hit.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let jwks = json!({ "keys": [keys.jwk] });
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    runtime.spawn(async move { axum::serve(listener, app).await });
    let verifier = Verifier::new(PushAuthConfig {
        audience: AUDIENCE.into(),
        allowed_service_accounts: HashSet::from([EMAIL.to_string()]),
        issuers: HashSet::from([issuer.to_string()]),
        jwks_url: format!("http://{addr}/.well-known/jwks.json"),
    });
    runtime
        .block_on(verifier.verify(&token))
        .expect("the token verifies");
    // The broker reuses a token for many pushes, and the Verifier keeps the
    // last VERIFIED_CACHE_CAPACITY tokens it verified: this is the common
    // case, a lookup plus the claims' time checks.
    group.bench_function("verify (push_auth::Verifier, token seen before)", |b| {
        b.iter(|| {
            runtime
                .block_on(verifier.verify(black_box(&token)))
                .expect("verify")
        })
    });
    // Four times as many distinct tokens as the cache holds, taken in turn,
    // so every call misses and checks the signature (JWKS still cached).
    let fresh: Vec<String> = (0..4 * VERIFIED_CACHE_CAPACITY as u64)
        .map(|ago| sign_issued_ago(&keys, issuer, ago + 1))
        .collect();
    let mut next = fresh.iter().cycle();
    group.bench_function("verify (push_auth::Verifier, a new token)", |b| {
        b.iter(|| {
            let token = next.next().expect("cycle never ends");
            runtime
                .block_on(verifier.verify(black_box(token)))
                .expect("verify")
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = envelope, jwt
}
criterion_main!(benches);
