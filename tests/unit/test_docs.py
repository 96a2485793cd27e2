"""The README and docs/ stay true to the code: the commands at the top, every setting with
its variable and default, and links that lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

from roomkeeper.config import Config, env_name, flag_name

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```$", re.MULTILINE | re.DOTALL)
ROW = re.compile(r"^\| `(--[a-z-]+)` \| `(ROOMKEEPER_[A-Z_]+)` \| (.+?) \|", re.MULTILINE)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _default_text(field: attrs.Attribute[object]) -> str:
    """How the README writes a setting's default."""
    if field.name == "storage":
        return "`<data folder>/roomkeeper/roomkeeper.sqlite3`"
    if field.name == "memory_budget":
        return "a quarter of physical memory, at most `1073741824`"
    value = field.default
    if value in ("", ()):
        return "(none)"
    if isinstance(value, tuple):
        value = ",".join(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def test_the_readme_opens_with_the_run_and_test_commands() -> None:
    text = README.read_text("utf-8")
    title, description, *_ = [line for line in text.splitlines() if line.strip()]
    assert title.startswith("# ") and not description.startswith(("#", "`"))
    head = text.split("\n## ", 1)[0]
    run, test = FENCE.findall(head)[:2]
    assert run.strip().endswith("pip install . && roomkeeper serve")
    assert "pip install -e '.[test]'" in test
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    pytest_command = test.strip().rsplit("&& ", 1)[1]
    assert pytest_command == "python -m pytest -q" and pytest_command in ci
    assert "<!-- screenshot -->" in head


def test_the_readme_lists_every_setting_with_its_variable_and_default() -> None:
    rows = {flag: (env, default) for flag, env, default in ROW.findall(README.read_text("utf-8"))}
    fields = attrs.fields(Config)
    assert set(rows) == {flag_name(f.name) for f in fields}, "README configuration table"
    for field in fields:
        env, default = rows[flag_name(field.name)]
        assert env == env_name(field.name)
        assert default == _default_text(field), field.name


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_files(page: Path) -> None:
    text = FENCE.sub("", page.read_text("utf-8"))
    for target in LINK.findall(text):
        if "://" in target or target.startswith("#"):
            continue
        path = (page.parent / target.split("#", 1)[0]).resolve()
        assert path.exists(), f"{page.name} links to {target}"
