"""Fixes from the code review of issue 11, item 4 (each of these failed before its fix)."""

from __future__ import annotations

import ast
import os
import re
import sys
import tomllib
from pathlib import Path

import pytest

import planner.cli.main as cli_main
from planner.core.errors import FitcheckError, NoFeasiblePlan

ROOT = Path(__file__).resolve().parents[1]


def _imported_distributions() -> set[str]:
    mods: set[str] = set()
    for p in (ROOT / "planner").rglob("*.py"):
        for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(n, ast.Import):
                mods |= {a.name.split(".")[0] for a in n.names}
            elif isinstance(n, ast.ImportFrom) and not n.level and n.module:
                mods.add(n.module.split(".")[0])
    return {m for m in mods if m not in sys.stdlib_module_names and m != "planner"}


def test_every_imported_package_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [d for group in project["optional-dependencies"].values() for d in group]
    declared = {re.split(r"[<>=!\[ ;]", s, maxsplit=1)[0].lower().replace("-", "_") for s in specs}
    import_names = {"pynvml": "nvidia_ml_py"}
    missing = {m for m in _imported_distributions() if import_names.get(m, m).lower() not in declared}
    assert missing == set()
    # httpx2 comes only with huggingface_hub >= 2.0: the floor says so
    hub = next(s for s in project["dependencies"] if s.startswith("huggingface_hub"))
    assert hub == "huggingface_hub>=2.0"


def test_written_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        cli_main._atomic_write(tmp_path / "plan.json", "{}\n")
    finally:
        os.umask(old)
    assert (tmp_path / "plan.json").stat().st_mode & 0o777 == 0o644


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "x").write_text("")  # a non-empty folder: the rename onto it fails
    with pytest.raises(FitcheckError, match="cannot write"):
        cli_main._atomic_write(target, "text")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_exit_code_of_an_error_is_the_errors(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def nothing_fits(o: dict) -> list:
        raise NoFeasiblePlan("no plan fits t")

    monkeypatch.setattr(cli_main, "_run_plans", nothing_fits)
    with pytest.raises(SystemExit) as e:
        cli_main.main(["plan", "org/x"])
    assert e.value.code == NoFeasiblePlan.exit_code == 1
    assert "no plan fits t" in capsys.readouterr().err
