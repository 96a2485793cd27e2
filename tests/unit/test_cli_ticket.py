"""`roomkeeper ticket` prints a ticket the server's --admission accepts; `serve` refuses
unusable TURN and admission settings with status 2 before it starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from roomkeeper.admission import load_admission
from roomkeeper.cli import main
from roomkeeper.jwt_tickets import JwtRules

SECRET = "secret-ticket-key-0123"
JWT_SECRET = "jwt-ticket-key-" + "0" * 20


def ticket(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["ticket", *argv]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.endswith("\n") and out.count("\n") == 1
    return out.strip()


def fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    return err


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ADMISSION", "ADMISSION_AUDIENCE", "ADMISSION_ISSUER", "TURN_URIS"):
        monkeypatch.delenv(f"ROOMKEEPER_{name}", raising=False)


def test_a_secret_ticket_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ROOMKEEPER_ADMISSION", f"secret:{SECRET}")
    made = ticket(["--room", "lobby", "--ttl", "60"], capsys)
    admission = load_admission(f"secret:{SECRET}")
    assert admission is not None
    assert admission.refusal("lobby", made) is None
    assert admission.refusal("other", made) is not None


def test_a_jwt_hmac_ticket_with_audience_and_issuer(capsys: pytest.CaptureFixture[str]) -> None:
    flags = [
        "--admission",
        f"jwt:hmac:{JWT_SECRET}",
        "--admission-audience",
        "rooms",
        "--admission-issuer",
        "backend",
    ]
    made = ticket(["--room", "team-7/*", *flags], capsys)
    strict = load_admission(f"jwt:hmac:{JWT_SECRET}", JwtRules(audience="rooms", issuer="backend"))
    assert strict is not None
    assert strict.refusal("team-7/standup", made) is None
    other_issuer = JwtRules(audience="rooms", issuer="x")
    loose = load_admission(f"jwt:hmac:{JWT_SECRET}", other_issuer)
    assert loose is not None
    assert "another issuer" in (loose.refusal("team-7/a", made) or "")


def test_a_jwt_key_ticket_needs_the_matching_private_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = tmp_path / "public.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    private = tmp_path / "private.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    spec = f"jwt:key:{public}"
    made = ticket(["--room", "r", "--admission", spec, "--private-key", str(private)], capsys)
    admission = load_admission(spec)
    assert admission is not None and admission.refusal("r", made) is None
    assert "need the private key" in fails(["ticket", "--room", "r", "--admission", spec], capsys)
    other = tmp_path / "other.pem"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    argv = ["ticket", "--room", "r", "--admission", spec, "--private-key", str(other)]
    assert "does not match" in fails(argv, capsys)


def test_ticket_refusals(capsys: pytest.CaptureFixture[str]) -> None:
    assert "admission is off" in fails(["ticket", "--room", "r"], capsys)
    secret = ["--admission", f"secret:{SECRET}"]
    assert "--ttl" in fails(["ticket", "--room", "r", "--ttl", "0", *secret], capsys)
    assert "--room" in fails(["ticket", "--room", "r" * 300, *secret], capsys)
    err = fails(["ticket", "--room", "r", "--private-key", "k.pem", *secret], capsys)
    assert "--private-key is for jwt:key:" in err


def test_serve_refuses_turn_uris_without_the_secret(capsys: pytest.CaptureFixture[str]) -> None:
    err = fails(["serve", "--turn-uris", "turn:127.0.0.1:3478"], capsys)
    assert "--turn-uris needs the TURN secret" in err
    assert "must start with turn or turns:" in fails(["serve", "--turn-uris", "stun:a"], capsys)


def test_serve_refuses_an_unreadable_key_file(capsys: pytest.CaptureFixture[str]) -> None:
    err = fails(["serve", "--admission", "jwt:jwks:/nonexistent/keys.json"], capsys)
    assert "--admission: cannot read the JWKS file" in err
