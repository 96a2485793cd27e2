"""Exception groups around one error, as trio nurseries make them."""

from __future__ import annotations

__all__ = ["reraise_single", "unwrap"]


def unwrap(exc: BaseException) -> BaseException:
    """The one error inside (nested) single-member exception groups, or ``exc``."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def reraise_single(group: BaseExceptionGroup[BaseException]) -> None:
    """Raise the only exception of ``group`` as itself (keeping its context), or the group."""
    inner = unwrap(group)
    if inner is group:
        raise group
    context = inner.__context__
    try:
        raise inner
    finally:
        inner.__context__ = context
        del inner, context
