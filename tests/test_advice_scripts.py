"""Issue 13 items 15 and 16: the plan checks what the emitted script needs (tokenizer files,
packages) and the script runs without a tokenizer; verify checks the hardware first and reports
tokens/s and load time against the prediction."""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from planner.cli.main import main

ROOM = ("--ram", "16GiB", "--disk", "100GB")


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = 0
    try:
        main(list(args))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 2
    finally:
        gc.enable()
    out = capsys.readouterr()
    return code, out.out, out.err


def _run_script(script: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, str(script), *args], check=False, capture_output=True, text=True, timeout=300, env=env)


def test_a_folder_without_a_tokenizer_is_planned_so_and_its_script_generates_from_ids(capsys, tiny_models, tmp_path):
    folder = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_models["llama"], folder)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (folder / f).unlink()
    script, plan = tmp_path / "load.py", tmp_path / "plan.json"
    code, out, err = cli(capsys, "plan", str(folder), *ROOM, "--script", str(script), "--config", str(plan), "--new-tokens", "3")
    assert code == 0, err
    assert "no tokenizer files" in out  # the plan says so
    assert json.loads(plan.read_text())["load"]["tokenizer"] == []
    r = _run_script(script)
    assert r.returncode == 0, r.stderr[-2000:]
    ids = r.stdout.split()
    assert len(ids) == 8 + 3 and all(t.isdigit() for t in ids)  # the prompt ids and three new ones
    r = _run_script(script, "5 6 7")
    assert r.returncode == 0 and r.stdout.split()[:3] == ["5", "6", "7"]


def test_a_tokenizer_that_cannot_be_built_falls_back_to_token_ids(capsys, tiny_models, tmp_path):
    folder = tmp_path / "broken-tokenizer"
    shutil.copytree(tiny_models["llama"], folder)
    (folder / "tokenizer.json").write_text("{\"not\": \"a tokenizer\"}")
    script = tmp_path / "load.py"
    code, _, err = cli(capsys, "plan", str(folder), *ROOM, "--script", str(script), "--new-tokens", "2")
    assert code == 0, err
    r = _run_script(script)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "generating from token ids" in r.stderr
    assert all(t.isdigit() for t in r.stdout.split())


def test_a_folder_with_a_tokenizer_still_decodes_text(capsys, tiny_models, tmp_path):
    script, plan = tmp_path / "load.py", tmp_path / "plan.json"
    code, out, err = cli(capsys, "plan", str(tiny_models["llama"]), *ROOM, "--script", str(script), "--config", str(plan),
                         "--new-tokens", "2")
    assert code == 0, err
    assert "no tokenizer files" not in out
    assert json.loads(plan.read_text())["load"]["tokenizer"] == ["tokenizer.json"]
    assert "HAS_TOKENIZER = True" in script.read_text()  # tests/test_e2e.py runs such scripts


def test_a_sentencepiece_tokenizer_names_its_package(capsys, tiny_models, tmp_path):
    folder = tmp_path / "spm"
    shutil.copytree(tiny_models["llama"], folder)
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.model").write_bytes(b"\n\x05hello")  # the plan reads only the listing
    plan, script = tmp_path / "plan.json", tmp_path / "load.py"
    code, out, err = cli(capsys, "plan", str(folder), *ROOM, "--config", str(plan), "--script", str(script))
    assert code == 0, err
    load = json.loads(plan.read_text())["load"]
    assert load["tokenizer"] == ["tokenizer.model"] and "sentencepiece" in load["packages"]
    assert "sentencepiece" in script.read_text().split("\n\n")[1]  # "Needs: ..." in the docstring
    assert "sentencepiece package" in out


# --- item 16: verify checks the hardware first, reports timings, shows progress ----------------

def test_verify_of_a_gpu_plan_on_a_machine_without_that_gpu_fails_before_loading(capsys, tiny_models, hub, repo_id, tmp_path):
    from planner.api import verify_plan_text
    from planner.core.errors import VerifyError
    from planner.hardware.profiles import load_profile

    hub.add_local_model(repo_id, tiny_models["llama"])
    plan = tmp_path / "plan.json"
    code, _, err = cli(capsys, "plan", repo_id, "--hardware", "t4", "--config", str(plan))
    assert code == 0, err
    doc = json.loads(plan.read_text())
    assert "cuda:0" in doc["predicted"] and doc["hardware"]["name"] == "t4"
    hub.clear_log()
    progress: list[str] = []
    with pytest.raises(VerifyError, match=r"runs on cuda:0, which this machine does not have \(no GPU\)") as e:
        verify_plan_text(plan.read_text(), hardware=load_profile("cpu-laptop-8gb"), progress=progress.append)
    assert "planned for 't4'" in e.value.message and "without --hardware" in e.value.hint
    assert progress == [] and hub.requests == []  # nothing started, nothing downloaded
    # a GPU that is there but has less free memory than the plan needs on it
    small = load_profile("rtx-4060-8gb")
    from dataclasses import replace

    small = replace(small, gpus=(replace(small.gpus[0], free_bytes=2**20),))
    with pytest.raises(VerifyError, match="free here, and the plan needs"):
        verify_plan_text(plan.read_text(), hardware=small)
    assert hub.requests == []


def test_verify_reports_load_time_and_tokens_per_s_and_shows_progress(capsys, tiny_models, tmp_path):
    from planner.api import verify_plan_text
    from planner.report.verify import render_verification

    plan = tmp_path / "plan.json"
    code, _, err = cli(capsys, "plan", str(tiny_models["llama"]), *ROOM, "--config", str(plan), "--context", "64", "--new-tokens", "8")
    assert code == 0, err
    assert json.loads(plan.read_text())["predicted_speed"]["tokens_per_s"] > 0
    progress: list[str] = []
    v = verify_plan_text(plan.read_text(), progress=progress.append)
    assert [line.split("] ")[1].split(" done")[0] for line in progress] == ["start", "imports", "load", "prefill", "generate"]
    assert "loading the model" in progress[1]
    pred, got = v.timings["tokens_per_s"]
    assert pred is not None and pred > 0 and got is not None and got > 0
    assert v.timings["load_s"][1] > 0
    doc = v.to_dict()
    assert doc["speed"]["tokens_per_s"]["measured"] > 0 and doc["speed"]["load_s"]["measured"] > 0
    text = render_verification(v)
    assert "decode" in text and "tok/s" in text and "load" in text and "measured" in text
