"""The one error type of scoring input: it names the field, and says which HTTP status it deserves."""

from __future__ import annotations

from http import HTTPStatus


class ScoringInputError(ValueError):
    """Input that cannot be scored as it is.

    ``field`` names the request field (``t2_mask``, ``clinical.age``, ``features``); the message says
    what was expected. It never holds a patient identifier or a file path, so it can go to logs and
    back to the caller as it is. ``status`` is the HTTP status the endpoint answers with.
    """

    def __init__(self, field: str, problem: str, status: HTTPStatus = HTTPStatus.UNPROCESSABLE_ENTITY):
        self.field = field
        self.problem = problem
        self.status = HTTPStatus(status)
        super().__init__(f"{field}: {problem}")


def missing(field: str, problem: str) -> ScoringInputError:
    """A required field that was not sent (400)."""
    return ScoringInputError(field, problem, HTTPStatus.BAD_REQUEST)


def too_large(field: str, problem: str) -> ScoringInputError:
    """An upload over the size limit (413)."""
    return ScoringInputError(field, problem, HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
