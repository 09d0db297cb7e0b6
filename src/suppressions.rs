//! `labrelay suppressions`: the recipients not to be notified, as the
//! receivers keep them in the notification log (see
//! `labrelay_receiver::facts`). Adding and removing hash the recipient
//! with the services' key (`SUPPRESSION_KEY`, or the one `labrelay up`
//! keeps in its data directory), so it must be the same key; the store
//! never holds the address or number, and `list` cannot show it.

use std::path::Path;

use anyhow::Context as _;
use labrelay::up;
use labrelay_receiver::notify_log::{
    self, Dedupe, NotificationLog, NotifyLogSetting, Suppression, now_ms, subject_hash,
};
use labrelay_runtime::secret::secret_from_vars;

/// `email` or `sms`, and the notification log of each to act on.
pub struct Target {
    pub logs: Vec<(&'static str, std::sync::Arc<dyn NotificationLog>)>,
    /// The services' key, if found; `list` needs none.
    key: Option<Vec<u8>>,
}

impl Target {
    /// `NOTIFY_LOG` when set (one store for both channels, as on Cloud
    /// Run); else the two SQLite logs `labrelay up` keeps under
    /// `data_dir`. The key is found as `up` gives it to its services
    /// ([`up::suppression_key_file`]): `SUPPRESSION_KEY` or
    /// `SUPPRESSION_KEY_FILE` when set, else `data_dir`'s key file.
    pub fn open(data_dir: &Path) -> anyhow::Result<Target> {
        let get = |name: &str| std::env::var(name).ok();
        let open = |setting: &NotifyLogSetting| -> anyhow::Result<_> {
            Ok(Dedupe::open_setting(setting, "notification")?
                .context("NOTIFY_LOG is off: there are no suppressions")?
                .log())
        };
        let logs = match notify_log::setting_from_vars(get)? {
            NotifyLogSetting::Off => {
                let mut logs = Vec::new();
                for channel in ["email", "sms"] {
                    let path = data_dir
                        .join(format!("{channel}-service"))
                        .join("notifications.sqlite3");
                    if path.exists() {
                        logs.push((channel, open(&NotifyLogSetting::Sqlite(path))?));
                    }
                }
                anyhow::ensure!(
                    !logs.is_empty(),
                    "no notification log: set NOTIFY_LOG, or --data-dir to where `labrelay up` keeps its data"
                );
                logs
            }
            setting => {
                let log = open(&setting)?;
                vec![("email", log.clone()), ("sms", log)]
            }
        };
        let key = match up::suppression_key_file(data_dir, get) {
            Some(path) if path.exists() => {
                let file = path.display().to_string();
                let as_up_sets_it =
                    |name: &str| (name == "SUPPRESSION_KEY_FILE").then(|| file.clone());
                secret_from_vars(&as_up_sets_it, "SUPPRESSION_KEY")?
            }
            Some(_) => None,
            None => secret_from_vars(&get, "SUPPRESSION_KEY")?,
        };
        let key = key.map(|k| k.expose().as_bytes().to_vec());
        Ok(Target { logs, key })
    }

    /// The key to hash a recipient with. Without one, a hash would match
    /// nothing the services look up (they hash with theirs): refused
    /// rather than printing "suppressed" for a suppression that holds no
    /// one back.
    fn key(&self) -> anyhow::Result<&[u8]> {
        self.key.as_deref().with_context(|| {
            format!(
                "no suppression key: set SUPPRESSION_KEY or SUPPRESSION_KEY_FILE to the services' \
                 key, or --data-dir to where `labrelay up` keeps its {}",
                up::SUPPRESSION_KEY_FILE
            )
        })
    }

    fn log(&self, channel: &str) -> anyhow::Result<&dyn NotificationLog> {
        self.logs
            .iter()
            .find(|(c, _)| *c == channel)
            .map(|(_, log)| log.as_ref())
            .with_context(|| format!("no notification log for the {channel} channel here"))
    }
}

/// The recipient as the channel's push handler names it: an E.164 number,
/// an email address as written in the report.
fn normalized(channel: &str, recipient: &str) -> anyhow::Result<String> {
    match channel {
        "sms" => Ok(labrelay_sms_service::PhoneNumber::parse(recipient)
            .context("not an E.164 phone number")?
            .as_str()
            .to_string()),
        "email" => Ok(recipient.trim().to_string()),
        other => anyhow::bail!("the channel is email or sms, not {other:?}"),
    }
}

fn time(ms: i64) -> String {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: 0,
    }
    .to_string()
}

pub async fn list(target: &Target) -> anyhow::Result<()> {
    let mut all: Vec<Suppression> = Vec::new();
    for (channel, log) in &target.logs {
        all.extend(
            log.suppressions()
                .await?
                .into_iter()
                .filter(|s| s.channel == *channel),
        );
    }
    if all.is_empty() {
        println!("no suppressions");
        return Ok(());
    }
    println!(
        "{:<7} {:<20} {:<16} reason",
        "channel", "since", "recipient hash"
    );
    for s in all {
        println!(
            "{:<7} {:<20} {:<16} {}",
            s.channel,
            time(s.since_ms),
            &s.subject[..16.min(s.subject.len())],
            s.reason
        );
    }
    Ok(())
}

pub async fn add(
    target: &Target,
    channel: &str,
    recipient: &str,
    reason: &str,
) -> anyhow::Result<()> {
    let recipient = normalized(channel, recipient)?;
    target
        .log(channel)?
        .suppress(Suppression {
            channel: channel.to_string(),
            subject: subject_hash(target.key()?, channel, &recipient),
            reason: reason.to_string(),
            since_ms: now_ms(),
        })
        .await?;
    println!("suppressed on {channel}");
    Ok(())
}

pub async fn remove(target: &Target, channel: &str, recipient: &str) -> anyhow::Result<()> {
    let recipient = normalized(channel, recipient)?;
    let subject = subject_hash(target.key()?, channel, &recipient);
    if target.log(channel)?.lift(channel, &subject).await? {
        println!("lifted on {channel}");
    } else {
        println!("was not suppressed on {channel}");
    }
    Ok(())
}
