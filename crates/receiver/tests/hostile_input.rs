//! Property tests: whatever arrives as a push token, the verifier answers
//! with an error, never a panic, and nothing made up verifies.

use std::collections::HashSet;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use labrelay_receiver::push_auth::{PushAuthConfig, Verifier};
use labrelay_testkit::strategies;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Arbitrary JSON favouring the names a token's header and claims carry.
fn json_value() -> impl Strategy<Value = Value> {
    strategies::json_value(&[
        "alg",
        "kid",
        "typ",
        "iss",
        "aud",
        "sub",
        "email",
        "email_verified",
        "iat",
        "nbf",
        "exp",
    ])
}

/// A verifier whose JWKS URL answers nothing (port 9, discard): made-up
/// tokens with a plausible header reach the key lookup and fail there.
fn verifier() -> &'static (tokio::runtime::Runtime, Verifier) {
    static VERIFIER: OnceLock<(tokio::runtime::Runtime, Verifier)> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let verifier = Verifier::new(PushAuthConfig {
            audience: "http://127.0.0.1:8081/".into(),
            allowed_service_accounts: HashSet::from(["sa@p.iam.gserviceaccount.com".into()]),
            issuers: HashSet::from(["http://127.0.0.1:8085".into()]),
            jwks_url: "http://127.0.0.1:9/jwks.json".into(),
        });
        (runtime, verifier)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_strings_never_verify(token in ".{0,300}") {
        let (runtime, verifier) = verifier();
        prop_assert!(runtime.block_on(verifier.verify(&token)).is_err());
    }

    #[test]
    fn arbitrary_jwt_shaped_tokens_never_verify(
        header in json_value(),
        claims in json_value(),
        signature in prop::collection::vec(any::<u8>(), 0..300),
        alg in prop_oneof![
            Just("RS256".to_string()),
            Just("none".to_string()),
            Just("HS256".to_string()),
            Just("ES256".to_string()),
            Just("PS256".to_string()),
            ".{0,8}",
        ],
    ) {
        let (runtime, verifier) = verifier();
        let headers = [
            header.to_string(),
            json!({"alg": alg, "kid": "k", "typ": "JWT"}).to_string(),
        ];
        let claims = [
            claims.to_string(),
            json!({"iss": "http://127.0.0.1:8085", "aud": "http://127.0.0.1:8081/",
                   "email": "sa@p.iam.gserviceaccount.com", "email_verified": true,
                   "iat": 1_900_000_000u64, "exp": 1_900_003_600u64}).to_string(),
        ];
        for header in &headers {
            for claims in &claims {
                let token = format!(
                    "{}.{}.{}",
                    URL_SAFE_NO_PAD.encode(header),
                    URL_SAFE_NO_PAD.encode(claims),
                    URL_SAFE_NO_PAD.encode(&signature),
                );
                prop_assert!(runtime.block_on(verifier.verify(&token)).is_err());
            }
        }
    }
}
