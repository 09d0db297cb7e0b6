//! `docs/configuration.md` cannot drift from the CLI: every flag and every
//! environment variable each `labrelay` command defines (as its own `--help`
//! prints them) is in that command's table, and every flag the table names
//! exists. The services read their settings from the environment through
//! `Settings::from_vars`; every variable they ask for, in each way of
//! configuring them, is in their table too.

use std::cell::RefCell;
use std::collections::BTreeSet;

use crate::LABRELAY;

fn doc() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("reading docs/configuration.md")
}

/// The names `read` asks for, under each of `configurations` (the values
/// it finds; every other name is unset).
fn asked_for(
    configurations: &[&[(&str, &str)]],
    read: impl Fn(&dyn Fn(&str) -> Option<String>),
) -> BTreeSet<String> {
    let asked = RefCell::new(BTreeSet::new());
    for vars in configurations {
        let get = |name: &str| {
            asked.borrow_mut().insert(name.to_string());
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        read(&get);
    }
    asked.into_inner()
}

#[track_caller]
fn assert_documented(doc: &str, command: &str, names: &BTreeSet<String>) {
    let section = labrelay_testkit::cli_doc::section(doc, &format!("`labrelay {command}`"));
    let missing: Vec<_> = names
        .iter()
        .filter(|name| !section.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md, `labrelay {command}`: {missing:?} missing"
    );
}

#[test]
fn every_variable_a_service_reads_is_documented() {
    let doc = doc();
    let push_auth: &[(&str, &str)] = &[
        ("PUSH_AUDIENCE", "https://svc.example/"),
        (
            "PUSH_ALLOWED_SERVICE_ACCOUNTS",
            "a@p.iam.gserviceaccount.com",
        ),
        ("NOTIFY_LOG", "sqlite:///tmp/labrelay-doc-check.db"),
        ("GOOGLE_CLOUD_PROJECT", "p"),
        ("ALLOWED_HOSTS", "svc.example"),
    ];
    let lab = asked_for(
        &[
            &[("INGEST_OPEN", "true")],
            &[
                ("INGEST_API_KEYS", "lab:00"),
                ("PUBSUB_EMULATOR_HOST", "127.0.0.1:1"),
            ],
        ],
        |get| {
            let _ = labrelay_lab_report_service::Settings::from_vars(get);
        },
    );
    assert_documented(&doc, "lab-report-service", &lab);
    let email = asked_for(
        &[
            &[("SMTP_URL", "file:///tmp/out"), ("PUSH_AUTH", "off")],
            &[
                &[
                    ("SMTP_URL", "smtps://smtp.example:465"),
                    ("SMTP_USERNAME", "u"),
                    ("SMTP_PASSWORD", "p"),
                    ("EMAIL_FROM", "a@b.example"),
                ][..],
                push_auth,
            ]
            .concat(),
        ],
        |get| {
            let _ = labrelay_email_service::Settings::from_vars(get);
        },
    );
    assert_documented(&doc, "email-service", &email);
    let sms = asked_for(
        &[
            &[("SMS_URL", "file:///tmp/out"), ("PUSH_AUTH", "off")],
            &[
                &[
                    ("TWILIO_ACCOUNT_SID", "AC00000000000000000000000000000000"),
                    ("TWILIO_AUTH_TOKEN", "t"),
                    ("TWILIO_FROM", "+15551230000"),
                ][..],
                push_auth,
            ]
            .concat(),
        ],
        |get| {
            let _ = labrelay_sms_service::Settings::from_vars(get);
        },
    );
    assert_documented(&doc, "sms-service", &sms);
    let webhooks = asked_for(
        &[&[
            ("PUBLIC_URL", "https://sms-webhooks.example"),
            ("TWILIO_AUTH_TOKEN", "t"),
            ("NOTIFY_LOG", "sqlite:///tmp/labrelay-doc-check.db"),
            ("GOOGLE_CLOUD_PROJECT", "p"),
        ]],
        |get| {
            let _ = labrelay_sms_service::WebhookSettings::from_vars(get);
        },
    );
    assert!(webhooks.contains("NOTIFY_LOG"), "{webhooks:?}");
    assert_documented(&doc, "sms-webhooks", &webhooks);
    for (service, names) in [("email", &email), ("sms", &sms)] {
        assert!(
            names.contains("PUSH_AUDIENCE") && names.contains("NOTIFY_LOG"),
            "the {service} check reached the receiver's settings: {names:?}"
        );
    }
}

#[test]
fn every_flag_and_variable_of_every_command_is_documented_and_nothing_else() {
    labrelay_testkit::cli_doc::check(LABRELAY.as_ref(), "labrelay", &doc());
}
