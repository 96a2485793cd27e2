"""JWT room tickets (``--admission jwt:...``, see admission.py), verified by PyJWT.

Keys: ``_HmacKey`` (``jwt:hmac:``), ``_PemKey`` (``jwt:key:``), ``_JwksFile``
(``jwt:jwks:``, read again when it changes). Each key verifies only the algorithms of its
type: HMAC secrets HS256/384/512, RSA keys RS256/384/512, EC keys ES256/384/512 by
curve, Ed25519/Ed448 keys EdDSA (a JWKS entry's own ``alg`` narrows that to one). So
``alg: none``, and an HS256 token whose "secret" is an RSA public key, never pass.

PyJWT is imported only inside the functions: ``roomkeeper --help`` and servers without
JWT admission never load it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from .admission import AdmissionError, AdmissionSpec, first_refusal

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import (
        PrivateKeyTypes,
        PublicKeyTypes,
    )

__all__ = [
    "EDDSA",
    "HMAC_ALGORITHMS",
    "RSA_ALGORITHMS",
    "WILDCARD",
    "JwtRules",
    "JwtTickets",
    "SigningKey",
    "jwt_tickets",
    "mint_jwt",
    "room_matches",
    "signing_key",
]

log = logging.getLogger("roomkeeper.http")

MIN_RSA_BITS = 2048
WILDCARD = "*"
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512")
EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
EDDSA = "EdDSA"


@attrs.frozen
class JwtRules:
    """What a JWT ticket must say besides its signature: the room claim's name, and the
    audience and issuer when configured; ``leeway`` seconds of clock skew are allowed."""

    room_claim: str = "room"
    audience: str | None = None
    issuer: str | None = None
    leeway: float = 30.0


# --- JWT tickets: keys ------------------------------------------------------------------------


@attrs.frozen
class _Key:
    """A verification key and the algorithms it may verify."""

    key: Any = attrs.field(repr=False)
    algorithms: tuple[str, ...]


class _Keys(Protocol):
    def select(self, header: Mapping[str, Any]) -> _Key | str:
        """The key for a token with this (unverified) header, or why there is none."""
        ...


@attrs.frozen
class _HmacKey:
    secret: str = attrs.field(repr=False)

    def select(self, header: Mapping[str, Any]) -> _Key | str:
        return _Key(self.secret, HMAC_ALGORITHMS)


def _algorithms(key: PublicKeyTypes | PrivateKeyTypes) -> tuple[str, ...]:
    """The algorithms a public (or private) key may verify (or sign), pinned by its type
    and curve; `AdmissionError` for a type or size we do not take."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise AdmissionError(f"RSA keys must have at least {MIN_RSA_BITS} bits")
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        algorithm = EC_ALGORITHMS.get(key.curve.name)
        if algorithm is None:
            raise AdmissionError(f"EC curve {key.curve.name} is not supported (P-256/384/521)")
        return (algorithm,)
    if isinstance(
        key,
        ed25519.Ed25519PublicKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PublicKey
        | ed448.Ed448PrivateKey,
    ):
        return (EDDSA,)
    raise AdmissionError("the key must be an RSA, EC (P-256/384/521), Ed25519 or Ed448 key")


def _read(path: str, what: str) -> bytes:
    try:
        with open(os.path.expanduser(path), "rb") as file:
            return file.read(1 << 20)
    except OSError as exc:
        raise AdmissionError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


class _PemKey:
    """A PEM public key (or a certificate holding one)."""

    def __init__(self, path: str) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        data = _read(path, "public key")
        try:
            if b"-----BEGIN CERTIFICATE-----" in data:
                key: PublicKeyTypes = x509.load_pem_x509_certificate(data).public_key()
            else:
                key = load_pem_public_key(data)
        except (ValueError, TypeError):
            raise AdmissionError(f"{path} holds no PEM public key") from None
        self.key = _Key(key, _algorithms(key))

    def select(self, header: Mapping[str, Any]) -> _Key | str:
        return self.key


class _JwksFile:
    """The keys of a JWKS file by ``kid``; read again when the file changes (its
    modification time, size or inode), so keys rotate without a restart. A changed file
    that cannot be used leaves the previous keys in place, with a warning in the log."""

    def __init__(self, path: str) -> None:
        self.path = os.path.expanduser(path)
        self._stamp = self._stat()
        self._keys = _parse_jwks(_read(path, "JWKS file"), path)
        self._failed: tuple[int, ...] | None = None  # the version of the file that failed

    def _stat(self) -> tuple[int, ...]:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise AdmissionError(f"cannot read the JWKS file {self.path}: {exc.strerror}") from None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _refresh(self) -> None:
        stamp: tuple[int, ...] = ()
        try:
            stamp = self._stat()
            if stamp in (self._stamp, self._failed):
                return
            keys = _parse_jwks(_read(self.path, "JWKS file"), self.path)
        except AdmissionError as exc:
            if stamp != self._failed:
                log.warning("keeping the previous JWKS keys: %s", exc)
            self._failed = stamp
            return
        self._stamp, self._keys, self._failed = stamp, keys, None
        log.info("JWKS file %s read again: %d keys", self.path, len(keys))

    def select(self, header: Mapping[str, Any]) -> _Key | str:
        self._refresh()
        kid = header.get("kid")
        if kid is None:
            if len(self._keys) == 1:
                return next(iter(self._keys.values()))
            return "the room ticket has no key id (kid), and the key set holds several keys"
        key = self._keys.get(kid)
        if key is None:
            return "the room ticket's key id (kid) is not in the key set (JWKS)"
        return key


def _parse_jwks(data: bytes, path: str) -> dict[str | None, _Key]:
    """``{kid: key}`` of a JWKS document (keys marked ``"use": "enc"`` are skipped)."""
    import jwt

    try:
        document = json.loads(data)
    except ValueError:
        raise AdmissionError(f"{path} is not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise AdmissionError(f'{path} is not a JWKS document ({{"keys": [...]}})')
    keys: dict[str | None, _Key] = {}
    for n, entry in enumerate(entries):
        where = f"{path}: key {n}"
        if not isinstance(entry, dict):
            raise AdmissionError(f"{where} is not an object")
        if entry.get("use", "sig") != "sig":
            continue
        if entry.get("kty") == "oct":
            raise AdmissionError(f"{where}: a secret (oct) key has no place here: use jwt:hmac:")
        if "d" in entry:
            raise AdmissionError(f"{where} is a private key: publish only public keys")
        try:
            # Without its "alg": the key type decides what it may verify, checked below.
            key = jwt.PyJWK({k: v for k, v in entry.items() if k != "alg"}).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
            raise AdmissionError(f"{where} is not a usable RSA, EC or OKP public key") from None
        algorithms = _algorithms(key)
        stated = entry.get("alg")
        if stated is not None:
            if stated not in algorithms:
                raise AdmissionError(f"{where}: alg {stated!r} does not fit its key type")
            algorithms = (stated,)
        kid = entry.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AdmissionError(f"{where}: kid must be a string")
        if kid in keys:
            raise AdmissionError(f"{where}: the kid appears twice")
        keys[kid] = _Key(key, algorithms)
    if not keys:
        raise AdmissionError(f"{path} holds no signing key")
    if None in keys and len(keys) > 1:
        raise AdmissionError(f"{path}: with several keys, each needs a kid")
    return keys


def jwt_tickets(spec: AdmissionSpec, rules: JwtRules | None = None) -> JwtTickets:
    """The verifier of a ``jwt:`` spec, its key files read (`AdmissionError` if unusable)."""
    keys: _Keys
    if spec.kind == "hmac":
        keys = _HmacKey(spec.value)
    elif spec.kind == "key":
        keys = _PemKey(spec.value)
    elif spec.kind == "jwks":
        keys = _JwksFile(spec.value)
    else:
        raise AdmissionError(f"not a jwt: spec ({spec.kind})")
    return JwtTickets(keys, rules or JwtRules())


# --- JWT tickets: checking --------------------------------------------------------------------


def room_matches(pattern: str, room: str) -> bool:
    """Whether a ticket's room claim admits ``room``: the same name, or, for a claim that
    ends in ``*``, any room that starts with what comes before it (``*``: every room)."""
    if pattern == room:
        return True
    return pattern.endswith(WILDCARD) and room.startswith(pattern[: -len(WILDCARD)])


class JwtTickets:
    """Checks JWT tickets with PyJWT against ``keys`` and ``rules``."""

    def __init__(self, keys: _Keys, rules: JwtRules) -> None:
        self._keys = keys
        self.rules = rules
        required = ["exp"]
        if rules.audience is not None:
            required.append("aud")
        if rules.issuer is not None:
            required.append("iss")
        self._options = {"require": required}

    def __repr__(self) -> str:
        return f"JwtTickets({type(self._keys).__name__.lstrip('_')}, {self.rules!r})"

    def refusal(self, room: str, ticket: str | None) -> str | None:
        import jwt

        first = first_refusal(ticket)
        if first is not None or ticket is None:
            return first
        try:
            header = jwt.get_unverified_header(ticket)
        except jwt.PyJWTError:
            return "the room ticket is malformed: not a JWT (three base64url parts)"
        found = self._keys.select(header)
        if isinstance(found, str):
            return found
        if header.get("alg") not in found.algorithms:
            return f"the room ticket's alg must be {' or '.join(found.algorithms)}"
        rules = self.rules
        try:
            claims = jwt.decode(
                ticket,
                found.key,
                algorithms=list(found.algorithms),
                audience=rules.audience,
                issuer=rules.issuer,
                leeway=rules.leeway,
                options=self._options,  # type: ignore[arg-type]
            )
        except jwt.PyJWTError as exc:
            return _why(exc, rules)
        pattern = claims.get(rules.room_claim)
        if pattern is None:
            return f"the room ticket lacks the '{rules.room_claim}' claim"
        if not isinstance(pattern, str):
            return f"the room ticket's '{rules.room_claim}' claim must be a string"
        if not room_matches(pattern, room):
            return (
                f"the room ticket is for another room (its '{rules.room_claim}' claim must be "
                f"this room's name, or a prefix of it ending in '{WILDCARD}')"
            )
        return None


def _why(exc: Exception, rules: JwtRules) -> str:
    """A refusal a developer can act on, for a PyJWT error; never the token itself."""
    import jwt

    if isinstance(exc, jwt.ExpiredSignatureError):
        return "the room ticket has expired (exp)"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "the room ticket is not valid yet (nbf or iat is in the future: check clocks)"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the room ticket lacks the '{exc.claim}' claim"
    if isinstance(exc, jwt.InvalidAudienceError):
        if rules.audience is None:
            return "the room ticket names an audience (aud), but --admission-audience is unset"
        return "the room ticket is for another audience (aud)"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "the room ticket comes from another issuer (iss)"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "the room ticket's signature is not valid (bad signature)"
    if isinstance(exc, jwt.InvalidIssuedAtError):
        return "the room ticket's iat claim must be a number"
    if isinstance(exc, jwt.DecodeError):
        return "the room ticket is malformed (exp, nbf and iat must be numbers)"
    return "the room ticket is not valid"


# --- JWT tickets: minting (roomkeeper ticket, tests) ------------------------------------------


@attrs.frozen
class SigningKey:
    """What signs a JWT ticket: the key, its algorithm, and the ``kid`` to name."""

    key: Any = attrs.field(repr=False)
    algorithm: str
    kid: str | None = None


def signing_key(spec: AdmissionSpec, private_pem: bytes | None = None) -> SigningKey:
    """The key that signs tickets for a ``jwt:`` spec: its secret (``jwt:hmac:``), or the
    private key ``private_pem``, checked against the configured public key or JWKS (whose
    matching entry gives the ``kid``)."""
    if spec.kind == "hmac":
        return SigningKey(spec.value, HMAC_ALGORITHMS[0])
    if spec.kind not in ("key", "jwks"):
        raise AdmissionError("not a jwt: admission")
    if private_pem is None:
        raise AdmissionError(f"jwt:{spec.kind}: tickets need the private key (--private-key)")
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        private = load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError):
        raise AdmissionError("--private-key holds no unencrypted PEM private key") from None
    public = _public_bytes(private.public_key())
    keys: dict[str | None, _Key]
    if spec.kind == "key":
        keys = {None: _PemKey(spec.value).key}
    else:
        keys = _parse_jwks(_read(spec.value, "JWKS file"), spec.value)
    for kid, key in keys.items():
        if _public_bytes(key.key) == public:
            return SigningKey(private, key.algorithms[0], kid)
    raise AdmissionError(f"the private key does not match the key in {spec.value}")


def _public_bytes(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    data: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def mint_jwt(
    signer: SigningKey, room: str, ttl: float, rules: JwtRules, *, now: float | None = None
) -> str:
    """A JWT ticket for ``room`` (exact, or a ``*`` pattern) valid for ``ttl`` seconds."""
    import jwt

    issued = math.floor(time.time() if now is None else now)
    claims: dict[str, Any] = {rules.room_claim: room, "iat": issued, "exp": issued + int(ttl)}
    if rules.audience is not None:
        claims["aud"] = rules.audience
    if rules.issuer is not None:
        claims["iss"] = rules.issuer
    headers = None if signer.kid is None else {"kid": signer.kid}
    return jwt.encode(claims, signer.key, algorithm=signer.algorithm, headers=headers)
