"""The PostgreSQL schema, its migration, and every statement the backend sends.

Leases follow docs/architecture.md ("Several nodes on one PostgreSQL"): only PostgreSQL's
clock (``clock_timestamp()``) decides expiry, the epoch grows on every grant, and every
write transaction of an actor opens with ``FENCE``.
"""

from __future__ import annotations

from typing import Final

SCHEMA_VERSION: Final = 1

# Held for the migration transaction, so nodes that start together migrate one at a time.
# (Any constant: "roomkeep" in ASCII.)
MIGRATION_LOCK: Final = 0x726F6F6D6B656570

SCHEMA_TABLE: Final = "CREATE TABLE IF NOT EXISTS roomkeeper_schema (version integer NOT NULL)"
SCHEMA_VERSION_NOW: Final = "SELECT max(version) FROM roomkeeper_schema"

MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        """CREATE TABLE actors (
            actor text PRIMARY KEY, namespace text NOT NULL, name text NOT NULL,
            alarm double precision)""",
        "CREATE INDEX actors_alarm ON actors (alarm) WHERE alarm IS NOT NULL",
        "CREATE INDEX actors_names ON actors (namespace, name)",
        """CREATE TABLE kv (
            actor text NOT NULL, key text NOT NULL, value bytea NOT NULL,
            PRIMARY KEY (actor, key))""",
        """CREATE TABLE streams (
            actor text NOT NULL, stream text NOT NULL, attachment bytea NOT NULL,
            last_id bigint NOT NULL DEFAULT 0, PRIMARY KEY (actor, stream))""",
        """CREATE TABLE leases (
            actor text PRIMARY KEY, owner text NOT NULL, owner_addr text NOT NULL,
            epoch bigint NOT NULL, expires_at timestamptz NOT NULL)""",
        """CREATE TABLE cluster_secret (
            id smallint PRIMARY KEY CHECK (id = 1), secret bytea NOT NULL)""",
    ),
}

# --- the key nodes sign their forwarded requests with -------------------------------------

SECRET_INIT: Final = (
    "INSERT INTO cluster_secret (id, secret) VALUES (1, %(secret)s) ON CONFLICT (id) DO NOTHING"
)
SECRET: Final = "SELECT secret FROM cluster_secret WHERE id = 1"

# --- leases ------------------------------------------------------------------------------

ACQUIRE: Final = """
INSERT INTO leases AS l (actor, owner, owner_addr, epoch, expires_at)
VALUES (%(actor)s, %(me)s, %(addr)s, 1, clock_timestamp() + make_interval(secs => %(ttl)s))
ON CONFLICT (actor) DO UPDATE SET
    owner = EXCLUDED.owner, owner_addr = EXCLUDED.owner_addr,
    epoch = l.epoch + 1, expires_at = EXCLUDED.expires_at
WHERE l.expires_at < clock_timestamp() OR l.owner = %(me)s
RETURNING epoch"""

HOLDER: Final = """
SELECT owner, owner_addr,
    extract(epoch FROM expires_at)::float8 - extract(epoch FROM clock_timestamp())::float8
FROM leases WHERE actor = %(actor)s"""

RENEW: Final = """
UPDATE leases SET expires_at = clock_timestamp() + make_interval(secs => %(ttl)s)
WHERE owner = %(me)s
  AND (actor, epoch) IN (SELECT * FROM unnest(%(actors)s::text[], %(epochs)s::bigint[]))
  AND expires_at > clock_timestamp()
RETURNING actor"""

RELEASE: Final = """
UPDATE leases SET expires_at = '-infinity'
WHERE actor = %(actor)s AND epoch = %(epoch)s AND owner = %(me)s"""

# The first statement of every write transaction of an actor. An UPDATE, not a SELECT:
# it takes the row lock (a takeover waits for this transaction) and, under READ
# COMMITTED, re-checks the row after a concurrent commit (a takeover that committed first
# leaves 0 rows here).
FENCE: Final = """
UPDATE leases SET epoch = epoch WHERE actor = %(actor)s AND epoch = %(epoch)s AND owner = %(me)s"""

# Actors no node serves (no lease, or an expired one) that need one: a due alarm, or
# streams left open by a node that died, whose sessions must still end. (The streams
# table holds open streams only.)
_FREE: Final = "(l.actor IS NULL OR l.expires_at < clock_timestamp())"
DUE_ALARMS: Final = f"""
SELECT namespace, name FROM (
  (SELECT a.namespace, a.name, a.alarm FROM actors a LEFT JOIN leases l ON l.actor = a.actor
   WHERE a.alarm IS NOT NULL AND a.alarm <= extract(epoch FROM clock_timestamp())::float8
     AND {_FREE}
   ORDER BY a.alarm LIMIT %(limit)s)
  UNION
  (SELECT a.namespace, a.name, a.alarm FROM actors a LEFT JOIN leases l ON l.actor = a.actor
   WHERE EXISTS (SELECT 1 FROM streams s WHERE s.actor = a.actor) AND {_FREE}
   LIMIT %(limit)s)
) due
ORDER BY alarm NULLS FIRST LIMIT %(limit)s"""

# --- state -------------------------------------------------------------------------------

LOAD_VALUES: Final = "SELECT key, value FROM kv WHERE actor = %(actor)s"
LOAD_ALARM: Final = "SELECT alarm FROM actors WHERE actor = %(actor)s"
LOAD_STREAMS: Final = "SELECT stream, attachment, last_id FROM streams WHERE actor = %(actor)s"

ADD_ACTOR: Final = """
INSERT INTO actors (actor, namespace, name) VALUES (%(actor)s, %(namespace)s, %(name)s)
ON CONFLICT (actor) DO NOTHING"""
SET_ALARM: Final = "UPDATE actors SET alarm = %(alarm)s WHERE actor = %(actor)s"
DELETE_KEY: Final = "DELETE FROM kv WHERE actor = %s AND key = %s"
PUT_KEY: Final = """
INSERT INTO kv (actor, key, value) VALUES (%s, %s, %s)
ON CONFLICT (actor, key) DO UPDATE SET value = EXCLUDED.value"""
REMOVE_STREAM: Final = "DELETE FROM streams WHERE actor = %s AND stream = %s"
ADD_STREAM: Final = """
INSERT INTO streams (actor, stream, attachment) VALUES (%s, %s, %s)
ON CONFLICT (actor, stream) DO UPDATE SET attachment = EXCLUDED.attachment, last_id = 0"""
# An actor with no value, alarm or stream left keeps no row.
DROP_IF_EMPTY: Final = """
DELETE FROM actors a WHERE a.actor = %(actor)s AND a.alarm IS NULL
  AND NOT EXISTS (SELECT 1 FROM kv WHERE kv.actor = a.actor)
  AND NOT EXISTS (SELECT 1 FROM streams s WHERE s.actor = a.actor)"""
SAVE_POSITION: Final = "UPDATE streams SET last_id = %s WHERE actor = %s AND stream = %s"

NAMES: Final = """
SELECT name FROM actors a WHERE namespace = %(namespace)s AND name > %(after)s
  AND EXISTS (SELECT 1 FROM kv WHERE kv.actor = a.actor)
ORDER BY name LIMIT %(limit)s"""


def session_settings(lease_ttl: float) -> dict[str, str]:
    """Server-side bounds for every connection, in milliseconds: TTL/2 each (at least
    100 ms), so a node frozen inside a transaction or a statement lets go of the rows it
    holds before its lease could have been taken over, and a takeover that waits for a
    lock gives up within the same bound."""
    bound = str(max(100, int(lease_ttl * 500)))
    return {
        "statement_timeout": bound,
        "lock_timeout": bound,
        "idle_in_transaction_session_timeout": bound,
    }


def connection_params(lease_ttl: float) -> dict[str, str | int]:
    """libpq parameters: a bounded connect, and TCP keepalives and ``tcp_user_timeout``
    of about the TTL, so a dead or partitioned peer is noticed in seconds, not hours."""
    probe = max(1, round(lease_ttl / 3))
    return {
        "connect_timeout": max(2, round(lease_ttl / 2)),
        "keepalives": 1,
        "keepalives_idle": probe,
        "keepalives_interval": probe,
        "keepalives_count": 3,
        "tcp_user_timeout": max(1000, int(lease_ttl * 1000)),
        "application_name": "roomkeeper",
    }
