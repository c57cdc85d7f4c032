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


def _folder_files(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in folder.iterdir() if p.is_file()}


def test_auto_plans_the_hubs_most_downloaded_gguf_derivative_beside_a_safetensors_model(
        hub, repo_id: str, tiny_models, tmp_path: Path) -> None:
    base, quantized = repo_id + "-base", repo_id + "-GGUF"
    hub.add_repo(base, _folder_files(tiny_models["llama"]))
    gguf_models.write_llama(tmp_path / "tiny-Q8_0.gguf", qtype="Q8_0")
    hub.add_repo(quantized, {"tiny-Q8_0.gguf": tmp_path / "tiny-Q8_0.gguf"}, tags=("gguf", f"base_model:quantized:{base}"), downloads=10)
    hub.add_repo(quantized + "-less", {"tiny-Q8_0.gguf": tmp_path / "tiny-Q8_0.gguf"}, tags=("gguf", f"base_model:quantized:{base}"),
                 downloads=1)
    hub.add_repo(repo_id + "-other", {"tiny-Q8_0.gguf": tmp_path / "tiny-Q8_0.gguf"}, tags=("gguf", "base_model:quantized:x/y"))
    r = api.plan(base, hardware=HW, constraints=Constraints(context=64))
    gguf_view = next(o for o in (r, *r.others) if o.runtime == "gguf")
    assert gguf_view.snapshot.id == quantized  # the most downloaded derivative, not the others
    assert any(f"from {quantized}" in n and "model tree" in n for n in gguf_view.snapshot.notes)
    engines = {p.runtime for p in (r.solution.chosen, *r.solution.alternatives)}
    assert "transformers" in engines and engines & {"llama.cpp", "llama-cpp-python", "ollama"}
    searches = [q for q in hub.requests if q.path == "/api/models"]
    assert len(searches) == 1 and searches[0].query["filter"] == [f"base_model:quantized:{base}", "gguf"]
    # --gguf-repo names one directly (no search); --runtime transformers looks for none
    hub.clear_log()
    named = api.plan(base, hardware=HW, constraints=Constraints(context=64).with_options(gguf_repo=quantized + "-less"))
    assert next(o for o in (named, *named.others) if o.runtime == "gguf").snapshot.id == quantized + "-less"
    assert not [q for q in hub.requests if q.path == "/api/models"]
    hub.clear_log()
    api.plan(base, hardware=HW, constraints=Constraints(context=64), runtime="transformers")
    assert not [q for q in hub.requests if q.path == "/api/models"]


def test_a_model_without_gguf_derivatives_costs_one_search_and_plans_as_before(hub, repo_id: str, tiny_models) -> None:
    hub.add_repo(repo_id, _folder_files(tiny_models["llama"]))
    r = api.plan(repo_id, hardware=HW, constraints=Constraints(context=64))
    assert r.runtime == "transformers" and r.others == ()
    assert len([q for q in hub.requests if q.path == "/api/models"]) == 1
