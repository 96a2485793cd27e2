"""What a front end answers when the runtime fails an ask, and how it reads a page size:
one home for the API (``roomkeeper.http``) and the admin view (``roomkeeper.observe``),
below both. Each wraps these in its own error type."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import attrs

from .runtime import HandlerError, Overloaded, RuntimeFailure, StorageError

__all__ = ["Failure", "failure_answer", "page_size", "retry_after"]

_DIGITS = re.compile(r"[0-9]+")


@attrs.frozen
class Failure:
    """An error answer: the status, the reason sent to the client, extra headers."""

    status: int
    reason: str
    headers: Mapping[str, str] = attrs.Factory(dict)


def retry_after(seconds: float) -> dict[str, str]:
    """A `Retry-After` header in whole seconds, rounded up, at least 1."""
    whole = math.ceil(seconds) if math.isfinite(seconds) else 1
    return {"Retry-After": str(max(1, whole))}


def failure_answer(exc: RuntimeFailure, failed: str) -> Failure | None:
    """The answer to an ask the runtime failed: `503` with `Retry-After` when the actor is
    overloaded or its storage failed, `500` when its handler raised (``failed`` says
    what failed, for the reason); None for a failure with no answer here."""
    if isinstance(exc, Overloaded):
        return Failure(503, f"Service Unavailable: {exc}", retry_after(exc.retry_after))
    if isinstance(exc, StorageError):
        return Failure(503, "Service Unavailable: storage failed", {"Retry-After": "1"})
    if isinstance(exc, HandlerError):
        return Failure(500, f"Internal Server Error: {failed}")
    return None


def page_size(text: str | None, *, default: int, maximum: int) -> int:
    """A page size parameter: absent or empty is ``default``; otherwise ASCII decimal
    digits only (`str.isdigit` would take "²" or Arabic-Indic digits) from 1 to
    ``maximum``, else `ValueError` with the message to answer 400 with."""
    if not text:
        return default
    if len(text) > len(str(maximum)) or not _DIGITS.fullmatch(text):
        raise ValueError(f"limit must be an integer from 1 to {maximum}")
    value = int(text)
    if not 1 <= value <= maximum:
        raise ValueError(f"limit must be an integer from 1 to {maximum}")
    return value
