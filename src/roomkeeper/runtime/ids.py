"""Actor ids: SHA-256 of namespace and name, like Durable Objects' ``idFromName``."""

from __future__ import annotations

import hashlib

import attrs


def _digest(namespace: str, name: str) -> str:
    ns = namespace.encode()
    # Length-prefixed so that ("ab", "c") and ("a", "bc") never collide.
    return hashlib.sha256(len(ns).to_bytes(4, "big") + ns + name.encode()).hexdigest()


@attrs.frozen(eq=False)
class ActorId:
    """The identity of one actor: stable across processes, restarts and machines."""

    namespace: str
    name: str
    hex: str = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "hex", _digest(self.namespace, self.name))

    @property
    def short(self) -> str:
        """The first 12 hex digits, for logs."""
        return self.hex[:12]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorId) and other.hex == self.hex

    def __hash__(self) -> int:
        return hash(self.hex)

    def __str__(self) -> str:
        return f"{self.namespace}:{self.short}"
