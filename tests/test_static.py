"""Static checks stay wired in: .ci/run runs ruff and mypy over planner/, and ruff passes (mypy, ~1 min, runs in CI only)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_ruff_and_mypy_after_installing() -> None:
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    ruff, mypy = lines.index("python3 -m ruff check planner"), lines.index("python3 -m mypy planner")
    install = next(i for i, ln in enumerate(lines) if "pip install" in ln)
    assert install < ruff and install < mypy


def test_ruff_passes_on_planner() -> None:
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "planner"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
