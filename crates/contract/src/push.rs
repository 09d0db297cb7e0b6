//! The Pub/Sub push envelope: one message per HTTP POST.
//!
//! Field names follow Google's documentation of the wrapped push body,
//! including the legacy snake_case twins `message_id` and `publish_time` that
//! the real service sends alongside the camelCase ones.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

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
    fn minimal_envelope_omits_optional_fields() {
        let message = PushMessage::new(b"", BTreeMap::new(), "1".into(), "t".into(), None);
        let json = serde_json::to_value(&message).unwrap();
        assert!(json.get("data").is_none());
        assert!(json.get("attributes").is_none());
        assert!(json.get("orderingKey").is_none());
    }
}
