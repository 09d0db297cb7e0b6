"""Shared fixtures: the official clients pointed at PUBSUB_EMULATOR_HOST.

Run by tests/system/conformance.rs against a fresh labrelay broker; by hand:

    PUBSUB_EMULATOR_HOST=127.0.0.1:8085 python3 -m pytest tests/conformance/python
"""

import os
import re
import time
import uuid

import pytest
from google.api_core import exceptions
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1 import types

PROJECT = os.environ.get("PUBSUB_PROJECT_ID", "conformance")


def pytest_configure(config):
    if not os.environ.get("PUBSUB_EMULATOR_HOST"):
        raise pytest.UsageError(
            "PUBSUB_EMULATOR_HOST must point at the broker under test (host:port)"
        )


@pytest.fixture(scope="session")
def project():
    return PROJECT


@pytest.fixture(scope="session")
def publisher():
    client = pubsub_v1.PublisherClient()
    yield client
    client.transport.close()


@pytest.fixture(scope="session")
def subscriber():
    client = pubsub_v1.SubscriberClient()
    yield client
    client.close()


class Names:
    """Unique resource names for one test; deletes what it created."""

    def __init__(self, publisher, subscriber, label):
        self.publisher = publisher
        self.subscriber = subscriber
        self.label = re.sub(r"[^A-Za-z0-9]", "-", label)[:40]
        self.topics = []
        self.subscriptions = []

    def _id(self, kind):
        return f"{self.label}-{kind}-{uuid.uuid4().hex[:8]}"

    def topic(self, kind="topic"):
        name = self.publisher.topic_path(PROJECT, self._id(kind))
        self.topics.append(name)
        return name

    def subscription(self, kind="sub"):
        name = self.subscriber.subscription_path(PROJECT, self._id(kind))
        self.subscriptions.append(name)
        return name

    def cleanup(self):
        for name in self.subscriptions:
            try:
                self.subscriber.delete_subscription(request={"subscription": name})
            except exceptions.GoogleAPICallError:
                pass
        for name in self.topics:
            try:
                self.publisher.delete_topic(request={"topic": name})
            except exceptions.GoogleAPICallError:
                pass


@pytest.fixture
def names(publisher, subscriber, request):
    n = Names(publisher, subscriber, request.node.originalname.removeprefix("test_"))
    yield n
    n.cleanup()


def pull_until(subscriber, subscription, count, timeout=10.0, ack=True):
    """Synchronous pulls until `count` messages arrived (or the timeout);
    returns the received messages, acknowledged unless ack=False."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        try:
            response = subscriber.pull(
                request={"subscription": subscription, "max_messages": count - len(got)},
                timeout=max(1.0, deadline - time.monotonic()),
                retry=None,
            )
        except exceptions.DeadlineExceeded:
            break
        if ack and response.received_messages:
            subscriber.acknowledge(
                request={
                    "subscription": subscription,
                    "ack_ids": [m.ack_id for m in response.received_messages],
                }
            )
        got.extend(response.received_messages)
    return got


def pull_now(subscriber, subscription, max_messages=100):
    """One pull that does not wait for messages."""
    return list(subscriber.pull(
        request={
            "subscription": subscription,
            "max_messages": max_messages,
            "return_immediately": True,
        },
        timeout=10,
    ).received_messages)


def stream(subscriber, subscription, callback, until, timeout, flow_control=None):
    """Runs subscribe() (StreamingPull) until `until()` is true or `timeout`
    seconds passed; a stream that fails raises its error here."""
    future = subscriber.subscribe(
        subscription, callback, flow_control=flow_control or types.FlowControl()
    )
    deadline = time.monotonic() + timeout
    try:
        while not until() and time.monotonic() < deadline:
            if future.done():
                future.result()  # raises the stream's error
                raise AssertionError("the streaming pull ended by itself")
            time.sleep(0.05)
    finally:
        future.cancel()
        try:
            future.result(timeout=10)
        except Exception:  # cancelled
            pass
