"""Issue 13, items 10-16: inputs people paste, errors under --json, the comparison, the catalog.

The CLI runs in-process (``planner.cli.main.main``) against the fake Hub, so these stay fast.
"""

from __future__ import annotations

import gc
import json
import shutil

import pytest
from fakehub import FakeHub

from planner.cli.main import main
from planner.core import ids
from planner.core.errors import UsageError


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``fitcheck ARGS`` in this process: (exit code, stdout, stderr)."""
    code = 0
    try:
        main(list(args))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    finally:
        gc.enable()  # main() turns the cyclic collector off for its own short life
    out = capsys.readouterr()
    return code, out.out, out.err


ROOM = ("--ram", "16GiB", "--disk", "100GB")


# --- item 13: inputs people paste ---------------------------------------------------------------

@pytest.mark.parametrize(("pasted", "repo", "rev"), [
    ("https://huggingface.co/org/name", "org/name", None),
    ("https://huggingface.co/org/name/", "org/name", None),
    ("http://hf.co/org/name", "org/name", None),
    ("huggingface.co/org/name", "org/name", None),
    ("https://huggingface.co/org/name/tree/v1.0", "org/name", "v1.0"),
    ("https://huggingface.co/org/name/tree/refs%2Fpr%2F3", "org/name", "refs/pr/3"),
    ("https://huggingface.co/org/name/tree/main/subfolder", "org/name", "main"),
    ("https://huggingface.co/org/name/blob/abc123/config.json", "org/name", "abc123"),
    ("https://huggingface.co/org/name/resolve/main/model.safetensors?download=true", "org/name", "main"),
    ("https://huggingface.co/gpt2", "gpt2", None),
    ("org/name/", "org/name", None),
])
def test_pasted_references_become_repo_and_revision(pasted, repo, rev):
    assert ids.model_ref(pasted) == (repo, rev)


@pytest.mark.parametrize("pasted", [
    "https://example.com/org/name",
    "https://huggingface.co/datasets/org/name",
    "https://huggingface.co/",
    "https://huggingface.co/org/name/discussions/3",
])
def test_urls_that_are_not_a_model_are_refused(pasted):
    with pytest.raises(UsageError):
        ids.model_ref(pasted)


def test_a_hub_url_with_tree_plans_that_revision(capsys, tiny_models, hub: FakeHub, repo_id: str):
    hub.add_local_model(repo_id, tiny_models["llama"])
    code, out, err = cli(capsys, "plan", f"https://huggingface.co/{repo_id}/", *ROOM, "--json")
    assert code == 0, err
    assert json.loads(out)["model"]["id"] == repo_id
    code, out, err = cli(capsys, "plan", f"https://huggingface.co/{repo_id}/tree/main", *ROOM, "--json")
    assert code == 0, err
    assert json.loads(out)["model"]["revision"] == "main"
    code, out, err = cli(capsys, "plan", f"https://huggingface.co/{repo_id}/tree/main", "--revision", "v2", *ROOM)
    assert code == 2 and "--revision" in err


def test_a_path_to_a_safetensors_file_plans_its_folder(capsys, tiny_models, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_models["llama"], folder)
    weights = min(folder.glob("*.safetensors"))
    code, out, err = cli(capsys, "plan", str(weights), *ROOM, "--json")
    assert code == 0, err
    assert json.loads(out)["model"]["source"] == "local"


def test_a_path_to_a_gguf_file_names_the_gguf_runtime(capsys, tmp_path, monkeypatch):
    from planner.sources import resolve

    monkeypatch.setattr(resolve, "_gguf_reader", lambda: False)  # this build's reader, whether or not merged
    f = tmp_path / "model-Q4_K_M.gguf"
    f.write_bytes(b"GGUF" + b"\0" * 60)
    code, _, err = cli(capsys, "plan", str(f), *ROOM)
    assert code == 2
    assert "--runtime gguf" in err and err.count("\n") <= 2


@pytest.mark.parametrize(("alias", "dtype"), [("bf16", "bfloat16"), ("fp16", "float16"), ("fp32", "float32"),
                                              ("BF16", "bfloat16"), ("float16", "float16")])
def test_dtype_aliases(capsys, tiny_models, hub: FakeHub, repo_id: str, alias, dtype):
    hub.add_local_model(repo_id, tiny_models["llama"])
    code, out, err = cli(capsys, "plan", repo_id, *ROOM, "--dtype", alias, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["constraints"]["dtype"] == dtype
    assert doc["plan"] is None or doc["plan"]["dtype"] == dtype
