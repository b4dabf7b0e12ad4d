"""cagerisk.serving.tracing: BentoML's OpenTelemetry middleware keeps the request's span and drops the
child span it opened for every ASGI message (one per chunk of a request body), sampled or not."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.instrumentation import asgi
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cagerisk.serving.tracing import install

CHUNKS = [b'{"items": [', b"1, 2, 3", b"]}"]


async def app(scope, receive, send) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def call(middleware) -> list[dict]:
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": "/score_features",
        "raw_path": b"/score_features",
        "query_string": b"",
        "scheme": "http",
        "server": ("127.0.0.1", 3000),
        "client": ("127.0.0.1", 50000),
        "headers": [(b"content-type", b"application/json")],
    }
    messages = [{"type": "http.request", "body": c, "more_body": i < len(CHUNKS) - 1} for i, c in enumerate(CHUNKS)]
    sent: list[dict] = []

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    return sent


@pytest.fixture
def original_middleware():
    """The library's class, also where this process imported the service module (which installs)."""
    saved = asgi.OpenTelemetryMiddleware
    original = saved.__mro__[1] if getattr(saved, "request_span_only", False) else saved
    asgi.OpenTelemetryMiddleware = original
    yield original
    asgi.OpenTelemetryMiddleware = saved


def spans_of(middleware_class, **kwargs) -> tuple[list[str], list[dict]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()  # samples everything
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sent = call(middleware_class(app, tracer_provider=provider, **kwargs))
    return [s.name for s in exporter.get_finished_spans()], sent


def test_only_the_request_span_is_recorded(original_middleware):
    before, sent_before = spans_of(original_middleware)
    # The middleware as it came: a child span per message received (3 body chunks) and sent (2).
    assert sorted(before) == sorted(
        ["POST /score_features", *["POST /score_features http receive"] * 3, *["POST /score_features http send"] * 2]
    )

    install()
    install()  # idempotent: one subclass, not a chain of them
    assert asgi.OpenTelemetryMiddleware.__mro__[1] is original_middleware
    after, sent_after = spans_of(asgi.OpenTelemetryMiddleware)

    assert after == ["POST /score_features"]
    assert sent_after[-1]["body"] == b"".join(CHUNKS) and sent_after == sent_before


def test_a_configured_exclusion_is_kept(original_middleware):
    install()
    names, _ = spans_of(asgi.OpenTelemetryMiddleware, exclude_spans=["send"])
    assert sorted(names) == sorted(["POST /score_features", *["POST /score_features http receive"] * 3])
