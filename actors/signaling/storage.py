"""How a room's sessions are laid out in its actor's key/value storage.

Keys (``<sid>`` is the session id):

- ``s/<sid>``: the session record ``{"token", "key", "seq", "expires_at", "hwm"}``,
  written when the session is made, connects or disconnects. ``seq`` is its place in
  join order; ``expires_at`` is None while it has a stream.
- ``h/<sid>/<event id>[/<tag>]``: one signal of the session's replay history, written
  with the answer to the signal's POST (one small put per signal; deleted when it leaves
  the history). The value is the event's data exactly as it was sent.
- ``q/<sid>/<n:012d>[/<tag>]``: one signal queued for the session while it is
  disconnected, the value as for history; deleted on delivery.
- ``v/<sid>``: ``{"hwm", "requests": [...], "bucket": [tokens, stamp]}``, written only
  by ``RoomState.volatile_writes`` (hibernation and shutdown): the recent accepted request
  ids (also those whose signal left the history) and the rate-limit bucket.

``<tag>`` is ``<sender>/<request id as UTF-8 hex>`` for a signal posted with an ``id``:
it restores the sender's idempotency memory after a crash, so a retried POST is not
delivered twice. Signal values are never parsed: the room keeps them as bytes.

Event ids and keys exceed 64 bits, so they are stored as decimal strings. Ending a
session deletes its keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from roomkeeper.jsonutil import dumps, loads

from .records import Outgoing, RoomConfig
from .session import Session

SESSION = "s/"
HISTORY = "h/"
QUEUE = "q/"
VOLATILE = "v/"


def tag(sender: str, request_id: str) -> str:
    return f"{sender}/{request_id.encode().hex()}"


def untag(value: str) -> tuple[str, str]:
    """``(sender, request id)`` of a tag."""
    sender, _, hexed = value.partition("/")
    return sender, bytes.fromhex(hexed).decode()


def session_key(session_id: str) -> str:
    return SESSION + session_id


def history_key(session_id: str, event_id: int, out: Outgoing) -> str:
    key = f"{HISTORY}{session_id}/{event_id}"
    return key if out.tag is None else f"{key}/{out.tag}"


def queue_key(session_id: str, qseq: int, out: Outgoing) -> str:
    key = f"{QUEUE}{session_id}/{qseq:012d}"
    return key if out.tag is None else f"{key}/{out.tag}"


def volatile_key(session_id: str) -> str:
    return VOLATILE + session_id


def session_keys(session: Session) -> list[str]:
    """Every key that may hold something of this session."""
    sid = session.session_id
    queued = [queue_key(sid, qseq, out) for qseq, out in session.queue]
    kept = [history_key(sid, eid, out) for eid, out in session.history if eid in session.stored]
    return [session_key(sid), volatile_key(sid), *queued, *kept]


def session_record(session: Session) -> dict[str, Any]:
    return {
        "token": session.token,
        "key": str(session.key),
        "seq": session.seq,
        "expires_at": session.expires_at,
        "hwm": str(session.hwm),
    }


def volatile_record(session: Session) -> dict[str, Any]:
    return {
        "hwm": str(session.hwm),
        "requests": list(session.requests),
        "bucket": [session.bucket.tokens, session.bucket.stamp],
    }


def load(
    records: Mapping[str, bytes], config: RoomConfig
) -> tuple[list[Session], list[str], dict[str, bytes]]:
    """Sessions rebuilt from stored records (raw values), in join order; the keys that
    belong to no session (left over; the caller deletes them); and history entries of an
    older layout to store under their own keys. Unknown prefixes are ignored."""
    sessions: dict[str, Session] = {}
    for key, raw in records.items():
        if key.startswith(SESSION):
            sid = key[len(SESSION) :]
            sessions[sid] = _session(sid, loads(raw), config)
    orphans: list[str] = []
    upgrade: dict[str, bytes] = {}
    kept: dict[str, dict[int, Outgoing]] = {}
    queued: dict[str, list[tuple[int, Outgoing]]] = {}
    for key, raw in records.items():
        prefix = key[:2]
        if prefix in (HISTORY, QUEUE):
            sid, number, rest = _split(key[2:])
            if sid not in sessions:
                orphans.append(key)
                continue
            out = Outgoing("signal", raw, record=True, tag=rest)
            if rest is not None:
                sender = sessions.get(untag(rest)[0])
                if sender is not None:
                    sender.remember(untag(rest)[1], config.idempotency_window)
            if prefix == HISTORY:
                kept.setdefault(sid, {})[number] = out
            else:
                queued.setdefault(sid, []).append((number, out))
        elif prefix == VOLATILE:
            sid = key[len(VOLATILE) :]
            if sid in sessions:
                record = loads(raw)
                legacy = _add_volatile(sessions[sid], record, config)
                if legacy:
                    record.pop("history")
                    upgrade[key] = dumps(record)
                for eid, out in legacy:
                    assert isinstance(out.data, bytes)
                    upgrade.setdefault(history_key(sid, eid, out), out.data)
                    kept.setdefault(sid, {}).setdefault(eid, out)
            else:
                orphans.append(key)
    for sid, history in kept.items():
        session = sessions[sid]
        for eid, out in sorted(history.items(), key=lambda entry: entry[0]):
            session.keep(eid, out)
            session.stored.add(eid)
            session.hwm = max(session.hwm, eid)
    for sid, entries in queued.items():
        session = sessions[sid]
        for qseq, out in sorted(entries, key=lambda entry: entry[0]):
            session.next_qseq = qseq
            session.enqueue(out)
    return sorted(sessions.values(), key=lambda s: s.seq), orphans, upgrade


def _split(rest: str) -> tuple[str, int, str | None]:
    """``<sid>/<number>[/<tag>]`` as its parts."""
    parts = rest.split("/", 2)
    return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else None


def _session(session_id: str, record: Mapping[str, Any], config: RoomConfig) -> Session:
    expires_at = record["expires_at"]
    session = Session.new(
        session_id, str(record["token"]), int(record["key"]), int(record["seq"]), config
    )
    session.hwm = max(session.hwm, int(record["hwm"]))
    session.connected = expires_at is None
    session.expires_at = None if expires_at is None else float(expires_at)
    return session


def _add_volatile(
    session: Session, record: Mapping[str, Any], config: RoomConfig
) -> list[tuple[int, Outgoing]]:
    """Fold a ``v/`` record in; the replay history it holds if written by an older
    version (which kept history there, parsed), re-encoded."""
    session.hwm = max(session.hwm, int(record["hwm"]))
    for request_id in record["requests"]:
        session.remember(str(request_id), config.idempotency_window)
    if "bucket" in record:
        tokens, stamp = record["bucket"]
        session.bucket.tokens = min(float(tokens), config.rate_burst)
        session.bucket.stamp = None if stamp is None else float(stamp)
    return [
        (int(eid), Outgoing(event, dumps(data), record=True))
        for eid, event, data in record.get("history", [])
    ]
