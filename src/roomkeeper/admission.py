"""Who may make a new session: room tickets, checked when a connect would make one.

``--admission`` takes one of:

- ``secret:S``: roomkeeper's own tickets, ``EXPIRY.SIG``: EXPIRY in whole epoch seconds,
  SIG the unpadded base64url HMAC-SHA256 under S of ``ROOM|EXPIRY`` (UTF-8). The simple
  option; ``mint_ticket`` (or ``roomkeeper ticket``) makes one.
- ``jwt:hmac:SECRET``: JSON Web Tokens signed HS256, HS384 or HS512 with SECRET.
- ``jwt:key:PATH``: JWTs signed with the private half of the PEM public key at PATH
  (RSA: RS256/384/512; EC: ES256/384/512 by curve; Ed25519/Ed448: EdDSA).
- ``jwt:jwks:PATH``: JWTs signed with a key of the JWKS file at PATH, chosen by the
  token's ``kid``; the file is read again when it changes (key rotation).

A JWT needs ``exp``, and the room in a claim (``room`` by default): the room's exact name,
or a prefix ending in ``*`` (``team-7/*`` admits every room starting with ``team-7/``;
``*`` admits every room). ``nbf`` and ``iat`` are checked when present, ``aud`` and
``iss`` when the server is configured with them, all with a small leeway for clock skew.
Algorithms are pinned by key type, so ``alg: none`` and an HS256 token "signed" with an
RSA public key never pass. Verification is PyJWT's, in jwt_tickets.py; nothing parses a
JWT by hand.

The ticket comes as ``?ticket=`` (an EventSource cannot set headers) or in the
``X-Roomkeeper-Ticket`` header (not ``Authorization``, which carries a session's token on
a connect). A refusal says why, and never repeats the ticket.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol

import attrs

if TYPE_CHECKING:
    from .jwt_tickets import JwtRules

__all__ = [
    "MAX_TICKET_BYTES",
    "TICKET_HEADER",
    "TICKET_PARAM",
    "Admission",
    "AdmissionError",
    "AdmissionSpec",
    "SecretTickets",
    "first_refusal",
    "load_admission",
    "mint_ticket",
    "parse_spec",
]

TICKET_PARAM = "ticket"
TICKET_HEADER = "X-Roomkeeper-Ticket"
MAX_TICKET_BYTES = 8192
"""Longer tickets are refused before any parsing."""
MIN_SECRET = 16
"""Shortest ``secret:`` secret, in visible ASCII characters."""
MIN_JWT_SECRET = 32
"""Shortest ``jwt:hmac:`` secret: HS256 needs a key of at least 256 bits (RFC 7518 3.2)."""
_MAX_EXPIRY_DIGITS = 12

Kind = Literal["secret", "hmac", "key", "jwks"]
_PREFIXES: tuple[tuple[str, Kind], ...] = (
    ("secret:", "secret"),
    ("jwt:hmac:", "hmac"),
    ("jwt:key:", "key"),
    ("jwt:jwks:", "jwks"),
)


class AdmissionError(ValueError):
    """The admission setting or one of its files is unusable; the message says why and
    never holds a secret."""


class Admission(Protocol):
    """A ticket policy: why a ticket does not admit a new session to a room, or None."""

    def refusal(self, room: str, ticket: str | None) -> str | None: ...


# --- the setting ------------------------------------------------------------------------------


@attrs.frozen
class AdmissionSpec:
    """``--admission`` taken apart: the kind, and the secret or the file path."""

    kind: Kind
    value: str = attrs.field(repr=False)


def _visible(text: str) -> bool:
    return all("!" <= c <= "~" for c in text)


def parse_spec(text: str) -> AdmissionSpec | None:
    """``--admission`` as a spec (None: empty, anyone may join). Raises `AdmissionError`
    for a bad one; the message never holds the secret."""
    if not text:
        return None
    found = [(prefix, kind) for prefix, kind in _PREFIXES if text.startswith(prefix)]
    if not found:
        names = ", ".join(f"'{p}...'" for p, _ in _PREFIXES)
        raise AdmissionError(f"must be empty or one of {names}")
    prefix, kind = found[0]
    value = text[len(prefix) :]
    if kind == "secret" and (len(value) < MIN_SECRET or not _visible(value)):
        raise AdmissionError(f"secret must be at least {MIN_SECRET} visible ASCII characters")
    if kind == "hmac" and (len(value) < MIN_JWT_SECRET or not _visible(value)):
        raise AdmissionError(
            f"the JWT secret must be at least {MIN_JWT_SECRET} visible ASCII characters"
        )
    if kind in ("key", "jwks") and not value.strip():
        raise AdmissionError(f"'jwt:{kind}:' must be followed by a file path")
    return AdmissionSpec(kind, value)


def load_admission(
    text: str, rules: JwtRules | None = None, *, clock: Callable[[], float] = time.time
) -> Admission | None:
    """The ticket policy for an ``--admission`` value, its key files read and checked."""
    spec = parse_spec(text)
    if spec is None:
        return None
    if spec.kind == "secret":
        return SecretTickets(spec.value, clock)
    from .jwt_tickets import jwt_tickets  # (late: jwt_tickets imports this module)

    return jwt_tickets(spec, rules)


def first_refusal(ticket: str | None) -> str | None:
    """What every kind of ticket is refused for before it is parsed: being absent, or
    longer than ``MAX_TICKET_BYTES``."""
    if not ticket:
        return f"a room ticket is required: give ?{TICKET_PARAM}= or the {TICKET_HEADER} header"
    if len(ticket) > MAX_TICKET_BYTES or len(ticket.encode()) > MAX_TICKET_BYTES:
        return f"the room ticket is longer than {MAX_TICKET_BYTES} bytes"
    return None


# --- secret: tickets --------------------------------------------------------------------------


def _signature(secret: str, room: str, expiry: int) -> str:
    message = f"{room}|{expiry}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def mint_ticket(secret: str, room: str, ttl: float, *, now: float | None = None) -> str:
    """A ``secret:`` ticket admitting new sessions to ``room`` for ``ttl`` seconds."""
    expiry = math.floor((time.time() if now is None else now) + ttl)
    return f"{expiry}.{_signature(secret, room, expiry)}"


class SecretTickets:
    """Checks ``secret:`` tickets signed with ``secret`` (constant-time comparison)."""

    def __init__(self, secret: str, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self.clock = clock

    def __repr__(self) -> str:
        return "SecretTickets(<secret>)"

    def refusal(self, room: str, ticket: str | None) -> str | None:
        first = first_refusal(ticket)
        if first is not None or ticket is None:
            return first
        expiry_text, dot, signature = ticket.partition(".")
        if (
            not dot
            or not expiry_text.isascii()
            or not expiry_text.isdigit()
            or len(expiry_text) > _MAX_EXPIRY_DIGITS
        ):
            return "the room ticket is malformed"
        expiry = int(expiry_text)
        expected = _signature(self._secret, room, expiry)
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return "the room ticket is not valid for this room"
        if expiry < self.clock():
            return "the room ticket has expired"
        return None
