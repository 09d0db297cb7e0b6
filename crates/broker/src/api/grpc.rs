//! The `google.pubsub.v1` Publisher and Subscriber gRPC services.
//!
//! Each method turns its request into a call on the [`Engine`]; the REST
//! layer calls these same methods, so both protocols share every check.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::Empty;
use crate::engine::subscription::{LeaseId, Subscription};
use crate::engine::{Engine, received};
use crate::error::BrokerError;
use crate::generated::publisher_server::Publisher;
use crate::generated::subscriber_server::Subscriber;
use crate::pb;

/// The gRPC services over an [`Engine`].
#[derive(Clone)]
pub struct PubSubService {
    engine: Engine,
}

impl PubSubService {
    pub(crate) fn new(engine: Engine) -> PubSubService {
        PubSubService { engine }
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn unimplemented<T>(what: &str) -> Reply<T> {
    Err(BrokerError::Unimplemented(format!("{what} is not supported by this broker yet")).into())
}

fn field_mask(mask: Option<prost_types::FieldMask>) -> Vec<String> {
    mask.map(|m| m.paths).unwrap_or_default()
}

#[tonic::async_trait]
impl Publisher for PubSubService {
    async fn create_topic(&self, request: Request<pb::Topic>) -> Reply<pb::Topic> {
        Ok(Response::new(
            self.engine.create_topic(request.into_inner()).await?,
        ))
    }

    async fn update_topic(&self, request: Request<pb::UpdateTopicRequest>) -> Reply<pb::Topic> {
        let request = request.into_inner();
        let topic = request
            .topic
            .ok_or_else(|| BrokerError::invalid("topic is required"))?;
        Ok(Response::new(
            self.engine
                .update_topic(topic, &field_mask(request.update_mask))
                .await?,
        ))
    }

    async fn publish(&self, request: Request<pb::PublishRequest>) -> Reply<pb::PublishResponse> {
        let request = request.into_inner();
        let message_ids = self
            .engine
            .publish(&request.topic, request.messages)
            .await?;
        Ok(Response::new(pb::PublishResponse { message_ids }))
    }

    async fn get_topic(&self, request: Request<pb::GetTopicRequest>) -> Reply<pb::Topic> {
        Ok(Response::new(
            self.engine.get_topic(&request.into_inner().topic)?,
        ))
    }

    async fn list_topics(
        &self,
        request: Request<pb::ListTopicsRequest>,
    ) -> Reply<pb::ListTopicsResponse> {
        let r = request.into_inner();
        let (topics, next_page_token) =
            self.engine
                .list_topics(&r.project, r.page_size, &r.page_token)?;
        Ok(Response::new(pb::ListTopicsResponse {
            topics,
            next_page_token,
        }))
    }

    async fn list_topic_subscriptions(
        &self,
        request: Request<pb::ListTopicSubscriptionsRequest>,
    ) -> Reply<pb::ListTopicSubscriptionsResponse> {
        let r = request.into_inner();
        let (subscriptions, next_page_token) =
            self.engine
                .list_topic_subscriptions(&r.topic, r.page_size, &r.page_token)?;
        Ok(Response::new(pb::ListTopicSubscriptionsResponse {
            subscriptions,
            next_page_token,
        }))
    }

    async fn list_topic_snapshots(
        &self,
        request: Request<pb::ListTopicSnapshotsRequest>,
    ) -> Reply<pb::ListTopicSnapshotsResponse> {
        // No snapshots exist here, but the topic must.
        self.engine.get_topic(&request.into_inner().topic)?;
        Ok(Response::new(pb::ListTopicSnapshotsResponse::default()))
    }

    async fn delete_topic(&self, request: Request<pb::DeleteTopicRequest>) -> Reply<Empty> {
        self.engine
            .delete_topic(&request.into_inner().topic)
            .await?;
        Ok(Response::new(()))
    }

    async fn detach_subscription(
        &self,
        request: Request<pb::DetachSubscriptionRequest>,
    ) -> Reply<pb::DetachSubscriptionResponse> {
        self.engine
            .detach_subscription(&request.into_inner().subscription)
            .await?;
        Ok(Response::new(pb::DetachSubscriptionResponse {}))
    }
}

type StreamingPullStream =
    Pin<Box<dyn Stream<Item = Result<pb::StreamingPullResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Subscriber for PubSubService {
    async fn create_subscription(
        &self,
        request: Request<pb::Subscription>,
    ) -> Reply<pb::Subscription> {
        Ok(Response::new(
            self.engine
                .create_subscription(request.into_inner())
                .await?,
        ))
    }

    async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Reply<pb::Subscription> {
        Ok(Response::new(
            self.engine
                .get_subscription(&request.into_inner().subscription)?,
        ))
    }

    async fn update_subscription(
        &self,
        request: Request<pb::UpdateSubscriptionRequest>,
    ) -> Reply<pb::Subscription> {
        let request = request.into_inner();
        let sub = request
            .subscription
            .ok_or_else(|| BrokerError::invalid("subscription is required"))?;
        Ok(Response::new(
            self.engine
                .update_subscription(sub, &field_mask(request.update_mask))
                .await?,
        ))
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Reply<pb::ListSubscriptionsResponse> {
        let r = request.into_inner();
        let (subscriptions, next_page_token) =
            self.engine
                .list_subscriptions(&r.project, r.page_size, &r.page_token)?;
        Ok(Response::new(pb::ListSubscriptionsResponse {
            subscriptions,
            next_page_token,
        }))
    }

    async fn delete_subscription(
        &self,
        request: Request<pb::DeleteSubscriptionRequest>,
    ) -> Reply<Empty> {
        self.engine
            .delete_subscription(&request.into_inner().subscription)
            .await?;
        Ok(Response::new(()))
    }

    async fn modify_ack_deadline(
        &self,
        request: Request<pb::ModifyAckDeadlineRequest>,
    ) -> Reply<Empty> {
        let r = request.into_inner();
        self.engine
            .modify_ack_deadline(&r.subscription, &r.ack_ids, r.ack_deadline_seconds)
            .await?;
        Ok(Response::new(()))
    }

    async fn acknowledge(&self, request: Request<pb::AcknowledgeRequest>) -> Reply<Empty> {
        let r = request.into_inner();
        self.engine.acknowledge(&r.subscription, &r.ack_ids).await?;
        Ok(Response::new(()))
    }

    async fn pull(&self, request: Request<pb::PullRequest>) -> Reply<pb::PullResponse> {
        let r = request.into_inner();
        #[allow(deprecated)]
        let return_immediately = r.return_immediately;
        let received_messages = self
            .engine
            .pull(&r.subscription, r.max_messages, return_immediately)
            .await?;
        Ok(Response::new(pb::PullResponse { received_messages }))
    }

    type StreamingPullStream = StreamingPullStream;

    async fn streaming_pull(
        &self,
        request: Request<Streaming<pb::StreamingPullRequest>>,
    ) -> Reply<Self::StreamingPullStream> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the stream ended before its first request"))?;
        let sub = self.engine.attached_subscription(&first.subscription)?;
        if !(10..=600).contains(&first.stream_ack_deadline_seconds) {
            return Err(BrokerError::invalid(format!(
                "stream_ack_deadline_seconds must be between 10 and 600 (got {})",
                first.stream_ack_deadline_seconds
            ))
            .into());
        }
        let (tx, rx) = mpsc::channel(4);
        let stream = StreamState::new(self.engine.clone(), sub, &first);
        stream
            .apply_client_request(&first)
            .await
            .map_err(Status::from)?;
        tokio::spawn(stream.run(inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn modify_push_config(
        &self,
        request: Request<pb::ModifyPushConfigRequest>,
    ) -> Reply<Empty> {
        let r = request.into_inner();
        self.engine
            .modify_push_config(&r.subscription, r.push_config)
            .await?;
        Ok(Response::new(()))
    }

    async fn get_snapshot(&self, _: Request<pb::GetSnapshotRequest>) -> Reply<pb::Snapshot> {
        unimplemented("GetSnapshot")
    }

    async fn list_snapshots(
        &self,
        _: Request<pb::ListSnapshotsRequest>,
    ) -> Reply<pb::ListSnapshotsResponse> {
        unimplemented("ListSnapshots")
    }

    async fn create_snapshot(&self, _: Request<pb::CreateSnapshotRequest>) -> Reply<pb::Snapshot> {
        unimplemented("CreateSnapshot")
    }

    async fn update_snapshot(&self, _: Request<pb::UpdateSnapshotRequest>) -> Reply<pb::Snapshot> {
        unimplemented("UpdateSnapshot")
    }

    async fn delete_snapshot(&self, _: Request<pb::DeleteSnapshotRequest>) -> Reply<Empty> {
        unimplemented("DeleteSnapshot")
    }

    async fn seek(&self, _: Request<pb::SeekRequest>) -> Reply<pb::SeekResponse> {
        unimplemented("Seek")
    }
}

/// One StreamingPull stream: its lease deadline, flow-control limits, and
/// the leases it handed out that are still open.
struct StreamState {
    engine: Engine,
    sub: Arc<Subscription>,
    ack_deadline: std::time::Duration,
    max_messages: usize,
    max_bytes: Option<usize>,
    outstanding: Vec<(LeaseId, usize)>,
}

impl StreamState {
    fn new(engine: Engine, sub: Arc<Subscription>, first: &pb::StreamingPullRequest) -> Self {
        StreamState {
            engine,
            sub,
            ack_deadline: std::time::Duration::from_secs(first.stream_ack_deadline_seconds as u64),
            max_messages: if first.max_outstanding_messages > 0 {
                first.max_outstanding_messages as usize
            } else {
                1000
            },
            max_bytes: (first.max_outstanding_bytes > 0)
                .then_some(first.max_outstanding_bytes as usize),
            outstanding: Vec::new(),
        }
    }

    /// Applies the acks, deadline changes and new stream deadline a client
    /// request carries.
    async fn apply_client_request(
        &self,
        request: &pb::StreamingPullRequest,
    ) -> Result<(), BrokerError> {
        if request.modify_deadline_ack_ids.len() != request.modify_deadline_seconds.len() {
            return Err(BrokerError::invalid(
                "modify_deadline_ack_ids and modify_deadline_seconds must have the same length",
            ));
        }
        let name = self.sub.name.as_str();
        if !request.ack_ids.is_empty() {
            self.engine.acknowledge(name, &request.ack_ids).await?;
        }
        let now = Instant::now();
        for (ack_id, seconds) in request
            .modify_deadline_ack_ids
            .iter()
            .zip(&request.modify_deadline_seconds)
        {
            let failures = self
                .sub
                .modify_deadline(std::slice::from_ref(ack_id), *seconds, now)?;
            self.engine
                .settle_failures(&self.sub, failures, "nacked by the subscriber")
                .await;
        }
        Ok(())
    }

    /// Drops leases that ended (acked, nacked or expired, by this stream or
    /// through the unary RPCs) from the flow-control count.
    fn prune(&mut self) {
        let sub = &self.sub;
        self.outstanding.retain(|(lease, _)| sub.is_leased(*lease));
    }

    fn room(&self) -> (usize, Option<usize>) {
        let messages = self.max_messages.saturating_sub(self.outstanding.len());
        let bytes = self.max_bytes.map(|limit| {
            limit.saturating_sub(self.outstanding.iter().map(|(_, size)| size).sum::<usize>())
        });
        (messages, bytes)
    }

    /// Serves the stream. Handles: client requests (acks, deadline changes),
    /// messages becoming deliverable, and leases ending (which frees flow
    /// control). Stops when the client closes the stream, the subscription is
    /// deleted or the broker shuts down. Leases still open then expire and
    /// their messages are redelivered, as with Pub/Sub.
    async fn run(
        mut self,
        mut inbound: Streaming<pb::StreamingPullRequest>,
        tx: mpsc::Sender<Result<pb::StreamingPullResponse, Status>>,
    ) {
        let properties = Some(pb::streaming_pull_response::SubscriptionProperties {
            message_ordering_enabled: self.sub.settings().ordered,
            exactly_once_delivery_enabled: false,
        });
        let mut first_response = true;
        let sub = self.sub.clone();
        loop {
            let changed = sub.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();

            self.prune();
            let (messages, bytes) = self.room();
            if messages > 0 && bytes != Some(0) {
                let deliveries = self
                    .sub
                    .lease(messages, bytes, self.ack_deadline, Instant::now());
                if !deliveries.is_empty() {
                    self.outstanding
                        .extend(deliveries.iter().map(|d| (d.lease, d.message.size())));
                    let response = pb::StreamingPullResponse {
                        received_messages: received(&self.sub, deliveries),
                        subscription_properties: if first_response { properties } else { None },
                        ..Default::default()
                    };
                    first_response = false;
                    if tx.send(Ok(response)).await.is_err() {
                        return;
                    }
                    continue;
                }
            }

            tokio::select! {
                request = inbound.message() => match request {
                    Ok(Some(request)) => {
                        if let Err(error) = self.apply_client_request(&request).await {
                            let _ = tx.send(Err(error.into())).await;
                            return;
                        }
                    }
                    Ok(None) | Err(_) => return,
                },
                _ = &mut changed => {}
                _ = tx.closed() => return,
                _ = self.sub.closed.cancelled() => {
                    let _ = tx.send(Err(Status::not_found(format!(
                        "Subscription does not exist: {}", self.sub.name
                    )))).await;
                    return;
                }
                _ = self.engine.shutdown().cancelled() => {
                    let _ = tx.send(Err(Status::unavailable("the broker is shutting down"))).await;
                    return;
                }
            }
        }
    }
}
