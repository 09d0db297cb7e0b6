//! `labrelay post`: what the lab's `post-reports.sh` did, with reports that
//! really produce an email and an SMS.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

const PETS: &[(&str, &str)] = &[
    ("Max", "dog"),
    ("Luna", "cat"),
    ("Charlie", "dog"),
    ("Bella", "cat"),
    ("Milo", "rabbit"),
    ("Daisy", "dog"),
];
const OWNERS: &[&str] = &[
    "Alex Kim",
    "Sam Rivera",
    "Jordan Lee",
    "Priya Patel",
    "Chris Novak",
];

/// Korean owners' pets, and the owners, for the reports written in `ko-KR`.
const KOREAN_PETS: &[(&str, &str)] = &[
    ("초코", "dog"),
    ("나비", "cat"),
    ("보리", "dog"),
    ("두부", "cat"),
    ("콩이", "rabbit"),
    ("망고", "dog"),
];
const KOREAN_OWNERS: &[&str] = &["김민준", "이서연", "박지호", "최수아", "정하은"];

/// A realistic report for `id`: the same id always gives the same report.
/// One in three is for a Korean owner (`owner.locale` `ko-KR`, a clinic in
/// Seoul, Korean names, a Korean mobile number); the others have no
/// locale and are written in the clinic's default.
pub fn sample_report(id: &str) -> serde_json::Value {
    let n = id.bytes().fold(0usize, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(b as usize)
    });
    if n % 3 == 0 {
        korean_report(id, n)
    } else {
        sample_english(id, n)
    }
}

fn sample_english(id: &str, n: usize) -> serde_json::Value {
    let (pet, species) = PETS[n % PETS.len()];
    let owner = OWNERS[n % OWNERS.len()];
    let alt = 20 + (n % 140) as i64;
    let glucose = 70 + (n % 90) as i64;
    let flag = |value: i64, low: i64, high: i64| match value {
        v if v < low => "low",
        v if v > high => "high",
        _ => "normal",
    };
    let id_value = id
        .parse::<i64>()
        .map(serde_json::Value::from)
        .unwrap_or_else(|_| id.into());
    json!({
        "id": id_value,
        "clinic": {"name": "Pet Theory Downtown", "phone": "+15551230000"},
        "pet": {"name": pet, "species": species},
        "owner": {
            "name": owner,
            "email": format!("owner-{}@example.com", n % 10_000),
            "phone": format!("+1555{:07}", n % 10_000_000),
        },
        "tests": [
            {"name": "ALT", "value": alt, "unit": "U/L", "range": "10-100", "flag": flag(alt, 10, 100)},
            {"name": "Glucose", "value": glucose, "unit": "mg/dL", "range": "74-143", "flag": flag(glucose, 74, 143)},
            {"name": "Heartworm antigen", "value": "negative", "flag": "normal"},
        ],
        "issuedAt": "2026-11-24T10:00:00Z",
    })
}

fn korean_report(id: &str, n: usize) -> serde_json::Value {
    let mut report = sample_english(id, n);
    let (pet, species) = KOREAN_PETS[n % KOREAN_PETS.len()];
    report["clinic"] = json!({"name": "펫시어리 강남점", "phone": "+8225550000"});
    report["pet"] = json!({"name": pet, "species": species});
    report["owner"] = json!({
        "name": KOREAN_OWNERS[n % KOREAN_OWNERS.len()],
        "email": format!("owner-{}@example.com", n % 10_000),
        "phone": format!("+8210{:08}", n % 100_000_000),
        "locale": "ko-KR",
    });
    report["issuedAt"] = json!("2026-11-24T19:00:00+09:00");
    report
}

/// Posts every report concurrently and prints `id status` per line; fails
/// if any was not accepted.
pub async fn run(
    url: &str,
    ids: &[String],
    bare: bool,
    api_key: Option<&str>,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
    let posts = ids.iter().map(|id| {
        let client = client.clone();
        let body = if bare {
            let id_value = id
                .parse::<i64>()
                .map(serde_json::Value::from)
                .unwrap_or_else(|_| id.as_str().into());
            json!({ "id": id_value })
        } else {
            sample_report(id)
        };
        async move {
            let mut request = client.post(url).json(&body);
            if let Some(key) = api_key {
                request = request.bearer_auth(key);
            }
            (id, request.send().await)
        }
    });
    let mut failed = 0;
    for (id, result) in futures::future::join_all(posts).await {
        match result {
            Ok(response) if response.status() == reqwest::StatusCode::NO_CONTENT => {
                println!("{id}\t{}", response.status().as_u16());
            }
            Ok(response) => {
                failed += 1;
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                println!("{id}\t{status}\t{}", body.trim());
            }
            Err(error) => {
                failed += 1;
                println!("{id}\terror\t{}", describe(&error));
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} reports were not accepted", ids.len());
    }
    Ok(())
}

fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_reports_are_valid_and_stable() {
        for id in ["12", "34", "56", "LR-2026-000123"] {
            let report = sample_report(id);
            let parsed =
                labrelay_contract::LabReport::parse(report.to_string().as_bytes()).unwrap();
            assert_eq!(parsed.id.to_string(), id);
            assert!(parsed.owner.email.is_some() && parsed.owner.phone.is_some());
            assert_eq!(report, sample_report(id));
        }
        assert_eq!(sample_report("12")["id"], json!(12));
        assert_eq!(sample_report("12")["owner"]["locale"], json!("ko-KR"));
        assert_eq!(sample_report("34")["owner"].get("locale"), None);
    }

    /// Every built-in template, in every locale, renders the reports
    /// `labrelay post` makes: the email's three parts and an SMS that fits
    /// one segment, Korean included.
    #[test]
    fn every_built_in_template_renders_every_sample_report_in_every_locale() {
        use labrelay_email_service::render;
        use labrelay_sms_service::{notice, segments};

        let settings = Default::default();
        let email = render::templates(&settings).unwrap();
        let sms = notice::templates(&settings).unwrap();
        let mut korean = 0;
        for i in 0..60 {
            let id = if i % 2 == 0 {
                format!("{i}")
            } else {
                format!("LR-2026-{i:06}")
            };
            let json = sample_report(&id);
            let report = labrelay_contract::LabReport::parse(json.to_string().as_bytes()).unwrap();
            korean += usize::from(email.locale_for(&report).name() == "ko");
            let pet = report.pet.name.clone().unwrap();
            for locale in email.locales() {
                let rendered = render::render(&email, locale, &report).unwrap();
                assert!(rendered.subject.contains(&pet), "{}", rendered.subject);
                assert!(rendered.text.contains(&pet) && rendered.text.contains("ALT"));
                assert!(rendered.html.contains("ALT") && rendered.html.is_ascii());
                let want_date = match locale.name() {
                    "ko" => "2026년 11월 24일",
                    _ => "24 November 2026",
                };
                assert!(rendered.text.contains(want_date), "{}", rendered.text);
            }
            for locale in sms.locales() {
                let text = notice::compose(&sms, locale, &report).unwrap();
                let length = segments::measure(&text);
                assert!(length.fits_one_segment(), "{text:?}");
                assert!(
                    text.contains(&pet),
                    "ordinary names keep the pet's: {text:?}"
                );
                if locale.name() == "ko" {
                    assert_eq!(length.encoding, segments::Encoding::Ucs2, "{text:?}");
                }
            }
        }
        assert!((10..=30).contains(&korean), "{korean} of 60 Korean");
    }
}
