"""Emitted scripts and plan files: escaped by construction, no tokens, nothing but the load."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

from machines import cpu_only
from planner import api, emit
from planner.solve import Constraints

CANARY = "hf_CANARYcanaryCANARYcanary0123456789"
HW = cpu_only(16 * 1024**3)

# The only top-level statements a script may have: its docstring, these imports, literal
# constants, the two functions and the __main__ guard.
_IMPORTS = {"sys", "torch", "transformers"}
_CONSTANTS = {"MODEL", "REVISION", "DEVICE_MAP", "MAX_MEMORY", "OFFLOAD_FOLDER", "EXEC_DEVICE", "CONTEXT", "BATCH", "NEW_TOKENS"}


def check_script_shape(text: str) -> dict:
    """Parse a script, assert it does nothing but load and generate, and return its constants."""
    tree = ast.parse(text)
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue
        if isinstance(node, ast.Import):
            assert {a.name for a in node.names} <= _IMPORTS
        elif isinstance(node, ast.ImportFrom):
            assert node.module == "transformers"
            assert {a.name for a in node.names} <= {"AutoTokenizer", "AutoModelForCausalLM", "AutoModelForImageTextToText",
                                                    "AutoModelForSeq2SeqLM", "BitsAndBytesConfig"}
        elif isinstance(node, ast.Assign):
            (target,) = node.targets
            assert isinstance(target, ast.Name) and target.id in _CONSTANTS
            constants[target.id] = ast.literal_eval(node.value)  # raises unless a pure literal
        elif isinstance(node, ast.FunctionDef):
            assert node.name in ("load_model", "main")
        elif isinstance(node, ast.If):
            assert ast.unparse(node.test) == "__name__ == '__main__'"
        else:
            raise AssertionError(f"unexpected statement: {ast.unparse(node)[:80]}")
    calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
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
    assert CANARY not in json.dumps(r.to_dict())


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
