"""pytest fixtures for testing against a real roomkeeper server.

Loaded automatically (entry point ``pytest11``) once roomkeeper is installed:

- ``roomkeeper_server``: a fresh server per test (`roomkeeper.testing.EmbeddedServer`);
  settings from ``roomkeeper_overrides`` and the test's ``@pytest.mark.roomkeeper(...)``.
- ``roomkeeper_server_session``: one server for the whole session (``roomkeeper_overrides``
  only). Tests sharing it should use their own room names.
- ``roomkeeper_server_factory``: call it with overrides to start more servers; all are
  stopped after the test.
- ``roomkeeper_overrides``: session-scoped, ``{}``; override it in a conftest.py to change
  the settings of every server above.

Importing this module starts nothing and imports neither trio nor the server: the
fixtures import ``roomkeeper.testing`` when a test first asks for one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from roomkeeper.testing import EmbeddedServer

__all__ = [
    "roomkeeper_overrides",
    "roomkeeper_server",
    "roomkeeper_server_factory",
    "roomkeeper_server_session",
]

MARKER = "roomkeeper"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**settings): roomkeeper settings for this test's roomkeeper_server "
        "(any roomkeeper.config.Config field, e.g. grace=5)",
    )


@pytest.fixture(scope="session")
def roomkeeper_overrides() -> dict[str, Any]:
    """Settings for every embedded server of the run, over ``roomkeeper.testing.TEST_DEFAULTS``.
    Override this fixture (keeping it session-scoped) to change them."""
    return {}


@pytest.fixture
def roomkeeper_server_factory(
    roomkeeper_overrides: dict[str, Any],
) -> Iterator[Callable[..., EmbeddedServer]]:
    """``make(**settings)`` starts another server; each is stopped after the test."""
    from contextlib import ExitStack

    from roomkeeper.testing import serve

    with ExitStack() as stack:

        def make(**settings: Any) -> EmbeddedServer:
            return stack.enter_context(serve(**{**roomkeeper_overrides, **settings}))

        yield make


@pytest.fixture
def roomkeeper_server(
    request: pytest.FixtureRequest, roomkeeper_overrides: dict[str, Any]
) -> Iterator[EmbeddedServer]:
    """A real roomkeeper server for this test, on a free loopback port; ``.url``."""
    from roomkeeper.testing import serve

    settings = dict(roomkeeper_overrides)
    for marker in reversed(list(request.node.iter_markers(MARKER))):
        if marker.args:
            raise TypeError(f"@pytest.mark.{MARKER} takes keyword arguments only")
        settings.update(marker.kwargs)
    with serve(**settings) as server:
        yield server


@pytest.fixture(scope="session")
def roomkeeper_server_session(roomkeeper_overrides: dict[str, Any]) -> Iterator[EmbeddedServer]:
    """One real roomkeeper server shared by every test of the session."""
    from roomkeeper.testing import serve

    with serve(**roomkeeper_overrides) as server:
        yield server
