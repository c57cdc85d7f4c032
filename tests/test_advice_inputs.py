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


# --- item 14: errors under --json, help, units, rejection reasons ------------------------------

@pytest.mark.parametrize(("args", "code", "kind"), [
    (["plan", "org/m x", "--json"], 2, "UsageError"),
    (["plan", "org/m", "--gpu", "12XB", "--json"], 2, "UsageError"),
    (["check", "org/m", "--context", "0", "--json"], 2, "UsageError"),  # click's own refusal
    (["plan", "tests/no-such-folder", "--json"], 2, "RepoNotFound"),
])
def test_errors_under_json_are_json_on_stdout(capsys, args, code, kind):
    got, out, err = cli(capsys, *args)
    assert got == code
    doc = json.loads(out)
    assert doc["error"] == kind and doc["message"] and doc["exit_code"] == code
    assert err == ""


def test_bare_fitcheck_prints_its_help(capsys):
    code, out, err = cli(capsys)
    assert code == 0
    assert out.startswith("Usage: fitcheck") and "Commands:" in out and "plan" in out
    assert "error" not in err


def test_a_machine_with_no_usable_ram_is_called_too_small(capsys, tiny_models, hub: FakeHub, repo_id: str):
    hub.add_local_model(repo_id, tiny_models["llama"])
    code, out, _ = cli(capsys, "plan", repo_id, "--ram", "1KiB", "--disk", "100GB")
    assert code == 0
    assert "too small" in out
    assert "-128" not in out and "- " not in out.replace("- ", "", 0).split("Nothing fits")[1].split("\n")[0]
    lines = [line for line in out.splitlines() if line.startswith("  ")]
    assert len(lines) == len(set(lines))
    assert sum("too small" in line for line in lines) == 1  # said once, not once per plan


def test_rejection_reasons_are_not_repeated_and_gpu_machines_are_not_cpu_only(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the bundled catalog's Llama-3.1-8B
    code, out, _ = cli(capsys, "plan", "meta-llama/Llama-3.1-8B", "--hardware", "t4")
    assert code == 0
    rejected = out.split("\nRejected\n")[1].splitlines()
    reasons = [line.split(": ", 1)[1] for line in rejected if ": " in line]
    assert len(reasons) == len(set(reasons))
    assert "CPU-only" not in out


def test_verify_differences_are_in_mib_and_gib():
    from planner.report.verify import (
        Component,
        DeviceCheck,
        Verification,
        render_verification,
    )

    comps = (Component("weights", 100 * 2**20, 80 * 2**20), Component("peak", 3 * 2**30, 5 * 2**30))
    v = Verification(label="bf16 on cpu", devices={"cpu": DeviceCheck("cpu", 3 * 2**30, 5 * 2**30, 8 * 2**30, comps, {})},
                     seconds=1.0, generated_tokens=4, raw={})
    text = render_verification(v)
    assert "+20.0 MiB" in text and "-2.0 GiB" in text
    assert "Mi " not in text.replace("MiB", "")


# --- items 10 and 11: several models ------------------------------------------------------------

def test_several_models_write_one_file_each_named_by_the_model(capsys, tiny_models, hub: FakeHub, repo_id: str, tmp_path):
    hub.add_local_model(repo_id + "a", tiny_models["llama"])
    hub.add_local_model(repo_id + "b", tiny_models["qwen2"])
    code, out, err = cli(capsys, "plan", repo_id + "a", repo_id + "b", *ROOM, "--script", str(tmp_path / "load.py"),
                         "--config", str(tmp_path / "plan.json"), "--max-context")
    assert code == 0, err
    for m in ("a", "b"):
        stem = (repo_id + m).replace("/", "__")
        assert json.loads((tmp_path / f"plan-{stem}.json").read_text())["load"]["model"] == repo_id + m
        compile((tmp_path / f"load-{stem}.py").read_text(), "load.py", "exec")
        assert f"wrote {tmp_path / f'plan-{stem}.json'}" in out
    assert out.count("Largest context for") == 2


def test_several_models_refuse_verify(capsys, hub: FakeHub):
    code, _, err = cli(capsys, "plan", "org/a", "org/b", "--hardware", "t4", "--verify")
    assert code == 2 and "--verify takes one model" in err


def test_one_failing_model_shows_a_row_and_the_others_go_on(capsys, tiny_models, hub: FakeHub, repo_id: str):
    hub.add_local_model(repo_id, tiny_models["llama"])
    code, out, _ = cli(capsys, "plan", repo_id, "tests/not-on-the-hub-xyz", *ROOM)
    assert code == 2
    rows = out.splitlines()
    assert any(r.startswith(repo_id[:40]) and " yes " in r for r in rows)
    assert any(r.startswith("tests/not-on-the-hub-xyz") and "error" in r and "not found" in r for r in rows)

    code, out, _ = cli(capsys, "plan", repo_id, "tests/not-on-the-hub-xyz", *ROOM, "--json")
    assert code == 2
    docs = json.loads(out)  # docs/json-schema.md: an array, one object per model in the order given
    assert [m["input"] for m in docs] == [repo_id, "tests/not-on-the-hub-xyz"]
    assert docs[0]["schema"] == 1 and docs[0]["model"]["id"] == repo_id and docs[0]["fits"] is True
    assert docs[1]["error"]["error"] == "RepoNotFound" and "not found" in docs[1]["error"]["message"]

    code, out, _ = cli(capsys, "check", repo_id, "tests/not-on-the-hub-xyz", *ROOM, "--json")
    assert code == 2
    rows = json.loads(out)
    assert rows[0]["fits"] is True and rows[1]["error"]["error"] == "RepoNotFound"

    code, out, _ = cli(capsys, "check", repo_id, "tests/not-on-the-hub-xyz", *ROOM)
    assert code == 2
    assert out.splitlines()[0].startswith("yes: ") and out.splitlines()[1].startswith("error: tests/not-on-the-hub-xyz")
