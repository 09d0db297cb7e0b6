//! Push bodies as the broker sends them to a push endpoint, for the tests
//! of the services that receive them. Built from the contract's
//! [`PushEnvelope`], so that a test pushes exactly the shape the broker
//! writes and the receivers parse (the wrapped form with the legacy
//! `message_id` and `publish_time` twins).

use std::collections::BTreeMap;

use labrelay_contract::push::{PushEnvelope, PushMessage};
use serde_json::Value;

/// When every test message was published.
const PUBLISH_TIME: &str = "2026-11-24T10:00:01Z";

/// One push, built up from [`Push::report`] or [`Push::bytes`].
#[derive(Debug, Clone)]
pub struct Push {
    subscription: String,
    data: Vec<u8>,
    attributes: BTreeMap<String, String>,
    message_id: String,
    delivery_attempt: Option<u32>,
}

impl Push {
    /// The push of `report` (as the lab-report-service publishes it: the
    /// JSON as data, its id in the `reportId` attribute) to
    /// `subscription` (`projects/P/subscriptions/S`): message id "1", the
    /// first delivery attempt.
    pub fn report(subscription: &str, report: &Value) -> Push {
        let push = Push::bytes(subscription, report.to_string().as_bytes());
        match &report["id"] {
            Value::String(id) => push.attribute("reportId", id),
            Value::Number(id) => push.attribute("reportId", &id.to_string()),
            _ => push,
        }
    }

    /// A push carrying `data` as the message bytes, whatever they are,
    /// with no attributes.
    pub fn bytes(subscription: &str, data: &[u8]) -> Push {
        Push {
            subscription: subscription.to_string(),
            data: data.to_vec(),
            attributes: BTreeMap::new(),
            message_id: "1".to_string(),
            delivery_attempt: Some(1),
        }
    }

    pub fn message_id(mut self, id: &str) -> Push {
        self.message_id = id.to_string();
        self
    }

    /// `deliveryAttempt`, which the broker sends on a subscription with a
    /// dead-letter policy.
    pub fn attempt(mut self, attempt: u32) -> Push {
        self.delivery_attempt = Some(attempt);
        self
    }

    /// No `deliveryAttempt`: a subscription without a dead-letter policy.
    pub fn without_attempt(mut self) -> Push {
        self.delivery_attempt = None;
        self
    }

    /// Sets attribute `key` (replacing `reportId`, say, with a publisher's
    /// own choice).
    pub fn attribute(mut self, key: &str, value: &str) -> Push {
        self.attributes.insert(key.to_string(), value.to_string());
        self
    }

    pub fn envelope(&self) -> PushEnvelope {
        PushEnvelope {
            message: PushMessage::new(
                &self.data,
                self.attributes.clone(),
                self.message_id.clone(),
                PUBLISH_TIME.to_string(),
                None,
            ),
            subscription: self.subscription.clone(),
            delivery_attempt: self.delivery_attempt,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::to_value(self.envelope()).expect("an envelope is JSON")
    }

    /// The request body.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&self.envelope()).expect("an envelope is JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_report_push_parses_back_to_the_report() {
        let report = json!({"id": "LR-1", "owner": {"email": "a@example.com"}});
        let push = Push::report("projects/p/subscriptions/s", &report)
            .message_id("m1")
            .attempt(3);
        let envelope = PushEnvelope::parse(&push.body()).unwrap();
        assert_eq!(envelope.message.message_id, "m1");
        assert_eq!(envelope.message.attributes["reportId"], "LR-1");
        assert_eq!(envelope.delivery_attempt, Some(3));
        assert_eq!(envelope.report().unwrap().id.to_string(), "LR-1");
        assert_eq!(push.json()["message"]["message_id"], "m1");
    }

    #[test]
    fn a_numeric_id_is_its_attribute_too() {
        let push = Push::report("s", &json!({"id": 12})).without_attempt();
        assert_eq!(push.json()["message"]["attributes"]["reportId"], "12");
        assert!(push.json().get("deliveryAttempt").is_none());
    }
}
