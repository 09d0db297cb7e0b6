//! [`Api`] over gRPC, with the tonic clients of `google.pubsub.v1`.

use std::net::SocketAddr;

use labrelay_broker::pb;
use labrelay_broker::pb::publisher_client::PublisherClient;
use labrelay_broker::pb::subscriber_client::SubscriberClient;
use tonic::transport::Channel;

use super::{Api, ApiError, ApiResult, Code};

/// Large enough for a 10 MB publish and its framing.
const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;

/// gRPC clients of one broker, over one plaintext HTTP/2 channel.
#[derive(Clone)]
pub struct Grpc {
    publisher: PublisherClient<Channel>,
    subscriber: SubscriberClient<Channel>,
}

impl Grpc {
    pub async fn connect(addr: SocketAddr) -> Grpc {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("a valid URI")
            .connect()
            .await
            .expect("connecting to the broker over gRPC");
        Grpc {
            publisher: PublisherClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            subscriber: SubscriberClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        }
    }

    /// The raw subscriber client, for StreamingPull.
    pub fn subscriber(&self) -> SubscriberClient<Channel> {
        self.subscriber.clone()
    }

    fn publisher(&self) -> PublisherClient<Channel> {
        self.publisher.clone()
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let code = match status.code() {
            tonic::Code::InvalidArgument => Code::InvalidArgument,
            tonic::Code::NotFound => Code::NotFound,
            tonic::Code::AlreadyExists => Code::AlreadyExists,
            tonic::Code::FailedPrecondition => Code::FailedPrecondition,
            tonic::Code::PermissionDenied => Code::PermissionDenied,
            tonic::Code::OutOfRange => Code::OutOfRange,
            tonic::Code::Unimplemented => Code::Unimplemented,
            tonic::Code::Unavailable => Code::Unavailable,
            tonic::Code::Internal => Code::Internal,
            _ => Code::Other,
        };
        let message = if code == Code::Other {
            format!("{:?}: {}", status.code(), status.message())
        } else {
            status.message().to_owned()
        };
        ApiError { code, message }
    }
}

fn ok<T>(result: Result<tonic::Response<T>, tonic::Status>) -> ApiResult<T> {
    result
        .map(tonic::Response::into_inner)
        .map_err(ApiError::from)
}

impl Api for Grpc {
    fn protocol(&self) -> &'static str {
        "grpc"
    }

    async fn create_topic(&self, topic: pb::Topic) -> ApiResult<pb::Topic> {
        ok(self.publisher().create_topic(topic).await)
    }

    async fn get_topic(&self, name: &str) -> ApiResult<pb::Topic> {
        let request = pb::GetTopicRequest { topic: name.into() };
        ok(self.publisher().get_topic(request).await)
    }

    async fn list_topics(
        &self,
        project: &str,
        page_size: i32,
        page_token: &str,
    ) -> ApiResult<(Vec<pb::Topic>, String)> {
        let request = pb::ListTopicsRequest {
            project: project.into(),
            page_size,
            page_token: page_token.into(),
        };
        let response = ok(self.publisher().list_topics(request).await)?;
        Ok((response.topics, response.next_page_token))
    }

    async fn list_topic_subscriptions(&self, topic: &str) -> ApiResult<Vec<String>> {
        let request = pb::ListTopicSubscriptionsRequest {
            topic: topic.into(),
            ..Default::default()
        };
        Ok(ok(self.publisher().list_topic_subscriptions(request).await)?.subscriptions)
    }

    async fn delete_topic(&self, name: &str) -> ApiResult<()> {
        let request = pb::DeleteTopicRequest { topic: name.into() };
        ok(self.publisher().delete_topic(request).await)
    }

    async fn publish(
        &self,
        topic: &str,
        messages: Vec<pb::PubsubMessage>,
    ) -> ApiResult<Vec<String>> {
        let request = pb::PublishRequest {
            topic: topic.into(),
            messages,
        };
        Ok(ok(self.publisher().publish(request).await)?.message_ids)
    }

    async fn create_subscription(&self, sub: pb::Subscription) -> ApiResult<pb::Subscription> {
        ok(self.subscriber().create_subscription(sub).await)
    }

    async fn get_subscription(&self, name: &str) -> ApiResult<pb::Subscription> {
        let request = pb::GetSubscriptionRequest {
            subscription: name.into(),
        };
        ok(self.subscriber().get_subscription(request).await)
    }

    async fn list_subscriptions(
        &self,
        project: &str,
        page_size: i32,
        page_token: &str,
    ) -> ApiResult<(Vec<pb::Subscription>, String)> {
        let request = pb::ListSubscriptionsRequest {
            project: project.into(),
            page_size,
            page_token: page_token.into(),
        };
        let response = ok(self.subscriber().list_subscriptions(request).await)?;
        Ok((response.subscriptions, response.next_page_token))
    }

    async fn delete_subscription(&self, name: &str) -> ApiResult<()> {
        let request = pb::DeleteSubscriptionRequest {
            subscription: name.into(),
        };
        ok(self.subscriber().delete_subscription(request).await)
    }

    async fn modify_push_config(&self, sub: &str, push: pb::PushConfig) -> ApiResult<()> {
        let request = pb::ModifyPushConfigRequest {
            subscription: sub.into(),
            push_config: Some(push),
        };
        ok(self.subscriber().modify_push_config(request).await)
    }

    async fn pull(
        &self,
        sub: &str,
        max_messages: i32,
        return_immediately: bool,
    ) -> ApiResult<Vec<pb::ReceivedMessage>> {
        #[allow(deprecated)]
        let request = pb::PullRequest {
            subscription: sub.into(),
            return_immediately,
            max_messages,
        };
        Ok(ok(self.subscriber().pull(request).await)?.received_messages)
    }

    async fn acknowledge(&self, sub: &str, ack_ids: &[String]) -> ApiResult<()> {
        let request = pb::AcknowledgeRequest {
            subscription: sub.into(),
            ack_ids: ack_ids.to_vec(),
        };
        ok(self.subscriber().acknowledge(request).await)
    }

    async fn modify_ack_deadline(
        &self,
        sub: &str,
        ack_ids: &[String],
        seconds: i32,
    ) -> ApiResult<()> {
        let request = pb::ModifyAckDeadlineRequest {
            subscription: sub.into(),
            ack_ids: ack_ids.to_vec(),
            ack_deadline_seconds: seconds,
        };
        ok(self.subscriber().modify_ack_deadline(request).await)
    }
}
