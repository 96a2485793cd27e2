"""Who may open new sessions in a room: signed room tickets.

(Client addresses are in ``addresses.py``, per-address budgets in ``budgets.py``.)

- ``Admission`` and ``mint_ticket``: optional signed room tickets (``--admission
  secret:S``). A ticket is ``EXPIRY.SIG``: EXPIRY in whole epoch seconds, SIG the unpadded
  base64url HMAC-SHA256 under S of ``ROOM|EXPIRY`` (UTF-8). With admission on, only a
  connect with a valid, unexpired ticket for its room may make a new session; resuming
  needs none. Mint one with::

      python -c "from roomkeeper.http.limits import mint_ticket as m; print(m('S', 'R', 3600))"

Everything here is synchronous and takes its clock as an argument, for tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import time
from collections.abc import Callable

__all__ = ["TICKET_PARAM", "Admission", "mint_ticket"]

TICKET_PARAM = "ticket"
_MAX_EXPIRY_DIGITS = 12


# --- admission tickets ------------------------------------------------------------------------


def _signature(secret: str, room: str, expiry: int) -> str:
    message = f"{room}|{expiry}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def mint_ticket(secret: str, room: str, ttl: float, *, now: float | None = None) -> str:
    """A ticket admitting new sessions to ``room`` for ``ttl`` seconds from ``now``."""
    expiry = math.floor((time.time() if now is None else now) + ttl)
    return f"{expiry}.{_signature(secret, room, expiry)}"


class Admission:
    """Checks room tickets signed with ``secret`` (constant-time comparison)."""

    def __init__(self, secret: str, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self.clock = clock

    def __repr__(self) -> str:
        return "Admission(<secret>)"

    def refusal(self, room: str, ticket: str | None) -> str | None:
        """Why ``ticket`` does not admit a new session to ``room``, or None if it does."""
        if not ticket:
            return f"a room ticket is required: give ?{TICKET_PARAM}="
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
