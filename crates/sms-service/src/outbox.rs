//! The directory outbox: one JSON object per message,
//! `{"to", "from", "body", "reportId", "messageId"}`.
//!
//! A file is named `{report id}-{hash}.json`, the hash covering the report id
//! and the message (not the Pub/Sub message id), so a redelivery rewrites the
//! same file instead of adding one. It is written to a hidden temporary file
//! in the same directory, flushed to disk and renamed over the target, so a
//! reader never sees half a message and an acknowledged message survives a
//! crash; [`labrelay_receiver::group_write`] does that for many messages at once.

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::channel::Sms;
use crate::settings::OutboxSettings;
use crate::transport::SendError;
use labrelay_receiver::group_write::{self, GroupWriter};
use labrelay_receiver::notify_log::content_hash;

pub(crate) struct Outbox {
    writer: GroupWriter,
    from: String,
}

/// A missing outbox is a fault (an unmounted or lost disk), not recreated.
const WRITER: group_write::Options = group_write::Options {
    temp_prefix: ".sms-",
    temp_suffix: ".tmp",
    create_dir: false,
};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutboxMessage<'a> {
    to: &'a str,
    from: &'a str,
    body: &'a str,
    report_id: &'a str,
    message_id: &'a str,
}

impl Outbox {
    pub fn new(settings: &OutboxSettings) -> anyhow::Result<Outbox> {
        std::fs::create_dir_all(&settings.dir)
            .with_context(|| format!("creating the SMS outbox {}", settings.dir.display()))?;
        let writer = GroupWriter::start(settings.dir.clone(), WRITER)
            .context("starting the SMS outbox's writer thread")?;
        Ok(Outbox {
            writer,
            from: settings.from.clone(),
        })
    }

    pub fn dir(&self) -> &Path {
        self.writer.dir()
    }

    /// Writes the message; returns the file name.
    pub async fn write(&self, sms: &Sms) -> Result<String, SendError> {
        let name = file_name(&sms.report_id, sms.to.as_str(), &self.from, &sms.body);
        let message = OutboxMessage {
            to: sms.to.as_str(),
            from: &self.from,
            body: &sms.body,
            report_id: &sms.report_id,
            message_id: &sms.message_id,
        };
        let mut json = serde_json::to_vec_pretty(&message)
            .map_err(|e| SendError::Outbox(std::io::Error::other(e)))?;
        json.push(b'\n');
        self.writer
            .write(name.clone(), json)
            .await
            .map_err(SendError::Outbox)?;
        Ok(name)
    }
}

/// `{sanitized id}-{16 hex digits}.json`: stable for the same report and
/// message, different when either changes, and safe on any file system.
fn file_name(report_id: &str, to: &str, from: &str, body: &str) -> String {
    let hash = content_hash(&[report_id, to, from, body]);
    group_write::file_name(report_id, &hash[..16], "json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_safe_and_distinct() {
        let name = file_name("LR-2026-000123", "+15551234567", "labrelay", "Hello");
        assert_eq!(
            name,
            file_name("LR-2026-000123", "+15551234567", "labrelay", "Hello")
        );
        assert!(
            name.starts_with("LR-2026-000123-") && name.ends_with(".json"),
            "{name}"
        );
        assert_eq!(name.len(), "LR-2026-000123-".len() + 16 + ".json".len());

        let others = [
            file_name("LR-2026-000124", "+15551234567", "labrelay", "Hello"),
            file_name("LR-2026-000123", "+15551234568", "labrelay", "Hello"),
            file_name("LR-2026-000123", "+15551234567", "other", "Hello"),
            file_name("LR-2026-000123", "+15551234567", "labrelay", "Hello!"),
            // Field boundaries are part of the hash.
            file_name("LR-2026-00012", "3+15551234567", "labrelay", "Hello"),
        ];
        for other in others {
            assert_ne!(name, other);
        }

        let odd = file_name("../etc/passwd é", "+1", "f", "b");
        assert!(odd.starts_with("___etc_passwd__-"), "{odd}");
        let long = file_name(&"x".repeat(128), "+1", "f", "b");
        assert!(long.starts_with(&format!("{}-", "x".repeat(64))), "{long}");
        // Sanitized ids that collide still get different names.
        assert_ne!(
            file_name("a/b", "+1", "f", "b"),
            file_name("a.b", "+1", "f", "b")
        );
    }
}
