"""OpenTelemetry's ASGI middleware, as BentoML installs it, with the request's span only.

BentoML wraps every worker's app in ``opentelemetry.instrumentation.asgi.OpenTelemetryMiddleware``
(tracing.* in its configuration; sampled at rate 0, that is never exported, unless configured). Besides
the request's server span, that middleware opens a child span for every ASGI message the app receives
or sends ("http receive", "http send"), and it does so whether or not the trace is sampled. A
``/score_features`` body of 11,000 feature values (233 kB) arrives as several messages: those child
spans took a sixth to a fifth of the service's CPU per request (demo champion, concurrency 8: 4.5-5.0
-> 4.0 ms, 202-223 -> 247-250 requests/s; docs/serving.md). The middleware's own ``exclude_spans`` option leaves them out;
the request's span, its attributes, its trace id in BentoML's access log and the propagation of an
incoming trace context stay as they were.

:func:`install` makes the middleware class BentoML imports take that option (BentoML builds the
middleware itself, with fixed arguments); a configuration that names ``exclude_spans`` keeps its own.
"""

from __future__ import annotations

from typing import Any

EXCLUDED_SPANS = ("receive", "send")


def install() -> None:
    """Replace ``OpenTelemetryMiddleware`` in its module by a subclass excluding the per-message spans.

    BentoML imports the name from ``opentelemetry.instrumentation.asgi`` when it builds a worker's app
    (after the service module is imported), so replacing it there is enough. Idempotent.
    """
    from opentelemetry.instrumentation import asgi

    current = asgi.OpenTelemetryMiddleware
    if getattr(current, "request_span_only", False):
        return

    class RequestSpanOnly(current):  # type: ignore[misc, valid-type]
        """``OpenTelemetryMiddleware`` with ``exclude_spans=["receive", "send"]`` unless told otherwise."""

        request_span_only = True

        def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("exclude_spans", list(EXCLUDED_SPANS))
            super().__init__(app, *args, **kwargs)

    asgi.OpenTelemetryMiddleware = RequestSpanOnly
