"""The README tells the truth: its Quickstart is two commands that run, CI runs the second, its
sample output has the shape of what the tool prints now, and what it names (commands, options,
catalog models, links, JSON keys in docs/json-schema.md) exists.

After a change to the plan output, refresh the sample with
``python3 tests/test_readme.py --update-sample``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
STALE = "the README's sample is stale: run `python3 tests/test_readme.py --update-sample`"


def section(title: str, text: str | None = None) -> str:
    text = README.read_text() if text is None else text
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def quickstart() -> list[str]:
    block = re.search(r"```\n(.*?)```", section("Quickstart"), re.DOTALL).group(1)
    return [line for line in block.splitlines() if line.strip()]


def sample(text: str | None = None) -> tuple[list[str], list[str]]:
    """(the fitcheck arguments of the README's sample, the output it shows)."""
    block = re.search(r"```\n(.*?)```", section("Sample output", text), re.DOTALL).group(1)
    first, *output = block.rstrip("\n").split("\n")
    assert first.startswith("$ fitcheck "), first
    return first.split()[2:], output


def fitcheck(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the command as a user would, offline: HF_HUB_OFFLINE=1 plans from the bundled catalog."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    return subprocess.run([sys.executable, "-m", "planner.cli", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300, check=False)


def shape(lines: list[str]) -> list[str]:
    """The sample's structure: every line up to the bar legend with its numbers masked and its
    spacing collapsed, then the section headings."""
    head, rest = [], []
    for i, line in enumerate(lines):
        if "█ weights" in line:
            head, rest = lines[: i + 1], lines[i + 1:]
            break
    else:
        raise AssertionError("no bar legend in the output")
    masked = [" ".join(re.sub(r"\d[\d.,]*", "#", line).split()) for line in head]
    # the bars' lengths follow the numbers
    masked = [re.sub(r"[█▓▒░|]+", "BAR", line) for line in masked]
    return masked + [re.sub(r"\d[\d.,]*", "#", line) for line in rest if line and not line.startswith(" ")]


# --- Quickstart -------------------------------------------------------------------------------

def test_quickstart_is_two_commands_plan_and_tests() -> None:
    plan, tests = quickstart()
    assert "fitcheck plan " in plan and "pip install" in plan
    assert "pytest" in tests and "pip install" in tests


def test_ci_runs_the_readme_test_command() -> None:
    _, tests = quickstart()
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines()


def test_ci_fails_when_pytest_fails_or_collects_nothing() -> None:
    """pytest exits 5 when it collects no test; CI must not turn that, or any failure, into a pass."""
    _, tests = quickstart()
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^set -[a-z]*e[a-z]*( |$)", ci, re.MULTILINE)
    commands = [line for line in ci.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1] == tests, "the test command must be the last one, so its exit status is CI's"


def test_suite_runs_in_parallel_with_xdist_from_the_test_extra() -> None:
    _, tests = quickstart()
    assert " -m pytest -n auto" in tests
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    assert any(req.replace(" ", "").startswith("pytest-xdist") for req in extra)


def test_quickstart_plan_command_runs_offline_from_the_catalog() -> None:
    plan, _ = quickstart()
    command = plan.split("&&", 1)[1].split()
    assert command[:2] == ["fitcheck", "plan"]
    run = fitcheck(*command[1:])
    assert run.returncode == 0, run.stderr
    assert "(catalog)" in run.stdout and "bundled catalog" in run.stdout
    assert "✔ Fits" in run.stdout or "✘ Nothing fits" in run.stdout


# --- Sample output ----------------------------------------------------------------------------

def test_sample_output_has_the_shape_of_the_real_output() -> None:
    args, shown = sample()
    assert "--hardware" in args, "the sample must be reproducible anywhere: plan for a bundled profile"
    run = fitcheck(*args)
    assert run.returncode == 0, run.stderr
    assert shape(shown) == shape(run.stdout.rstrip("\n").split("\n")), STALE


def test_shape_sees_a_changed_column_and_a_missing_section() -> None:
    _, shown = sample()
    renamed = [line.replace("headroom", "spare") for line in shown]
    assert shape(renamed) != shape(shown)
    without = [line for line in shown if line != "Rejected"]
    assert shape(without) != shape(shown)
    # numbers alone do not change the shape
    assert shape([re.sub(r"\d", "7", line) for line in shown]) == shape(shown)


def test_how_to_read_it_names_every_column_of_the_table() -> None:
    _, shown = sample()
    header = next(line for line in shown if line.split()[:2] == ["device", "weights"])
    columns = re.split(r"\s{2,}", header.strip())[1:]
    guide = section("Sample output").split("How to read it:", 1)[1]
    for column in columns:
        assert f"**{column}**" in guide, column
    assert "page cache" in guide


# --- What the README names exists -------------------------------------------------------------

def test_every_listed_command_and_option_exists() -> None:
    from click.testing import CliRunner

    from planner.cli.main import cli

    block = re.search(r"```\n(.*?)```", section("Commands"), re.DOTALL).group(1)
    commands = [line.split()[1] for line in block.splitlines() if line.startswith("fitcheck ")]
    assert commands
    runner = CliRunner()
    for command in commands:
        assert runner.invoke(cli, [command, "--help"]).exit_code == 0, command
    helptext = runner.invoke(cli, ["plan", "--help"]).output
    table = section("Commands").split("Options of `plan` and `check`:", 1)[1].split("###", 1)[0]
    options = set(re.findall(r"`(--[a-z][a-z-]*)", table))
    assert len(options) > 15
    for option in options:
        assert re.search(rf"{option}\b", helptext), option


def test_offline_catalog_list_names_bundled_models() -> None:
    from planner.sources import catalog

    block = section("Models in the offline catalog").split("BEGIN offline catalog", 1)[1].split("END offline catalog", 1)[0]
    listed = re.findall(r"^\| `([^`]+)`", block, re.MULTILINE)
    assert listed
    assert set(listed) == set(catalog.names())  # every bundled model, and only those


def test_relative_links_exist() -> None:
    for doc in [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "SECURITY.md"]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} links to {target}"


def test_paths_the_docs_name_exist() -> None:
    """Every `planner/...`, `tests/...`, `benchmarks/...` or `fuzz/...` path in backticks is there."""
    for doc in [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "SECURITY.md"]:
        for path in re.findall(r"`((?:planner|tests|benchmarks|fuzz)/[\w./*-]*)`", doc.read_text()):
            assert list(ROOT.glob(path.rstrip("/"))), f"{doc.name} names {path}"


def test_json_schema_page_names_every_key_plan_json_prints() -> None:
    args, _ = sample()
    run = fitcheck(*args, "--json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    page = (ROOT / "docs" / "json-schema.md").read_text()
    plan = doc["plan"]
    keys = {*doc, *doc["model"], *plan, *plan["load"], *doc["hardware"]}
    for memory in plan["memory"].values():
        keys |= set(memory)
    missing = sorted(k for k in keys if not re.search(rf"\b{re.escape(k)}\b", page))
    assert not missing, f"docs/json-schema.md does not name {missing}"


# --- Refreshing the sample ----------------------------------------------------------------------

def update_sample() -> None:
    """Rewrite the README's sample with what the tool prints now (same arguments)."""
    text = README.read_text()
    args, shown = sample(text)
    run = fitcheck(*args)
    if run.returncode != 0:
        raise SystemExit(run.stderr)
    old = "\n".join(shown)
    new = run.stdout.rstrip("\n")
    README.write_text(text.replace(old, new, 1))
    print(f"README sample: {len(shown)} -> {len(new.splitlines())} lines")


if __name__ == "__main__":
    if sys.argv[1:] == ["--update-sample"]:
        update_sample()
    else:
        sys.exit(pytest.main([__file__, "-q"]))
