"""The largest context that fits the chosen plan (``planner.solve.context``): pure, no I/O."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from fixtures_models import decoder_tensors
from planner import api
from planner.sources import catalog
from planner.api import max_context
from planner.solve.context import render_table
from planner.core.errors import NoFeasiblePlan
from planner.runtimes.transformers.memory import kv
from planner.hardware.profiles import load_profile
from planner.core.records import Hardware, Snapshot, Tensor
from planner.core.records import Constraints
from planner.runtimes.transformers.plans import reprice
from planner.core.units import GiB, MiB, tensor_nbytes

LAYOUT = dict(layers=8, hidden=1024, intermediate=2816, heads=16, kv_heads=4, vocab=32000)


def _snapshot(**config: object) -> Snapshot:
    tensors = tuple(Tensor(n, d, s, tensor_nbytes(d, _numel(s)), "model.safetensors") for n, (d, s) in decoder_tensors(**LAYOUT).items())
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 1024, "intermediate_size": 2816,
           "num_hidden_layers": 8, "num_attention_heads": 16, "num_key_value_heads": 4, "vocab_size": 32000,
           "max_position_embeddings": 32768, "torch_dtype": "bfloat16", "tie_word_embeddings": False, **config}
    return Snapshot(id="synthetic/llama-155m", revision="main", commit=None, source="local", config=cfg, files=(),
                    weight_format="safetensors", weight_files=("model.safetensors",), tensors=tensors)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _cpu(ram: int) -> Hardware:
    return Hardware(name="cpu box", source="test", gpus=(), ram_total=ram, ram_free=ram, disk_free=100 * GiB,
                    cache_disk_free=100 * GiB)


def _report(ram: int = 1536 * MiB, **constraints: object) -> api.Report:
    c = Constraints(**{"context": 1024, "dtype": "bfloat16", "quantization": "none", "offload": False, **constraints})
    return api.plan("synthetic/llama-155m", hardware=_cpu(ram), constraints=c, snapshot=_snapshot())


def test_boundary_is_exact() -> None:
    r = _report()
    mc = max_context(r)
    assert mc.limit == "memory" and mc.limiting_device == "cpu"
    assert r.constraints.context < mc.max_context < 32768
    chosen = r.solution.chosen
    at_max = reprice(r.footprint, r.hardware, replace(r.constraints, context=mc.max_context), chosen)
    past = reprice(r.footprint, r.hardware, replace(r.constraints, context=mc.max_context + 1), chosen)
    assert at_max.fits and not past.fits
    assert at_max.settings.scheme == chosen.settings.scheme and at_max.settings.placement == chosen.settings.placement
    assert 0 <= mc.headroom["cpu"] == at_max.memory["cpu"].capacity - at_max.memory["cpu"].required


def test_more_sequences_fit_a_shorter_context() -> None:
    one, four = max_context(_report(batch=1)), max_context(_report(batch=4))
    assert four.batch == 4 and four.max_context < one.max_context


def test_capped_by_the_trained_context() -> None:
    mc = max_context(_report(ram=64 * GiB))
    assert mc.limit == "max_position_embeddings" and mc.limiting_device == ""
    assert mc.max_context == 32768 - mc.new_tokens
    assert "max_position_embeddings" in render_table(mc)


def test_table_rows() -> None:
    r = _report()
    mc = max_context(r)
    contexts = [row.context for row in mc.table]
    assert contexts[:3] == [1024, 2048, 4096] and mc.max_context in contexts
    assert contexts == sorted(contexts)
    for row in mc.table:
        assert row.kv_cache == kv.total_bytes(r.footprint.arch, context=row.context, new_tokens=r.constraints.new_tokens,
                                              batch=1, dtype_bytes=2)
        assert row.fits == (row.context <= mc.max_context)
    assert not mc.table[-1].fits  # one power of two past the maximum shows what does not fit
    needs = [row.required["cpu"] for row in mc.table if row.fits]
    assert needs == sorted(needs)
    assert mc.kv_bytes_per_token == 8 * 4 * 64 * 2 * 2


def test_sliding_window_caps_the_cache_not_the_prefill() -> None:
    sliding = api.plan("synthetic/mistral-like", hardware=_cpu(1536 * MiB), snapshot=_snapshot(model_type="mistral", sliding_window=1024),
                       constraints=Constraints(context=1024, dtype="bfloat16", quantization="none", offload=False))
    mc = max_context(sliding)
    # Past the window the cache stops growing, but the prefill's mask (4 B per query x key)
    # grows with the square of the context, so memory still ends it.
    kvs = {row.context: row.kv_cache for row in mc.table}
    assert kvs[2048] == kvs[4096] == kv.total_bytes(sliding.footprint.arch, context=10**6, new_tokens=0, batch=1, dtype_bytes=2)
    assert mc.limit == "memory" and 4096 < mc.max_context < 32768


def test_gpu_plan_keeps_its_kind() -> None:
    snap = catalog.lookup("meta-llama/Llama-3.1-8B")
    r = api.plan("meta-llama/Llama-3.1-8B", hardware=load_profile("rtx-4090"), snapshot=snap,
                 constraints=Constraints(context=4096, dtype="bfloat16", quantization="none", offload=False))
    mc = max_context(r)
    assert r.solution.chosen.settings.placement == "gpu" and mc.plan == r.solution.chosen.label
    assert mc.limit == "memory" and mc.limiting_device == "cuda:0"
    assert 4096 <= mc.max_context < 131072
    assert set(mc.headroom) == {"cuda:0", "cpu"}


def test_json_and_text() -> None:
    mc = max_context(_report())
    doc = json.loads(json.dumps(mc.to_dict()))
    assert doc["max_context"] == mc.max_context and doc["table"][0]["context"] == 1024
    assert isinstance(doc["table"][0]["required"]["cpu"], int)
    text = render_table(mc)
    assert f"{mc.max_context:,}" in text and "<- max" in text and "limited by memory" in text


def test_needs_a_plan_that_fits() -> None:
    r = _report(ram=300 * MiB)
    assert r.solution is None
    with pytest.raises(NoFeasiblePlan):  # a state of the model and machine, not a usage error (exit 1)
        max_context(r)
