"""``--runtime auto`` ranks transformers and GGUF plans of one repo in one table."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import gguf_models
from machines import cpu_only
from planner import api
from planner.core.records import Constraints
from planner.report.schema import report_dict

HW = cpu_only(8 << 30)


def _both(tiny_models, tmp_path: Path) -> Path:
    folder = tmp_path / "both"
    shutil.copytree(tiny_models["llama"], folder)
    gguf_models.write_llama(folder / "tiny-Q8_0.gguf", qtype="Q8_0")
    return folder


def test_auto_plans_every_runtime_that_runs_the_folder(tiny_models, tmp_path: Path) -> None:
    folder = _both(tiny_models, tmp_path)
    r = api.plan(str(folder), hardware=HW, constraints=Constraints(context=64))
    assert r.solution is not None
    engines = {p.runtime for p in (r.solution.chosen, *r.solution.alternatives, *r.solution.rejected)}
    assert "transformers" in engines and {"llama.cpp", "llama-cpp-python", "ollama"} & engines
    assert {r.runtime, *(o.runtime for o in r.others)} == {"transformers", "gguf"}
    doc = report_dict(r)
    json.dumps(doc)
    # each plan is described by its own runtime
    for block in (doc["plan"], *doc["alternatives"]):
        assert ("gguf" in block) == (block["runtime"] in ("llama.cpp", "llama-cpp-python", "ollama"))
    # emit follows the plan's runtime
    gguf_plan = next(p for p in (r.solution.chosen, *r.solution.alternatives) if p.runtime != "transformers")
    assert any(name.startswith("llama") for name in api.emit(r, gguf_plan).commands) or api.emit(r, gguf_plan).files
    only = api.plan(str(folder), hardware=HW, constraints=Constraints(context=64), runtime="transformers")
    assert {p.runtime for p in (only.solution.chosen, *only.solution.alternatives)} == {"transformers"}


def test_cli_auto_table_shows_both_runtimes(tiny_models, tmp_path: Path) -> None:
    folder = _both(tiny_models, tmp_path)
    out = subprocess.run([sys.executable, "-m", "planner.cli.main", "plan", str(folder), "--context", "64",
                          "--hardware", "cpu-laptop-8gb", "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    runtimes = {doc["plan"]["runtime"], *(a["runtime"] for a in doc["alternatives"])}
    assert "transformers" in runtimes and runtimes & {"llama.cpp", "llama-cpp-python", "ollama"}
