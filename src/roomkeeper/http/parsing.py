"""Reading requests: query strings, names, credentials and bodies, checked as the protocol says.

Every function is pure and raises `ApiError` with the protocol's status. Header arguments
are anything with a case-insensitive `.get(name)`, such as Werkzeug's `Headers`. No error
message ever repeats a token.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

from ..admission import TICKET_HEADER, TICKET_PARAM
from ..config import MAX_BODY
from ..jsonutil import MAX_DEPTH, JsonError, loads_untrusted
from ..signaling import MAX_BATCH, Outbound
from .errors import ApiError

__all__ = [
    "MAX_BODY",
    "MAX_ROOM_BYTES",
    "HeaderLookup",
    "batch_fields",
    "bearer",
    "body_length",
    "check_uuid",
    "connect_credentials",
    "ice_credentials",
    "last_event_id",
    "parse_json_object",
    "parse_query",
    "post_body_size",
    "post_credentials",
    "room_from",
    "signal_fields",
    "ticket_from",
]

MAX_ROOM_BYTES = 256
MAX_REQUEST_ID = 64
_MAX_EVENT_ID_DIGITS = 80

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DIGITS = re.compile(r"[0-9]+")


class HeaderLookup(Protocol):
    """Request headers with case-insensitive lookup (Werkzeug's `Headers` is one)."""

    def get(self, key: str, /) -> str | None: ...


# --- query string ------------------------------------------------------------------------


def _decode(raw: bytes) -> str:
    if b"%" in raw or b"+" in raw:
        raw = unquote_to_bytes(raw.replace(b"+", b" "))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "query string is not valid UTF-8 after percent-decoding") from None


def parse_query(raw_query: bytes) -> dict[str, str]:
    """Decode `a=1&b=2` (`+` is a space); the first of repeated keys wins.

    Percent-decoded bytes must be valid UTF-8 (else 400); a `%` not followed by two hex
    digits stays as it is, as in browsers' URL parsing.
    """
    query: dict[str, str] = {}
    for part in raw_query.split(b"&"):
        if not part:
            continue
        raw_key, _, raw_value = part.partition(b"=")
        key = _decode(raw_key)
        value = _decode(raw_value)
        query.setdefault(key, value)
    return query


def room_from(query: Mapping[str, str]) -> str:
    """The `room` parameter: non-empty, at most 256 UTF-8 bytes (else 400)."""
    room = query.get("room")
    if not room:
        raise ApiError(400, "room missing: give ?room=NAME")
    if len(room) > MAX_ROOM_BYTES or len(room.encode("utf-8")) > MAX_ROOM_BYTES:
        raise ApiError(400, f"room name longer than {MAX_ROOM_BYTES} UTF-8 bytes")
    return room


# --- identifiers -------------------------------------------------------------------------


def check_uuid(value: object, field: str) -> str:
    """`value` as a lowercase UUID (any version, 8-4-4-4-12 hex), else 400 naming `field`."""
    if value is None:
        raise ApiError(400, f"{field} missing")
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise ApiError(400, f"{field} must be a UUID string")
    return value.lower()


def bearer(headers: HeaderLookup) -> str | None:
    """The token of `Authorization: Bearer T` (scheme in any case), else None."""
    value = headers.get("Authorization")
    if value is None:
        return None
    parts = value.split()
    if len(parts) == 2 and parts[0].lower() == "bearer":
        return parts[1]
    return None


# --- POST bodies -------------------------------------------------------------------------


def body_length(headers: HeaderLookup, max_body: int = MAX_BODY) -> int:
    """The declared body size, from `Content-Length` alone: 411 if absent, 400 if not a
    non-negative integer, 413 if over `max_body`."""
    raw = headers.get("Content-Length")
    if raw is None:
        raise ApiError(411, "Length Required: Content-Length header is missing")
    text = raw.strip()
    if not _DIGITS.fullmatch(text):
        raise ApiError(400, "Content-Length is not a non-negative integer")
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(max_body)) or int(digits) > max_body:
        raise ApiError(413, f"Payload Too Large: Content-Length exceeds {max_body} bytes")
    return int(digits)


def post_body_size(headers: HeaderLookup, max_body: int = MAX_BODY) -> int:
    """The size of a POST body, from its headers alone (`body_length`), refusing
    `Transfer-Encoding` beside it (400: the shape of request smuggling, RFC 9112 6.3).
    A refusal says `Connection: close`: the body was not read, so the connection cannot
    carry another request."""
    try:
        size = body_length(headers, max_body)
        if headers.get("Transfer-Encoding") is not None:
            raise ApiError(400, "Content-Length and Transfer-Encoding together")
    except ApiError as exc:
        exc.headers["Connection"] = "close"
        raise
    return size


def parse_json_object(body: bytes, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """The body as a JSON object (else 400 saying why). Integers keep every digit; of
    duplicate keys the last wins; nesting deeper than `max_depth` is refused."""
    try:
        value = loads_untrusted(body, max_depth)
    except JsonError as err:
        raise ApiError(400, f"body is not acceptable JSON: {err}") from None
    if not isinstance(value, dict):
        raise ApiError(400, f"body must be a JSON object, not {_json_type(value)}")
    return value


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def post_credentials(body: Mapping[str, Any], headers: HeaderLookup) -> tuple[str, str]:
    """`(sender, token)` of a signal or leave POST, both lowercase UUIDs.

    The token may be in the body, `X-Token` and `Authorization: Bearer`: at least one is
    needed (400), each must be a UUID string (400), and all given must be the same UUID,
    in any case (else 403).
    """
    sender = check_uuid(body.get("sender"), "sender")
    given = [
        token
        for token in (body.get("token"), headers.get("X-Token"), bearer(headers))
        if token is not None
    ]
    if not given:
        raise ApiError(400, "token missing: give it in the body, X-Token or Authorization")
    tokens = [check_uuid(token, "token") for token in given]  # lowercase: UUIDs ignore case
    if any(token != tokens[0] for token in tokens[1:]):
        raise ApiError(403, "Forbidden: the tokens given in the request differ")
    return sender, tokens[0]


def signal_fields(body: Mapping[str, Any]) -> tuple[str, dict[str, Any], str | None]:
    """`(to, signal, request_id)` of a signal POST: `to` a UUID, `signal` an object, and
    `id` absent, null or a string of 1 to 64 characters (each else 400)."""
    to = check_uuid(body.get("to"), "to")
    signal = body.get("signal")
    if signal is None:
        raise ApiError(400, "signal missing")
    if not isinstance(signal, dict):
        raise ApiError(400, "signal must be a JSON object")
    request_id = body.get("id")
    if request_id is not None and (
        not isinstance(request_id, str) or not 1 <= len(request_id) <= MAX_REQUEST_ID
    ):
        raise ApiError(400, f"id must be a string of 1 to {MAX_REQUEST_ID} characters")
    return to, signal, request_id


def batch_fields(body: Mapping[str, Any]) -> tuple[Outbound, ...]:
    """The signals of a batch POST (the extension): ``signals`` a list of 1 to
    `MAX_BATCH` objects, each with ``to``, ``signal`` and ``id`` as `signal_fields` reads
    them; ``to``, ``signal`` and ``id`` beside ``signals`` are refused. Each else 400."""
    signals = body.get("signals")
    if not isinstance(signals, list) or not 1 <= len(signals) <= MAX_BATCH:
        raise ApiError(400, f"signals must be a list of 1 to {MAX_BATCH} signals")
    beside = sorted(name for name in ("to", "signal", "id") if name in body)
    if beside:
        raise ApiError(400, f"a batch gives {', '.join(beside)} in each of its signals")
    batch = []
    for n, item in enumerate(signals):
        if not isinstance(item, dict):
            raise ApiError(400, f"signals[{n}] must be a JSON object")
        try:
            to, payload, request_id = signal_fields(item)
        except ApiError as exc:
            raise ApiError(400, f"signals[{n}]: {exc.message}") from None
        batch.append(Outbound(to, payload, request_id))
    return tuple(batch)


# --- the event stream --------------------------------------------------------------------


def connect_credentials(
    query: Mapping[str, str], headers: HeaderLookup
) -> tuple[str | None, str | None]:
    """`(session_id, token)` offered by a connect, either or both None (empty = absent).

    From `?session_id=&token=`, or `X-Session-Id` with `X-Token` or `Authorization:
    Bearer`. A session id that is not a UUID, or two different ones, is a 400. A UUID token
    comes back lowercase, any other as given: to a known session it is simply wrong (403).
    Tokens are compared after that (a UUID in any case is the same token); tokens given in
    several places that differ come back as "", which matches no session.
    """
    query_id = query.get("session_id") or None
    header_id = headers.get("X-Session-Id") or None
    session_id = None
    if query_id is not None or header_id is not None:
        ids = {check_uuid(value, "session_id") for value in (query_id, header_id) if value}
        if len(ids) > 1:
            raise ApiError(400, "session_id and X-Session-Id differ")
        session_id = ids.pop()
    given = (query.get("token"), headers.get("X-Token"), bearer(headers))
    tokens = [t.lower() if _UUID.fullmatch(t) else t for t in given if t]
    if not tokens:
        return session_id, None
    if any(other != tokens[0] for other in tokens[1:]):
        return session_id, ""
    return session_id, tokens[0]


def last_event_id(query: Mapping[str, str], headers: HeaderLookup) -> int | None:
    """The `Last-Event-ID` header, else the `last_event_id` parameter, as an int.

    When the header is there it decides (a browser's reconnect keeps the first URL's
    parameter but sends a fresh header). Anything but 1 to 80 decimal digits is None.
    """
    header = headers.get("Last-Event-ID")
    raw = header if header is not None else query.get("last_event_id")
    if raw is None:
        return None
    raw = raw.strip()
    if len(raw) > _MAX_EVENT_ID_DIGITS or not _DIGITS.fullmatch(raw):
        return None
    return int(raw)


# --- paging --------------------------------------------------------------------------------


def ticket_from(query: Mapping[str, str], headers: HeaderLookup) -> str | None:
    """The ticket of a connect: ``?ticket=`` or ``X-Roomkeeper-Ticket`` (400 if both are
    given and differ)."""
    in_query = query.get(TICKET_PARAM) or None
    in_header = headers.get(TICKET_HEADER) or None
    if in_query is not None and in_header is not None and in_query != in_header:
        raise ApiError(400, f"?{TICKET_PARAM}= and {TICKET_HEADER} differ")
    return in_query if in_query is not None else in_header


def ice_credentials(body: Mapping[str, Any], headers: HeaderLookup) -> tuple[str, str]:
    """``(session_id, token)`` of the POST: the id as ``session_id`` or ``sender`` (both
    given must agree, else 400), the token as ``post_credentials`` reads it."""
    ids = [body.get(name) for name in ("session_id", "sender") if body.get(name) is not None]
    if not ids:
        raise ApiError(400, "session_id missing")
    checked = {check_uuid(value, "session_id") for value in ids}
    if len(checked) > 1:
        raise ApiError(400, "session_id and sender differ")
    return post_credentials({**body, "sender": checked.pop()}, headers)
