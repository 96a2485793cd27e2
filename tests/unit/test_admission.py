"""Room tickets without a server: the --admission setting, where a connect's ticket comes
from, and roomkeeper's own ``secret:`` tickets. (JWT tickets: test_jwt_tickets.py.)"""

from __future__ import annotations

import hmac

import pytest
from werkzeug.datastructures import Headers

from roomkeeper.admission import (
    MAX_TICKET_BYTES,
    TICKET_HEADER,
    AdmissionError,
    AdmissionSpec,
    SecretTickets,
    load_admission,
    mint_ticket,
    parse_spec,
)
from roomkeeper.http.errors import ApiError
from roomkeeper.http.parsing import ticket_from

# --- the setting -------------------------------------------------------------------------------

JWT_SECRET = "j" * 32


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("", None),
        ("secret:0123456789abcdef", AdmissionSpec("secret", "0123456789abcdef")),
        (f"jwt:hmac:{JWT_SECRET}", AdmissionSpec("hmac", JWT_SECRET)),
        ("jwt:key:/etc/rk/tickets.pem", AdmissionSpec("key", "/etc/rk/tickets.pem")),
        ("jwt:jwks:keys.json", AdmissionSpec("jwks", "keys.json")),
    ],
)
def test_admission_specs(text: str, spec: AdmissionSpec | None) -> None:
    assert parse_spec(text) == spec


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0123456789abcdef", "must be empty or one of"),
        ("jwt:0123456789abcdef0123456789abcdef", "must be empty or one of"),
        ("secret:short", "at least 16 visible ASCII"),
        ("jwt:hmac:" + "s" * 31, "at least 32 visible ASCII"),
        ("jwt:hmac:" + "s" * 31 + " ", "at least 32 visible ASCII"),
        ("jwt:key:", "followed by a file path"),
        ("jwt:jwks:  ", "followed by a file path"),
    ],
)
def test_bad_admission_specs(text: str, problem: str) -> None:
    with pytest.raises(AdmissionError, match=problem) as caught:
        parse_spec(text)
    secret = text.split(":")[-1]
    if len(secret) > 4:
        assert secret not in str(caught.value)


def test_specs_keep_their_secret_out_of_reprs() -> None:
    assert JWT_SECRET not in repr(parse_spec(f"jwt:hmac:{JWT_SECRET}"))
    assert JWT_SECRET not in repr(load_admission(f"jwt:hmac:{JWT_SECRET}"))
    assert "0123456789abcdef" not in repr(load_admission("secret:0123456789abcdef"))


def test_load_admission_reads_its_files() -> None:
    assert load_admission("") is None
    assert isinstance(load_admission("secret:0123456789abcdef"), SecretTickets)
    with pytest.raises(AdmissionError, match="cannot read the public key"):
        load_admission("jwt:key:/nonexistent/key.pem")
    with pytest.raises(AdmissionError, match="cannot read the JWKS file"):
        load_admission("jwt:jwks:/nonexistent/keys.json")


# --- where the ticket comes from ---------------------------------------------------------------


def test_the_ticket_comes_from_the_query_or_its_own_header() -> None:
    assert ticket_from({}, Headers()) is None
    assert ticket_from({"ticket": ""}, Headers()) is None
    assert ticket_from({"ticket": "a.b"}, Headers()) == "a.b"
    assert ticket_from({}, Headers({TICKET_HEADER: "a.b"})) == "a.b"
    assert ticket_from({"ticket": "a.b"}, Headers({TICKET_HEADER: "a.b"})) == "a.b"
    # Not Authorization: on a connect, a Bearer is the session's token.
    assert ticket_from({}, Headers({"Authorization": "Bearer a.b"})) is None
    with pytest.raises(ApiError) as caught:
        ticket_from({"ticket": "a.b"}, Headers({TICKET_HEADER: "c.d"}))
    assert caught.value.status == 400 and "a.b" not in caught.value.message


# --- secret: tickets ------------------------------------------------------------------------

SECRET = "ticket-secret-0123456789"
NOW = 1_800_000_000.0


def admission(now: float = NOW) -> SecretTickets:
    return SecretTickets(SECRET, clock=lambda: now)


def test_a_minted_ticket_admits_to_its_room_until_it_expires() -> None:
    ticket = mint_ticket(SECRET, "room-a", 60, now=NOW)
    expiry, _, signature = ticket.partition(".")
    assert expiry == str(int(NOW + 60)) and len(signature) == 43  # base64url of 32 bytes
    assert admission().refusal("room-a", ticket) is None
    assert admission(NOW + 60).refusal("room-a", ticket) is None
    assert "expired" in (admission(NOW + 61).refusal("room-a", ticket) or "")


@pytest.mark.parametrize(
    ("ticket", "problem"),
    [
        (None, "required"),
        ("", "required"),
        ("garbage", "malformed"),
        ("12.", "not valid"),
        ("x1.abc", "malformed"),
        ("١٢٣.abc", "malformed"),  # Arabic-Indic digits are digits to str.isdigit
        ("9" * 13 + ".abc", "malformed"),
        (f"{int(NOW) + 60}.{'A' * 43}", "not valid"),
        ("-1.abc", "malformed"),
    ],
)
def test_bad_tickets(ticket: str | None, problem: str) -> None:
    assert problem in (admission().refusal("room-a", ticket) or "")


def test_a_ticket_is_for_one_room_one_expiry_and_one_secret() -> None:
    ticket = mint_ticket(SECRET, "room-a", 60, now=NOW)
    expiry, _, signature = ticket.partition(".")
    assert "not valid" in (admission().refusal("room-b", ticket) or "")
    assert "not valid" in (admission().refusal("room-a", f"{int(expiry) + 1}.{signature}") or "")
    other = mint_ticket("another-secret-0123456789", "room-a", 60, now=NOW)
    assert "not valid" in (admission().refusal("room-a", other) or "")
    # "room|1" with expiry 2 is not "room" with expiry "1|2": the expiry has no "|".
    assert "malformed" in (admission().refusal("a", "1|2." + signature) or "")


def test_tickets_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return True  # the comparison alone decides

    monkeypatch.setattr(hmac, "compare_digest", spy)
    forged = f"{int(NOW) + 60}.{'A' * 43}"
    assert admission().refusal("room-a", forged) is None
    assert calls == [(b"A" * 43, mint_ticket(SECRET, "room-a", 60, now=NOW).split(".")[1].encode())]


def test_oversized_secret_tickets_are_refused_unread() -> None:
    huge = "1" * (MAX_TICKET_BYTES + 1)
    assert "longer than 8192 bytes" in (admission().refusal("room-a", huge) or "")


def test_the_secret_is_not_in_the_repr() -> None:
    assert SECRET not in repr(admission())
