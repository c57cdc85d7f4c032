"""The README's Quickstart is exactly two commands, and CI runs the second one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quickstart() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quickstart_is_two_commands_plan_and_tests() -> None:
    plan, tests = quickstart()
    assert "fitcheck plan " in plan and "pip install" in plan
    assert "pytest" in tests and "pip install" in tests


def test_ci_runs_the_readme_test_command() -> None:
    _, tests = quickstart()
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    # each step of the command, in order (CI runs the static checks between the install and pytest)
    steps = [ci.index(step.strip()) for step in tests.split("&&")]
    assert steps == sorted(steps)
