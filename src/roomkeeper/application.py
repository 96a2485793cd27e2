"""The one seam between roomkeeper and the application it serves.

The runtime knows no actor class and the HTTP layer only speaks the protocol of
``roomkeeper.signaling`` to the ``rooms`` namespace. Which actor answers there comes from
the ``application`` setting, ``MODULE:NAME`` of an `Application` (by default the signaling
room in ``actors/``, installed as ``roomkeeper_actors``). The server and the simulator
load it here, and nowhere else is the application named.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable
from typing import Any

import attrs

from .config import DEFAULT_APPLICATION, ConfigError
from .runtime import Actor, Binding

__all__ = ["Application", "ApplicationError", "load_application"]


class ApplicationError(ConfigError):
    """The ``application`` setting names nothing importable, or not an `Application`."""


@attrs.frozen
class Application:
    """The actor class of the ``rooms`` namespace, and how to build the environment its
    instances share from the server's settings (a `roomkeeper.config.Config`, or any object
    with the same room settings) and, for reproducible runs, a seeded random generator
    (None: the operating system's randomness)."""

    actor: type[Actor]
    environment: Callable[[Any, random.Random | None], Any]

    def binding(self, settings: Any, rng: random.Random | None = None) -> Binding:
        return Binding(self.actor, env=self.environment(settings, rng))


def load_application(spec: str = DEFAULT_APPLICATION) -> Application:
    """Import ``MODULE:NAME`` and check that it is an `Application`."""
    module, sep, name = spec.partition(":")
    if not (module and sep and name):
        raise ApplicationError(f"application {spec!r}: expected MODULE:NAME")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ApplicationError(f"application {spec!r} cannot be loaded: {exc}") from exc
    if not isinstance(found, Application):
        raise ApplicationError(f"application {spec!r} is not a roomkeeper Application")
    return found
