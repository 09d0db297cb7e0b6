//! A clinic's broken template stops a channel service at start, with a
//! non-zero exit and a message naming the file, the line and the problem,
//! instead of a 500 at the first real report.

use std::process::Command;

use crate::LABRELAY;

#[test]
fn a_broken_template_stops_the_service_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("templates/ko/email.html");
    let sms = dir.path().join("templates/ko/sms.txt");
    std::fs::create_dir_all(html.parent().unwrap()).unwrap();
    std::fs::write(&html, "<p>\n{{ pet.name }}\n{% for t in tests %}\n</p>\n").unwrap();
    std::fs::write(&sms, "{{ pet.name }}\n{{ pet.name | nosuchfilter }}\n").unwrap();
    let outbox = dir.path().join("outbox");
    for (service, url_var, file, problem) in [
        ("email-service", "SMTP_URL", &html, "syntax error"),
        ("sms-service", "SMS_URL", &sms, "unknown filter"),
    ] {
        let output = Command::new(LABRELAY)
            .arg(service)
            .env("PORT", "0")
            .env("PUSH_AUTH", "off")
            .env(url_var, format!("file://{}", outbox.display()))
            .env("TEMPLATES_DIR", dir.path().join("templates"))
            .env("DEFAULT_LOCALE", "ko-KR")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{service}: {stderr}");
        assert!(
            stderr.contains(&format!("template {}, line ", file.display()))
                && stderr.contains(problem),
            "{service}: {stderr}"
        );
    }
}
