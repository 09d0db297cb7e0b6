//! Property tests: whatever arrives on the wire, the lab report and push
//! envelope parsers answer with a value or an error, never a panic.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use labrelay_contract::LabReport;
use labrelay_contract::push::PushEnvelope;
use labrelay_testkit::strategies;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Arbitrary JSON favouring the lab report's and the push envelope's
/// field names.
fn json_value() -> impl Strategy<Value = Value> {
    strategies::json_value(&[
        "id",
        "owner",
        "email",
        "phone",
        "tests",
        "pet",
        "clinic",
        "message",
        "data",
        "attributes",
        "messageId",
        "publishTime",
        "subscription",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn lab_report_parse_never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = LabReport::parse(&body);
    }

    #[test]
    fn lab_report_parse_never_panics_on_json(value in json_value()) {
        let body = value.to_string();
        if let Ok(report) = LabReport::parse(body.as_bytes()) {
            // What is accepted round-trips.
            prop_assert!(LabReport::parse(report.to_json().as_ref()).is_ok());
        }
    }

    #[test]
    fn lab_report_parse_never_panics_on_truncations(value in json_value(), cut in any::<prop::sample::Index>()) {
        let body = json!({"id": 12, "extra": value}).to_string();
        let _ = LabReport::parse(&body.as_bytes()[..cut.index(body.len() + 1)]);
    }

    #[test]
    fn push_envelope_parse_never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = PushEnvelope::parse(&body);
    }

    #[test]
    fn push_envelope_parse_never_panics_on_json(data in json_value(), attributes in json_value(), raw in ".{0,64}") {
        let envelopes = [
            json!({"message": {"data": STANDARD.encode(data.to_string()), "attributes": attributes,
                   "messageId": "1", "publishTime": "2026-11-24T10:00:00Z"}, "subscription": "s"}),
            json!({"message": {"data": raw, "messageId": "1", "publishTime": "t"}, "subscription": "s"}),
            json!({"message": data, "subscription": attributes}),
        ];
        for envelope in envelopes {
            if let Ok(envelope) = PushEnvelope::parse(envelope.to_string().as_bytes()) {
                let _ = envelope.report();
            }
        }
    }
}
