#!/usr/bin/env python3
"""One scenario, run against any Pub/Sub endpoint (PUBSUB_EMULATOR_HOST):
what a client of the official Python library observes, as a flat JSON
object {"observation": value}. tests/system/conformance.rs runs it against the
labrelay broker and against Google's official emulator and diffs the two.

Observations are kept to what a client can rely on: gRPC status codes (not
message texts), field presence and shapes (not ids or times), counts.

    PUBSUB_EMULATOR_HOST=127.0.0.1:8085 python3 differential.py --out result.json
"""

import argparse
import base64
import json
import os
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.api_core import exceptions
from google.cloud import pubsub_v1

PROJECT = os.environ.get("PUBSUB_PROJECT_ID", "differential")
RUN = uuid.uuid4().hex[:6]

publisher = pubsub_v1.PublisherClient()
subscriber = pubsub_v1.SubscriberClient()
NO_RETRY = {"retry": None, "timeout": 15}


def topic_path(name):
    return f"projects/{PROJECT}/topics/{name}"


def sub_path(name):
    return f"projects/{PROJECT}/subscriptions/{name}"


def unique(label):
    return f"{label}-{RUN}-{uuid.uuid4().hex[:6]}"


def status(call):
    """The gRPC status code name a call ends with ("OK" on success)."""
    try:
        call()
        return "OK"
    except exceptions.GoogleAPICallError as e:
        code = e.grpc_status_code
        return code.name if code is not None else f"HTTP_{e.code}"


def new_topic(label):
    name = topic_path(unique(label))
    publisher.create_topic(request={"name": name}, **NO_RETRY)
    return name


def new_sub(topic, label, **config):
    name = sub_path(unique(label))
    subscriber.create_subscription(request={"name": name, "topic": topic, **config}, **NO_RETRY)
    return name


def pull(sub, max_messages=10, wait=5.0):
    """Pulls until something arrives or `wait` seconds pass."""
    deadline = time.monotonic() + wait
    while True:
        got = subscriber.pull(
            request={"subscription": sub, "max_messages": max_messages, "return_immediately": True},
            **NO_RETRY,
        ).received_messages
        if got or time.monotonic() >= deadline:
            return list(got)
        time.sleep(0.1)


def nack(sub, received):
    subscriber.modify_ack_deadline(
        request={"subscription": sub, "ack_ids": [received.ack_id], "ack_deadline_seconds": 0}, **NO_RETRY
    )


def ack(sub, received):
    subscriber.acknowledge(request={"subscription": sub, "ack_ids": [received.ack_id]}, **NO_RETRY)


# ----- a local push endpoint -----


class Receiver:
    """Records every push; answers each path with the status set for it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = {}  # path -> [(monotonic time, headers, body bytes)]
        self.answers = {}  # path -> HTTP status
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    receiver.requests.setdefault(self.path, []).append((time.monotonic(), headers, body))
                    code = receiver.answers.get(self.path, 200)
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def endpoint(self, path, answer=200):
        with self.lock:
            self.answers[path] = answer
        return self.url + path

    def got(self, path):
        with self.lock:
            return list(self.requests.get(path, []))

    def wait(self, path, count, timeout):
        deadline = time.monotonic() + timeout
        while len(self.got(path)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.got(path)


receiver = Receiver()


# ----- scenarios -----


def invalid_requests():
    out = {}
    t = new_topic("errors")
    s = new_sub(t, "errors-sub")
    dead = new_topic("errors-dead")

    def create_topic(name):
        return lambda: publisher.create_topic(request={"name": topic_path(name)}, **NO_RETRY)

    def create_sub(topic=t, name=None, **config):
        return lambda: subscriber.create_subscription(
            request={"name": sub_path(name or unique("e")), "topic": topic, **config}, **NO_RETRY
        )

    def secs(n):
        return {"seconds": n}

    out["create_topic.name_too_short"] = status(create_topic("t1"))
    out["create_topic.name_starts_with_digit"] = status(create_topic("1abc"))
    out["create_topic.name_starts_with_goog"] = status(create_topic("goog-topic"))
    out["create_topic.name_with_slash_char"] = status(create_topic("a*b*c"))
    out["create_topic.duplicate"] = status(lambda: publisher.create_topic(request={"name": t}, **NO_RETRY))
    out["get_topic.unknown"] = status(lambda: publisher.get_topic(request={"topic": topic_path("no-such-topic")}, **NO_RETRY))
    out["delete_topic.unknown"] = status(lambda: publisher.delete_topic(request={"topic": topic_path("no-such-topic")}, **NO_RETRY))
    out["publish.unknown_topic"] = status(
        lambda: publisher.api.publish(request={"topic": topic_path("no-such-topic"), "messages": [{"data": b"x"}]}, **NO_RETRY)
    )
    out["publish.empty_message"] = status(
        lambda: publisher.api.publish(request={"topic": t, "messages": [{"data": b""}]}, **NO_RETRY)
    )
    out["publish.no_messages"] = status(lambda: publisher.api.publish(request={"topic": t, "messages": []}, **NO_RETRY))
    out["publish.attribute_key_goog"] = status(
        lambda: publisher.api.publish(request={"topic": t, "messages": [{"data": b"x", "attributes": {"googx": "1"}}]}, **NO_RETRY)
    )
    out["list_topic_subscriptions.unknown_topic"] = status(
        lambda: list(publisher.list_topic_subscriptions(request={"topic": topic_path("no-such-topic")}, **NO_RETRY))
    )

    out["create_subscription.name_too_short"] = status(create_sub(name="s1"))
    out["create_subscription.unknown_topic"] = status(create_sub(topic=topic_path("no-such-topic")))
    out["create_subscription.duplicate"] = status(lambda: subscriber.create_subscription(request={"name": s, "topic": t}, **NO_RETRY))
    for n in (5, 9, 10, 600, 601, 700):
        out[f"create_subscription.ack_deadline_{n}"] = status(create_sub(ack_deadline_seconds=n))
    for n in (3, 4, 5, 100, 101):
        out[f"create_subscription.dead_letter_attempts_{n}"] = status(
            create_sub(dead_letter_policy={"dead_letter_topic": dead, "max_delivery_attempts": n})
        )
    out["create_subscription.dead_letter_unknown_topic"] = status(
        create_sub(dead_letter_policy={"dead_letter_topic": topic_path("no-such-topic"), "max_delivery_attempts": 5})
    )
    out["create_subscription.retry_max_backoff_700s"] = status(
        create_sub(retry_policy={"minimum_backoff": secs(1), "maximum_backoff": secs(700)})
    )
    out["create_subscription.retry_min_backoff_700s"] = status(create_sub(retry_policy={"minimum_backoff": secs(700)}))
    out["create_subscription.retention_60s"] = status(create_sub(message_retention_duration=secs(60)))
    out["create_subscription.retention_32d"] = status(create_sub(message_retention_duration=secs(32 * 86400)))
    out["create_subscription.push_endpoint_not_a_url"] = status(create_sub(push_config={"push_endpoint": "not a url"}))
    out["create_subscription.enable_message_ordering"] = status(create_sub(enable_message_ordering=True))
    out["create_subscription.filter"] = status(create_sub(filter='attributes.k = "v"'))
    out["create_subscription.exactly_once"] = status(create_sub(enable_exactly_once_delivery=True))

    out["get_subscription.unknown"] = status(
        lambda: subscriber.get_subscription(request={"subscription": sub_path("no-such-sub")}, **NO_RETRY)
    )
    out["delete_subscription.unknown"] = status(
        lambda: subscriber.delete_subscription(request={"subscription": sub_path("no-such-sub")}, **NO_RETRY)
    )
    out["pull.unknown_subscription"] = status(
        lambda: subscriber.pull(request={"subscription": sub_path("no-such-sub"), "max_messages": 1, "return_immediately": True}, **NO_RETRY)
    )
    out["pull.max_messages_0"] = status(
        lambda: subscriber.pull(request={"subscription": s, "max_messages": 0, "return_immediately": True}, **NO_RETRY)
    )
    out["acknowledge.malformed_ack_id"] = status(
        lambda: subscriber.acknowledge(request={"subscription": s, "ack_ids": ["garbage"]}, **NO_RETRY)
    )
    out["modify_ack_deadline.601"] = status(
        lambda: subscriber.modify_ack_deadline(request={"subscription": s, "ack_ids": ["garbage"], "ack_deadline_seconds": 601}, **NO_RETRY)
    )
    out["modify_push_config.not_a_url"] = status(
        lambda: subscriber.modify_push_config(request={"subscription": s, "push_config": {"push_endpoint": "not a url"}}, **NO_RETRY)
    )
    out["modify_push_config.unknown_subscription"] = status(
        lambda: subscriber.modify_push_config(request={"subscription": sub_path("no-such-sub"), "push_config": {}}, **NO_RETRY)
    )
    out["update_subscription.ack_deadline_601"] = status(
        lambda: subscriber.update_subscription(
            request={"subscription": {"name": s, "ack_deadline_seconds": 601}, "update_mask": {"paths": ["ack_deadline_seconds"]}},
            **NO_RETRY,
        )
    )
    out["get_snapshot.unknown"] = status(
        lambda: subscriber.get_snapshot(request={"snapshot": f"projects/{PROJECT}/snapshots/no-such-snap"}, **NO_RETRY)
    )
    return {f"error.{k}": v for k, v in out.items()}


def subscription_defaults():
    t = new_topic("defaults")
    dead = new_topic("defaults-dead")
    s = new_sub(t, "defaults-sub", retry_policy={}, dead_letter_policy={"dead_letter_topic": dead})
    got = subscriber.get_subscription(request={"subscription": s}, **NO_RETRY)
    plain = subscriber.get_subscription(request={"subscription": new_sub(t, "defaults-plain")}, **NO_RETRY)
    return {
        "defaults.ack_deadline_seconds": plain.ack_deadline_seconds,
        "defaults.message_retention_seconds": plain.message_retention_duration.total_seconds(),
        "defaults.has_retry_policy": "retry_policy" in plain,
        "defaults.has_expiration_policy": "expiration_policy" in plain,
        "defaults.retry_policy.minimum_backoff_seconds": got.retry_policy.minimum_backoff.total_seconds(),
        "defaults.retry_policy.maximum_backoff_seconds": got.retry_policy.maximum_backoff.total_seconds(),
        "defaults.dead_letter.max_delivery_attempts": got.dead_letter_policy.max_delivery_attempts,
        "defaults.state": plain.state.name,
    }


def redelivery_after_nack():
    t = new_topic("nack")
    s = new_sub(t, "nack-sub", ack_deadline_seconds=60)
    publisher.publish(t, b"nack").result(timeout=15)
    first = pull(s)
    out = {"nack.first_pull_count": len(first), "nack.first_delivery_attempt": first[0].delivery_attempt if first else None}
    if first:
        nack(s, first[0])
        started = time.monotonic()
        again = pull(s, wait=5)
        out["nack.redelivered"] = bool(again) and again[0].message.message_id == first[0].message.message_id
        out["nack.redelivered_within_2s"] = bool(again) and time.monotonic() - started < 2
        out["nack.new_ack_id"] = bool(again) and again[0].ack_id != first[0].ack_id
        out["nack.stale_ack_id_ack"] = status(lambda: ack(s, first[0]))
        for m in again:
            ack(s, m)
        out["nack.after_ack_pull_count"] = len(pull(s, wait=0.5))
    return out


def redelivery_after_deadline():
    """The only wait for an ack deadline (10 s) in the whole scenario."""
    t = new_topic("expiry")
    s = new_sub(t, "expiry-sub", ack_deadline_seconds=10)
    publisher.publish(t, b"expire").result(timeout=15)
    first = pull(s)
    leased_at = time.monotonic()
    out = {"expiry.first_pull_count": len(first)}
    time.sleep(5)
    out["expiry.pull_at_5s_count"] = len(pull(s, wait=0))
    time.sleep(max(0, leased_at + 10.5 - time.monotonic()))
    again = pull(s, wait=4)
    out["expiry.redelivered_after_deadline"] = bool(first) and bool(again) and again[0].message.message_id == first[0].message.message_id
    for m in again:
        ack(s, m)
    return out


def dead_letter_pull():
    t = new_topic("dlpull")
    dead = new_topic("dlpull-dead")
    dead_sub = new_sub(dead, "dlpull-dead-sub")
    s = new_sub(t, "dlpull-sub", dead_letter_policy={"dead_letter_topic": dead, "max_delivery_attempts": 5})
    original_id = publisher.publish(t, b"poison", reportId="1").result(timeout=15)
    attempts = []
    for _ in range(8):
        got = pull(s, wait=3)
        if not got:
            break
        attempts.append(got[0].delivery_attempt)
        nack(s, got[0])
    parked = pull(dead_sub, wait=5)
    out = {
        "dead_letter_pull.delivery_attempts": attempts,
        "dead_letter_pull.parked_count": len(parked),
    }
    if parked:
        m = parked[0].message
        attrs = dict(m.attributes)
        out.update({
            "dead_letter_pull.attribute_keys": sorted(attrs),
            "dead_letter_pull.attr.DeliveryCount": attrs.get("CloudPubSubDeadLetterSourceDeliveryCount"),
            "dead_letter_pull.attr.Subscription_is_short_id": attrs.get("CloudPubSubDeadLetterSourceSubscription") == s.rsplit("/", 1)[1],
            "dead_letter_pull.attr.SubscriptionProject": attrs.get("CloudPubSubDeadLetterSourceSubscriptionProject") == PROJECT,
            "dead_letter_pull.data_kept": m.data == b"poison",
            "dead_letter_pull.new_message_id": m.message_id != original_id,
            "dead_letter_pull.delivery_attempt_on_dead_sub": parked[0].delivery_attempt,
        })
        ack(dead_sub, parked[0])
    out["dead_letter_pull.source_empty_after"] = len(pull(s, wait=0.5)) == 0
    return out


def envelope_shape(prefix, request, sub):
    _, headers, body = request
    out = {
        f"{prefix}.content_type": headers.get("content-type", "").split(";")[0],
        f"{prefix}.has_authorization": "authorization" in headers,
    }
    try:
        envelope = json.loads(body)
    except ValueError:
        out[f"{prefix}.body_is_json"] = False
        return out, None
    msg = envelope.get("message", {})
    out.update({
        f"{prefix}.top_level_keys": sorted(envelope),
        f"{prefix}.message_keys": sorted(msg),
        f"{prefix}.subscription_is_full_name": envelope.get("subscription") == sub,
        f"{prefix}.message_id_twins_equal": msg.get("messageId") == msg.get("message_id"),
        f"{prefix}.publish_time_twins_equal": msg.get("publishTime") == msg.get("publish_time"),
        f"{prefix}.data_base64": msg.get("data") == base64.b64encode(b"pushed").decode(),
        f"{prefix}.attributes": msg.get("attributes"),
    })
    return out, envelope


def push_envelope():
    t = new_topic("push")
    s = new_sub(t, "push-sub", push_config={"push_endpoint": receiver.endpoint("/wrapped")})
    publisher.publish(t, b"pushed", kind="lab").result(timeout=15)
    got = receiver.wait("/wrapped", 1, 10)
    out = {"push.count": len(got)}
    if got:
        shape, _ = envelope_shape("push", got[0], s)
        out.update(shape)
    return out


def push_oidc():
    t = new_topic("oidc")
    s = new_sub(
        t,
        "oidc-sub",
        push_config={
            "push_endpoint": receiver.endpoint("/oidc"),
            "oidc_token": {"service_account_email": f"pusher@{PROJECT}.iam.gserviceaccount.com", "audience": "https://example.com"},
        },
    )
    got_config = subscriber.get_subscription(request={"subscription": s}, **NO_RETRY)
    publisher.publish(t, b"pushed").result(timeout=15)
    got = receiver.wait("/oidc", 1, 10)
    out = {
        "push_oidc.config_kept": got_config.push_config.oidc_token.audience == "https://example.com",
        "push_oidc.count": len(got),
    }
    if got:
        auth = got[0][1].get("authorization", "")
        out["push_oidc.authorization_bearer"] = auth.startswith("Bearer ")
    return out


def push_no_wrapper():
    t = new_topic("nowrap")
    new_sub(
        t,
        "nowrap-sub",
        push_config={"push_endpoint": receiver.endpoint("/nowrap"), "no_wrapper": {"write_metadata": True}},
    )
    publisher.publish(t, b"raw body", kind="lab", ordering="none").result(timeout=15)
    got = receiver.wait("/nowrap", 1, 10)
    out = {"push_no_wrapper.count": len(got)}
    if got:
        _, headers, body = got[0]
        out["push_no_wrapper.body_is_raw_data"] = body == b"raw body"
        out["push_no_wrapper.metadata_headers"] = sorted(h for h in headers if h.startswith("x-goog-"))
        out["push_no_wrapper.attribute_header"] = headers.get("kind")
    return out


def push_ordering():
    ordered = pubsub_v1.PublisherClient(publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True))
    t = new_topic("pushorder")
    new_sub(t, "pushorder-sub", enable_message_ordering=True, push_config={"push_endpoint": receiver.endpoint("/ordered")})
    for i in range(3):
        ordered.publish(t, f"o{i}".encode(), ordering_key="k").result(timeout=15)
    ordered.stop()
    got = receiver.wait("/ordered", 3, 10)
    bodies = [json.loads(body) for _, _, body in got]
    return {
        "push_ordering.count": len(got),
        "push_ordering.order": [base64.b64decode(b["message"].get("data", "")).decode() for b in bodies],
        "push_ordering.ordering_key_in_body": [b["message"].get("orderingKey") for b in bodies],
    }


def push_202():
    t = new_topic("accepted")
    new_sub(t, "accepted-sub", push_config={"push_endpoint": receiver.endpoint("/accepted", 202)})
    publisher.publish(t, b"pushed").result(timeout=15)
    receiver.wait("/accepted", 1, 10)
    time.sleep(4)
    return {"push_202.acked_by_first_202": len(receiver.got("/accepted")) == 1}


def push_dead_letter():
    t = new_topic("pushdl")
    dead = new_topic("pushdl-dead")
    dead_sub = new_sub(dead, "pushdl-dead-sub")
    s = new_sub(
        t,
        "pushdl-sub",
        push_config={"push_endpoint": receiver.endpoint("/failing", 500)},
        dead_letter_policy={"dead_letter_topic": dead, "max_delivery_attempts": 5},
    )
    publisher.publish(t, b"pushed", kind="lab").result(timeout=15)
    parked = pull(dead_sub, wait=15)
    time.sleep(1.5)  # would-be extra pushes
    pushes = receiver.got("/failing")
    attempts = [json.loads(body).get("deliveryAttempt") for _, _, body in pushes]
    out = {
        "push_dead_letter.push_count": len(pushes),
        "push_dead_letter.delivery_attempts": attempts,
        "push_dead_letter.parked_count": len(parked),
    }
    if pushes:
        shape, _ = envelope_shape("push_dead_letter.envelope", pushes[0], s)
        out[f"push_dead_letter.envelope.top_level_keys"] = shape.get("push_dead_letter.envelope.top_level_keys")
    if parked:
        attrs = dict(parked[0].message.attributes)
        out["push_dead_letter.attribute_keys"] = sorted(attrs)
        out["push_dead_letter.attr.DeliveryCount"] = attrs.get("CloudPubSubDeadLetterSourceDeliveryCount")
        ack(dead_sub, parked[0])
    return out


def filtering():
    t = new_topic("filter")
    s = new_sub(t, "filter-sub", filter='attributes.k = "v"')
    publisher.publish(t, b"match", k="v").result(timeout=15)
    publisher.publish(t, b"no match", k="w").result(timeout=15)
    got = pull(s, wait=3)
    time.sleep(0.5)
    got += pull(s, wait=0.5)
    for m in got:
        ack(s, m)
    return {
        "filter.config_kept": subscriber.get_subscription(request={"subscription": s}, **NO_RETRY).filter == 'attributes.k = "v"',
        "filter.delivered": sorted(m.message.data.decode() for m in got),
    }


def ordering():
    ordered = pubsub_v1.PublisherClient(publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True))
    t = new_topic("ordering")
    s = new_sub(t, "ordering-sub", enable_message_ordering=True, ack_deadline_seconds=60)
    for i in range(3):
        for key in ("a", "b"):
            ordered.publish(t, f"{key}{i}".encode(), ordering_key=key).result(timeout=15)
    ordered.stop()
    first = pull(s, wait=3)
    seen = {"a": [], "b": []}
    outstanding = first
    deadline = time.monotonic() + 10
    while outstanding and time.monotonic() < deadline:
        for m in outstanding:
            seen[m.message.ordering_key].append(m.message.data.decode())
        subscriber.acknowledge(request={"subscription": s, "ack_ids": [m.ack_id for m in outstanding]}, **NO_RETRY)
        outstanding = pull(s, wait=1)
    return {
        "ordering.config_kept": subscriber.get_subscription(request={"subscription": s}, **NO_RETRY).enable_message_ordering,
        "ordering.first_pull_per_key": {k: sum(1 for m in first if m.message.ordering_key == k) for k in ("a", "b")},
        "ordering.per_key_order": seen,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the JSON here (default: stdout)")
    args = parser.parse_args()
    if not os.environ.get("PUBSUB_EMULATOR_HOST"):
        sys.exit("PUBSUB_EMULATOR_HOST must point at the endpoint under test")

    started = time.monotonic()
    result = {}
    slow = [redelivery_after_deadline, push_dead_letter, push_202, dead_letter_pull, redelivery_after_nack,
            push_envelope, push_oidc, push_no_wrapper, push_ordering, filtering, ordering]
    with ThreadPoolExecutor(max_workers=len(slow)) as pool:
        futures = {f.__name__: pool.submit(f) for f in slow}
        result.update(invalid_requests())
        result.update(subscription_defaults())
        for name, future in futures.items():
            try:
                result.update(future.result())
            except Exception as e:  # an observation too: the scenario itself broke
                result[f"{name}.scenario_error"] = f"{type(e).__name__}: {e}"
    print(f"differential scenario took {time.monotonic() - started:.1f}s", file=sys.stderr)
    text = json.dumps(dict(sorted(result.items())), indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
