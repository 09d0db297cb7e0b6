//! A stand-in for the gRPC services behind the REST routes: it records the
//! last prost request and answers with canned messages, so that the tests
//! look at the JSON mapping, not at the broker.

use std::{
    any::Any,
    sync::{Arc, Mutex},
};

use tonic::Response as GrpcResponse;

use super::*;

type Reply<T> = Result<GrpcResponse<T>, Status>;

/// Records the last prost request and answers with canned messages (or
/// with `fail`, once): the JSON mapping is under test, not the broker.
#[derive(Clone, Default)]
pub(super) struct Fake {
    last: Arc<Mutex<Option<Box<dyn Any + Send>>>>,
    pub(super) fail: Arc<Mutex<Option<Status>>>,
}

impl Fake {
    fn answer<Q: Send + 'static, A>(&self, request: Request<Q>, answer: A) -> Reply<A> {
        *self.last.lock().unwrap() = Some(Box::new(request.into_inner()));
        match self.fail.lock().unwrap().take() {
            Some(status) => Err(status),
            None => Ok(GrpcResponse::new(answer)),
        }
    }

    pub(super) fn last<Q: 'static>(&self) -> Q {
        let last = self
            .last
            .lock()
            .unwrap()
            .take()
            .expect("no request reached the service");
        *last
            .downcast::<Q>()
            .expect("the service got another request type")
    }
}

#[tonic::async_trait]
impl Publisher for Fake {
    async fn create_topic(&self, r: Request<pb::Topic>) -> Reply<pb::Topic> {
        let echo = r.get_ref().clone();
        self.answer(r, echo)
    }
    async fn update_topic(&self, r: Request<pb::UpdateTopicRequest>) -> Reply<pb::Topic> {
        let echo = r.get_ref().topic.clone().unwrap_or_default();
        self.answer(r, echo)
    }
    async fn publish(&self, r: Request<pb::PublishRequest>) -> Reply<pb::PublishResponse> {
        let message_ids = (1..=r.get_ref().messages.len())
            .map(|i| i.to_string())
            .collect();
        self.answer(r, pb::PublishResponse { message_ids })
    }
    async fn get_topic(&self, r: Request<pb::GetTopicRequest>) -> Reply<pb::Topic> {
        let answer = topic(&r.get_ref().topic);
        self.answer(r, answer)
    }
    async fn list_topics(
        &self,
        r: Request<pb::ListTopicsRequest>,
    ) -> Reply<pb::ListTopicsResponse> {
        let page = pb::ListTopicsResponse {
            topics: vec![topic("projects/p/topics/a"), topic("projects/p/topics/b")],
            next_page_token: "next".into(),
        };
        self.answer(r, page)
    }
    async fn list_topic_subscriptions(
        &self,
        r: Request<pb::ListTopicSubscriptionsRequest>,
    ) -> Reply<pb::ListTopicSubscriptionsResponse> {
        let page = pb::ListTopicSubscriptionsResponse {
            subscriptions: vec!["projects/p/subscriptions/s".into()],
            next_page_token: String::new(),
        };
        self.answer(r, page)
    }
    async fn list_topic_snapshots(
        &self,
        r: Request<pb::ListTopicSnapshotsRequest>,
    ) -> Reply<pb::ListTopicSnapshotsResponse> {
        self.answer(r, pb::ListTopicSnapshotsResponse::default())
    }
    async fn delete_topic(&self, r: Request<pb::DeleteTopicRequest>) -> Reply<()> {
        self.answer(r, ())
    }
    async fn detach_subscription(
        &self,
        r: Request<pb::DetachSubscriptionRequest>,
    ) -> Reply<pb::DetachSubscriptionResponse> {
        self.answer(r, pb::DetachSubscriptionResponse {})
    }
}

#[tonic::async_trait]
impl Subscriber for Fake {
    type StreamingPullStream = tokio_stream::Empty<Result<pb::StreamingPullResponse, Status>>;

    async fn create_subscription(&self, r: Request<pb::Subscription>) -> Reply<pb::Subscription> {
        let echo = r.get_ref().clone();
        self.answer(r, echo)
    }
    async fn get_subscription(
        &self,
        r: Request<pb::GetSubscriptionRequest>,
    ) -> Reply<pb::Subscription> {
        let answer = pb::Subscription {
            name: r.get_ref().subscription.clone(),
            topic: "projects/p/topics/t".into(),
            push_config: Some(pb::PushConfig::default()),
            ack_deadline_seconds: 10,
            ..Default::default()
        };
        self.answer(r, answer)
    }
    async fn update_subscription(
        &self,
        r: Request<pb::UpdateSubscriptionRequest>,
    ) -> Reply<pb::Subscription> {
        let echo = r.get_ref().subscription.clone().unwrap_or_default();
        self.answer(r, echo)
    }
    async fn list_subscriptions(
        &self,
        r: Request<pb::ListSubscriptionsRequest>,
    ) -> Reply<pb::ListSubscriptionsResponse> {
        self.answer(r, pb::ListSubscriptionsResponse::default())
    }
    async fn delete_subscription(&self, r: Request<pb::DeleteSubscriptionRequest>) -> Reply<()> {
        self.answer(r, ())
    }
    async fn modify_ack_deadline(&self, r: Request<pb::ModifyAckDeadlineRequest>) -> Reply<()> {
        self.answer(r, ())
    }
    async fn acknowledge(&self, r: Request<pb::AcknowledgeRequest>) -> Reply<()> {
        self.answer(r, ())
    }
    async fn pull(&self, r: Request<pb::PullRequest>) -> Reply<pb::PullResponse> {
        let received =
            |ack_id: &str, message: pb::PubsubMessage, delivery_attempt| pb::ReceivedMessage {
                ack_id: ack_id.into(),
                message: Some(message),
                delivery_attempt,
            };
        let first = pb::PubsubMessage {
            data: b"{\"id\": 12}".to_vec(),
            attributes: HashMap::from([("reportId".into(), "12".into())]),
            message_id: "1".into(),
            publish_time: Some(at(1_714_564_800, 500_000_000)),
            ordering_key: String::new(),
        };
        let second = pb::PubsubMessage {
            message_id: "2".into(),
            publish_time: Some(at(1_714_564_801, 0)),
            ordering_key: "k".into(),
            ..Default::default()
        };
        let answer = pb::PullResponse {
            received_messages: vec![received("a1", first, 0), received("a2", second, 3)],
        };
        self.answer(r, answer)
    }
    async fn streaming_pull(
        &self,
        _: Request<tonic::Streaming<pb::StreamingPullRequest>>,
    ) -> Reply<Self::StreamingPullStream> {
        Err(Status::unimplemented("not over REST"))
    }
    async fn modify_push_config(&self, r: Request<pb::ModifyPushConfigRequest>) -> Reply<()> {
        self.answer(r, ())
    }
    async fn get_snapshot(&self, r: Request<pb::GetSnapshotRequest>) -> Reply<pb::Snapshot> {
        self.answer(r, pb::Snapshot::default())
    }
    async fn list_snapshots(
        &self,
        r: Request<pb::ListSnapshotsRequest>,
    ) -> Reply<pb::ListSnapshotsResponse> {
        self.answer(r, pb::ListSnapshotsResponse::default())
    }
    async fn create_snapshot(&self, r: Request<pb::CreateSnapshotRequest>) -> Reply<pb::Snapshot> {
        let answer = pb::Snapshot {
            name: r.get_ref().name.clone(),
            topic: "projects/p/topics/t".into(),
            expire_time: Some(at(1_715_169_600, 0)),
            labels: r.get_ref().labels.clone(),
        };
        self.answer(r, answer)
    }
    async fn update_snapshot(&self, r: Request<pb::UpdateSnapshotRequest>) -> Reply<pb::Snapshot> {
        self.answer(r, pb::Snapshot::default())
    }
    async fn delete_snapshot(&self, r: Request<pb::DeleteSnapshotRequest>) -> Reply<()> {
        self.answer(r, ())
    }
    async fn seek(&self, r: Request<pb::SeekRequest>) -> Reply<pb::SeekResponse> {
        self.answer(r, pb::SeekResponse {})
    }
}
