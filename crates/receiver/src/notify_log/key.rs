//! What a notification is keyed by: a hash of the report's content and the
//! recipient ([`notification_hash`]), never of the rendered text.

use labrelay_contract::LabReport;
use sha2::{Digest, Sha256};

/// Hex SHA-256 over length-prefixed fields, so no two field lists hash alike.
pub fn content_hash(fields: &[&str]) -> String {
    let mut hash = Fields::default();
    for field in fields {
        hash.text(field);
    }
    hash.finish()
}

/// What identifies one report's notification to `recipient` (an email
/// address, an E.164 number) in the log: a hex SHA-256 of the report's
/// content and the recipient, never of the rendered text. A template
/// changed between two deliveries of one message (a rolling deploy, a
/// template edited at run time) leaves the key as it was, so the second
/// delivery finds the record; a corrected report (any field a notification
/// may show: clinic, pet, owner's name, results, issue time) is a new
/// notification. The owner's email and phone count only as the recipient
/// of their own channel, and fields the receivers do not read not at all.
/// The owner's `locale` is left out on purpose: it chooses the words, as a
/// template does, so a report re-posted with only its language changed is
/// not sent again (and keys recorded before there were locales still
/// match).
pub fn notification_hash(report: &LabReport, recipient: &str) -> String {
    let mut hash = Fields::default();
    hash.text("labrelay-notification/2");
    hash.text(&report.id.to_string());
    hash.text(recipient);
    let LabReport {
        clinic, pet, owner, ..
    } = report;
    for field in [
        &clinic.name,
        &clinic.phone,
        &pet.name,
        &pet.species,
        &owner.name,
    ] {
        hash.optional(field.as_deref());
    }
    hash.text(&report.tests.len().to_string());
    for test in &report.tests {
        hash.optional(test.name.as_deref());
        hash.optional(
            test.value
                .as_ref()
                .map(|value| value.to_string())
                .as_deref(),
        );
        hash.optional(test.unit.as_deref());
        hash.optional(test.range.as_deref());
        hash.optional(test.flag.as_deref());
    }
    hash.optional(report.issued_at.as_deref());
    hash.finish()
}

/// A SHA-256 of a sequence of fields, each length-prefixed, an absent one
/// told apart from an empty one.
#[derive(Default)]
struct Fields(Sha256);

impl Fields {
    fn text(&mut self, text: &str) {
        self.0.update((text.len() as u64).to_be_bytes());
        self.0.update(text.as_bytes());
    }

    fn optional(&mut self, text: Option<&str>) {
        match text {
            None => self.0.update([0]),
            Some(text) => {
                self.0.update([1]);
                self.text(text);
            }
        }
    }

    fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}
