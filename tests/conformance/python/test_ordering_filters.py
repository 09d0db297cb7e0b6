"""Ordering keys and filters with the official `google-cloud-pubsub` Python
client against the broker at PUBSUB_EMULATOR_HOST: per-key order over Pull
and StreamingPull, one outstanding message per key, a nack blocking its key,
and attribute filters (matching, auto-acknowledging the rest, rejecting
malformed expressions). Each test makes its own topics and subscriptions."""

import threading
import time
from collections import defaultdict

import pytest
from google.api_core import exceptions
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1 import types

from conftest import pull_now, pull_until, stream


# ----- ordering keys -----


def ordered_publisher():
    return pubsub_v1.PublisherClient(
        publisher_options=types.PublisherOptions(enable_message_ordering=True)
    )


def test_ordering_keys_streaming_pull(subscriber, names):
    """Per-key publish order over StreamingPull; a nacked message blocks its
    key until it is redelivered, while the other keys proceed."""
    publisher = ordered_publisher()
    try:
        topic = names.topic()
        sub = names.subscription()
        publisher.create_topic(request={"name": topic})
        created = subscriber.create_subscription(
            request={"name": sub, "topic": topic, "enable_message_ordering": True}
        )
        assert created.enable_message_ordering
        keys = ["alpha", "beta", "gamma"]
        futures = [
            publisher.publish(topic, f"{key}-{i}".encode(), ordering_key=key)
            for i in range(10)
            for key in keys
        ]
        for f in futures:
            f.result(timeout=30)

        lock = threading.Lock()
        log = defaultdict(list)  # key -> data of each delivery, in order
        acked = []

        def callback(message):
            with lock:
                log[message.ordering_key].append(message.data.decode())
                first_alpha = message.data == b"alpha-0" and log["alpha"].count("alpha-0") == 1
            if first_alpha:
                message.nack()
            else:
                with lock:
                    acked.append(message.data)
                message.ack()

        stream(subscriber, sub, callback, until=lambda: len(acked) >= 30, timeout=30)
        for key in ["beta", "gamma"]:
            assert log[key] == [f"{key}-{i}" for i in range(10)], log[key]
        assert log["alpha"] == ["alpha-0"] + [f"alpha-{i}" for i in range(10)], log["alpha"]
    finally:
        publisher.stop()


def test_ordering_keys_pull_one_outstanding_per_key(subscriber, names):
    publisher = ordered_publisher()
    try:
        topic = names.topic()
        sub = names.subscription()
        publisher.create_topic(request={"name": topic})
        subscriber.create_subscription(
            request={"name": sub, "topic": topic, "enable_message_ordering": True, "ack_deadline_seconds": 60}
        )
        for i in range(3):
            for key in ["a", "b"]:
                publisher.publish(topic, f"{key}{i}".encode(), ordering_key=key).result(timeout=30)

        def data(received):
            return sorted(m.message.data.decode() for m in received)

        first = pull_now(subscriber, sub, 10)
        assert data(first) == ["a0", "b0"], "one outstanding message per ordering key"
        by = {m.message.data.decode(): m for m in first}
        assert by["a0"].message.ordering_key == "a"

        subscriber.acknowledge(request={"subscription": sub, "ack_ids": [by["b0"].ack_id]})
        second = pull_now(subscriber, sub, 10)
        assert data(second) == ["b1"], "key b proceeds while a0 is outstanding"

        subscriber.modify_ack_deadline(
            request={"subscription": sub, "ack_ids": [by["a0"].ack_id], "ack_deadline_seconds": 0}
        )
        third = pull_now(subscriber, sub, 10)
        assert data(third) == ["a0"], "a nacked message is redelivered before its key moves on"

        # Drain in order.
        seen = defaultdict(list)
        outstanding = second + third
        deadline = time.monotonic() + 10
        while outstanding and time.monotonic() < deadline:
            for m in outstanding:
                seen[m.message.ordering_key].append(m.message.data.decode())
            subscriber.acknowledge(request={"subscription": sub, "ack_ids": [m.ack_id for m in outstanding]})
            outstanding = pull_now(subscriber, sub, 10)
        assert seen["a"] == ["a0", "a1", "a2"]
        assert seen["b"] == ["b1", "b2"]
    finally:
        publisher.stop()


# ----- filters -----

FILTER_MESSAGES = {
    "m1": {"k": "v"},
    "m2": {"k": "v", "n": "1"},
    "m3": {"k": "w"},
    "m4": {"k": "vx"},
    "m5": {"n": "1"},
    "m6": {},
    "m7": {"k": "w", "n": "2"},
}

FILTERS = {
    'attributes.k = "v"': {"m1", "m2"},
    'hasPrefix(attributes.k, "v")': {"m1", "m2", "m4"},
    "attributes:k": {"m1", "m2", "m3", "m4", "m7"},
    "NOT attributes:k": {"m5", "m6"},
    'attributes.k = "v" AND attributes.n = "1"': {"m2"},
    'attributes.k = "v" OR attributes.n = "1"': {"m1", "m2", "m5"},
    '(attributes.k = "v" OR attributes.k = "w") AND NOT attributes:n': {"m1", "m3"},
}


def test_filters_deliver_only_matching_messages(publisher, subscriber, names):
    topic = names.topic()
    publisher.create_topic(request={"name": topic})
    subs = {}
    for expression in FILTERS:
        sub = names.subscription("filter")
        created = subscriber.create_subscription(
            request={"name": sub, "topic": topic, "filter": expression}
        )
        assert created.filter == expression
        subs[expression] = sub
    for data, attributes in FILTER_MESSAGES.items():
        publisher.publish(topic, data.encode(), **attributes).result(timeout=30)

    for expression, expected in FILTERS.items():
        got = pull_until(subscriber, subs[expression], len(expected), timeout=5)
        assert {m.message.data.decode() for m in got} == expected, expression
        # Unmatched messages were acknowledged for this subscription: nothing else comes.
        assert pull_now(subscriber, subs[expression]) == [], expression


@pytest.mark.parametrize(
    "expression",
    ['attributes.k = ', 'attributes.k == "v"', 'hasPrefix(attributes.k)', '(attributes:k', "data = \"x\""],
)
def test_malformed_filter_is_invalid_argument(publisher, subscriber, names, expression):
    topic = names.topic()
    publisher.create_topic(request={"name": topic})
    with pytest.raises(exceptions.InvalidArgument):
        subscriber.create_subscription(
            request={"name": names.subscription(), "topic": topic, "filter": expression}
        )
