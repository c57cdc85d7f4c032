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
