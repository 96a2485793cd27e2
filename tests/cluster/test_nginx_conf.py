"""docs/nginx/cluster.conf on a real nginx whose nodes are all down: nginx's own answers
are JSON like roomkeeper's, and an event stream is never refused (a browser's
EventSource would give up for good): it gets a 200 that says when to come back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .harness import Nginx, free_port


@pytest.fixture
def lonely_nginx(tmp_path: Path) -> Iterator[Nginx]:
    """nginx with cluster.conf in front of three ports nobody listens on."""
    nginx = Nginx(tmp_path, free_port())
    nginx.start([free_port() for _ in range(3)])
    try:
        yield nginx
    finally:
        nginx.close()


def test_no_node_answers_a_post_with_json_503(lonely_nginx: Nginx) -> None:
    body = {"sender": "x", "to": "y", "token": "z", "signal": {}}
    response = httpx.post(f"{lonely_nginx.url}/api/signal?room=r", json=body, timeout=10)
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["retry-after"] == "1"
    assert response.headers["access-control-allow-origin"] == "*"
    assert set(response.json()) == {"error"}


def test_no_node_answers_a_stream_with_200_and_retry(lonely_nginx: Nginx) -> None:
    response = httpx.get(f"{lonely_nginx.url}/api/connect?room=r", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.text == "retry: 1000\n\n"


def test_metrics_and_admin_are_not_served_through_nginx(lonely_nginx: Nginx) -> None:
    for path in ("/metrics", "/admin/rooms"):
        response = httpx.get(f"{lonely_nginx.url}{path}", timeout=10)
        assert response.status_code == 403, response.text
        assert response.headers["content-type"] == "application/json"
        assert "error" in response.json()


def test_scaling_md_shows_the_shipped_config_byte_for_byte() -> None:
    root = Path(__file__).resolve().parents[2]
    conf = (root / "docs" / "nginx" / "cluster.conf").read_text("utf-8")
    assert f"```nginx\n{conf}```\n" in (root / "docs" / "scaling.md").read_text("utf-8")
