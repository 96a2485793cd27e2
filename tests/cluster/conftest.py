"""Fixtures of the cluster tests: one cluster (3 nodes, nginx, a fresh database on the
session's PostgreSQL) per module, healed (every node running) before each test.

Measured figures (failover times and the like) are printed as ``FIGURE name: value``
lines and collected in the terminal summary, so that a run of this folder shows what
docs/scaling.md quotes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from ..support.postgres import PostgresServer
from .harness import Cluster, running_cluster

FIGURES: list[str] = []


def figure(name: str, value: float, unit: str = "s") -> None:
    line = f"FIGURE {name}: {value:.2f} {unit}"
    FIGURES.append(line)
    print(line)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("cluster figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def cluster(
    postgres_server: PostgresServer,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Cluster]:
    """A module's cluster; node flags of its own in the module's ``CLUSTER_FLAGS``, and
    the node that reaches PostgreSQL through a relay in ``CLUSTER_RELAYED``."""
    flags = getattr(request.module, "CLUSTER_FLAGS", {})
    relayed = getattr(request.module, "CLUSTER_RELAYED", None)
    tmp = tmp_path_factory.mktemp("cluster")
    with running_cluster(postgres_server, tmp, flags=flags, relayed=relayed) as running:
        yield running


@pytest.fixture
def healthy(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The module's cluster with every node up; its logs are shown if the test fails."""
    cluster.heal()
    yield cluster
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(cluster.logs())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    setattr(item, f"rep_{report.when}", report)  # type: ignore[attr-defined]
    return report


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        yield client
