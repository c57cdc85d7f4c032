"""Issue 13 item 6: the default context is min(4096, the model's limit) (less the new tokens);
a context beyond the model's limit is planned with a clear warning, in the text and the JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from test_context import _snapshot

from planner import api
from planner.core.records import DEFAULT_CONTEXT, Constraints, Hardware
from planner.core.units import GiB
from planner.report.schema import report_dict
from planner.sources import catalog

CPU = Hardware(name="cpu box", source="test", gpus=(), ram_total=16 * GiB, ram_free=16 * GiB, disk_free=100 * GiB,
               cache_disk_free=100 * GiB)


def _plan(snap, **c) -> api.Report:
    return api.plan(snap.id, hardware=CPU, constraints=Constraints(**c), snapshot=snap)


def test_the_default_context_shrinks_to_a_short_model_limit() -> None:
    r = _plan(_snapshot(max_position_embeddings=2048), context_is_default=True)
    assert r.constraints.context + r.constraints.new_tokens <= 2048
    assert r.constraints.context == 2048 - r.constraints.new_tokens
    assert any("2048" in n and "limit" in n for n in r.snapshot.notes)
    assert not any(n.startswith("warning") for n in r.snapshot.notes)


def test_the_default_context_is_4096_when_the_model_allows_it() -> None:
    r = _plan(_snapshot(max_position_embeddings=32768), context_is_default=True)
    assert r.constraints.context == DEFAULT_CONTEXT == 4096


def test_a_context_beyond_the_limit_is_warned_in_text_and_json() -> None:
    snap = catalog.lookup("meta-llama/Llama-3.2-1B")
    r = _plan(snap, context=200_000)
    assert r.constraints.context == 200_000  # planned as asked, but said loudly
    warnings = [n for n in r.snapshot.notes if n.startswith("warning")]
    assert len(warnings) == 1 and "131072" in warnings[0] and "200000" in warnings[0]
    assert warnings[0] in report_dict(r)["model"]["notes"]


def test_a_context_within_the_limit_draws_no_warning() -> None:
    r = _plan(catalog.lookup("meta-llama/Llama-3.2-1B"), context=8192)
    assert not any(n.startswith("warning") for n in r.snapshot.notes)


def test_cli_context_beyond_the_limit() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "planner.cli.main", "plan", "meta-llama/Llama-3.2-1B", "--context", "200000",
                          "--hardware", "h200", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert any(n.startswith("warning") and "131072" in n for n in doc["model"]["notes"])
    text = subprocess.run([sys.executable, "-m", "planner.cli.main", "plan", "meta-llama/Llama-3.2-1B", "--context", "200000",
                           "--hardware", "h200"], capture_output=True, text=True, env=env, timeout=120)
    assert "warning" in text.stdout and "131072" in text.stdout
