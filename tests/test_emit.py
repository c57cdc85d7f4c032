"""Emitted scripts and plan files: escaped by construction, no tokens, nothing but the load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from machines import cpu_only
from scripts import script_parts
from planner import api
from planner.runtimes.transformers import emit
from planner.core.records import Constraints
from planner.report.schema import report_dict

CANARY = "hf_CANARYcanaryCANARYcanary0123456789"
HW = cpu_only(16 * 1024**3)


def check_script_shape(text: str) -> dict:
    """Parse a script, assert it does nothing but load and generate, and return its constants."""
    constants, calls = script_parts(text)
    assert not calls & {"eval", "exec", "__import__", "os.system", "subprocess.run", "compile", "open"}
    return constants


HOSTILE_NAMES = [
    'quote"double',
    "quote'single",
    'triple"""docstring',
    "newline\ninjected = 1",
    "back\\slash",
    "');import os;os.system('echo pwned')#",
    "{braces}{0}",
    "unicode-\u2028-line-sep",
    "tab\there",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_local_paths_become_inert_literals(tiny_models, tmp_path: Path, name: str) -> None:
    folder = tmp_path / name
    shutil.copytree(tiny_models["llama"], folder)
    r = api.plan(str(folder), hardware=HW, constraints=Constraints(context=64))
    p = r.solution.chosen
    text = emit.script(r, p, offload_dir=str(tmp_path / ("off" + name)))
    constants = check_script_shape(text)
    assert constants["MODEL"] == str(folder)
    doc = json.loads(emit.plan_file(r, p))
    assert doc["load"]["model"] == str(folder)


def test_scripts_and_plans_never_carry_the_token(tiny_models, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", CANARY)
    r = api.plan(str(tiny_models["llama"]), hardware=HW, constraints=Constraints(context=64), token=CANARY)
    for p in (r.solution.chosen, *r.solution.alternatives):
        assert CANARY not in emit.script(r, p) and CANARY not in emit.plan_file(r, p)
    assert CANARY not in json.dumps(report_dict(r))


def test_trust_remote_code_only_when_asked(tiny_models) -> None:
    r = api.plan(str(tiny_models["llama"]), hardware=HW, constraints=Constraints(context=64))
    p = r.solution.chosen
    assert "trust_remote_code" not in emit.script(r, p)
    with_remote = emit.script(r, p, trust_remote_code=True)
    assert 'kwargs["trust_remote_code"] = True' in with_remote and "runs Python code from the model repo" in with_remote


def test_literal_accepts_only_plain_data() -> None:
    assert emit.literal({"a": [1, "x", None, True, 2.5]}) == "{'a': [1, 'x', None, True, 2.5]}"
    for bad in (object(), {("t",): 1}, {1: {2: {3: {4: {5: {6: {7: {8: {9: {10: 1}}}}}}}}}}, b"bytes"):
        with pytest.raises(ValueError):
            emit.literal(bad)
