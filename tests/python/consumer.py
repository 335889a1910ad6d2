#!/usr/bin/env python3
"""A subscriber of callflow's event log written the way another team would.

It knows nothing of callflow's Rust code: only NATS JetStream (nats-py) and
the protobuf classes generated from proto/ (tests/python/setup.sh generates
them into .local/python/gen with grpcio-tools). It:

  1. creates (or reuses) its own durable pull consumer with explicit acks on
     the JetStream stream the event store's relay publishes to (`CALLFLOW`
     by default), filtered on `<prefix>.>` (`callflow.evt.>` by default);
  2. fetches messages until it has `--count` of them, then keeps fetching for
     `--linger` seconds more to catch any extra (duplicate) message;
  3. decodes each message body as a `callflow.events.v1.Event` envelope and
     its `payload` as `callflow.events.v1.<type>`, acks the message, and
     prints one JSON object per line on standard output: the envelope's
     fields, the subject, the stream sequence, the headers the relay sets,
     and the payload as JSON (google.protobuf.json_format: field names as in
     the .proto files, 64-bit integers as strings, enums by name,
     timestamps in RFC 3339, defaults of scalar fields included).

It exits 0 when at least `--count` messages arrived, 2 when fewer did before
`--timeout` (what did arrive is still printed), 1 on other errors.

    .local/python/bin/python tests/python/consumer.py --count 10
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_GEN = ROOT / ".local" / "python" / "gen"
SETUP_HINT = "run tests/python/setup.sh (make test runs it) to install nats-py and protobuf and generate the classes"


def parse_args(argv: list[str]) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        description="Read callflow events from NATS JetStream with a durable pull consumer and print them as JSON lines.",
    )
    parser.add_argument("--nats-url", default=env("NATS_URL", "nats://127.0.0.1:4222"),
                        help="NATS server URL (env NATS_URL; default %(default)s)")
    parser.add_argument("--stream", default=env("CALLFLOW_JETSTREAM_STREAM", "CALLFLOW"),
                        help="JetStream stream of the event log (env CALLFLOW_JETSTREAM_STREAM; default %(default)s)")
    parser.add_argument("--subject-prefix", default=env("CALLFLOW_SUBJECT_PREFIX", "callflow.evt"),
                        help="subject prefix of published events (env CALLFLOW_SUBJECT_PREFIX; default %(default)s)")
    parser.add_argument("--filter", default=None,
                        help="filter subject of the consumer (default <prefix>.>, every event)")
    parser.add_argument("--durable", default="python-consumer",
                        help="durable consumer name; reused when it exists (default %(default)s)")
    parser.add_argument("--count", type=int, required=True, help="how many messages to read")
    parser.add_argument("--linger", type=float, default=1.0,
                        help="seconds to keep fetching after --count messages, to catch extra ones (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for --count messages (default %(default)s)")
    parser.add_argument("--gen", default=env("CALLFLOW_PYTHON_GEN", str(DEFAULT_GEN)),
                        help="directory of the generated protobuf classes (env CALLFLOW_PYTHON_GEN; default %(default)s)")
    return parser.parse_args(argv)


def load_classes(gen: str):
    """Imports nats-py and the generated classes, or explains how to get them."""
    if not Path(gen, "callflow", "events", "v1", "events_pb2.py").is_file():
        sys.exit(f"consumer.py: no generated classes in {gen}: {SETUP_HINT}")
    sys.path.insert(0, gen)
    try:
        import nats  # noqa: F401
        from google.protobuf import json_format  # noqa: F401
        from callflow.events.v1 import events_pb2
    except ImportError as error:
        sys.exit(f"consumer.py: {error}: {SETUP_HINT}")
    return events_pb2


def timestamp(message, field: str):
    return getattr(message, field).ToJsonString() if message.HasField(field) else None


def describe(msg, events_pb2) -> dict:
    """One received message as a JSON-ready dict."""
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError

    out: dict = {"subject": msg.subject, "stream_sequence": msg.metadata.sequence.stream,
                 "delivered": msg.metadata.num_delivered,
                 "headers": dict(msg.headers or {})}
    event = events_pb2.Event()
    try:
        event.ParseFromString(msg.data)
    except DecodeError as error:
        out["error"] = f"envelope does not decode: {error}"
        out["body_base64"] = base64.b64encode(msg.data).decode()
        return out
    out.update({
        "event_id": event.event_id,
        "stream": event.stream,
        "version": event.version,
        "position": event.position,
        "type": event.type,
        "category": event.category,
        "occurred_at": timestamp(event, "occurred_at"),
        "recorded_at": timestamp(event, "recorded_at"),
        "correlation_id": event.correlation_id,
        "causation_id": event.causation_id,
        "producer": event.producer,
        "traceparent": event.trace.traceparent,
    })
    # The payload's class is named by the event's type in the same package.
    payload_class = getattr(events_pb2, event.type, None)
    if payload_class is None or not hasattr(payload_class, "DESCRIPTOR") \
            or payload_class.DESCRIPTOR.full_name != f"callflow.events.v1.{event.type}":
        out["error"] = f"unknown event type {event.type!r} (regenerate the classes?)"
        out["payload_base64"] = base64.b64encode(event.payload).decode()
        return out
    payload = payload_class()
    try:
        payload.ParseFromString(event.payload)
    except DecodeError as error:
        out["error"] = f"payload does not decode as {event.type}: {error}"
        out["payload_base64"] = base64.b64encode(event.payload).decode()
        return out
    out["payload"] = json_format.MessageToDict(
        payload,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    return out


async def consume(args: argparse.Namespace, events_pb2) -> int:
    import nats
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    filter_subject = args.filter or f"{args.subject_prefix}.>"
    nc = await nats.connect(args.nats_url, name=f"callflow-python-{args.durable}",
                            connect_timeout=5, max_reconnect_attempts=3)
    try:
        js = nc.jetstream()
        # The durable consumer is created on first use and found again on the
        # next run, which then continues after the last acked message.
        subscription = await js.pull_subscribe(
            filter_subject,
            durable=args.durable,
            stream=args.stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=30,
                max_ack_pending=1000,
            ),
        )
        received = 0
        deadline = time.monotonic() + args.timeout
        linger_until = None
        while True:
            now = time.monotonic()
            if received >= args.count:
                linger_until = linger_until or now + args.linger
                if now >= linger_until:
                    break
                wait = linger_until - now
            elif now >= deadline:
                print(f"consumer.py: only {received} of {args.count} messages arrived within {args.timeout}s",
                      file=sys.stderr)
                return 2
            else:
                wait = deadline - now
            try:
                batch = await subscription.fetch(batch=100, timeout=max(0.1, min(wait, 5.0)))
            except NatsTimeout:
                continue
            for msg in batch:
                print(json.dumps(describe(msg, events_pb2), ensure_ascii=False), flush=True)
                # Processed (printed): acknowledge, and wait for the server to
                # take the ack so that a next run starts after this message.
                await msg.ack_sync(timeout=5)
                received += 1
        return 0
    finally:
        # Not drain(): it would wait for the pull request still open on the
        # server (until its expiry) before closing. Every ack was confirmed.
        await nc.close()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    events_pb2 = load_classes(args.gen)
    try:
        return asyncio.run(consume(args, events_pb2))
    except Exception as error:  # noqa: BLE001 - one clear line for the caller
        print(f"consumer.py: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
