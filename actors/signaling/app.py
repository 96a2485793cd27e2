"""The signaling room as roomkeeper's application (``roomkeeper.application``)."""

from __future__ import annotations

import random
import uuid
from typing import Any

import attrs

from roomkeeper.application import Application

from .records import FreshSession
from .room import Room, RoomEnv

__all__ = ["APPLICATION", "SeededSessions", "environment"]


class SeededSessions:
    """``RoomEnv.fresh`` from a seeded generator: UUIDv4-shaped ids and tokens."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def __call__(self) -> FreshSession:
        rng = self.rng
        session_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        token = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        return FreshSession(session_id, token, rng.getrandbits(63))


def environment(settings: Any, rng: random.Random | None) -> RoomEnv:
    """Every room's limits from the server's settings; fresh sessions from ``rng`` if
    given (reproducible runs), else from the OS's cryptographic RNG."""
    env = RoomEnv.from_config(settings)
    return env if rng is None else attrs.evolve(env, fresh=SeededSessions(rng))


APPLICATION = Application(Room, environment)
