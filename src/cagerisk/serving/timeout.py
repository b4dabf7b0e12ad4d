"""The request timeout of ``bentoml serve`` (``traffic.timeout``: serve.timeout_s), without its memory growth.

BentoML 1.4's ``TimeoutMiddleware`` schedules ``loop.call_later(timeout, ...)`` for every request and
never cancels it. An asyncio timer keeps a copy of the request's ``contextvars`` context until it fires,
and that context holds the request's OpenTelemetry span and BentoML's trace context: every request's
span, attributes and context stay in memory for ``timeout`` seconds after it was answered. With
``timeout_s: 300`` that is 300 s of traffic: the 60 s soak of ``benchmarks/serving_load.py`` (~290
req/s) grew the server by 257 MiB (+17 %), linearly, a few kB per request; a server under steady load
levels off only after 300 s, at (requests per second x 300) retained contexts.

:class:`RequestTimeout` keeps BentoML's behaviour (504 when no response has started within the
timeout; once one has started, the request runs to its end) but schedules its timer outside the
request's context and cancels it when the request ends. :func:`install` puts it in place of BentoML's
middleware (the service module calls it before BentoML builds its ASGI app); BentoML's config schema
does not let a service turn its own timeout off.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from typing import Any

log = logging.getLogger("cagerisk.serving")


class RequestTimeout:
    """Pure ASGI middleware: 504 ``{"error", "field"}`` when the app has not started its response within
    ``timeout`` seconds (the app's task is then cancelled); the timer is cancelled when the request ends."""

    def __init__(self, app: Any, timeout: float) -> None:
        self.app = app
        self.timeout = float(timeout)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        # True: the response started (or the app ended); False: the timeout came first.
        started: asyncio.Future[bool] = loop.create_future()

        def settle(value: bool) -> None:
            if not started.done():
                started.set_result(value)

        async def send_started(message: dict[str, Any]) -> None:
            settle(True)
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, send_started))
        task.add_done_callback(lambda _: settle(True))
        # An empty context: the timer must not keep the request's (its span, trace context) alive.
        timer = loop.call_later(self.timeout, settle, False, context=contextvars.Context())
        try:
            in_time = await started
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            timer.cancel()
        if not in_time and task.cancel():
            await send_json(send, 504, {"error": f"not able to process the request in {self.timeout:g} seconds", "field": None})
            return
        await task


async def send_json(send: Any, status: int, body: dict[str, Any]) -> None:
    """A whole JSON response on a raw ASGI ``send`` (also the service's guard uses it)."""
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def install() -> None:
    """Make BentoML build its ASGI app with :class:`RequestTimeout` for ``traffic.timeout``.

    BentoML imports ``TimeoutMiddleware`` from this module when it builds a worker's app (after the
    service module is imported), so replacing the name there is enough. A BentoML without that module
    or name fails loudly: its timeout middleware would have to be checked again.
    """
    from bentoml._internal.server.http import traffic

    current = getattr(traffic, "TimeoutMiddleware", None)
    if current is None:
        raise RuntimeError(
            "bentoml._internal.server.http.traffic.TimeoutMiddleware not found: this BentoML builds its "
            "request timeout differently; check it for per-request timers (cagerisk/serving/timeout.py)"
        )
    if current is not RequestTimeout:
        traffic.TimeoutMiddleware = RequestTimeout
        log.debug("BentoML's TimeoutMiddleware replaced by cagerisk.serving.timeout.RequestTimeout")
