"""openapi.json (served at /openapi.json) is valid OpenAPI 3.0.3, keeps the original
contract and marks every addition as ours. The original contract is kept beside this file
(contract/openapi.json), a copy of the shared spec, so the comparison runs in any clone; a
test checks that the copy still equals the shared spec when one is beside the repository.
tests/integration/test_openapi.py checks the document against a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from roomkeeper.signaling import MAX_BATCH

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = Path(__file__).resolve().parent / "contract" / "openapi.json"
SHARED_SPEC = ROOT.parent / "shared" / "spec" / "openapi.json"
MARK = "x-roomkeeper-extension"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# The original contract (contract/openapi.json): what existing clients rely on.
ORIGINAL: dict[tuple[str, str], dict[str, set[str]]] = {
    ("/api/connect", "get"): {
        "parameters": {"room", "session_id", "token", "X-Session-Id", "X-Token", "Authorization"},
        "responses": {"200", "400"},
        "body": set(),
    },
    ("/api/signal", "post"): {
        "parameters": {"room", "X-Token", "Authorization"},
        "responses": {"200", "400", "403", "411", "413", "429"},
        "body": {"sender", "to", "token", "signal"},
    },
    ("/api/leave", "post"): {
        "parameters": {"room", "X-Token", "Authorization"},
        "responses": {"200", "403", "411", "413"},
        "body": {"sender", "token"},
    },
}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    text = resources.files("roomkeeper.http").joinpath("openapi.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def _resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    target: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    assert isinstance(target, dict)
    return target


def _marked(doc: dict[str, Any], node: dict[str, Any]) -> bool:
    return _resolve(doc, node).get(MARK) is True


def test_the_document_is_valid_openapi_3_0_3(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.0.3"
    validate(doc)


def test_the_original_contract_is_kept(doc: dict[str, Any]) -> None:
    for (path, method), original in ORIGINAL.items():
        op = doc["paths"][path][method]
        assert MARK not in op, f"{method} {path} is in the original contract"
        names = {p["name"] for p in op["parameters"]}
        assert original["parameters"] <= names, (path, original["parameters"] - names)
        assert original["responses"] <= set(op["responses"]), path
        for status in original["responses"]:
            assert not _marked(doc, op["responses"][status]), f"{path} {status} is original"
        if original["body"]:
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            assert original["body"] <= set(schema["properties"]), path
            assert set(schema["required"]) == original["body"], path


def _contains(ours: Any, original: Any, where: str) -> None:
    """Every value of ``original`` is in ``ours``; a string or a list may only have grown
    at its end."""
    if isinstance(original, dict):
        assert isinstance(ours, dict), where
        for key, value in original.items():
            assert key in ours, f"{where}/{key} is gone"
            _contains(ours[key], value, f"{where}/{key}")
    elif isinstance(original, list):
        assert isinstance(ours, list) and len(ours) >= len(original), where
        for i, value in enumerate(original):
            _contains(ours[i], value, f"{where}/{i}")
    elif isinstance(original, str):
        assert isinstance(ours, str) and ours.startswith(original), f"{where} changed"
    else:
        assert ours == original, f"{where} changed"


def test_nothing_of_the_original_file_is_changed(doc: dict[str, Any]) -> None:
    _contains(doc, json.loads(CONTRACT.read_text("utf-8")), "#")


def test_the_kept_contract_is_the_shared_spec() -> None:
    if not SHARED_SPEC.is_file():
        pytest.skip(f"no shared spec at {SHARED_SPEC} (a plain clone): nothing to compare")
    assert json.loads(CONTRACT.read_text("utf-8")) == json.loads(SHARED_SPEC.read_text("utf-8"))


def test_every_addition_is_marked_as_ours(doc: dict[str, Any]) -> None:
    for path, method, op in _operations(doc):
        original = ORIGINAL.get((path, method))
        if original is None:
            assert _marked(doc, op), f"{method} {path} is ours: mark it"
            continue
        for param in op["parameters"]:
            if param["name"] not in original["parameters"]:
                assert _marked(doc, param), f"{path} parameter {param['name']}"
        for status, response in op["responses"].items():
            if status not in original["responses"]:
                assert _marked(doc, response), f"{method} {path} {status}"
        for media, content in op.get("requestBody", {}).get("content", {}).items():
            if media != "application/json":
                assert _marked(doc, content), f"{path} body as {media}"
                continue
            for name, prop in content["schema"]["properties"].items():
                if name not in original["body"]:
                    assert _marked(doc, prop), f"{path} body field {name}"
    for kind, items in doc["components"].items():
        for name, item in items.items():
            assert _marked(doc, item), f"components/{kind}/{name}"


def test_the_batch_limit_is_the_servers(doc: dict[str, Any]) -> None:
    body = doc["paths"]["/api/signal"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["properties"]["signals"]["maxItems"] == MAX_BATCH
