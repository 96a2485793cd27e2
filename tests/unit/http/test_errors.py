"""API errors: status, JSON body, extra headers."""

from __future__ import annotations

import orjson
import pytest

from roomkeeper.http.errors import (
    ApiError,
    error_response,
    method_not_allowed,
    runtime_failure,
)
from roomkeeper.runtime import (
    HandlerError,
    MailboxFull,
    RuntimeFailure,
    ShuttingDown,
    StorageError,
    UnknownNamespace,
)


def test_error_response_shape() -> None:
    body, status, headers = error_response(ApiError(400, "room missing"))
    assert status == 400
    assert orjson.loads(body) == {"error": "room missing"}
    assert headers == {"Content-Type": "application/json"}


def test_error_response_extra_headers() -> None:
    err = ApiError(429, "Too Many Requests", {"Retry-After": "2"})
    body, status, headers = error_response(err)
    assert (status, headers["Retry-After"], headers["Content-Type"]) == (
        429,
        "2",
        "application/json",
    )
    assert orjson.loads(body) == {"error": "Too Many Requests"}


def test_error_message_with_any_text_is_valid_json() -> None:
    body, _, _ = error_response(ApiError(400, 'quote " and \u00e9 and \n'))
    assert orjson.loads(body) == {"error": 'quote " and \u00e9 and \n'}
    assert b"\n" not in body


def test_api_error_is_an_exception_with_fields() -> None:
    err = ApiError(403, "Forbidden")
    assert isinstance(err, Exception)
    assert (err.status, err.message, err.headers) == (403, "Forbidden", {})
    assert str(err) == "403 Forbidden"
    assert repr(err) == "ApiError(403, 'Forbidden')"
    headers = {"Allow": "GET"}
    err = ApiError(405, "x", headers)
    headers["Allow"] = "changed"
    assert err.headers == {"Allow": "GET"}


def test_method_not_allowed_carries_allow() -> None:
    err = method_not_allowed(["POST", "OPTIONS"])
    assert (err.status, err.headers) == (405, {"Allow": "OPTIONS, POST"})
    assert err.message.startswith("Method Not Allowed: ")


@pytest.mark.parametrize(
    ("failure", "status", "retry"),
    [
        (MailboxFull("mailbox full"), 503, "1"),
        (ShuttingDown("shutting down"), 503, "1"),
        (StorageError("disk"), 503, "1"),
        (HandlerError("boom"), 500, None),
    ],
    ids=["mailbox-full", "shutting-down", "storage", "handler"],
)
def test_runtime_failures_map_to_statuses(
    failure: RuntimeFailure, status: int, retry: str | None
) -> None:
    answer = runtime_failure(failure)
    assert answer is not None
    assert answer.status == status
    assert answer.headers.get("Retry-After") == retry
    assert "disk" not in answer.message  # storage details stay in the log


def test_a_runtime_failure_without_an_answer_is_left_to_the_caller() -> None:
    assert runtime_failure(UnknownNamespace("nope")) is None
