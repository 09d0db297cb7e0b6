//! Administration: creating, updating, listing and deleting topics and
//! subscriptions. Changes are serialized by the engine's administrative
//! lock and written to the store before memory changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message as _;

use super::Engine;
use crate::error::{BrokerError, Result};
use crate::names::{DELETED_TOPIC, ProjectName};
use crate::pb;
use crate::settings::{self, normalize_subscription, normalize_topic};

/// One page of a sorted listing: entries after `page_token`, at most
/// `page_size` (0 = all), and the token for the next page.
fn page<T: Clone>(
    map: &BTreeMap<String, T>,
    prefix: &str,
    page_size: i32,
    page_token: &str,
) -> (Vec<T>, String) {
    let limit = if page_size <= 0 {
        usize::MAX
    } else {
        page_size as usize
    };
    let start = if page_token.is_empty() {
        prefix.to_string()
    } else {
        format!("{page_token}\0")
    };
    let mut items: Vec<(&String, &T)> = map
        .range(start..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .take(limit.saturating_add(1))
        .collect();
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|(k, _)| (*k).clone()).unwrap_or_default()
    } else {
        String::new()
    };
    (items.into_iter().map(|(_, v)| v.clone()).collect(), next)
}

impl Engine {
    pub async fn create_topic(&self, topic: pb::Topic) -> Result<pb::Topic> {
        let (name, topic) = normalize_topic(topic)?;
        let _admin = self.inner.admin.lock().await;
        if self.topic(name.as_str()).is_some() {
            return Err(BrokerError::AlreadyExists(format!(
                "Topic already exists: {name}"
            )));
        }
        self.inner
            .store
            .put_topic(name.as_str().to_string(), topic.encode_to_vec())
            .await?;
        self.insert_topic(name, topic.clone());
        Ok(topic)
    }

    pub fn get_topic(&self, name: &str) -> Result<pb::Topic> {
        Ok(self
            .existing_topic(name)?
            .config
            .read()
            .expect("topic lock")
            .clone())
    }

    pub async fn update_topic(&self, update: pb::Topic, mask: &[String]) -> Result<pb::Topic> {
        let _admin = self.inner.admin.lock().await;
        let topic = self.existing_topic(&update.name)?;
        if mask.is_empty() {
            return Err(BrokerError::invalid(
                "update_mask must name at least one field",
            ));
        }
        let mut config = topic.config.read().expect("topic lock").clone();
        for path in mask {
            match path.as_str() {
                "labels" => config.labels = update.labels.clone(),
                "message_retention_duration" | "messageRetentionDuration" => {
                    config.message_retention_duration = update.message_retention_duration
                }
                other => {
                    return Err(BrokerError::invalid(format!(
                        "update_mask names a field that cannot be updated here: {other}"
                    )));
                }
            }
        }
        let (_, config) = normalize_topic(config)?;
        self.inner
            .store
            .put_topic(update.name.clone(), config.encode_to_vec())
            .await?;
        *topic.config.write().expect("topic lock") = config.clone();
        Ok(config)
    }

    pub fn list_topics(
        &self,
        project: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<pb::Topic>, String)> {
        let project = ProjectName::parse(project)?;
        let topics = self.inner.topics.read().expect("topics lock");
        let (page, next) = page(
            &topics,
            &format!("{}/topics/", project.as_str()),
            page_size,
            page_token,
        );
        Ok((
            page.iter()
                .map(|t| t.config.read().expect("topic lock").clone())
                .collect(),
            next,
        ))
    }

    pub fn list_topic_subscriptions(
        &self,
        topic: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<String>, String)> {
        let topic = self.existing_topic(topic)?;
        let names: BTreeMap<String, String> = topic
            .subscriptions
            .read()
            .expect("topic lock")
            .iter()
            .map(|s| (s.name.as_str().to_string(), s.name.as_str().to_string()))
            .collect();
        Ok(page(&names, "", page_size, page_token))
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let _admin = self.inner.admin.lock().await;
        let topic = self.existing_topic(name)?;
        self.inner.store.delete_topic(name.to_string()).await?;
        self.inner.topics.write().expect("topics lock").remove(name);
        // Subscriptions outlive their topic, as in Pub/Sub: they keep their
        // backlog and report the topic as deleted.
        let orphans = std::mem::take(&mut *topic.subscriptions.write().expect("topic lock"));
        for sub in orphans {
            let mut config = sub.config();
            config.topic = DELETED_TOPIC.to_string();
            self.inner
                .store
                .put_subscription(config.name.clone(), config.encode_to_vec())
                .await?;
            sub.set_config(config);
        }
        Ok(())
    }

    pub async fn create_subscription(&self, config: pb::Subscription) -> Result<pb::Subscription> {
        let (name, mut config) = normalize_subscription(config)?;
        self.check_push_endpoint(config.push_config.as_ref())?;
        let _admin = self.inner.admin.lock().await;
        let topic = self.existing_topic(&config.topic)?;
        if let Some(dead_letter) = &config.dead_letter_policy {
            self.existing_topic(&dead_letter.dead_letter_topic)?;
        }
        if self.subscription(name.as_str()).is_ok() {
            return Err(BrokerError::AlreadyExists(format!(
                "Subscription already exists: {name}"
            )));
        }
        config.topic_message_retention_duration = topic
            .config
            .read()
            .expect("topic lock")
            .message_retention_duration;
        let id = self
            .inner
            .store
            .put_subscription(name.as_str().to_string(), config.encode_to_vec())
            .await?;
        self.insert_subscription(name, id, config.clone());
        self.warn_if_dead_letters_drop(&config);
        Ok(config)
    }

    pub fn get_subscription(&self, name: &str) -> Result<pb::Subscription> {
        Ok(self.subscription(name)?.config())
    }

    pub fn list_subscriptions(
        &self,
        project: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<pb::Subscription>, String)> {
        let project = ProjectName::parse(project)?;
        let subs = self.inner.subscriptions.read().expect("subscriptions lock");
        let (page, next) = page(
            &subs,
            &format!("{}/subscriptions/", project.as_str()),
            page_size,
            page_token,
        );
        Ok((page.iter().map(|s| s.config()).collect(), next))
    }

    pub async fn update_subscription(
        &self,
        update: pb::Subscription,
        mask: &[String],
    ) -> Result<pb::Subscription> {
        let _admin = self.inner.admin.lock().await;
        let sub = self.subscription(&update.name)?;
        if mask.is_empty() {
            return Err(BrokerError::invalid(
                "update_mask must name at least one field",
            ));
        }
        let mut config = sub.config();
        for path in mask {
            match path.as_str() {
                "ack_deadline_seconds" | "ackDeadlineSeconds" => {
                    config.ack_deadline_seconds = update.ack_deadline_seconds
                }
                "push_config" | "pushConfig" => config.push_config = update.push_config.clone(),
                "retry_policy" | "retryPolicy" => config.retry_policy = update.retry_policy,
                "dead_letter_policy" | "deadLetterPolicy" => {
                    config.dead_letter_policy = update.dead_letter_policy.clone()
                }
                "message_retention_duration" | "messageRetentionDuration" => {
                    config.message_retention_duration = update.message_retention_duration
                }
                "labels" => config.labels = update.labels.clone(),
                "expiration_policy" | "expirationPolicy" => {
                    config.expiration_policy = update.expiration_policy
                }
                other => {
                    return Err(BrokerError::invalid(format!(
                        "update_mask names a field that cannot be updated here: {other}"
                    )));
                }
            }
        }
        let (_, config) = normalize_subscription(config)?;
        self.check_push_endpoint(config.push_config.as_ref())?;
        if let Some(dead_letter) = &config.dead_letter_policy {
            self.existing_topic(&dead_letter.dead_letter_topic)?;
        }
        self.inner
            .store
            .put_subscription(config.name.clone(), config.encode_to_vec())
            .await?;
        sub.set_config(config.clone());
        self.warn_if_dead_letters_drop(&config);
        Ok(config)
    }

    /// Warns when `config`'s dead letters would be dropped: its dead-letter
    /// topic has no subscription (the console and the metrics flag it too).
    fn warn_if_dead_letters_drop(&self, config: &pb::Subscription) {
        if self.drops_dead_letters(config) {
            tracing::warn!(
                subscription = %config.name,
                dead_letter_topic = config.dead_letter_policy.as_ref().map(|d| d.dead_letter_topic.as_str()),
                "the dead-letter topic has no subscription: dead letters will be dropped \
                 (lost) until one is created"
            );
        }
    }

    /// Warns for each subscription whose dead letters went to `topic` when
    /// `topic` loses its last subscription.
    fn warn_if_last_dead_letter_subscription(&self, topic: &str) {
        for sub in self.all_subscriptions() {
            let config = sub.config();
            let to_topic = config
                .dead_letter_policy
                .as_ref()
                .is_some_and(|d| d.dead_letter_topic == topic);
            if to_topic {
                self.warn_if_dead_letters_drop(&config);
            }
        }
    }

    /// Refuses a push endpoint the push delivery will not push to
    /// ([`BrokerConfig::push_endpoints`](crate::BrokerConfig::push_endpoints)).
    fn check_push_endpoint(&self, push: Option<&pb::PushConfig>) -> Result<()> {
        match push.filter(|p| !p.push_endpoint.is_empty()) {
            Some(push) => match self.inner.push.refusal(&push.push_endpoint) {
                Some(why) => Err(BrokerError::PermissionDenied(why)),
                None => Ok(()),
            },
            None => Ok(()),
        }
    }

    pub async fn modify_push_config(&self, name: &str, push: Option<pb::PushConfig>) -> Result<()> {
        let _admin = self.inner.admin.lock().await;
        let sub = self.subscription(name)?;
        let push = push.unwrap_or_default();
        settings::validate_push_config(&push)?;
        self.check_push_endpoint(Some(&push))?;
        let mut config = sub.config();
        config.push_config = Some(push);
        self.inner
            .store
            .put_subscription(config.name.clone(), config.encode_to_vec())
            .await?;
        sub.set_config(config);
        Ok(())
    }

    pub async fn delete_subscription(&self, name: &str) -> Result<()> {
        let _admin = self.inner.admin.lock().await;
        let sub = self.subscription(name)?;
        self.inner.store.delete_subscription(sub.id).await?;
        self.inner
            .subscriptions
            .write()
            .expect("subscriptions lock")
            .remove(name);
        if let Some(topic) = self.topic(&sub.config().topic) {
            topic
                .subscriptions
                .write()
                .expect("topic lock")
                .retain(|s| !Arc::ptr_eq(s, &sub));
        }
        sub.closed.cancel();
        self.warn_if_last_dead_letter_subscription(&sub.config().topic);
        Ok(())
    }

    pub async fn detach_subscription(&self, name: &str) -> Result<()> {
        let _admin = self.inner.admin.lock().await;
        let sub = self.subscription(name)?;
        let mut config = sub.config();
        let topic_name = config.topic.clone();
        if let Some(topic) = self.topic(&config.topic) {
            topic
                .subscriptions
                .write()
                .expect("topic lock")
                .retain(|s| !Arc::ptr_eq(s, &sub));
        }
        config.detached = true;
        self.inner
            .store
            .put_subscription(config.name.clone(), config.encode_to_vec())
            .await?;
        sub.set_config(config);
        // A detached subscription drops what it retained.
        let dropped = sub.clear();
        if !dropped.is_empty() {
            self.inner.store.ack(sub.id, dropped).await?;
        }
        self.warn_if_last_dead_letter_subscription(&topic_name);
        Ok(())
    }
}
