"""Each layer imports only from the layers below it, read from the source (no import is
run): the runtime knows nothing of HTTP, signaling or observability; observability nothing
of HTTP; and nothing in roomkeeper names the application, whose one seam is a setting
(``roomkeeper.application``). tests/integration/test_imports.py checks what importing
``roomkeeper.observe`` actually loads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "roomkeeper"
APPLICATION = "roomkeeper_actors"


def _imports(path: Path) -> set[str]:
    """The absolute names of the modules ``path`` imports (relative imports resolved)."""
    module = ["roomkeeper", *path.relative_to(SRC).with_suffix("").parts]
    package = module if path.name == "__init__.py" else module[:-1]
    if module[-1] == "__init__":
        module = module[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join([*base, *([node.module] if node.module else [])])
            found.add(name)
            found |= {f"{name}.{alias.name}" for alias in node.names}
    return found


def _modules(where: str) -> list[Path]:
    if where.endswith(".py"):
        return [SRC / where]
    return sorted((SRC / where).rglob("*.py")) if where else sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("runtime", ("roomkeeper.http", "roomkeeper.observe", "roomkeeper.signaling")),
        ("observe", ("roomkeeper.http", "roomkeeper.signaling")),
        # the settings sit below every layer that reads them (observe's tracing does)
        ("config.py", ("roomkeeper.http", "roomkeeper.observe", "roomkeeper.runtime")),
        # the collector's policy is the process's, below everything
        ("gcpolicy.py", ("roomkeeper",)),
        ("", (APPLICATION,)),
    ],
)
def test_a_layer_imports_nothing_above_it(folder: str, forbidden: tuple[str, ...]) -> None:
    for path in _modules(folder):
        bad = sorted(
            name
            for name in _imports(path)
            if any(name == f or name.startswith(f + ".") for f in forbidden)
        )
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"


def test_the_import_reader_sees_relative_imports() -> None:
    imported = _imports(SRC / "observe" / "admin.py")
    assert "roomkeeper.runtime" in imported and "roomkeeper.runtime.ids.ActorId" in imported
