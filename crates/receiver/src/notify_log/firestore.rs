//! The Firestore store: one document per notification, for services scaled
//! out over many Cloud Run instances.
//!
//! A document `COLLECTION/<id>` where `<id>` is a SHA-256 of the key, so
//! the id carries nothing readable. Its fields: `reportId`, `channel`,
//! `contentHash`, `state` (`sending` while claimed, then `sent`),
//! `leaseMs` and, once renewed, `renews` (while sending), `providerId` and
//! `sentAtMs` (once sent).
//! No addresses, phone numbers or content.
//!
//! Beside it, two collections of their own: `COLLECTION-suppressions`, one
//! document per suppressed recipient (id `<channel>-<keyed hash>`; fields
//! `channel`, `subject`, `reason`, `sinceMs`), and `COLLECTION-receipts`,
//! one document per provider message (id: Twilio's SID; fields `channel`,
//! `reportId`, `contentHash`, `status`, `errorCode`, `atMs`), written
//! with the same preconditions so a status never goes backwards.
//!
//! A claim's lease is measured on Firestore's clock alone, never on an
//! instance's: it ends `leaseMs` after the claim's commit (the document's
//! `updateTime`), and a claim is found expired when the `readTime` of the
//! read that finds it (a `batchGet`) is past that. Instances whose clocks
//! disagree therefore agree on when a claim lapses.
//!
//! Every write is a `documents:commit` with a precondition, which Firestore
//! checks atomically: a claim creates the document only if it does not
//! exist (`currentDocument.exists=false`), takes over an expired claim only
//! if the document is still the version it read (`currentDocument.
//! updateTime`), and a release deletes it, or a renewal rewrites it (a new
//! `updateTime`, so a new lease), only while it is still that claim: a
//! claim's token is its version's update time. A lost race re-reads and
//! decides again.
//!
//! A small REST client over `reqwest`: Google publishes no Firestore data
//! client for Rust, and the three calls needed (get, commit, with
//! preconditions) do not justify a second gRPC and auth stack. Credentials
//! are Application Default Credentials (`google-cloud-auth`); against the
//! emulator (`FIRESTORE_EMULATOR_HOST`) the request carries `Bearer owner`,
//! which the emulator accepts as an administrator.

use std::str::FromStr as _;
use std::time::Duration;

use anyhow::Context as _;
use google_cloud_auth::credentials::AccessTokenCredentials;
use serde_json::{Value, json};

use super::{
    Claim, ClaimToken, DeliveryStatus, LogFuture, NotificationKey, NotificationLog, Receipt,
    ReceiptApplied, SentRecord, Suppression,
};

/// The collection used unless the setting names another.
pub const DEFAULT_COLLECTION: &str = "labrelay-notifications";
const DEFAULT_DATABASE: &str = "(default)";
const FIRESTORE_API: &str = "https://firestore.googleapis.com";
/// One call, and fetching an access token for it. The whole claim or
/// record is bounded by [`ClaimLimits`](super::ClaimLimits) as well.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Re-reads after a lost race before giving up (the push is retried).
const ROUNDS: usize = 5;

/// Where the Firestore log lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirestoreSetting {
    pub project: String,
    /// `(default)` or a named database.
    pub database: String,
    pub collection: String,
    /// `FIRESTORE_EMULATOR_HOST` (`host:port`): the emulator, without
    /// credentials.
    pub emulator_host: Option<String>,
}

impl FirestoreSetting {
    /// `firestore` (project from `GOOGLE_CLOUD_PROJECT`) or
    /// `firestore://projects/P/databases/D[/COLLECTION]`.
    pub(super) fn parse(
        value: &str,
        get: &impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<FirestoreSetting> {
        let non_empty = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let (project, database, collection) = if value == "firestore" {
            let project = non_empty("GOOGLE_CLOUD_PROJECT").with_context(|| {
                format!(
                    "NOTIFY_LOG={value} needs GOOGLE_CLOUD_PROJECT (or name the project: \
                     firestore://projects/PROJECT/databases/(default))"
                )
            })?;
            (project, DEFAULT_DATABASE.to_string(), DEFAULT_COLLECTION)
        } else {
            let rest = value.strip_prefix("firestore://").unwrap_or(value);
            match rest.split('/').collect::<Vec<_>>()[..] {
                ["projects", project, "databases", database] => (
                    project.to_string(),
                    database.to_string(),
                    DEFAULT_COLLECTION,
                ),
                ["projects", project, "databases", database, collection] => {
                    (project.to_string(), database.to_string(), collection)
                }
                _ => anyhow::bail!(
                    "NOTIFY_LOG must be firestore or \
                     firestore://projects/PROJECT/databases/DATABASE[/COLLECTION], not {value:?}"
                ),
            }
        };
        anyhow::ensure!(
            valid_project(&project),
            "NOTIFY_LOG: {project:?} is not a Google Cloud project id (lowercase letters, digits, '-', '.', ':')"
        );
        anyhow::ensure!(
            valid_database(&database),
            "NOTIFY_LOG: {database:?} is not a Firestore database id ((default), or 4-63 lowercase letters, digits and '-')"
        );
        anyhow::ensure!(
            valid_collection(collection),
            "NOTIFY_LOG: {collection:?} is not a collection id this log accepts \
             (1-100 letters, digits, '-' and '_', not __reserved__)"
        );
        let emulator_host = non_empty("FIRESTORE_EMULATOR_HOST");
        if let Some(host) = &emulator_host {
            anyhow::ensure!(
                valid_host_port(host),
                "FIRESTORE_EMULATOR_HOST must be host:port, not {host:?}"
            );
        }
        Ok(FirestoreSetting {
            project,
            database,
            collection: collection.to_string(),
            emulator_host,
        })
    }

    /// `projects/P/databases/D`.
    pub fn database_path(&self) -> String {
        format!("projects/{}/databases/{}", self.project, self.database)
    }
}

fn valid_project(id: &str) -> bool {
    (1..=100).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.:".contains(&b))
}

fn valid_database(id: &str) -> bool {
    let bytes = id.as_bytes();
    id == DEFAULT_DATABASE
        || ((4..=63).contains(&bytes.len())
            && bytes[0].is_ascii_lowercase()
            && bytes[bytes.len() - 1] != b'-'
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-'))
}

fn valid_collection(id: &str) -> bool {
    (1..=100).contains(&id.len())
        && !(id.len() >= 4 && id.starts_with("__") && id.ends_with("__"))
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_host_port(value: &str) -> bool {
    value.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains(['/', '@', '?', '#', ' ']) && port.parse::<u16>().is_ok()
    })
}

enum Auth {
    /// The emulator's administrator token.
    Emulator,
    Adc(AccessTokenCredentials),
}

/// The notification log in a Firestore collection.
pub struct FirestoreLog {
    http: reqwest::Client,
    /// `http(s)://host/v1/`.
    api: String,
    /// `projects/P/databases/D`.
    database: String,
    collection: String,
    auth: Auth,
    describe: String,
}

/// An error answer of the Firestore API.
#[derive(Debug)]
struct RpcStatus {
    http: u16,
    /// The canonical code: `NOT_FOUND`, `ALREADY_EXISTS`, ...
    status: String,
    message: String,
}

impl RpcStatus {
    fn is(&self, status: &str) -> bool {
        self.status == status
    }

    /// The write's precondition no longer holds: someone else wrote first.
    fn lost_race(&self) -> bool {
        self.is("FAILED_PRECONDITION") || self.is("NOT_FOUND") || self.is("ABORTED")
    }

    fn into_error(self, what: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "Firestore answered {} {} to {what}: {}",
            self.http,
            self.status,
            self.message
        )
    }
}

/// A notification's document as stored.
enum Stored {
    Sending {
        /// When its lease lapses, in ms since the epoch on Firestore's
        /// clock.
        lease_ends_ms: i64,
        update_time: String,
    },
    Sent(SentRecord),
}

enum Precondition {
    Absent,
    UpdatedAt(String),
}

impl FirestoreLog {
    /// A client for the log `setting` names. Builds the credentials (a
    /// token is fetched on the first call, then cached and refreshed).
    pub fn open(setting: &FirestoreSetting) -> anyhow::Result<FirestoreLog> {
        let (api, auth, place) = match &setting.emulator_host {
            Some(host) => (
                format!("http://{host}/v1/"),
                Auth::Emulator,
                format!(" on the emulator at {host}"),
            ),
            None => {
                let credentials = google_cloud_auth::credentials::Builder::default()
                    .build_access_token_credentials()
                    .context("loading Application Default Credentials for Firestore")?;
                (
                    format!("{FIRESTORE_API}/v1/"),
                    Auth::Adc(credentials),
                    String::new(),
                )
            }
        };
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .context("building the Firestore HTTP client")?;
        let database = setting.database_path();
        Ok(FirestoreLog {
            describe: format!(
                "firestore {database}/documents/{}{place}",
                setting.collection
            ),
            http,
            api,
            database,
            collection: setting.collection.clone(),
            auth,
        })
    }

    /// The document id of `key`: a hash, nothing readable.
    pub fn document_id(key: &NotificationKey) -> String {
        super::content_hash(&[
            "labrelay-notification/1",
            &key.report_id,
            key.channel,
            &key.content_hash,
        ])
    }

    fn document_name(&self, key: &NotificationKey) -> String {
        format!(
            "{}/documents/{}/{}",
            self.database,
            self.collection,
            Self::document_id(key)
        )
    }

    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<Result<Value, RpcStatus>> {
        let token = match &self.auth {
            Auth::Emulator => "owner".to_string(),
            Auth::Adc(credentials) => {
                tokio::time::timeout(CALL_TIMEOUT, credentials.access_token())
                    .await
                    .map_err(|_| {
                        anyhow::anyhow!("no access token for Firestore within {CALL_TIMEOUT:?}")
                    })?
                    .context("getting an access token for Firestore")?
                    .token
            }
        };
        let response = request
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("calling Firestore to {what}"))?;
        let http = response.status();
        let body = response
            .bytes()
            .await
            .with_context(|| format!("reading Firestore's answer to {what}"))?;
        if http.is_success() {
            let value = serde_json::from_slice(&body)
                .with_context(|| format!("Firestore's answer to {what} is not JSON"))?;
            return Ok(Ok(value));
        }
        let error: Value = serde_json::from_slice(&body).unwrap_or_default();
        let error = &error["error"];
        let mut message = error["message"].as_str().unwrap_or_default().to_string();
        if let Some((cut, _)) = message.char_indices().nth(300) {
            message.truncate(cut);
        }
        Ok(Err(RpcStatus {
            http: http.as_u16(),
            status: error["status"].as_str().unwrap_or("UNKNOWN").to_string(),
            message,
        }))
    }

    /// The document of `key`, if any, and the time Firestore read it (ms
    /// since the epoch, on its clock).
    async fn get(&self, key: &NotificationKey) -> anyhow::Result<(Option<Stored>, i64)> {
        const WHAT: &str = "read a notification";
        let url = format!("{}{}/documents:batchGet", self.api, self.database);
        let body = json!({"documents": [self.document_name(key)]});
        let answer = match self.call(self.http.post(url).json(&body), WHAT).await? {
            Ok(answer) => answer,
            Err(status) => return Err(status.into_error(WHAT)),
        };
        let result = &answer[0];
        let read_ms = result["readTime"]
            .as_str()
            .and_then(timestamp_ms)
            .with_context(|| format!("Firestore's answer to {WHAT} has no readTime"))?;
        let stored = match &result["found"] {
            Value::Null if result["missing"].is_string() => None,
            Value::Null => anyhow::bail!("Firestore's answer to {WHAT} has no document"),
            document => Some(parse_document(document)?),
        };
        Ok((stored, read_ms))
    }

    /// One write in one commit; its new update time.
    async fn commit(
        &self,
        write: Value,
        what: &str,
    ) -> anyhow::Result<Result<Option<String>, RpcStatus>> {
        let url = format!("{}{}/documents:commit", self.api, self.database);
        let answer = self
            .call(self.http.post(url).json(&json!({"writes": [write]})), what)
            .await?;
        Ok(answer.map(|value| {
            value["writeResults"][0]["updateTime"]
                .as_str()
                .map(str::to_string)
        }))
    }

    async fn put(
        &self,
        key: &NotificationKey,
        fields: Value,
        precondition: Precondition,
        what: &str,
    ) -> anyhow::Result<Result<String, RpcStatus>> {
        self.put_named(self.document_name(key), fields, Some(precondition), what)
            .await
    }

    async fn put_named(
        &self,
        name: String,
        fields: Value,
        precondition: Option<Precondition>,
        what: &str,
    ) -> anyhow::Result<Result<String, RpcStatus>> {
        let mut write = json!({"update": {"name": name, "fields": fields}});
        match precondition {
            Some(Precondition::Absent) => write["currentDocument"] = json!({"exists": false}),
            Some(Precondition::UpdatedAt(time)) => {
                write["currentDocument"] = json!({"updateTime": time});
            }
            None => {}
        }
        Ok(self
            .commit(write, what)
            .await?
            .map(|time| time.unwrap_or_default()))
    }

    /// The document `name`, if it exists.
    async fn fetch(&self, name: String, what: &str) -> anyhow::Result<Option<Value>> {
        let url = format!("{}{}/documents:batchGet", self.api, self.database);
        let body = json!({"documents": [name]});
        let answer = match self.call(self.http.post(url).json(&body), what).await? {
            Ok(answer) => answer,
            Err(status) => return Err(status.into_error(what)),
        };
        match &answer[0]["found"] {
            Value::Null if answer[0]["missing"].is_string() => Ok(None),
            Value::Null => anyhow::bail!("Firestore's answer to {what} has no document"),
            document => Ok(Some(document.clone())),
        }
    }

    fn suppression_name(&self, channel: &str, subject: &str) -> String {
        format!(
            "{}/documents/{}-suppressions/{channel}-{subject}",
            self.database, self.collection
        )
    }

    /// A SID is letters and digits; anything else is hashed into an id.
    fn receipt_name(&self, provider_id: &str) -> String {
        let id = if !provider_id.is_empty()
            && provider_id.len() <= 64
            && provider_id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            provider_id.to_string()
        } else {
            super::content_hash(&["labrelay-receipt/1", provider_id])
        };
        format!(
            "{}/documents/{}-receipts/{id}",
            self.database, self.collection
        )
    }
}

fn string_field(document: &Value, name: &str) -> Option<String> {
    document["fields"][name]["stringValue"]
        .as_str()
        .map(str::to_string)
}

fn integer_field(document: &Value, name: &str) -> Option<i64> {
    let value = &document["fields"][name]["integerValue"];
    value
        .as_str()
        .and_then(|s| s.parse::<i64>().ok())
        .or_else(|| value.as_i64())
}

fn optional_string(value: Option<&str>) -> Value {
    match value {
        Some(value) => json!({"stringValue": value}),
        None => json!({"nullValue": null}),
    }
}

fn parse_suppression(document: &Value) -> Option<Suppression> {
    Some(Suppression {
        channel: string_field(document, "channel")?,
        subject: string_field(document, "subject")?,
        reason: string_field(document, "reason")?,
        since_ms: integer_field(document, "sinceMs")?,
    })
}

fn parse_receipt(provider_id: &str, document: &Value) -> Option<Receipt> {
    Some(Receipt {
        provider_id: provider_id.to_string(),
        channel: string_field(document, "channel")?,
        report_id: string_field(document, "reportId"),
        content_hash: string_field(document, "contentHash"),
        status: DeliveryStatus::parse(&string_field(document, "status")?)?,
        error_code: integer_field(document, "errorCode").and_then(|c| u32::try_from(c).ok()),
        at_ms: integer_field(document, "atMs")?,
    })
}

fn key_fields(key: &NotificationKey) -> serde_json::Map<String, Value> {
    let mut fields = serde_json::Map::new();
    fields.insert("reportId".into(), json!({"stringValue": key.report_id}));
    fields.insert("channel".into(), json!({"stringValue": key.channel}));
    fields.insert(
        "contentHash".into(),
        json!({"stringValue": key.content_hash}),
    );
    fields
}

fn sending_fields(key: &NotificationKey, lease: Duration) -> Value {
    let mut fields = key_fields(key);
    fields.insert("state".into(), json!({"stringValue": "sending"}));
    fields.insert(
        "leaseMs".into(),
        json!({"integerValue": lease.as_millis().to_string()}),
    );
    Value::Object(fields)
}

/// An RFC 3339 time as Firestore writes them, in ms since the epoch.
fn timestamp_ms(time: &str) -> Option<i64> {
    let time = prost_types::Timestamp::from_str(time).ok()?;
    time.seconds
        .checked_mul(1000)?
        .checked_add(i64::from(time.nanos / 1_000_000))
}

fn sent_fields(key: &NotificationKey, record: &SentRecord) -> Value {
    let mut fields = key_fields(key);
    fields.insert("state".into(), json!({"stringValue": "sent"}));
    fields.insert(
        "providerId".into(),
        match &record.provider_id {
            Some(id) => json!({"stringValue": id}),
            None => json!({"nullValue": null}),
        },
    );
    fields.insert(
        "sentAtMs".into(),
        json!({"integerValue": record.sent_at_ms.to_string()}),
    );
    Value::Object(fields)
}

fn parse_document(document: &Value) -> anyhow::Result<Stored> {
    let fields = &document["fields"];
    let string = |name: &str| fields[name]["stringValue"].as_str();
    // Firestore's JSON carries 64-bit integers as strings.
    let integer = |name: &str| {
        let value = &fields[name]["integerValue"];
        value
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .or_else(|| value.as_i64())
    };
    let malformed = || {
        anyhow::anyhow!(
            "the notification document {} is not one this log wrote",
            document["name"].as_str().unwrap_or("?")
        )
    };
    match string("state") {
        Some("sent") => Ok(Stored::Sent(SentRecord {
            provider_id: string("providerId").map(str::to_string),
            sent_at_ms: integer("sentAtMs").ok_or_else(malformed)?,
        })),
        Some("sending") => {
            let update_time = document["updateTime"].as_str().ok_or_else(malformed)?;
            let lease_ends_ms = match integer("leaseMs") {
                Some(lease) => timestamp_ms(update_time)
                    .ok_or_else(malformed)?
                    .saturating_add(lease),
                // Written by an earlier version, on its instance's clock.
                None => integer("leaseUntilMs").ok_or_else(malformed)?,
            };
            Ok(Stored::Sending {
                lease_ends_ms,
                update_time: update_time.to_string(),
            })
        }
        _ => Err(malformed()),
    }
}

impl NotificationLog for FirestoreLog {
    fn already_sent<'a>(&'a self, key: &'a NotificationKey) -> LogFuture<'a, Option<SentRecord>> {
        Box::pin(async move {
            Ok(match self.get(key).await?.0 {
                Some(Stored::Sent(record)) => Some(record),
                Some(Stored::Sending { .. }) | None => None,
            })
        })
    }

    fn claim<'a>(&'a self, key: &'a NotificationKey, lease: Duration) -> LogFuture<'a, Claim> {
        const WHAT: &str = "claim a notification";
        Box::pin(async move {
            let fields = sending_fields(key, lease);
            for _ in 0..ROUNDS {
                match self
                    .put(key, fields.clone(), Precondition::Absent, WHAT)
                    .await?
                {
                    Ok(time) => return Ok(Claim::Claimed(ClaimToken::new(time))),
                    Err(status) if status.is("ALREADY_EXISTS") => {}
                    Err(status) => return Err(status.into_error(WHAT)),
                }
                let update_time = match self.get(key).await? {
                    // Released meanwhile: create it again.
                    (None, _) => continue,
                    (Some(Stored::Sent(record)), _) => return Ok(Claim::AlreadySent(record)),
                    (Some(Stored::Sending { lease_ends_ms, .. }), read_ms)
                        if lease_ends_ms > read_ms =>
                    {
                        return Ok(Claim::HeldByOther {
                            lease_until_ms: lease_ends_ms,
                        });
                    }
                    (Some(Stored::Sending { update_time, .. }), _) => update_time,
                };
                // The holder's lease lapsed: take over this very version.
                match self
                    .put(
                        key,
                        fields.clone(),
                        Precondition::UpdatedAt(update_time),
                        WHAT,
                    )
                    .await?
                {
                    Ok(time) => return Ok(Claim::Claimed(ClaimToken::new(time))),
                    Err(status) if status.lost_race() => {}
                    Err(status) => return Err(status.into_error(WHAT)),
                }
            }
            anyhow::bail!("the notification's document kept changing while claiming it")
        })
    }

    fn release<'a>(&'a self, key: &'a NotificationKey, token: ClaimToken) -> LogFuture<'a, ()> {
        const WHAT: &str = "release a notification's claim";
        Box::pin(async move {
            let write = json!({
                "delete": self.document_name(key),
                "currentDocument": {"updateTime": token.as_str()},
            });
            match self.commit(write, WHAT).await? {
                Ok(_) => Ok(()),
                // Taken over or recorded meanwhile: not ours to delete.
                Err(status) if status.lost_race() => Ok(()),
                Err(status) => Err(status.into_error(WHAT)),
            }
        })
    }

    fn renew<'a>(
        &'a self,
        key: &'a NotificationKey,
        token: ClaimToken,
        lease: Duration,
    ) -> LogFuture<'a, Option<ClaimToken>> {
        const WHAT: &str = "renew a notification's claim";
        Box::pin(async move {
            // Rewritten only while it is still this claim's version: its
            // new commit time starts the lease again, on Firestore's clock.
            // Firestore keeps the update time of a write that changes
            // nothing, so the new version names the one it renews.
            let precondition = Precondition::UpdatedAt(token.as_str().to_string());
            let mut fields = sending_fields(key, lease);
            fields["renews"] = json!({"stringValue": token.as_str()});
            match self.put(key, fields, precondition, WHAT).await? {
                Ok(time) => Ok(Some(ClaimToken::new(time))),
                // Taken over, released or recorded meanwhile.
                Err(status) if status.lost_race() => Ok(None),
                Err(status) => Err(status.into_error(WHAT)),
            }
        })
    }

    fn record_sent<'a>(
        &'a self,
        key: &'a NotificationKey,
        record: SentRecord,
    ) -> LogFuture<'a, ()> {
        const WHAT: &str = "record a sent notification";
        Box::pin(async move {
            let fields = sent_fields(key, &record);
            for _ in 0..ROUNDS {
                let precondition = match self.get(key).await?.0 {
                    Some(Stored::Sent(_)) => return Ok(()),
                    None => Precondition::Absent,
                    Some(Stored::Sending { update_time, .. }) => {
                        Precondition::UpdatedAt(update_time)
                    }
                };
                match self.put(key, fields.clone(), precondition, WHAT).await? {
                    Ok(_) => return Ok(()),
                    Err(status) if status.is("ALREADY_EXISTS") || status.lost_race() => {}
                    Err(status) => return Err(status.into_error(WHAT)),
                }
            }
            anyhow::bail!("the notification's document kept changing while recording it")
        })
    }

    fn suppression<'a>(
        &'a self,
        channel: &'a str,
        subject: &'a str,
    ) -> LogFuture<'a, Option<Suppression>> {
        const WHAT: &str = "read a suppression";
        Box::pin(async move {
            let document = self
                .fetch(self.suppression_name(channel, subject), WHAT)
                .await?;
            Ok(document.as_ref().and_then(parse_suppression))
        })
    }

    fn suppress<'a>(&'a self, suppression: Suppression) -> LogFuture<'a, ()> {
        const WHAT: &str = "record a suppression";
        Box::pin(async move {
            let fields = json!({
                "channel": {"stringValue": suppression.channel},
                "subject": {"stringValue": suppression.subject},
                "reason": {"stringValue": suppression.reason},
                "sinceMs": {"integerValue": suppression.since_ms.to_string()},
            });
            let name = self.suppression_name(&suppression.channel, &suppression.subject);
            match self.put_named(name, fields, None, WHAT).await? {
                Ok(_) => Ok(()),
                Err(status) => Err(status.into_error(WHAT)),
            }
        })
    }

    fn lift<'a>(&'a self, channel: &'a str, subject: &'a str) -> LogFuture<'a, bool> {
        const WHAT: &str = "lift a suppression";
        Box::pin(async move {
            let write = json!({
                "delete": self.suppression_name(channel, subject),
                "currentDocument": {"exists": true},
            });
            match self.commit(write, WHAT).await? {
                Ok(_) => Ok(true),
                Err(status) if status.lost_race() => Ok(false),
                Err(status) => Err(status.into_error(WHAT)),
            }
        })
    }

    fn suppressions(&self) -> LogFuture<'_, Vec<Suppression>> {
        const WHAT: &str = "list the suppressions";
        Box::pin(async move {
            let url = format!(
                "{}{}/documents/{}-suppressions",
                self.api, self.database, self.collection
            );
            let mut all = Vec::new();
            let mut page_token = String::new();
            loop {
                let mut query = vec![("pageSize", "300".to_string())];
                if !page_token.is_empty() {
                    query.push(("pageToken", page_token.clone()));
                }
                let page = match self.call(self.http.get(&url).query(&query), WHAT).await? {
                    Ok(page) => page,
                    Err(status) => return Err(status.into_error(WHAT)),
                };
                if let Some(documents) = page["documents"].as_array() {
                    all.extend(documents.iter().filter_map(parse_suppression));
                }
                match page["nextPageToken"].as_str() {
                    Some(next) if !next.is_empty() => page_token = next.to_string(),
                    _ => break,
                }
            }
            all.sort_by(|a, b| {
                (a.since_ms, &a.channel, &a.subject).cmp(&(b.since_ms, &b.channel, &b.subject))
            });
            Ok(all)
        })
    }

    fn record_receipt<'a>(&'a self, receipt: Receipt) -> LogFuture<'a, ReceiptApplied> {
        const WHAT: &str = "record a delivery receipt";
        Box::pin(async move {
            let name = self.receipt_name(&receipt.provider_id);
            let mut fields = json!({
                "channel": {"stringValue": receipt.channel},
                "reportId": optional_string(receipt.report_id.as_deref()),
                "contentHash": optional_string(receipt.content_hash.as_deref()),
                "status": {"stringValue": receipt.status.as_str()},
                "atMs": {"integerValue": receipt.at_ms.to_string()},
            });
            if let Some(code) = receipt.error_code {
                fields["errorCode"] = json!({"integerValue": code.to_string()});
            }
            for _ in 0..ROUNDS {
                let precondition = match self.fetch(name.clone(), WHAT).await? {
                    None => Precondition::Absent,
                    Some(document) => {
                        if let Some(stored) = parse_receipt(&receipt.provider_id, &document)
                            && stored.status.rank() >= receipt.status.rank()
                        {
                            return Ok(ReceiptApplied::Stale {
                                current: stored.status,
                            });
                        }
                        let time = document["updateTime"].as_str().unwrap_or_default();
                        Precondition::UpdatedAt(time.to_string())
                    }
                };
                match self
                    .put_named(name.clone(), fields.clone(), Some(precondition), WHAT)
                    .await?
                {
                    Ok(_) => return Ok(ReceiptApplied::Applied),
                    Err(status) if status.is("ALREADY_EXISTS") || status.lost_race() => {}
                    Err(status) => return Err(status.into_error(WHAT)),
                }
            }
            anyhow::bail!("the receipt's document kept changing while recording it")
        })
    }

    fn receipt<'a>(&'a self, provider_id: &'a str) -> LogFuture<'a, Option<Receipt>> {
        const WHAT: &str = "read a delivery receipt";
        Box::pin(async move {
            let document = self.fetch(self.receipt_name(provider_id), WHAT).await?;
            Ok(document
                .as_ref()
                .and_then(|d| parse_receipt(provider_id, d)))
        })
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}
