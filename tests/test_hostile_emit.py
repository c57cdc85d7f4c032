"""No code execution, no injection: strings from strangers (tensor and module names from headers,
revisions, paths) enter emitted scripts and plan files only as inert literals; a model whose code
lives in its repo is sized from its headers without that code ever being fetched or run, and its
script turns remote code on only when --trust-remote-code was given.

Each script is parsed and checked statement by statement, then executed with stand-ins for torch
and transformers (as a module, not as __main__) to check it defines its constants and two
functions and does nothing else.
"""

from __future__ import annotations

import ast
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from fakehub import FakeHub, SparseFile
from fixtures_models import safetensors_header
from hostile import CONFIG, check_one_line, run_cli
from scripts import CONSTANTS, FROM_TRANSFORMERS, script_parts

# Every call a script may make, by its callee's text.
_CALLS = {"AutoTokenizer.from_pretrained", "AutoModelForCausalLM.from_pretrained", "AutoModelForImageTextToText.from_pretrained",
          "AutoModelForSeq2SeqLM.from_pretrained", "BitsAndBytesConfig", "load_model", "tokenizer", "len", "print", "torch.inference_mode",
          "model.generate", "tokenizer.decode", "main", "tokenizer([prompt] * BATCH, return_tensors='pt').to",
          # generating from token ids when the repo has no usable tokenizer (issue 13 item 15)
          "load_tokenizer", "type", "str", "int", "range", "map", "' '.join", "out[0].tolist", "model.get_input_embeddings",
          "prompt.split", "prompt.replace", "prompt.replace(' ', '').isdigit", "torch.tensor", "torch.ones_like"}


def check_script(text: str) -> dict[str, Any]:
    """Parse a script; assert it is the template and nothing else; return its constants."""
    constants, calls = script_parts(text)
    assert calls <= _CALLS, calls - _CALLS
    assert constants.keys() == CONSTANTS
    return constants


def run_as_module(text: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Execute the script with stand-in torch and transformers; return the names it defined."""
    torch = types.ModuleType("torch")
    for name in ("float32", "bfloat16", "float16", "inference_mode"):
        setattr(torch, name, object())
    transformers = types.ModuleType("transformers")
    for name in FROM_TRANSFORMERS:
        setattr(transformers, name, type(name, (), {}))
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "transformers", transformers)
    namespace: dict[str, Any] = {"__name__": "emitted"}
    exec(compile(text, "emitted.py", "exec"), namespace)  # noqa: S102 - checked above to be the template
    defined = {k for k in namespace if not k.startswith("__")}
    assert defined <= CONSTANTS | {"sys", "torch", "load_model", "load_tokenizer", "main"} | FROM_TRANSFORMERS, defined
    return namespace


# Tensor names become module names, and module names become DEVICE_MAP keys in the script.
HOSTILE_NAMES = [
    "evil'.weight", 'evil".weight', 'tri"""ple.weight', "new\nline = 1.weight", "back\\slash.weight", "{braces}{0}.weight",
    "');import os;os.system('echo pwned')#.weight", "\x1b[2J\x1b]0;pwned\x07.weight", "line\u2028sep.weight", "nul\x00.weight",
    "__import__('os').weight", "model.layers.0'); exec('x').weight", "ok.😀.weight", "\ud800.weight",
]


def _hostile_model(hub: FakeHub, repo_id: str, **kw: Any) -> None:
    tensors = {"model.embed_tokens.weight": ("BF16", (100, 64)), "model.layers.0.mlp.down_proj.weight": ("BF16", (64, 128)),
               "model.norm.weight": ("BF16", (64,)), **{n: ("BF16", (4,)) for n in HOSTILE_NAMES}}
    header, size = safetensors_header(tensors)
    hub.add_repo(repo_id, {"config.json": json.dumps(CONFIG).encode(), "model.safetensors": SparseFile(header, size)}, **kw)


# Offload folders (an option) and revisions that are valid but unusual.
HOSTILE_OFFLOAD = ["off'load", 'off"load', "off\nload", "../../tmp/x", "$(rm -rf ~)", "off\\load'); import os #", "off\u2028load"]


@pytest.mark.parametrize("offload", HOSTILE_OFFLOAD)
def test_hostile_names_become_inert_literals(offload: str, hub: FakeHub, repo_id: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from hostile import run_inprocess

    _hostile_model(hub, repo_id)
    script, plan = tmp_path / "load.py", tmp_path / "plan.json"
    r = run_inprocess(capsys, "plan", repo_id, "--hardware", "rtx-4090", "--script", str(script), "--config", str(plan),
                      "--offload-dir", offload)
    assert r.code == 0, r.stderr
    text = script.read_text()
    constants = check_script(text)
    namespace = run_as_module(text, monkeypatch)
    assert namespace["MODEL"] == constants["MODEL"] == repo_id and constants["REVISION"] == "main"
    modules = set(constants["DEVICE_MAP"])
    for name in HOSTILE_NAMES:  # each hostile module name is a key, exactly
        assert name.rsplit(".", 1)[0] in modules, name
    doc = json.loads(plan.read_text())
    assert doc["load"]["device_map"] == constants["DEVICE_MAP"]
    assert "pwned" not in "".join(ast.unparse(n) for n in ast.parse(text).body if not isinstance(n, ast.Assign))


@pytest.mark.parametrize("offload", HOSTILE_OFFLOAD)
def test_hostile_offload_folder_in_a_disk_plan(offload: str, hub: FakeHub, repo_id: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from hostile import run_inprocess

    _hostile_model(hub, repo_id)
    script = tmp_path / "load.py"
    r = run_inprocess(capsys, "plan", repo_id, "--gpu", "1GiB", "--ram", "700MiB", "--disk", "1TB", "--dtype", "float32",
                      "--quantization", "none", "--script", str(script), "--offload-dir", offload, "--json")
    assert r.code == 0, r.stderr
    constants = check_script(script.read_text())
    run_as_module(script.read_text(), monkeypatch)
    if "disk" in constants["DEVICE_MAP"].values():
        assert constants["OFFLOAD_FOLDER"] == offload
    else:
        assert constants["OFFLOAD_FOLDER"] is None


REVISIONS = ["refs/pr/1", "v1.0+build.7", "release_2024-01", "a" * 40]


@pytest.mark.parametrize("revision", REVISIONS)
def test_revisions_reach_the_script_as_given(revision: str, hub: FakeHub, repo_id: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from hostile import run_inprocess

    _hostile_model(hub, repo_id, revision=revision if len(revision) != 40 else "main", commit=revision if len(revision) == 40 else None)
    script = tmp_path / "load.py"
    r = run_inprocess(capsys, "plan", repo_id, "--revision", revision, "--hardware", "rtx-4090", "--script", str(script))
    assert r.code == 0, r.stderr
    assert check_script(script.read_text())["REVISION"] == revision


# --------------------------------------------------------------------------------------------
# Remote code
# --------------------------------------------------------------------------------------------

_EVIL_CODE = b"import pathlib\npathlib.Path(__file__).with_name('PWNED').write_text('ran')\nraise SystemExit('remote code ran')\n"
_REMOTE_CONFIG = {**CONFIG, "model_type": "evilmodel", "architectures": ["EvilForCausalLM"],
                  "auto_map": {"AutoConfig": "configuration_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}}


def _remote_model(hub: FakeHub, repo_id: str) -> None:
    header, size = safetensors_header({"model.embed_tokens.weight": ("BF16", (100, 64)),
                                       "model.layers.0.mlp.down_proj.weight": ("BF16", (64, 128)), "model.norm.weight": ("BF16", (64,))})
    hub.add_repo(repo_id, {"config.json": json.dumps(_REMOTE_CONFIG).encode(), "model.safetensors": SparseFile(header, size),
                           "modeling_evil.py": _EVIL_CODE, "configuration_evil.py": _EVIL_CODE, "__init__.py": _EVIL_CODE})


@pytest.mark.parametrize("trust", [False, True], ids=["without-flag", "with-flag"])
def test_remote_code_models_are_sized_from_headers_and_never_run(trust: bool, hub: FakeHub, repo_id: str, tmp_path: Path) -> None:
    _remote_model(hub, repo_id)
    script, plan = tmp_path / "load.py", tmp_path / "plan.json"
    args = ["plan", repo_id, "--hardware", "rtx-4090", "--json", "--script", str(script), "--config", str(plan)]
    r = run_cli(*args, *(["--trust-remote-code"] if trust else []))
    assert r.code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["fits"] and doc["model"]["parameters"] == 100 * 64 + 64 * 128 + 64
    assert any("auto_map" in n and "--trust-remote-code" in n for n in doc["model"]["notes"])
    # The repo's code was neither fetched nor run.
    assert not [q for q in hub.requests if q.path.endswith(".py")]
    assert not list(tmp_path.rglob("PWNED")) and "remote code ran" not in r.stderr
    text = script.read_text()
    check_script(text)
    assert ('kwargs["trust_remote_code"] = True' in text) is trust
    assert ("runs Python code from the model repo" in text) is trust  # it says why
    assert json.loads(plan.read_text())["load"]["trust_remote_code"] is trust


def test_fitcheck_never_imports_from_a_local_model_folder(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    header, size = safetensors_header({"model.embed_tokens.weight": ("BF16", (100, 64)), "model.norm.weight": ("BF16", (64,))})
    (folder / "config.json").write_text(json.dumps(_REMOTE_CONFIG))
    (folder / "model.safetensors").write_bytes(header + bytes(size - len(header)))
    for name in ("modeling_evil.py", "configuration_evil.py", "__init__.py", "planner.py", "click.py", "json.py"):
        (folder / name).write_bytes(_EVIL_CODE)
    r = run_cli("plan", str(folder), "--hardware", "rtx-4090", "--json", "--trust-remote-code")
    assert r.code == 0, r.stderr
    assert not (folder / "PWNED").exists() and "remote code ran" not in r.stderr


def test_a_shell_never_sees_the_arguments(tmp_path: Path) -> None:
    """fitcheck starts no shell: a repo id full of shell syntax is refused as an id, not run."""
    marker = tmp_path / "ran"
    r = run_cli("plan", f"org/m;touch {marker}", "--hardware", "rtx-4090")
    check_one_line(r.code, r.stderr, "is not a Hub repo id")
    r = run_cli("plan", f"$(touch {marker})", "--hardware", "rtx-4090")
    assert r.code == 2 and not marker.exists()


def test_hostile_local_folder_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from hostile import run_inprocess

    header, size = safetensors_header({"model.embed_tokens.weight": ("BF16", (100, 64)), "model.norm.weight": ("BF16", (64,))})
    for i, name in enumerate(["it's \"quoted\"", "new\nline", "$(id)", "a\\b'); import os #", "\x1b[2J"]):
        folder = tmp_path / str(i) / name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(CONFIG))
        (folder / "model.safetensors").write_bytes(header + bytes(size - len(header)))
        script = tmp_path / f"load{i}.py"
        r = run_inprocess(capsys, "plan", str(folder), "--ram", "16GiB", "--disk", "1TB", "--script", str(script))
        assert r.code == 0, r.stderr
        assert check_script(script.read_text())["MODEL"] == str(folder)
        run_as_module(script.read_text(), monkeypatch)
