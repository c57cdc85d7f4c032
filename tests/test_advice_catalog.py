"""Issue 13 item 12: the offline catalog -- every language model of the configs, listed, matched in
any case, near matches named, an unreachable Hub found once per run, build_catalog.py from a clone."""

from __future__ import annotations

import gc
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from planner.api import read_model
from planner.cli.main import main
from planner.core.errors import HubUnavailable, OfflineCacheMiss
from planner.sources import catalog, http

ROOT = Path(__file__).resolve().parent.parent


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


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fitcheck_catalog_lists_every_entry(capsys):
    code, out, _ = cli(capsys, "catalog")
    assert code == 0
    listed = [line.split()[0] for line in out.splitlines()[1:]]
    assert listed == list(catalog.names())
    code, out, _ = cli(capsys, "catalog", "--json")
    rows = json.loads(out)
    assert [r["id"] for r in rows] == list(catalog.names())
    assert all(isinstance(r["parameters"], int) and r["parameters"] > 0 for r in rows)
    assert len(rows) >= 23


def test_docs_catalog_md_is_the_catalog():
    from planner.cli.render import catalog_markdown

    assert catalog_markdown(catalog.entries()) in (ROOT / "docs" / "catalog.md").read_text()


def test_ids_match_case_insensitively(monkeypatch, hub):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snap = read_model("META-LLAMA/llama-3.1-8b")
    assert snap.id == "meta-llama/Llama-3.1-8B" and snap.source == "catalog"
    assert hub.requests == []


def test_offline_miss_names_the_catalog_and_near_matches(monkeypatch, hub):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineCacheMiss) as e:
        read_model("meta-llama/Llama-3.1-8B-Instruc")
    assert "meta-llama/Llama-3.1-8B-Instruct" in e.value.hint
    assert "fitcheck catalog" in e.value.hint
    assert catalog.near("qwen3-8b")[0] == "Qwen/Qwen3-8B"


def test_an_unreachable_hub_names_the_catalog_and_near_matches(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(HubUnavailable) as e:
        read_model("mistralai/Mistral-7B-v0.2", timeout=5)
    assert "bundled catalog has no" in e.value.message
    assert "mistralai/Mistral-7B-v0.1" in e.value.hint and "fitcheck catalog" in e.value.hint


def test_an_unreachable_hub_is_found_once_per_run(monkeypatch):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    first = http.Session(endpoint, None, 10.0)
    with pytest.raises(HubUnavailable, match="cannot be reached"):
        first.get(endpoint + "/api/models/a/b", what="model info", limit=100)
    assert first.requests == http.CONNECT_ATTEMPTS
    again = http.Session(endpoint, None, 10.0)
    with pytest.raises(HubUnavailable, match="found 0 s ago"):
        again.get(endpoint + "/api/models/c/d", what="model info", limit=100)
    assert again.requests == 0  # not asked again within the minute
    monkeypatch.setattr(http, "UNREACHABLE_MEMO_S", 0.0)
    time.sleep(0.01)
    later = http.Session(endpoint, None, 10.0)
    with pytest.raises(HubUnavailable):
        later.get(endpoint + "/api/models/c/d", what="model info", limit=100)
    assert later.requests == http.CONNECT_ATTEMPTS  # past the memo: asked again


def test_a_comparison_offline_prints_the_catalog_note_once(capsys, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    code, out, err = cli(capsys, "plan", "meta-llama/Llama-3.2-1B", "Qwen/Qwen3-0.6B", "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
                         "--hardware", "t4", "--timeout", "10")
    assert code == 0, err
    assert out.count("bundled catalog") == 1
    code, out, _ = cli(capsys, "plan", "meta-llama/Llama-3.2-1B", "--hardware", "t4")
    assert code == 0
    assert out.count("bundled catalog") == 1 and "network error" not in out


def test_build_catalog_finds_its_configs_in_a_clone(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import build_catalog
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert build_catalog.find_configs(tmp_path) is None
    clone = tmp_path / "clone"
    (clone / "tests" / "data").mkdir(parents=True)
    (clone / "tests" / "data" / "catalog-configs").symlink_to(ROOT / "tests" / "data" / "catalog-configs")
    assert build_catalog.find_configs(clone) == clone / "tests" / "data" / "catalog-configs"
    # the copy is the shared folder's, file for file (when the workspace has it)
    shared = build_catalog.find_configs(ROOT)
    assert shared is not None
    published = build_catalog.read_published(ROOT / "tests" / "data" / "catalog-configs" / "README.md")
    assert {p.repo for p in published.values()} - set(build_catalog.NOT_BUILT) == set(catalog.names())


def test_build_catalog_check_passes_for_an_entry_from_the_clone_copy():
    """The real build (transformers on the meta device) of the smallest entry, from tests/data alone."""
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "build_catalog.py"), "--check", "--configs",
                        str(ROOT / "tests" / "data" / "catalog-configs"), "--only", "Qwen/Qwen3-0.6B"],
                       check=False, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Qwen/Qwen3-0.6B" in r.stdout and "unchanged" in r.stdout
