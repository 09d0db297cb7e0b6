//! The Pub/Sub push envelope: one message per HTTP POST.
//!
//! Field names follow Google's documentation of the wrapped push body,
//! including the legacy snake_case twins `message_id` and `publish_time` that
//! the real service sends alongside the camelCase ones.
//!
//! [`PushEnvelope`] is the body as a receiver reads it (and as tests build
//! it); [`PushEnvelopeRef`] is the same body as the broker writes it, from
//! fields borrowed from its stored message. Both write the same JSON.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use serde::ser::SerializeStruct as _;
use serde::{Deserialize, Serialize, Serializer};

/// The body of a wrapped push request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushEnvelope {
    pub message: PushMessage,
    /// Full subscription name, `projects/{project}/subscriptions/{id}`.
    pub subscription: String,
    /// 1 on the first delivery; present only when the subscription has a
    /// dead-letter policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_attempt: Option<u32>,
}

/// The message inside a [`PushEnvelope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushMessage {
    /// Standard, padded base64 of the message bytes; absent for a message
    /// that carries only attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    pub message_id: String,
    #[serde(rename = "message_id", default, skip_deserializing)]
    pub message_id_legacy: String,
    /// RFC 3339, UTC.
    pub publish_time: String,
    #[serde(rename = "publish_time", default, skip_deserializing)]
    pub publish_time_legacy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
}

impl PushMessage {
    /// Builds a message, filling in the legacy twins of the id and time.
    pub fn new(
        data: &[u8],
        attributes: BTreeMap<String, String>,
        message_id: String,
        publish_time: String,
        ordering_key: Option<String>,
    ) -> Self {
        PushMessage {
            data: (!data.is_empty()).then(|| STANDARD.encode(data)),
            attributes,
            message_id_legacy: message_id.clone(),
            message_id,
            publish_time_legacy: publish_time.clone(),
            publish_time,
            ordering_key: ordering_key.filter(|k| !k.is_empty()),
        }
    }

    /// The decoded message bytes (empty when the message had none).
    pub fn decode_data(&self) -> Result<Vec<u8>, DecodeError> {
        match &self.data {
            None => Ok(Vec::new()),
            Some(b64) => STANDARD.decode(b64).map_err(|_| DecodeError::Base64),
        }
    }
}

/// Why a push body could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("the body is not a Pub/Sub push envelope: {0}")]
    Envelope(String),
    #[error("message.data is not valid base64")]
    Base64,
    #[error("message.data is not a lab report: {0}")]
    Report(#[from] crate::report::ReportError),
}

impl PushEnvelope {
    /// Parses a wrapped push body.
    pub fn parse(body: &[u8]) -> Result<PushEnvelope, DecodeError> {
        serde_json::from_slice(body).map_err(|e| DecodeError::Envelope(e.to_string()))
    }

    /// The lab report this push carries.
    pub fn report(&self) -> Result<crate::report::LabReport, DecodeError> {
        Ok(crate::report::LabReport::from_published(
            self.message.decode_data()?,
        )?)
    }
}

/// A wrapped push body written from borrowed fields: what the broker sends
/// for each push. A [`PushEnvelope`] owns its strings, so building one per
/// push would copy every attribute, the id and the time twice (the legacy
/// twins) and the data's base64 once more; this writes the same JSON
/// straight from the sender's message.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushEnvelopeRef<'a> {
    pub message: PushMessageRef<'a>,
    /// Full subscription name, `projects/{project}/subscriptions/{id}`.
    pub subscription: &'a str,
    /// 1 on the first delivery; present only when the subscription has a
    /// dead-letter policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_attempt: Option<u32>,
}

/// The message inside a [`PushEnvelopeRef`]; written as [`PushMessage`]
/// writes the same fields.
#[derive(Debug, Clone)]
pub struct PushMessageRef<'a> {
    data: &'a [u8],
    attributes: BTreeMap<&'a str, &'a str>,
    message_id: &'a str,
    publish_time: &'a str,
    ordering_key: &'a str,
}

impl<'a> PushMessageRef<'a> {
    /// A message to write: its bytes (base64-encoded as they are written),
    /// its attributes in any order (written sorted by key), its id, its
    /// publish time (RFC 3339, UTC) and its ordering key (empty for none).
    pub fn new(
        data: &'a [u8],
        attributes: impl IntoIterator<Item = (&'a str, &'a str)>,
        message_id: &'a str,
        publish_time: &'a str,
        ordering_key: &'a str,
    ) -> Self {
        PushMessageRef {
            data,
            attributes: attributes.into_iter().collect(),
            message_id,
            publish_time,
            ordering_key,
        }
    }
}

impl Serialize for PushMessageRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // PushMessage's fields in PushMessage's order, the legacy twins
        // included, so that both write the same bytes.
        let mut message = serializer.serialize_struct("PushMessage", 7)?;
        if !self.data.is_empty() {
            message.serialize_field("data", &Base64(self.data))?;
        }
        if !self.attributes.is_empty() {
            message.serialize_field("attributes", &self.attributes)?;
        }
        message.serialize_field("messageId", self.message_id)?;
        message.serialize_field("message_id", self.message_id)?;
        message.serialize_field("publishTime", self.publish_time)?;
        message.serialize_field("publish_time", self.publish_time)?;
        if !self.ordering_key.is_empty() {
            message.serialize_field("orderingKey", self.ordering_key)?;
        }
        message.end()
    }
}

/// Bytes written as standard, padded base64, encoded straight into the
/// output rather than into a string first.
struct Base64<'a>(&'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&Base64Display::new(self.0, &STANDARD))
    }
}

impl PushEnvelopeRef<'_> {
    /// The JSON body, written into a buffer sized for it up front (it grows
    /// only when strings need escapes).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.capacity());
        serde_json::to_writer(&mut body, self).expect("serializing to memory cannot fail");
        body
    }

    /// Room for the body: the field names and punctuation (well under 256
    /// bytes), the base64 of the data, and every string as it is (the id
    /// and time twice).
    fn capacity(&self) -> usize {
        let message = &self.message;
        let attributes: usize = message
            .attributes
            .iter()
            .map(|(k, v)| k.len() + v.len() + 6)
            .sum();
        256 + message.data.len().div_ceil(3) * 4
            + self.subscription.len()
            + 2 * (message.message_id.len() + message.publish_time.len())
            + message.ordering_key.len()
            + attributes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_the_documented_wrapped_shape() {
        let envelope = PushEnvelope {
            message: PushMessage::new(
                b"Hello",
                BTreeMap::from([("key".into(), "value".into())]),
                "2070443601311540".into(),
                "2021-02-26T19:13:55.749Z".into(),
                Some("key".into()),
            ),
            subscription: "projects/myproject/subscriptions/mysubscription".into(),
            delivery_attempt: Some(5),
        };
        let json = serde_json::to_value(&envelope).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "deliveryAttempt": 5,
                "message": {
                    "attributes": {"key": "value"},
                    "data": "SGVsbG8=",
                    "messageId": "2070443601311540",
                    "message_id": "2070443601311540",
                    "orderingKey": "key",
                    "publishTime": "2021-02-26T19:13:55.749Z",
                    "publish_time": "2021-02-26T19:13:55.749Z"
                },
                "subscription": "projects/myproject/subscriptions/mysubscription"
            })
        );
        let back: PushEnvelope = serde_json::from_value(json).unwrap();
        assert_eq!(back.message.decode_data().unwrap(), b"Hello");
        assert_eq!(back.delivery_attempt, Some(5));
    }

    #[test]
    fn decodes_the_report_a_push_carries() {
        let body = serde_json::json!({
            "message": {"data": STANDARD.encode(br#"{"id": 12}"#), "messageId": "1", "publishTime": "t"},
            "subscription": "projects/p/subscriptions/email-service-sub"
        });
        let envelope = PushEnvelope::parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(envelope.report().unwrap().id.to_string(), "12");

        assert!(matches!(
            PushEnvelope::parse(b"{}"),
            Err(DecodeError::Envelope(_))
        ));
        let mut bad = envelope.clone();
        bad.message.data = Some("***".into());
        assert_eq!(bad.report().unwrap_err(), DecodeError::Base64);
        bad.message.data = Some(STANDARD.encode(b"not json"));
        assert!(matches!(bad.report(), Err(DecodeError::Report(_))));
    }

    #[test]
    fn the_envelope_is_written_without_growing() {
        let attributes: Vec<(String, String)> = (0..20)
            .map(|i| (format!("attribute-{i}"), "a value of some length".repeat(3)))
            .collect();
        let envelope = PushEnvelopeRef {
            message: PushMessageRef::new(
                &[b'x'; 1024],
                attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                "12345678901234567890",
                "2026-11-26T10:00:00.123456789Z",
                "clinic-7",
            ),
            subscription: "projects/labrelay-local/subscriptions/email-service-sub",
            delivery_attempt: Some(3),
        };
        let body = envelope.to_vec();
        assert!(body.len() <= envelope.capacity(), "{} bytes", body.len());
    }

    /// The broker's envelope and the one receivers parse, field by field.
    fn both(
        data: &[u8],
        attributes: &BTreeMap<String, String>,
        id: &str,
        time: &str,
        key: &str,
        attempt: Option<u32>,
    ) -> (String, String) {
        let subscription = "projects/p/subscriptions/s";
        let borrowed = PushEnvelopeRef {
            message: PushMessageRef::new(
                data,
                attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                id,
                time,
                key,
            ),
            subscription,
            delivery_attempt: attempt,
        };
        let owned = PushEnvelope {
            message: PushMessage::new(
                data,
                attributes.clone(),
                id.into(),
                time.into(),
                Some(key.into()),
            ),
            subscription: subscription.into(),
            delivery_attempt: attempt,
        };
        (
            String::from_utf8(borrowed.to_vec()).unwrap(),
            serde_json::to_string(&owned).unwrap(),
        )
    }

    #[test]
    fn the_envelope_is_the_contracts() {
        let attributes = BTreeMap::from([
            ("reportId".to_string(), "12".to_string()),
            ("b\"quoted\"".to_string(), "\u{e9}\n".to_string()),
        ]);
        let time = "2026-11-25T22:00:00.123Z";
        let (ours, theirs) = both(b"{\"id\":12}", &attributes, "42", time, "k", Some(3));
        assert_eq!(ours, theirs);
        let (ours, theirs) = both(b"", &BTreeMap::new(), "42", time, "", None);
        assert_eq!(ours, theirs);
        let back = PushEnvelope::parse(ours.as_bytes()).unwrap();
        assert_eq!(back.message.ordering_key, None);
    }

    proptest::proptest! {
        #[test]
        fn borrowed_and_owned_envelopes_write_the_same_json(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            attributes in proptest::collection::btree_map(".{0,12}", ".{0,40}", 0..6),
            id in "[0-9]{1,20}",
            time in ".{0,40}",
            key in ".{0,20}",
            attempt in proptest::option::of(1u32..100),
        ) {
            let (ours, theirs) = both(&data, &attributes, &id, &time, &key, attempt);
            proptest::prop_assert_eq!(&ours, &theirs);
            let back = PushEnvelope::parse(ours.as_bytes()).unwrap();
            proptest::prop_assert_eq!(back.message.decode_data().unwrap(), data);
        }
    }

    #[test]
    fn minimal_envelope_omits_optional_fields() {
        let message = PushMessage::new(b"", BTreeMap::new(), "1".into(), "t".into(), None);
        let json = serde_json::to_value(&message).unwrap();
        assert!(json.get("data").is_none());
        assert!(json.get("attributes").is_none());
        assert!(json.get("orderingKey").is_none());
    }
}
