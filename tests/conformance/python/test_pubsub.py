"""The official `google-cloud-pubsub` Python client against the broker at
PUBSUB_EMULATOR_HOST: admin, publish, StreamingPull, Pull, acks, nacks,
leases, dead letters, as a user's code does them (ordering keys and filters:
test_ordering_filters.py).

Each test makes its own topics and subscriptions (unique names)."""

import threading
import time

import pytest
from google.api_core import exceptions
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1 import types

from conftest import PROJECT, pull_now, pull_until, stream


# ----- admin -----


def test_topic_admin(publisher, names):
    topic = names.topic()
    created = publisher.create_topic(request={"name": topic, "labels": {"team": "lab"}})
    assert created.name == topic
    got = publisher.get_topic(request={"topic": topic})
    assert got.name == topic
    assert dict(got.labels) == {"team": "lab"}
    listed = [t.name for t in publisher.list_topics(request={"project": f"projects/{PROJECT}"})]
    assert topic in listed

    with pytest.raises(exceptions.AlreadyExists):
        publisher.create_topic(request={"name": topic})

    publisher.delete_topic(request={"topic": topic})
    with pytest.raises(exceptions.NotFound):
        publisher.get_topic(request={"topic": topic})
    with pytest.raises(exceptions.NotFound):
        publisher.delete_topic(request={"topic": topic})


def test_topic_listing_pages(publisher, names):
    topics = [names.topic(f"page{i}") for i in range(5)]
    for t in topics:
        publisher.create_topic(request={"name": t})
    pager = publisher.list_topics(request={"project": f"projects/{PROJECT}", "page_size": 2})
    listed = [t.name for t in pager]
    assert set(topics) <= set(listed)
    assert len(listed) == len(set(listed)), "a topic was listed twice across pages"


def test_subscription_admin_and_push_config(publisher, subscriber, names):
    topic = names.topic()
    sub = names.subscription()
    publisher.create_topic(request={"name": topic})
    created = subscriber.create_subscription(
        request={"name": sub, "topic": topic, "ack_deadline_seconds": 30}
    )
    assert created.name == sub
    assert created.topic == topic
    assert created.ack_deadline_seconds == 30

    got = subscriber.get_subscription(request={"subscription": sub})
    assert got.ack_deadline_seconds == 30
    assert got.message_retention_duration.total_seconds() == 7 * 24 * 3600
    assert not got.push_config.push_endpoint

    listed = [s.name for s in subscriber.list_subscriptions(request={"project": f"projects/{PROJECT}"})]
    assert sub in listed
    assert list(publisher.list_topic_subscriptions(request={"topic": topic})) == [sub]

    with pytest.raises(exceptions.AlreadyExists):
        subscriber.create_subscription(request={"name": sub, "topic": topic})

    # Pull → push → pull with modify_push_config.
    endpoint = "http://127.0.0.1:9/push"  # nothing is published, nothing is pushed
    subscriber.modify_push_config(
        request={"subscription": sub, "push_config": {"push_endpoint": endpoint}}
    )
    assert subscriber.get_subscription(request={"subscription": sub}).push_config.push_endpoint == endpoint
    subscriber.modify_push_config(request={"subscription": sub, "push_config": {}})
    assert not subscriber.get_subscription(request={"subscription": sub}).push_config.push_endpoint

    updated = subscriber.update_subscription(
        request={
            "subscription": {"name": sub, "ack_deadline_seconds": 45, "labels": {"a": "b"}},
            "update_mask": {"paths": ["ack_deadline_seconds", "labels"]},
        }
    )
    assert updated.ack_deadline_seconds == 45
    assert dict(updated.labels) == {"a": "b"}

    subscriber.delete_subscription(request={"subscription": sub})
    with pytest.raises(exceptions.NotFound):
        subscriber.get_subscription(request={"subscription": sub})
    assert list(publisher.list_topic_subscriptions(request={"topic": topic})) == []


def test_invalid_requests_are_rejected(publisher, subscriber, names):
    topic = names.topic()
    publisher.create_topic(request={"name": topic})
    with pytest.raises(exceptions.InvalidArgument):
        publisher.create_topic(request={"name": f"projects/{PROJECT}/topics/t1"})
    with pytest.raises(exceptions.InvalidArgument):
        subscriber.create_subscription(
            request={"name": names.subscription(), "topic": topic, "ack_deadline_seconds": 601}
        )
    with pytest.raises(exceptions.NotFound):
        subscriber.create_subscription(
            request={"name": names.subscription(), "topic": f"projects/{PROJECT}/topics/no-such-topic"}
        )
    with pytest.raises(exceptions.NotFound):
        publisher.publish(f"projects/{PROJECT}/topics/no-such-topic", b"x").result(timeout=30)


# ----- publish -----


def test_publish_with_batching_and_attributes(subscriber, names):
    batching = pubsub_v1.PublisherClient(
        batch_settings=types.BatchSettings(max_messages=7, max_bytes=64 * 1024, max_latency=0.05)
    )
    try:
        topic = names.topic()
        sub = names.subscription()
        batching.create_topic(request={"name": topic})
        subscriber.create_subscription(request={"name": sub, "topic": topic})
        futures = [
            batching.publish(topic, f"report {i}".encode(), reportId=str(i), kind="lab")
            for i in range(50)
        ]
        ids = [f.result(timeout=30) for f in futures]
        assert len(set(ids)) == 50

        got = pull_until(subscriber, sub, 50)
        assert len(got) == 50
        by_id = {m.message.message_id: m.message for m in got}
        assert set(by_id) == set(ids)
        for i, message_id in enumerate(ids):
            m = by_id[message_id]
            assert m.data == f"report {i}".encode()
            assert dict(m.attributes) == {"reportId": str(i), "kind": "lab"}
            assert m.publish_time.timestamp() > 0
        assert pull_now(subscriber, sub) == []
    finally:
        batching.stop()


def test_publish_attributes_only_message(publisher, subscriber, names):
    topic = names.topic()
    sub = names.subscription()
    publisher.create_topic(request={"name": topic})
    subscriber.create_subscription(request={"name": sub, "topic": topic})
    publisher.publish(topic, b"", only="attributes").result(timeout=30)
    (m,) = pull_until(subscriber, sub, 1)
    assert m.message.data == b""
    assert dict(m.message.attributes) == {"only": "attributes"}


# ----- streaming pull -----


def test_streaming_pull_with_flow_control_and_ack(publisher, subscriber, names):
    topic = names.topic()
    sub = names.subscription()
    publisher.create_topic(request={"name": topic})
    subscriber.create_subscription(request={"name": sub, "topic": topic})
    ids = {publisher.publish(topic, f"m{i}".encode()).result(timeout=30) for i in range(20)}

    lock = threading.Lock()
    received = []
    in_flight = 0
    max_in_flight = 0

    def callback(message):
        nonlocal in_flight, max_in_flight
        with lock:
            in_flight += 1
            max_in_flight = max(max_in_flight, in_flight)
            received.append(message.message_id)
        time.sleep(0.1)
        with lock:
            in_flight -= 1
        message.ack()

    stream(
        subscriber, sub, callback,
        until=lambda: len(received) >= 20,
        timeout=30,
        flow_control=types.FlowControl(max_messages=3),
    )
    assert sorted(received) == sorted(ids), "every message exactly once"
    assert max_in_flight <= 3
    time.sleep(0.5)  # let the last acks land
    assert pull_now(subscriber, sub) == []


def test_nack_is_redelivered(publisher, subscriber, names):
    topic = names.topic()
    sub = names.subscription()
    publisher.create_topic(request={"name": topic})
    subscriber.create_subscription(request={"name": sub, "topic": topic})
    message_id = publisher.publish(topic, b"nack me once").result(timeout=30)

    deliveries = []

    def callback(message):
        deliveries.append(message.message_id)
        if len(deliveries) == 1:
            message.nack()
        else:
            message.ack()

    stream(subscriber, sub, callback, until=lambda: len(deliveries) >= 2, timeout=20)
    assert deliveries[:2] == [message_id, message_id]
    time.sleep(0.5)
    assert pull_now(subscriber, sub) == []


def test_lease_extension_past_the_ack_deadline(publisher, subscriber, names):
    """The callback holds the message for 13 s on a subscription whose ack
    deadline is 10 s; the client's lease manager keeps extending it with
    ModifyAckDeadline, so the broker must not redeliver it."""
    topic = names.topic()
    sub = names.subscription()
    publisher.create_topic(request={"name": topic})
    subscriber.create_subscription(request={"name": sub, "topic": topic, "ack_deadline_seconds": 10})
    message_id = publisher.publish(topic, b"slow").result(timeout=30)

    deliveries = []
    done = threading.Event()

    def callback(message):
        deliveries.append(message.message_id)
        if len(deliveries) == 1:
            time.sleep(13)
            message.ack()
            done.set()
        else:
            message.ack()

    flow = types.FlowControl(
        max_lease_duration=60,
        min_duration_per_lease_extension=10,
        max_duration_per_lease_extension=10,
    )
    def acked_a_second_ago():
        if not done.is_set():
            return False
        time.sleep(1)  # room for a (wrong) redelivery to show up
        return True

    stream(subscriber, sub, callback, until=acked_a_second_ago, timeout=25, flow_control=flow)
    assert done.is_set()
    assert deliveries == [message_id], f"redelivered while the lease was being extended: {deliveries}"
    assert pull_now(subscriber, sub) == []


# ----- pull -----


def test_pull_ack_and_modify_ack_deadline(publisher, subscriber, names):
    topic = names.topic()
    sub = names.subscription()
    publisher.create_topic(request={"name": topic})
    subscriber.create_subscription(request={"name": sub, "topic": topic, "ack_deadline_seconds": 60})
    ids = [publisher.publish(topic, f"p{i}".encode()).result(timeout=30) for i in range(3)]

    got = pull_until(subscriber, sub, 3, ack=False)
    assert sorted(m.message.message_id for m in got) == sorted(ids)
    assert all(m.delivery_attempt == 0 for m in got), "no dead-letter policy: no delivery_attempt"
    # Leased: not delivered again.
    assert pull_now(subscriber, sub) == []

    # ModifyAckDeadline 0 = nack: that one message comes back at once.
    nacked = got[0]
    subscriber.modify_ack_deadline(
        request={"subscription": sub, "ack_ids": [nacked.ack_id], "ack_deadline_seconds": 0}
    )
    again = pull_until(subscriber, sub, 1, ack=False)
    assert [m.message.message_id for m in again] == [nacked.message.message_id]
    assert again[0].ack_id != nacked.ack_id

    subscriber.acknowledge(
        request={"subscription": sub, "ack_ids": [m.ack_id for m in got[1:]] + [again[0].ack_id]}
    )
    assert pull_now(subscriber, sub) == []


def test_pull_on_missing_subscription(subscriber):
    with pytest.raises(exceptions.NotFound):
        subscriber.pull(
            request={"subscription": f"projects/{PROJECT}/subscriptions/no-such-sub", "max_messages": 1},
            timeout=10,
        )


# ----- dead letters -----


def test_dead_letter_after_max_delivery_attempts(publisher, subscriber, names):
    topic = names.topic()
    dead = names.topic("dead")
    sub = names.subscription()
    dead_sub = names.subscription("dead-sub")
    publisher.create_topic(request={"name": topic})
    publisher.create_topic(request={"name": dead})
    subscriber.create_subscription(request={"name": dead_sub, "topic": dead})
    created = subscriber.create_subscription(
        request={
            "name": sub,
            "topic": topic,
            "dead_letter_policy": {"dead_letter_topic": dead, "max_delivery_attempts": 5},
        }
    )
    assert created.dead_letter_policy.max_delivery_attempts == 5
    message_id = publisher.publish(topic, b"poison", reportId="7").result(timeout=30)

    attempts = []

    def callback(message):
        attempts.append((message.message_id, message.delivery_attempt))
        message.nack()

    stream(subscriber, sub, callback, until=lambda: len(attempts) >= 5, timeout=30)
    assert attempts == [(message_id, n) for n in range(1, 6)]

    (parked,) = pull_until(subscriber, dead_sub, 1, timeout=10)
    m = parked.message
    assert m.data == b"poison"
    attrs = dict(m.attributes)
    assert attrs["reportId"] == "7"
    assert attrs["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    assert attrs["CloudPubSubDeadLetterSourceSubscription"] == sub.rsplit("/", 1)[1]
    assert attrs["CloudPubSubDeadLetterSourceSubscriptionProject"] == PROJECT
    assert "CloudPubSubDeadLetterSourceTopicPublishTime" in attrs
    # Parked means acknowledged on the source subscription.
    time.sleep(0.5)
    assert pull_now(subscriber, sub) == []


# ----- detach and expiration policy -----


def test_pull_on_detached_subscription_is_failed_precondition(publisher, subscriber, names):
    topic = names.topic()
    sub = names.subscription()
    publisher.create_topic(request={"name": topic})
    subscriber.create_subscription(request={"name": sub, "topic": topic})
    publisher.detach_subscription(request={"subscription": sub})
    assert subscriber.get_subscription(request={"subscription": sub}).detached
    with pytest.raises(exceptions.FailedPrecondition):
        subscriber.pull(request={"subscription": sub, "max_messages": 1, "return_immediately": True}, timeout=10)


def test_expiration_ttl_below_one_day_is_invalid(publisher, subscriber, names):
    topic = names.topic()
    publisher.create_topic(request={"name": topic})
    with pytest.raises(exceptions.InvalidArgument):
        subscriber.create_subscription(
            request={"name": names.subscription(), "topic": topic, "expiration_policy": {"ttl": {"seconds": 3600}}}
        )
