"""Sliding-window layers in vLLM plans, sized as vLLM 0.34's hybrid KV cache manager does
(planner/runtimes/vllm/memory.py: KvGroups, request_blocks).

Mistral-7B-v0.1's published config (tests/data, a copy of the catalog config) has a 4096-token window on every
layer: a request of 32768 tokens holds the window plus the in-flight tokens, not 32768 tokens of KV.
The grouping cases are the two examples in vLLM's own comments (v1/core/kv_cache_planning.py:470-476
and :571-577).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import layouts
import vllm_models as vm

from planner import api
from planner.core.records import Constraints, RepoFile, Snapshot, Tensor
from planner.hardware import cluster
from planner.runtimes import registry
from planner.runtimes.vllm import memory as mem

MISTRAL = json.loads((Path(__file__).parent / "data" / "mistralai__Mistral-7B-v0.1.config.json").read_text())


def _snapshot(cfg: dict, repo: str = "mistralai/Mistral-7B-v0.1") -> Snapshot:
    spec = vm.llama_spec(cfg)
    tensors = tuple(Tensor(n, d, s, layouts.tensor_bytes(d, s), "model.safetensors") for n, (d, s) in spec.items())
    return Snapshot(id=repo, revision="main", commit="0" * 40, source="hub", config=cfg,
                    files=(RepoFile("model.safetensors", sum(t.nbytes for t in tensors)),), weight_format="safetensors",
                    weight_files=("model.safetensors",), tensors=tensors)


def _plan(cfg: dict, **options):
    snap = _snapshot(cfg)
    report = api.plan(snap.id, hardware=cluster.load("h100-sxm-80gb"), snapshot=snap, runtime="vllm",
                      constraints=Constraints(context=32768).with_options(kv_cache_dtype="auto", online_fp8=False, **options))
    assert report.solution is not None
    return report.solution.chosen, registry.get("vllm").model(snap)


def test_mistral_sliding_window_request_holds_the_window_not_the_context() -> None:
    plan, model = _plan(MISTRAL)
    assert model.sliding_layers == 32 and model.sliding_window == 4096
    s = plan.settings
    batched = s.max_num_batched_tokens
    # SlidingWindowSpec.max_admission_blocks_per_request: cdiv(min(W - 1 + (pp + 1) x batched, L), 64) + 1
    window_blocks = math.ceil(min(4096 - 1 + 2 * batched, 32768) / 64) + 1
    assert window_blocks < 32768 // 64
    usable = s.kv_cache.blocks - 1
    assert s.kv_cache.max_concurrent_sequences == usable // window_blocks
    # vLLM's "GPU KV cache size" figure: concurrency x max_model_len
    assert s.kv_cache.tokens == usable * 32768 // window_blocks
    # the same pool sized as full attention (one group, 512 blocks a request) holds fewer requests
    full, _ = _plan({k: v for k, v in MISTRAL.items() if k != "sliding_window"})
    assert full.settings.kv_cache.blocks == s.kv_cache.blocks  # the pool itself is the same size
    assert full.settings.kv_cache.max_concurrent_sequences == usable // 512 < s.kv_cache.max_concurrent_sequences
    assert any("slide over 4096 tokens" in n for n in plan.notes)


def test_auto_length_of_a_sliding_model_searches_past_the_pool() -> None:
    # with every layer sliding, a request's blocks stop growing at the window: auto reaches the model's limit
    plan, _ = _plan(MISTRAL, max_model_len="auto")
    assert plan.settings.max_model_len == MISTRAL["max_position_embeddings"]


def _with_kinds(model, kinds: str):
    sliding = tuple(i for i, k in enumerate(kinds) if k == "s")
    return replace(model, num_layers=len(kinds), sliding_layers=len(sliding), sliding_window=4096, sliding_layer_ids=sliding,
                   layers=model.layers[:1] * len(kinds))


def test_groups_follow_vllms_own_examples() -> None:
    base = registry.get("vllm").model(_snapshot(MISTRAL))
    # "10 full attention layers and 20 sliding window layers ... 3 kv_cache_groups, each of which represents 10 layers"
    g = mem.kv_groups(_with_kinds(base, "fss" * 10))
    assert [len(x) for x in g.full] == [10] and [len(x) for x in g.sliding] == [10, 10]
    ids = [i for i in range(30) if i % 3]
    assert g.sliding == (tuple(ids[0::2]), tuple(ids[1::2]))  # layers[i::num_groups]
    assert g.block_layers(0, 30) == 10 and g.block_layers(0, 15) == 5  # a pipeline stage holds half of each group
    # "gpt-oss-20b + eagle, with 12 sw + 13 full. We pad it to (13 sw, 13 full)": one group each, blocks span 13 layers
    g = mem.kv_groups(_with_kinds(base, "f" * 13 + "s" * 12))
    assert len(g.full) == len(g.sliding) == 1 and g.block_layers(0, 25) == 13
    # a request of L tokens: one full group's cdiv(L, 64) plus each sliding group's window blocks
    model = _with_kinds(base, "fss" * 10)
    need = mem.request_blocks(model, mem.kv_groups(model), 32768, pp=1, batched_tokens=8192)
    assert need == 512 + 2 * (math.ceil((4095 + 2 * 8192) / 64) + 1)
    # no sliding layers: one group of every layer, cdiv(L, 64) blocks (vLLM's formula before)
    plain = replace(base, sliding_layers=0, sliding_window=None, sliding_layer_ids=())
    assert mem.request_blocks(plain, mem.kv_groups(plain), 32768, pp=1, batched_tokens=8192) == 512
    assert mem.kv_groups(plain).block_layers(0, 32) == 32


def test_decode_speed_reads_the_window_on_sliding_layers() -> None:
    # one decode step reads each rank's weights and its KV: min(context, window) tokens on a sliding
    # layer (the query attends to itself and window - 1 before it), the whole context on a full one
    from planner.runtimes.vllm import plans as vp

    m = registry.get("vllm").model(_snapshot(MISTRAL))
    plain = replace(m, sliding_layers=0, sliding_window=None, sliding_layer_ids=())
    hw = cluster.load("h100-sxm-80gb")
    rk = vp.ranks(hw, 1, 1)
    assert rk
    rms = [mem.rank_memory(m, r, tp=1, pp=1, utilization=0.92, batched_tokens=8192, max_num_seqs=256) for r in rk]
    kv = mem.kv_bytes_per_token_layer(m, 1, 2)
    assert kv == 8 * (128 + 128) * 2
    bw = (hw.gpus[0].bandwidth or vp.DEFAULT_GPU_BANDWIDTH) * vp.DECODE_EFFICIENCY

    def one(model, context: int) -> float:
        return vp._tokens_per_s(model, hw, rk, rms, tp=1, pp=1, context=context, kv_per_layer=kv)

    assert math.isclose(1 / one(m, 32768), (rms[0].weights + 32 * 4096 * kv) / bw, rel_tol=1e-9)
    assert math.isclose(1 / one(plain, 32768), (rms[0].weights + 32 * 32768 * kv) / bw, rel_tol=1e-9)
    assert one(m, 32768) > 1.2 * one(plain, 32768)  # 4 GiB of KV read per token become 0.5 GiB
    assert one(m, 2048) == one(plain, 2048)  # inside the window nothing changes
    # the serving estimate too: 16 sequences of 16384 tokens read 16 x 32 x 4096 token-layers, not 16 x 32 x 16384
    batch = [vp.serving_tokens_per_s(x, hw, rk, rms, tp=1, pp=1, batch=16, context=16384, kv_per_layer=kv) for x in (m, plain)]
    assert math.isclose(16 / batch[0], (rms[0].weights + 16 * 32 * 4096 * kv) / bw, rel_tol=1e-9)
    assert math.isclose(16 / batch[1], (rms[0].weights + 16 * 32 * 16384 * kv) / bw, rel_tol=1e-9)
    # Gemma-2/3 style mixes: the full layers read the context, the sliding ones the window; per stage
    mixed = _with_kinds(m, "fss" * 10)
    assert mem.kv_read_tokens(mixed, 0, 30, 32768) == 10 * 32768 + 20 * 4096
    assert mem.kv_read_tokens(mixed, 0, 15, 32768) == 5 * 32768 + 10 * 4096
    assert mem.kv_read_tokens(mixed, 0, 30, 1000) == 30 * 1000
    # and the plans the runtime ranks carry it
    slide_plan, _ = _plan(MISTRAL)
    full_plan, _ = _plan({k: v for k, v in MISTRAL.items() if k != "sliding_window"})
    assert slide_plan.speed.tokens_per_s > 1.2 * full_plan.speed.tokens_per_s
