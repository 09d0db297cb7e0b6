//! Seeing each report arrive in the email and SMS outboxes.
//!
//! Both services write an outbox file to a hidden temporary name and rename
//! it into place, so exactly one `IN_MOVED_TO` per delivered file tells that
//! a complete message is there. On Linux, watching with inotify (one event per file,
//! stamped when read) instead of scanning the directories: a scan costs time
//! proportional to everything already delivered (300,000 files in a 60 s run
//! at 5,000/s), so it gets slower and coarser as the run goes on, while the
//! event costs the same for the last file as for the first. On the rare
//! queue overflow (`IN_Q_OVERFLOW`) the directories are scanned once and the
//! run says how often that happened, since those files get late timestamps.
//! Elsewhere the outboxes are listed every 5 ms instead: the same figures,
//! coarser and with the scan's growing cost.
//!
//! Which report a file is about: the SMS file is named
//! `{report id}-{16 hex}.json`, the email file `{report id}-{32 hex}.eml`
//! (`labrelay_receiver::group_write::file_name`); an email file named
//! otherwise (by an older `labrelay up`) has its `X-Report-Id` header read.

use std::collections::HashSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Email,
    Sms,
}

/// Report `index`'s message on `channel` was in its outbox at `at`.
#[derive(Debug)]
pub struct Delivered {
    pub channel: Channel,
    pub index: usize,
    pub at: Instant,
}

/// Watches both outboxes for reports whose id is `{prefix}{index}`; counts
/// overflow rescans in `rescans` (inotify only). The thread ends with the
/// receiver.
pub fn watch(
    email_dir: &Path,
    sms_dir: &Path,
    prefix: String,
    deliveries: UnboundedSender<Delivered>,
    rescans: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    for dir in [email_dir, sms_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    #[cfg(target_os = "linux")]
    {
        watch_events(email_dir, sms_dir, prefix, deliveries, rescans)
    }
    #[cfg(not(target_os = "linux"))]
    {
        drop(rescans);
        watch_by_polling(email_dir, sms_dir, prefix, deliveries)
    }
}

/// The inotify watch: one event per file moved into either outbox.
#[cfg(target_os = "linux")]
fn watch_events(
    email_dir: &Path,
    sms_dir: &Path,
    prefix: String,
    deliveries: UnboundedSender<Delivered>,
    rescans: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    use inotify::{Inotify, WatchMask};
    use std::sync::atomic::Ordering;

    let mut inotify = Inotify::init().context("starting inotify")?;
    let email_wd = inotify
        .watches()
        .add(email_dir, WatchMask::MOVED_TO)
        .with_context(|| format!("watching {}", email_dir.display()))?;
    inotify
        .watches()
        .add(sms_dir, WatchMask::MOVED_TO)
        .with_context(|| format!("watching {}", sms_dir.display()))?;
    let (email_dir, sms_dir) = (email_dir.to_path_buf(), sms_dir.to_path_buf());
    std::thread::Builder::new()
        .name("outbox-watch".into())
        .spawn(move || {
            let mut buffer = vec![0u8; 1 << 16];
            loop {
                let Ok(events) = inotify.read_events_blocking(&mut buffer) else {
                    return;
                };
                let at = Instant::now();
                let mut found = Vec::new();
                let mut overflow = false;
                for event in events {
                    if event.mask.contains(inotify::EventMask::Q_OVERFLOW) {
                        overflow = true;
                        continue;
                    }
                    let Some(name) = event.name.and_then(|n| n.to_str()) else {
                        continue;
                    };
                    let (channel, dir) = if event.wd == email_wd {
                        (Channel::Email, &email_dir)
                    } else {
                        (Channel::Sms, &sms_dir)
                    };
                    found.push((channel, dir.join(name)));
                }
                if overflow {
                    rescans.fetch_add(1, Ordering::Relaxed);
                    found.extend(list(&email_dir).into_iter().map(|p| (Channel::Email, p)));
                    found.extend(list(&sms_dir).into_iter().map(|p| (Channel::Sms, p)));
                }
                for (channel, path) in found {
                    let Some(index) = index_of(channel, &path, &prefix) else {
                        continue;
                    };
                    let delivered = Delivered { channel, index, at };
                    if deliveries.send(delivered).is_err() {
                        return;
                    }
                }
            }
        })?;
    Ok(())
}

/// How often the outboxes are listed where inotify is not available.
const POLL_EVERY: Duration = Duration::from_millis(5);

/// The watch without inotify: both outboxes listed every [`POLL_EVERY`], a
/// file stamped when a listing first shows it (so up to one period late).
#[cfg_attr(all(target_os = "linux", not(test)), expect(dead_code))]
fn watch_by_polling(
    email_dir: &Path,
    sms_dir: &Path,
    prefix: String,
    deliveries: UnboundedSender<Delivered>,
) -> anyhow::Result<()> {
    let dirs = [
        (Channel::Email, email_dir.to_path_buf()),
        (Channel::Sms, sms_dir.to_path_buf()),
    ];
    std::thread::Builder::new()
        .name("outbox-poll".into())
        .spawn(move || {
            let mut seen = HashSet::new();
            while !deliveries.is_closed() {
                for (channel, dir) in &dirs {
                    let files = list(dir);
                    let at = Instant::now();
                    for path in files {
                        let hidden = path
                            .file_name()
                            .is_none_or(|name| name.as_encoded_bytes().starts_with(b"."));
                        if hidden || !seen.insert(path.clone()) {
                            continue;
                        }
                        let Some(index) = index_of(*channel, &path, &prefix) else {
                            continue;
                        };
                        let delivered = Delivered {
                            channel: *channel,
                            index,
                            at,
                        };
                        if deliveries.send(delivered).is_err() {
                            return;
                        }
                    }
                }
                std::thread::sleep(POLL_EVERY);
            }
        })?;
    Ok(())
}

fn list(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// The index of the bench report a delivered file is about, if it is one.
fn index_of(channel: Channel, path: &Path, prefix: &str) -> Option<usize> {
    let name = path.file_name()?.to_str()?;
    if name.starts_with('.') {
        return None;
    }
    let id = match channel {
        Channel::Sms => named_report_id(name, ".json", 16)?.to_string(),
        Channel::Email => match named_report_id(name, ".eml", 32) {
            Some(id) => id.to_string(),
            // A `labrelay up` from before file names carried the report id.
            None if name.ends_with(".eml") => email_report_id(path)?,
            None => return None,
        },
    };
    id.strip_prefix(prefix)?.parse().ok()
}

/// `{id}-{hash}{extension}`, the hash `hash_len` hex digits
/// (`group_write::file_name`) → `id`.
fn named_report_id<'a>(name: &'a str, extension: &str, hash_len: usize) -> Option<&'a str> {
    let stem = name.strip_suffix(extension)?;
    let (id, hash) = stem.rsplit_once('-')?;
    (hash.len() == hash_len && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// The `X-Report-Id` header of an `.eml` file (the headers come first).
fn email_report_id(path: &Path) -> Option<String> {
    let mut head = vec![0u8; 8192];
    let mut file = std::fs::File::open(path).ok()?;
    let n = file.read(&mut head).ok()?;
    let text = String::from_utf8_lossy(&head[..n]);
    let headers = text.split("\r\n\r\n").next()?;
    headers.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case("X-Report-Id")
            .then(|| value.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_headers_give_the_index() {
        let named = |name| named_report_id(name, ".json", 16);
        assert_eq!(
            named("bench-1a2b-17-0123456789abcdef.json"),
            Some("bench-1a2b-17")
        );
        assert_eq!(named("bench-17-xyz.json"), None);
        assert_eq!(named(".sms-abc.tmp"), None);
        let email = dir_less_path("bench-1a2b-9-0123456789abcdef0123456789abcdef.eml");
        assert_eq!(index_of(Channel::Email, &email, "bench-1a2b-"), Some(9));

        // An email file named only by its hash (an older `labrelay up`):
        // its header says which report it is.
        let dir = tempfile::tempdir().unwrap();
        let eml = dir.path().join("0123.eml");
        std::fs::write(
            &eml,
            "From: a@b\r\nX-Report-Id: bench-1a2b-42\r\nSubject: x\r\n\r\nX-Report-Id: no\r\n",
        )
        .unwrap();
        assert_eq!(index_of(Channel::Email, &eml, "bench-1a2b-"), Some(42));
        assert_eq!(index_of(Channel::Email, &eml, "bench-ffff-"), None);
        let sms = dir.path().join("bench-1a2b-7-0123456789abcdef.json");
        assert_eq!(index_of(Channel::Sms, &sms, "bench-1a2b-"), Some(7));
    }

    /// The watch used off Linux sees files renamed into either outbox, once
    /// each, and ignores hidden temporary files and other runs' reports.
    #[tokio::test]
    async fn polling_sees_each_delivered_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let (email, sms) = (dir.path().join("email"), dir.path().join("sms"));
        for outbox in [&email, &sms] {
            std::fs::create_dir_all(outbox).unwrap();
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        watch_by_polling(&email, &sms, "bench-1a2b-".into(), tx).unwrap();
        let deliver = |outbox: &Path, name: &str| {
            let hidden = outbox.join(format!(".{name}.tmp"));
            std::fs::write(&hidden, "x").unwrap();
            std::fs::rename(&hidden, outbox.join(name)).unwrap();
        };
        deliver(&sms, "bench-ffff-1-0123456789abcdef.json");
        deliver(&sms, "bench-1a2b-7-0123456789abcdef.json");
        deliver(&email, "bench-1a2b-9-0123456789abcdef0123456789abcdef.eml");
        std::fs::write(sms.join(".bench-1a2b-8-0123456789abcdef.json.tmp"), "x").unwrap();
        let mut got = Vec::new();
        for _ in 0..2 {
            let delivered = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("a delivery within 5 s")
                .unwrap();
            got.push((delivered.channel, delivered.index));
        }
        got.sort_by_key(|&(_, index)| index);
        assert_eq!(got, [(Channel::Sms, 7), (Channel::Email, 9)]);
        let more = tokio::time::timeout(POLL_EVERY * 20, rx.recv()).await;
        assert!(more.is_err(), "seen again or a hidden file: {more:?}");
    }

    /// A path to a file that does not exist: only its name can be read.
    fn dir_less_path(name: &str) -> PathBuf {
        Path::new("/nonexistent-labrelay-dir").join(name)
    }
}
