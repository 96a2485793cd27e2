"""PostgreSQL storage shared by several roomkeeper nodes, with leases for single activation.

Every actor's values, alarm and open streams live in one database, next to a lease row
per actor (owner, address, epoch, expiry by PostgreSQL's clock). A node activates an
actor only after ``acquire`` granted it an epoch, and every write transaction of the actor
opens with a fence on that epoch, so a node that lost the lease can never commit after
the new owner took it (docs/architecture.md, "Several nodes on one PostgreSQL").

Unlike SQLite, nothing is handed to the process at start-up: ``alarms()`` and
``streams()`` return nothing, because a room's alarm and streams belong to whichever
node holds its lease, not to the process that starts. Alarms of rooms nobody holds are
found with ``due_alarms``; an activation gets the stored alarm and streams from ``load``
(``ActorRecord.streams``).

psycopg's async connections run on asyncio only, so this uses the sync driver and its
connection pool through ``trio.to_thread``; a running query cannot be interrupted from
trio, hence the server-side timeouts set on every connection (``sql.session_settings``).
"""

from .backend import PostgresBackend

__all__ = ["PostgresBackend"]
