"""How a room's sessions are laid out in its actor's key/value storage.

Keys (``<sid>`` is the session id; every value is plain JSON):

- ``s/<sid>``: the session record ``{"token", "key", "seq", "expires_at", "hwm"}``,
  written when the session is made, connects or disconnects. ``seq`` is its place in
  join order; ``expires_at`` is None while it has a stream.
- ``q/<sid>/<n:012d>``: one signal queued for the session while it is disconnected,
  ``{"from": S, "signal": {...}, "rid": request id or absent}``; one small put per queued
  signal, deleted on delivery. ``rid`` restores the sender's idempotency memory after a
  crash, so a retried POST is not queued twice.
- ``v/<sid>``: the volatile snapshot ``{"hwm", "history": [[id, event, data], ...],
  "requests": [...], "bucket": [tokens, stamp]}``, written only by
  ``RoomState.volatile_writes`` (hibernation and shutdown): the replay history with event
  ids, the recent accepted request ids and the rate-limit bucket.

Event ids and keys exceed 64 bits, so they are stored as decimal strings: every JSON
codec reads them, and orjson stays on its fast path. Ending a session deletes its keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .records import Outgoing, RoomConfig
from .session import Session

SESSION = "s/"
QUEUE = "q/"
VOLATILE = "v/"


def session_key(session_id: str) -> str:
    return SESSION + session_id


def queue_key(session_id: str, qseq: int) -> str:
    return f"{QUEUE}{session_id}/{qseq:012d}"


def volatile_key(session_id: str) -> str:
    return VOLATILE + session_id


def session_keys(session: Session) -> list[str]:
    """Every key that may hold something of this session."""
    sid = session.session_id
    queued = [queue_key(sid, qseq) for qseq, _ in session.queue]
    return [session_key(sid), volatile_key(sid), *queued]


def session_record(session: Session) -> dict[str, Any]:
    return {
        "token": session.token,
        "key": str(session.key),
        "seq": session.seq,
        "expires_at": session.expires_at,
        "hwm": str(session.hwm),
    }


def queue_record(data: dict[str, Any], request_id: str | None) -> dict[str, Any]:
    return data if request_id is None else {**data, "rid": request_id}


def volatile_record(session: Session) -> dict[str, Any]:
    return {
        "hwm": str(session.hwm),
        "history": [[str(eid), out.event, out.data] for eid, out in session.history],
        "requests": list(session.requests),
        "bucket": [session.bucket.tokens, session.bucket.stamp],
    }


def load(records: Mapping[str, Any], config: RoomConfig) -> tuple[list[Session], list[str]]:
    """Sessions rebuilt from stored records, in join order, and the keys that belong to
    no session (left over; the caller deletes them). Unknown prefixes are ignored."""
    sessions: dict[str, Session] = {}
    for key, value in records.items():
        if key.startswith(SESSION):
            sessions[key[len(SESSION) :]] = _session(key[len(SESSION) :], value, config)
    orphans: list[str] = []
    queued: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for key, value in records.items():
        if key.startswith(QUEUE):
            sid, _, qseq = key[len(QUEUE) :].rpartition("/")
            if sid in sessions:
                data = dict(value)
                request_id = data.pop("rid", None)
                sender = sessions.get(data.get("from", ""))
                if request_id is not None and sender is not None:
                    sender.remember(str(request_id), config.idempotency_window)
                queued.setdefault(sid, []).append((int(qseq), data))
            else:
                orphans.append(key)
        elif key.startswith(VOLATILE):
            sid = key[len(VOLATILE) :]
            if sid in sessions:
                _add_volatile(sessions[sid], value, config)
            else:
                orphans.append(key)
    for sid, entries in queued.items():
        entries.sort(key=lambda entry: entry[0])
        session = sessions[sid]
        session.queue.extend(entries)
        session.next_qseq = entries[-1][0] + 1
    return sorted(sessions.values(), key=lambda s: s.seq), orphans


def _session(session_id: str, record: Mapping[str, Any], config: RoomConfig) -> Session:
    expires_at = record["expires_at"]
    session = Session.new(
        session_id, str(record["token"]), int(record["key"]), int(record["seq"]), config
    )
    session.hwm = max(session.hwm, int(record["hwm"]))
    session.connected = expires_at is None
    session.expires_at = None if expires_at is None else float(expires_at)
    return session


def _add_volatile(session: Session, record: Mapping[str, Any], config: RoomConfig) -> None:
    session.hwm = max(session.hwm, int(record["hwm"]))
    for eid, event, data in record["history"]:
        session.history.append((int(eid), Outgoing(event, data, record=True)))
    for request_id in record["requests"]:
        session.remember(str(request_id), config.idempotency_window)
    if "bucket" in record:
        tokens, stamp = record["bucket"]
        session.bucket.tokens = min(float(tokens), config.rate_burst)
        session.bucket.stamp = None if stamp is None else float(stamp)
