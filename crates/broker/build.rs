//! Generates the tonic server traits for `google.pubsub.v1.Publisher` and
//! `google.pubsub.v1.Subscriber`.
//!
//! The message types come from `googleapis-tonic-google-pubsub-v1` (generated
//! from Google's own protos); that crate ships clients only, so the service
//! definitions are declared here, method by method, with `tonic-build`'s
//! manual builder instead of copying `.proto` files into the repository.

const PB: &str = "googleapis_tonic_google_pubsub_v1::google::pubsub::v1";
/// `google.protobuf.Empty` is `()` in prost; the generator wants a path, so
/// the crate names it `Empty`.
const EMPTY: &str = "crate::Empty";

struct Rpc {
    name: &'static str,
    route: &'static str,
    input: &'static str,
    output: &'static str,
    streaming: bool,
}

const fn rpc(
    name: &'static str,
    route: &'static str,
    input: &'static str,
    output: &'static str,
) -> Rpc {
    Rpc {
        name,
        route,
        input,
        output,
        streaming: false,
    }
}

fn service(name: &str, rpcs: &[Rpc]) -> tonic_build::manual::Service {
    let mut builder = tonic_build::manual::Service::builder()
        .name(name)
        .package("google.pubsub.v1");
    for rpc in rpcs {
        let ty = |t: &str| {
            if t == EMPTY {
                t.to_string()
            } else {
                format!("{PB}::{t}")
            }
        };
        let mut method = tonic_build::manual::Method::builder()
            .name(rpc.name)
            .route_name(rpc.route)
            .input_type(ty(rpc.input))
            .output_type(ty(rpc.output))
            .codec_path("tonic_prost::ProstCodec");
        if rpc.streaming {
            method = method.client_streaming().server_streaming();
        }
        builder = builder.method(method.build());
    }
    builder.build()
}

fn main() {
    let publisher = service(
        "Publisher",
        &[
            rpc("create_topic", "CreateTopic", "Topic", "Topic"),
            rpc("update_topic", "UpdateTopic", "UpdateTopicRequest", "Topic"),
            rpc("publish", "Publish", "PublishRequest", "PublishResponse"),
            rpc("get_topic", "GetTopic", "GetTopicRequest", "Topic"),
            rpc(
                "list_topics",
                "ListTopics",
                "ListTopicsRequest",
                "ListTopicsResponse",
            ),
            rpc(
                "list_topic_subscriptions",
                "ListTopicSubscriptions",
                "ListTopicSubscriptionsRequest",
                "ListTopicSubscriptionsResponse",
            ),
            rpc(
                "list_topic_snapshots",
                "ListTopicSnapshots",
                "ListTopicSnapshotsRequest",
                "ListTopicSnapshotsResponse",
            ),
            rpc("delete_topic", "DeleteTopic", "DeleteTopicRequest", EMPTY),
            rpc(
                "detach_subscription",
                "DetachSubscription",
                "DetachSubscriptionRequest",
                "DetachSubscriptionResponse",
            ),
        ],
    );
    let subscriber = service(
        "Subscriber",
        &[
            rpc(
                "create_subscription",
                "CreateSubscription",
                "Subscription",
                "Subscription",
            ),
            rpc(
                "get_subscription",
                "GetSubscription",
                "GetSubscriptionRequest",
                "Subscription",
            ),
            rpc(
                "update_subscription",
                "UpdateSubscription",
                "UpdateSubscriptionRequest",
                "Subscription",
            ),
            rpc(
                "list_subscriptions",
                "ListSubscriptions",
                "ListSubscriptionsRequest",
                "ListSubscriptionsResponse",
            ),
            rpc(
                "delete_subscription",
                "DeleteSubscription",
                "DeleteSubscriptionRequest",
                EMPTY,
            ),
            rpc(
                "modify_ack_deadline",
                "ModifyAckDeadline",
                "ModifyAckDeadlineRequest",
                EMPTY,
            ),
            rpc("acknowledge", "Acknowledge", "AcknowledgeRequest", EMPTY),
            rpc("pull", "Pull", "PullRequest", "PullResponse"),
            Rpc {
                streaming: true,
                ..rpc(
                    "streaming_pull",
                    "StreamingPull",
                    "StreamingPullRequest",
                    "StreamingPullResponse",
                )
            },
            rpc(
                "modify_push_config",
                "ModifyPushConfig",
                "ModifyPushConfigRequest",
                EMPTY,
            ),
            rpc(
                "get_snapshot",
                "GetSnapshot",
                "GetSnapshotRequest",
                "Snapshot",
            ),
            rpc(
                "list_snapshots",
                "ListSnapshots",
                "ListSnapshotsRequest",
                "ListSnapshotsResponse",
            ),
            rpc(
                "create_snapshot",
                "CreateSnapshot",
                "CreateSnapshotRequest",
                "Snapshot",
            ),
            rpc(
                "update_snapshot",
                "UpdateSnapshot",
                "UpdateSnapshotRequest",
                "Snapshot",
            ),
            rpc(
                "delete_snapshot",
                "DeleteSnapshot",
                "DeleteSnapshotRequest",
                EMPTY,
            ),
            rpc("seek", "Seek", "SeekRequest", "SeekResponse"),
        ],
    );
    tonic_build::manual::Builder::new()
        .build_client(false)
        .compile(&[publisher, subscriber]);
}
