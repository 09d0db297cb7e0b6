//! `Settings::from_vars`: defaults, precedence and refusals.

use std::collections::HashMap;
use std::time::Duration;

use std::num::NonZeroU32;

use labrelay_lab_report_service::ingest_auth::{IngestAuth, hash_key};
use labrelay_lab_report_service::rate_limit::{Per, RateLimit};
use labrelay_lab_report_service::{MetricsAt, Settings};
use labrelay_runtime::origin_guard::AllowedHosts;

/// Settings from `vars`, open to every caller unless they set `INGEST_OPEN`
/// or keys.
fn from(vars: &[(&str, &str)]) -> anyhow::Result<Settings> {
    let mut vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if !vars
        .keys()
        .any(|k| k == "INGEST_OPEN" || k.starts_with("INGEST_API_KEYS"))
    {
        vars.insert("INGEST_OPEN".into(), "true".into());
    }
    Settings::from_vars(|name| vars.get(name).cloned())
}

#[test]
fn defaults_without_any_variable() {
    let settings = from(&[]).unwrap();
    assert_eq!(settings.project, "labrelay-local");
    assert_eq!(settings.topic, "new-lab-report");
    assert_eq!(
        settings.topic_name(),
        "projects/labrelay-local/topics/new-lab-report"
    );
    assert_eq!(settings.emulator_host, None, "unset: Google Cloud with ADC");
    assert_eq!(settings.emulator_endpoint().unwrap(), None);
    assert_eq!(settings.max_body_bytes, 1_048_576);
    assert_eq!(settings.publish_timeout, Duration::from_secs(8));
    assert_eq!(settings.batch_delay, Duration::ZERO);
    assert_eq!(settings.rate_limit, RateLimit::DEFAULT);
    assert_eq!(settings.metrics, MetricsAt::ServicePort);
    assert_eq!(settings, Settings::default());
}

#[test]
fn project_precedence() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "labrelay-local"),
        (&[("GOOGLE_CLOUD_PROJECT", "gcp")], "gcp"),
        (&[("PUBSUB_PROJECT_ID", "pubsub")], "pubsub"),
        (
            &[
                ("PUBSUB_PROJECT_ID", "pubsub"),
                ("GOOGLE_CLOUD_PROJECT", "gcp"),
            ],
            "pubsub",
        ),
        (
            &[("PUBSUB_PROJECT_ID", ""), ("GOOGLE_CLOUD_PROJECT", "gcp")],
            "gcp",
        ),
        (
            &[("PUBSUB_PROJECT_ID", " "), ("GOOGLE_CLOUD_PROJECT", "")],
            "labrelay-local",
        ),
    ];
    for (vars, project) in cases {
        assert_eq!(from(vars).unwrap().project, *project, "{vars:?}");
    }
}

#[test]
fn on_cloud_run_the_project_must_be_given() {
    let error = from(&[("K_SERVICE", "lab-report-service")]).unwrap_err();
    assert!(
        error.to_string().contains("GOOGLE_CLOUD_PROJECT"),
        "{error}"
    );
    let given = from(&[
        ("K_SERVICE", "lab-report-service"),
        ("GOOGLE_CLOUD_PROJECT", "clinic"),
    ]);
    assert_eq!(given.unwrap().project, "clinic");
    // With a local broker, the local default project is fine.
    let local = from(&[
        ("K_SERVICE", "x"),
        ("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085"),
    ]);
    assert_eq!(local.unwrap().project, "labrelay-local");
}

#[test]
fn emulator_host() {
    let cases: &[(Option<&str>, Option<&str>)] = &[
        (None, None),
        (Some(""), None),
        (Some("127.0.0.1:8085"), Some("http://127.0.0.1:8085")),
        (Some("localhost:8085"), Some("http://localhost:8085")),
        (Some("[::1]:8085"), Some("http://[::1]:8085")),
        (Some("http://broker:9000"), Some("http://broker:9000")),
    ];
    for (host, endpoint) in cases {
        let vars: Vec<(&str, &str)> = host.iter().map(|h| ("PUBSUB_EMULATOR_HOST", *h)).collect();
        let settings = from(&vars).unwrap();
        assert_eq!(
            settings.emulator_endpoint().unwrap().as_deref(),
            *endpoint,
            "{host:?}"
        );
    }
}

#[test]
fn every_variable_is_read() {
    let settings = from(&[
        ("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085"),
        ("PUBSUB_PROJECT_ID", "p"),
        ("LAB_REPORT_TOPIC", "reports"),
        ("MAX_BODY_BYTES", "4096"),
        ("PUBLISH_TIMEOUT_SECS", "2.5"),
        ("PUBLISH_BATCH_DELAY_MS", "3"),
        ("ALLOWED_HOSTS", "ingest.clinic.example"),
        ("INGEST_RATE_LIMIT", "600/min"),
        ("INGEST_RATE_BURST", "30"),
        ("METRICS_PORT", "9464"),
    ])
    .unwrap();
    assert_eq!(
        settings,
        Settings {
            project: "p".into(),
            topic: "reports".into(),
            emulator_host: Some("127.0.0.1:8085".into()),
            max_body_bytes: 4096,
            publish_timeout: Duration::from_millis(2500),
            batch_delay: Duration::from_millis(3),
            ingest_auth: IngestAuth::Open,
            trace_project: Some("p".into()),
            allowed_hosts: Some(AllowedHosts::parse("ingest.clinic.example").unwrap()),
            rate_limit: RateLimit::PerLab {
                rate: NonZeroU32::new(600).unwrap(),
                per: Per::Minute,
                burst: NonZeroU32::new(30).unwrap(),
            },
            metrics: MetricsAt::Port(9464),
        }
    );
    assert_eq!(settings.topic_name(), "projects/p/topics/reports");
}

#[test]
fn bad_values_are_refused_naming_the_variable() {
    let cases: &[(&str, &str)] = &[
        ("PUBSUB_EMULATOR_HOST", "localhost"),
        ("PUBSUB_EMULATOR_HOST", "not a host:port"),
        ("LAB_REPORT_TOPIC", "projects/p/topics/t"),
        ("MAX_BODY_BYTES", "1MiB"),
        ("MAX_BODY_BYTES", "0"),
        ("PUBLISH_TIMEOUT_SECS", "soon"),
        ("PUBLISH_TIMEOUT_SECS", "0"),
        ("PUBLISH_TIMEOUT_SECS", "-1"),
        ("PUBLISH_BATCH_DELAY_MS", "1.5"),
        ("INGEST_RATE_LIMIT", "50"),
        ("INGEST_RATE_LIMIT", "0/s"),
        ("INGEST_RATE_LIMIT", "lots"),
        ("INGEST_RATE_BURST", "0"),
        ("INGEST_RATE_BURST", "-5"),
        ("METRICS_PORT", "metrics"),
        ("METRICS_PORT", "65536"),
    ];
    for (name, value) in cases {
        let error = from(&[(name, value)]).expect_err(&format!("{name}={value}"));
        assert!(
            format!("{error:#}").contains(name),
            "{name}={value}: {error:#}"
        );
    }
}

#[test]
fn refuses_to_start_without_keys_unless_told_to_run_open() {
    let error = from(&[("INGEST_OPEN", "false")]).unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("INGEST_API_KEYS"), "{message}");
    assert!(message.contains("INGEST_OPEN=true"), "{message}");

    let entry = format!("idexx:{}", hash_key("k1"));
    let settings = from(&[("INGEST_API_KEYS", &entry)]).unwrap();
    let IngestAuth::Keys(keys) = &settings.ingest_auth else {
        panic!("keys expected")
    };
    assert_eq!(keys.lab_of("k1"), Some("idexx"));
    assert!(!format!("{settings:?}").contains(&hash_key("k1")));
}

#[test]
fn the_rate_limit_can_be_turned_off_and_a_burst_without_it_is_refused() {
    assert_eq!(
        from(&[("INGEST_RATE_LIMIT", "off")]).unwrap().rate_limit,
        RateLimit::Off
    );
    let error = from(&[("INGEST_RATE_LIMIT", "off"), ("INGEST_RATE_BURST", "10")]).unwrap_err();
    assert!(
        format!("{error:#}").contains("INGEST_RATE_BURST"),
        "{error:#}"
    );
}

#[test]
fn on_cloud_run_metrics_are_not_on_the_public_port() {
    let on_cloud_run = [
        ("K_SERVICE", "lab-report-service"),
        ("GOOGLE_CLOUD_PROJECT", "p"),
    ];
    assert_eq!(from(&on_cloud_run).unwrap().metrics, MetricsAt::Nowhere);
    let with_port = [on_cloud_run.as_slice(), &[("METRICS_PORT", "9464")]].concat();
    assert_eq!(from(&with_port).unwrap().metrics, MetricsAt::Port(9464));
    assert_eq!(
        from(&[("METRICS_PORT", "0")]).unwrap().metrics,
        MetricsAt::Port(0)
    );
}
