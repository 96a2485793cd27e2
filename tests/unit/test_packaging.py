"""pyproject.toml lists every package, so that `pip install .` ships the whole tree."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _setuptools() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        table: dict[str, object] = tomllib.load(f)["tool"]["setuptools"]
    return table


def _packages_on_disk(name: str, folder: Path) -> set[str]:
    return {
        ".".join([name, *init.parent.relative_to(folder).parts])
        for init in folder.rglob("__init__.py")
        if "__pycache__" not in init.parts
    }


def test_every_package_folder_is_listed() -> None:
    table = _setuptools()
    listed = set(table["packages"])  # type: ignore[call-overload]
    mapping: dict[str, str] = table["package-dir"]  # type: ignore[assignment]
    on_disk = set()
    for name, folder in mapping.items():
        on_disk |= _packages_on_disk(name, ROOT / folder)
    missing = sorted(on_disk - listed)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_every_listed_package_has_a_folder() -> None:
    table = _setuptools()
    mapping: dict[str, str] = table["package-dir"]  # type: ignore[assignment]
    for package in table["packages"]:  # type: ignore[attr-defined]
        root, *rest = package.split(".")
        folder = ROOT / mapping[root] / Path(*rest)
        assert (folder / "__init__.py").is_file(), f"{package}: no {folder}/__init__.py"


def test_mypy_checks_every_package_folder_and_the_benchmarks() -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        checked = tomllib.load(f)["tool"]["mypy"]["files"]
    mapping: dict[str, str] = _setuptools()["package-dir"]  # type: ignore[assignment]
    assert sorted(checked) == sorted([*mapping.values(), "bench"])
