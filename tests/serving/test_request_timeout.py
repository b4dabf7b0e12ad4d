"""RequestTimeout, the service's replacement of BentoML's TimeoutMiddleware (cagerisk/serving/timeout.py):
BentoML's behaviour (504 when no response started in time), without keeping each answered request's
context alive until its timer fires."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import json
import weakref

import pytest

from cagerisk.serving.timeout import RequestTimeout, install

REQUEST_STATE: contextvars.ContextVar[object] = contextvars.ContextVar("request_state")
SCOPE = {"type": "http", "method": "POST", "path": "/score_features", "headers": []}


class Span:
    """Stands for what a request's context holds (BentoML's middlewares put its OpenTelemetry span there)."""


async def answer(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def call(app, scope=SCOPE) -> list[dict]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent


def test_an_answered_request_leaves_its_context_behind_nowhere():
    """The request's context (and what it holds) is freed once the request is answered, long before
    the timeout; BentoML 1.4's middleware keeps it until its never-cancelled timer fires."""

    async def main() -> bool:
        middleware = RequestTimeout(answer, timeout=300)

        async def one_request() -> weakref.ref:
            span = Span()
            REQUEST_STATE.set(span)  # in this task's own context, as a server's per-request values
            sent = await call(middleware)
            assert sent[0]["status"] == 200
            return weakref.ref(span)

        ref = await asyncio.get_running_loop().create_task(one_request())
        await asyncio.sleep(0)  # let the finished task's callbacks run
        gc.collect()
        return ref() is None  # while the loop runs: closing it drops its timers

    assert asyncio.run(main())


def test_no_response_in_time_is_504_and_the_app_is_cancelled():
    async def main() -> tuple[list[dict], bool]:
        state = {"cancelled": False}

        async def slow(scope, receive, send):
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                state["cancelled"] = True
                raise
            await answer(scope, receive, send)

        sent = await call(RequestTimeout(slow, timeout=0.05))
        await asyncio.sleep(0)
        return sent, state["cancelled"]

    sent, was_cancelled = asyncio.run(main())
    assert sent[0]["status"] == 504
    body = json.loads(sent[1]["body"])
    assert body == {"error": "not able to process the request in 0.05 seconds", "field": None}
    assert was_cancelled


def test_a_started_response_runs_to_its_end():
    """As BentoML's: the timeout bounds the wait for the response to start, not a streamed body."""

    async def streams(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.2)
        await send({"type": "http.response.body", "body": b"late"})

    sent = asyncio.run(call(RequestTimeout(streams, timeout=0.05)))
    assert [m.get("status") for m in sent] == [200, None]
    assert sent[1]["body"] == b"late"


def test_an_app_error_before_any_response_is_raised_at_once():
    """An app that fails before answering fails the request now, not after the timeout."""

    async def fails(scope, receive, send):
        raise ValueError("broken handler")

    async def main():
        await asyncio.wait_for(call(RequestTimeout(fails, timeout=600)), timeout=30)

    with pytest.raises(ValueError, match="broken handler"):
        asyncio.run(main())


def test_lifespan_and_other_scopes_pass_through():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    asyncio.run(call(RequestTimeout(app, timeout=0.01), scope={"type": "lifespan"}))
    assert seen == ["lifespan"]


def test_bentoml_builds_its_apps_with_it():
    """After install() (which the service module runs on import), BentoML's app factories put
    RequestTimeout where they put their TimeoutMiddleware, with traffic.timeout."""
    from bentoml._internal.server.base_app import BaseAppFactory

    class Factory(BaseAppFactory):
        @property
        def name(self) -> str:
            return "probe"

    install()
    middlewares = Factory(timeout=300, max_concurrency=None).middlewares
    assert [(m.cls, m.kwargs) for m in middlewares] == [(RequestTimeout, {"timeout": 300})]
