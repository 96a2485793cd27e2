"""API errors: one exception type carrying the status, message and extra headers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from werkzeug.exceptions import MethodNotAllowed

from ..answers import failure_answer, retry_after
from ..runtime import RuntimeFailure

__all__ = [
    "ApiError",
    "error_response",
    "method_not_allowed",
    "retry_after",
    "runtime_failure",
]


class ApiError(Exception):
    """An HTTP error answer: `status`, a human-readable `message`, extra `headers`, and
    extra `fields` of the JSON body (a partly taken batch's ``accepted``, say).

    The message is sent to the client: it must never contain a token.
    """

    def __init__(
        self,
        status: int,
        message: str,
        headers: Mapping[str, str] | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})
        self.fields: dict[str, Any] = dict(fields or {})  # more of the body, beside "error"

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.message!r})"

    def __str__(self) -> str:
        return f"{self.status} {self.message}"


def error_response(err: ApiError) -> tuple[bytes, int, dict[str, str]]:
    """The body `{"error": message}`, status and headers (JSON content type included)."""
    body = orjson.dumps({"error": err.message, **err.fields})
    headers = {"Content-Type": "application/json", **err.headers}
    return body, err.status, headers


_NOT_ALLOWED = f"{MethodNotAllowed().name}: {MethodNotAllowed.description}"


def method_not_allowed(allowed: Iterable[str]) -> ApiError:
    """A 405 with its required `Allow` header (the methods sorted, as Werkzeug does)."""
    return ApiError(405, _NOT_ALLOWED, {"Allow": ", ".join(sorted(allowed))})


def runtime_failure(exc: RuntimeFailure) -> ApiError | None:
    """The answer to an `ask` the runtime failed (see `roomkeeper.answers`); None for a
    failure this layer has no answer for (the caller lets it propagate)."""
    answer = failure_answer(exc, "the room failed")
    return None if answer is None else ApiError(answer.status, answer.reason, answer.headers)
