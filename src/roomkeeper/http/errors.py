"""API errors: one exception type carrying the status, message and extra headers."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import orjson

from ..runtime import HandlerError, Overloaded, RuntimeFailure, StorageError

__all__ = [
    "ApiError",
    "error_response",
    "method_not_allowed",
    "retry_after",
    "runtime_failure",
]


class ApiError(Exception):
    """An HTTP error answer: `status`, a human-readable `message`, extra `headers`.

    The message is sent to the client: it must never contain a token.
    """

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.message!r})"

    def __str__(self) -> str:
        return f"{self.status} {self.message}"


def error_response(err: ApiError) -> tuple[bytes, int, dict[str, str]]:
    """The body `{"error": message}`, status and headers (JSON content type included)."""
    body = orjson.dumps({"error": err.message})
    headers = {"Content-Type": "application/json", **err.headers}
    return body, err.status, headers


def retry_after(seconds: float) -> dict[str, str]:
    """A `Retry-After` header in whole seconds, rounded up, at least 1."""
    whole = math.ceil(seconds) if math.isfinite(seconds) else 1
    return {"Retry-After": str(max(1, whole))}


def method_not_allowed(allowed: Iterable[str]) -> ApiError:
    """A 405 with its required `Allow` header."""
    return ApiError(405, "method not allowed", {"Allow": ", ".join(allowed)})


def runtime_failure(exc: RuntimeFailure) -> ApiError | None:
    """The answer to an `ask` the runtime failed: `503` with `Retry-After` when the actor
    is overloaded or its storage failed, `500` when its handler raised; None for a failure
    this layer has no answer for (the caller lets it propagate)."""
    if isinstance(exc, Overloaded):
        return ApiError(503, f"Service Unavailable: {exc}", retry_after(exc.retry_after))
    if isinstance(exc, StorageError):
        return ApiError(503, "Service Unavailable: storage failed", {"Retry-After": "1"})
    if isinstance(exc, HandlerError):
        return ApiError(500, "Internal Server Error: the room failed")
    return None
