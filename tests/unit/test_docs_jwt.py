"""The ticket-minting examples of docs/operations.md#admission-by-jwt work: the Python one
and, where node is installed, the Node one make tickets that roomkeeper's verifier admits."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from roomkeeper.admission import load_admission

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
SECRET = "a-backend-and-roomkeeper-shared-secret"
ROOM = "team-7/standup"


def example(language: str) -> str:
    text = OPERATIONS.read_text("utf-8")
    section = text.split("\n## Admission by JWT\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(rf"^```{language}\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, f"one {language} example in the section"
    return str(blocks[0])


def admits(ticket: str) -> bool:
    admission = load_admission(f"jwt:hmac:{SECRET}")
    assert admission is not None
    problem = admission.refusal(ROOM, ticket)
    assert problem is None, problem
    return "another room" in (admission.refusal("team-8/x", ticket) or "")


def test_the_python_example() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(example("python"), str(OPERATIONS), "exec"), namespace)
    assert admits(namespace["room_ticket"](ROOM, SECRET))


def test_the_node_example() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    script = (
        example("js") + "\nprocess.stdout.write(roomTicket(process.argv[1], process.argv[2]));\n"
    )
    done = subprocess.run(
        [node, "-e", script, ROOM, SECRET], capture_output=True, text=True, timeout=30, check=True
    )
    assert admits(done.stdout)
