//! Criterion micro-benchmarks for the wire contract's hot path: the push
//! envelope (encoded as an owned `PushEnvelope` and as the broker writes
//! it, a `PushEnvelopeRef`; parse + decode on the receivers').
//!
//! `cargo bench -p labrelay-contract`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use labrelay_contract::push::{PushEnvelope, PushEnvelopeRef, PushMessage, PushMessageRef};
use serde_json::json;

const SUBSCRIPTION: &str = "projects/labrelay-local/subscriptions/email-service-sub";

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

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = envelope
}
criterion_main!(benches);
