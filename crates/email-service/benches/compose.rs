//! Criterion micro-benchmark of the email-service's own work per push: a
//! lab report to the bytes of its email (render the templates, address,
//! build the MIME message, hash the content for the Message-ID, format).
//! The report has the shape `labrelay-bench` posts.
//!
//! `cargo bench -p labrelay-email-service`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use labrelay_contract::LabReport;
use labrelay_email_service::email::{Sender, compose};
use lettre::message::Mailbox;

const REPORT: &str = r#"{
    "id": 1234567,
    "clinic": {"name": "Pet Theory Downtown", "phone": "+15551230000"},
    "pet": {"name": "Biscuit", "species": "dog"},
    "owner": {"name": "Alex Kim", "email": "owner-4321@example.com", "phone": "+15550004321"},
    "tests": [
        {"name": "ALT", "value": 112, "unit": "U/L", "range": "10-100", "flag": "high"},
        {"name": "Glucose", "value": 96, "unit": "mg/dL", "range": "74-143", "flag": "normal"},
        {"name": "Heartworm antigen", "value": "negative", "flag": "normal"}
    ],
    "issuedAt": "2026-11-24T10:00:00Z"
}"#;

fn compose_email(c: &mut Criterion) {
    let report = LabReport::parse(REPORT.as_bytes()).expect("a valid report");
    let from: Mailbox = "Pet Theory <results@pettheory.example>"
        .parse()
        .expect("a valid mailbox");
    let sender = Sender {
        from: &from,
        reply_to: None,
    };
    let templates = labrelay_email_service::render::templates(&Default::default())
        .expect("the built-in templates");
    let mut group = c.benchmark_group("email");
    group.bench_function("compose", |b| {
        b.iter(|| compose(black_box(&report), &sender, &templates).expect("composes"))
    });
    group.bench_function("compose + format", |b| {
        b.iter(|| {
            compose(black_box(&report), &sender, &templates)
                .expect("composes")
                .message
                .formatted()
        })
    });
    group.finish();
}

criterion_group!(benches, compose_email);
criterion_main!(benches);
