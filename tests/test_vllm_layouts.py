"""The vLLM runtime on full-size checkpoints: layouts over 1-4 nodes, KV capacity, rejections.

The models are the real configs with header-level tensor lists (tests/vllm_models.py); the
hardware is the bundled profiles, as one node or several (planner.hardware.cluster). Expected
numbers are worked out here from the architecture, independently of the runtime's code.
"""

from __future__ import annotations

import math

import pytest
import vllm_models as vm

from planner.core.errors import NoFeasiblePlan
from planner.core.records import Constraints, Plan
from planner.hardware.cluster import load
from planner.runtimes import registry
from planner.runtimes.vllm import memory as mem
from planner.solve.solver import solve

RT = registry.get("vllm")
GiB = 1024**3


def model(repo: str):
    return RT.model(vm.snapshot(repo))


def chosen(repo: str, hardware: str, nodes: int | None = None, **options) -> Plan:
    # "quality": the checkpoint's precision where it fits (the default "speed" takes online fp8 when faster)
    c = Constraints(context=options.pop("context", 8192), prefer=options.pop("prefer", "quality")).with_options(**options)
    hw = load(hardware, nodes=nodes)
    return solve(RT.plans(model(repo), hw, c), c.prefer, where=hw.name).chosen


def test_llama_70b_on_one_hgx_h100_is_tp8_with_the_kv_heads_split() -> None:
    p = chosen("meta-llama/Llama-3.1-70B-Instruct", "8x-h100-sxm-80gb")
    s = p.settings
    assert (s.parallel.tensor, s.parallel.pipeline, s.parallel.nodes, s.kv_cache.dtype) == (8, 1, 1, "auto")
    # 8 KV heads over 8 ranks: one head each, K and V of 128, bf16, 80 layers on the one stage
    assert s.kv_cache.bytes_per_token_per_gpu == 80 * 1 * (128 + 128) * 2
    assert set(p.memory) == {f"node0:cuda:{i}" for i in range(8)}
    # weights per rank: 1/8 of every Linear, k/v 1/8 too, norms replicated, vocab 128256 padded
    # to 64 (already a multiple) and split
    m = model("meta-llama/Llama-3.1-70B-Instruct")
    layer = m.layers[0]
    expect = 80 * (layer.split // 8 + layer.kv // 8 + layer.replicated) + 2 * (128256 // 8) * 8192 * 2 + 8192 * 2
    assert abs(p.memory["node0:cuda:0"].weights - expect) <= 80 * 8
    # the pool: what the budget leaves, in blocks of 64 tokens over 80 layers, less the null block
    r = p.memory["node0:cuda:0"]
    blocks = s.kv_cache.blocks
    assert r.kv_cache == blocks * 64 * s.kv_cache.bytes_per_token_per_gpu
    assert s.kv_cache.tokens == (blocks - 1) * 64
    assert s.kv_cache.max_concurrent_sequences == (blocks - 1) // (8192 // 64)
    assert r.total <= r.capacity <= r.free
    assert 1_100_000 < s.kv_cache.tokens < 1_500_000  # ~ (72.9 - 16.4 - ~6 GiB) / 40 KiB per token


def test_tp3_is_rejected_with_the_head_count() -> None:
    hw = load("8x-h100-sxm-80gb")
    plans = RT.plans(model("meta-llama/Llama-3.1-70B-Instruct"), hw, Constraints(context=8192).with_options(tp=3))
    assert plans and not any(p.fits for p in plans)
    assert "tp 3 does not divide 64 attention heads" in plans[0].reasons
    assert "tp 3 and 8 KV heads: neither divides the other" in plans[0].reasons


def test_kv_heads_are_replicated_once_tp_exceeds_them() -> None:
    # Qwen3-235B-A22B has 4 KV heads: at tp 8 each rank caches (and holds the weights of) one
    m = model("Qwen/Qwen3-235B-A22B")
    p = chosen("Qwen/Qwen3-235B-A22B", "8x-h200", tp=8, pp=1, kv_cache_dtype="auto")
    assert p.settings.kv_cache.bytes_per_token_per_gpu == 94 * 1 * 256 * 2  # not 94 * 0.5 * 256 * 2
    per_rank_kv_weights = sum(x.kv for x in m.layers) // 4
    naive = sum(x.kv for x in m.layers) // 8
    assert mem.rank_weights(m, 8, 1, 0) - mem.rank_weights(m, 4, 1, 0) < 0  # tp 8 still holds less
    got = mem.rank_weights(m, 8, 1, 0)
    without_kv = got - per_rank_kv_weights
    assert abs(without_kv + naive - got) == per_rank_kv_weights - naive > 0


def test_pipeline_stages_follow_vllms_remainder_rule() -> None:
    # get_pp_indices: L // pp each, the remainder one each to the stages before the last
    assert [b - a for a, b in mem.stage_layers(126, 4)] == [31, 32, 32, 31]
    assert [b - a for a, b in mem.stage_layers(61, 4)] == [15, 15, 16, 15]
    assert [b - a for a, b in mem.stage_layers(80, 3)] == [27, 27, 26]
    assert [b - a for a, b in mem.stage_layers(94, 1)] == [94]


def test_embeddings_on_the_first_stage_and_the_head_on_the_last() -> None:
    m = model("meta-llama/Llama-3.1-405B")
    emb = 2 * (128256 // 8) * 16384 * 2 // 2  # one of embed/lm_head per rank at tp 8
    first, second = mem.rank_weights(m, 8, 2, 0), mem.rank_weights(m, 8, 2, 1)
    layers = [sum(x.split // 8 + x.kv // 8 + x.replicated for x in m.layers[a:b]) for a, b in mem.stage_layers(126, 2)]
    assert abs(first - layers[0] - emb) < 64 and abs(second - layers[1] - emb - 16384 * 2) < 64


def test_llama_405b_needs_fp8_on_one_node_and_runs_bf16_on_two() -> None:
    one = chosen("meta-llama/Llama-3.1-405B", "8x-h100-sxm-80gb")
    assert one.settings.quantization == "fp8" and one.quality < 16
    two = chosen("meta-llama/Llama-3.1-405B", "8x-h100-sxm-80gb", nodes=2)
    s = two.settings
    assert (s.parallel.tensor, s.parallel.pipeline, s.parallel.nodes, s.quantization) == (8, 2, 2, None)
    assert "node1:cuda:7" in two.memory and s.kv_cache.tokens > 100_000
    four = chosen("meta-llama/Llama-3.1-405B", "8x-h100-sxm-80gb", nodes=4, pp=4, kv_cache_dtype="auto", online_fp8=False)
    assert four.settings.parallel.nodes == 4 and len(four.memory) == 32
    # more stages, fewer layers per rank: a larger KV pool
    assert four.settings.kv_cache.tokens > s.kv_cache.tokens


def test_deepseek_v3_mla_fits_8x_h200_or_two_h100_nodes_not_one() -> None:
    with pytest.raises(NoFeasiblePlan):
        chosen("deepseek-ai/DeepSeek-V3", "8x-h100-sxm-80gb")
    p = chosen("deepseek-ai/DeepSeek-V3", "8x-h200")
    s = p.settings
    # MLA caches one latent of kv_lora_rank + rope = 576 values per token and layer, on every rank
    assert s.kv_cache.bytes_per_token_per_gpu == 61 * (512 + 64) * 2
    assert s.parallel.tensor == 8 and s.checkpoint_quantization == "fp8"
    assert any("multi-token prediction" in n for n in p.notes)
    two = chosen("deepseek-ai/DeepSeek-V3", "8x-h100-sxm-80gb", nodes=2)
    assert (two.settings.parallel.tensor, two.settings.parallel.pipeline) == (8, 2)
    assert two.settings.kv_cache.bytes_per_token_per_gpu == 31 * 576 * 2  # stage 0 holds 31 of 61 layers


def test_mixtral_8x22b_and_qwen3_235b_on_h100_and_not_on_l4s() -> None:
    for repo in ("mistralai/Mixtral-8x22B-v0.1", "Qwen/Qwen3-235B-A22B"):
        p = chosen(repo, "8x-h100-sxm-80gb")
        assert p.fits and p.settings.parallel.tensor == 8 and p.settings.kv_cache.max_concurrent_sequences >= 1
        with pytest.raises(NoFeasiblePlan) as e:
            chosen(repo, "4x-l4", online_fp8=False)
        assert any("leave no KV cache" in r for p in e.value.rejections for r in p.reasons)


def test_smaller_cards_get_the_smaller_defaults_and_rejections_in_numbers() -> None:
    p = chosen("meta-llama/Llama-3.1-70B-Instruct", "8x-a100-80gb")
    assert p.settings.max_num_batched_tokens == 2048  # arg_utils: A100 keeps the small default
    assert chosen("meta-llama/Llama-3.1-70B-Instruct", "8x-h100-sxm-80gb").settings.max_num_batched_tokens == 8192
    with pytest.raises(NoFeasiblePlan) as e:
        chosen("meta-llama/Llama-3.1-70B-Instruct", "2x-rtx-3090")
    reason = e.value.rejections[0].reasons[0]
    assert "GiB" in reason and "cuda:0" in reason


def test_users_ask_for_the_smallest_layout() -> None:
    # Llama-3.1-8B: 128 KiB of KV per token (32 layers x 8 heads x 256 x 2 B); 64 users of 8192
    # tokens need 64 GiB of KV: more than one H100 leaves after 15 GiB of weights, so two GPUs.
    p = chosen("meta-llama/Llama-3.1-8B", "8x-h100-sxm-80gb", users=64, kv_cache_dtype="auto", online_fp8=False)
    assert len(p.memory) == 2 and p.settings.kv_cache.max_concurrent_sequences >= 64
    assert p.settings.max_num_seqs >= 64
    hw = load("8x-h100-sxm-80gb")
    c = Constraints(context=8192).with_options(users=64, kv_cache_dtype="auto", online_fp8=False)
    plans = RT.plans(model("meta-llama/Llama-3.1-8B"), hw, c)
    one = [x for x in plans if len(x.memory) == 1]
    assert one and all(not x.fits for x in one)
    assert any("--users asks for 64" in r for x in one for r in x.reasons)
    big = [x for x in plans if len(x.memory) == 8]
    assert big and all(not x.fits and "already serve the users" in x.reasons[0] for x in big)


def test_max_model_len_auto_and_beyond_the_trained_context() -> None:
    p = chosen("meta-llama/Llama-3.1-8B", "8x-h100-sxm-80gb", max_model_len="auto", tp=1, kv_cache_dtype="auto",
               online_fp8=False)
    assert p.settings.max_model_len == 131072  # the pool holds more: capped at max_position_embeddings
    hw = load("8x-h100-sxm-80gb")
    too_long = RT.plans(model("meta-llama/Llama-3.1-8B"), hw, Constraints(context=200_000).with_options(tp=1, pp=1))
    assert all("exceeds the model's max_position_embeddings 131072" in " ".join(x.reasons) for x in too_long)
    # Llama-3.1-8B on one RTX 4090: the weights fit, one request of the full 131072 tokens
    # (16 GiB of KV at 128 KiB per token) does not
    plans = RT.plans(model("meta-llama/Llama-3.1-8B"), load("rtx-4090"),
                     Constraints(context=131072).with_options(kv_cache_dtype="auto", online_fp8=False))
    assert len(plans) == 1 and not plans[0].fits
    assert any(r.startswith("one request of max_model_len 131072 needs 16.0 GiB") and "To serve at least one request" in r
               for r in plans[0].reasons), plans[0].reasons


def test_utilization_above_free_memory_is_rejected() -> None:
    hw = load("8x-h100-sxm-80gb")
    plans = RT.plans(model("meta-llama/Llama-3.1-8B"), hw, Constraints(context=4096).with_options(gpu_memory_utilization=1.0, tp=1, pp=1))
    assert all(not x.fits for x in plans)
    assert any("--gpu-memory-utilization 1 asks" in r for r in plans[0].reasons)


def test_mixed_cluster_stages_are_bounded_by_their_own_gpus() -> None:
    hw = load("mixed-h100-a100")
    assert len(hw.nodes) == 3 and len(hw.gpus) == 24 and hw.network_bandwidth == 50_000_000_000
    p = chosen("meta-llama/Llama-3.1-405B", "mixed-h100-a100", pp=3, kv_cache_dtype="auto", online_fp8=False)
    assert p.settings.parallel.nodes == 3 and "node2:cuda:0" in p.memory
    # one block count for all: the ranks with the least room set it
    s = p.settings
    rooms = [m.capacity - m.weights - m.activations - m.overhead for m in p.memory.values()]
    per_block = [64 * (b - a) * mem.kv_bytes_per_token_layer(model("meta-llama/Llama-3.1-405B"), 8, 2)
                 for a, b in mem.stage_layers(126, 3) for _ in range(8)]
    assert s.kv_cache.blocks == min(r // q for r, q in zip(rooms, per_block, strict=True))


def test_kv_fp8_halves_the_bytes_per_token() -> None:
    auto = chosen("meta-llama/Llama-3.1-70B-Instruct", "8x-h100-sxm-80gb", kv_cache_dtype="auto", tp=8, pp=1, online_fp8=False)
    fp8 = chosen("meta-llama/Llama-3.1-70B-Instruct", "8x-h100-sxm-80gb", kv_cache_dtype="fp8", tp=8, pp=1, online_fp8=False)
    assert fp8.settings.kv_cache.bytes_per_token_per_gpu * 2 == auto.settings.kv_cache.bytes_per_token_per_gpu
    assert math.isclose(fp8.settings.kv_cache.tokens / auto.settings.kv_cache.tokens, 2, rel_tol=0.01)


def test_speed_ranks_tp_above_pp_for_one_sequence() -> None:
    hw = load("8x-h100-sxm-80gb", nodes=2)
    plans = RT.plans(model("meta-llama/Llama-3.1-70B-Instruct"), hw,
                     Constraints(context=8192).with_options(kv_cache_dtype="auto", online_fp8=False))
    speed = {(p.settings.parallel.tensor, p.settings.parallel.pipeline): p.speed.tokens_per_s for p in plans if p.fits}
    assert speed[(8, 1)] > speed[(4, 2)] > speed[(2, 4)]
    assert speed[(8, 1)] > speed[(8, 2)]  # the second node adds a network hop, no bandwidth for one sequence


def test_vllm_is_not_part_of_auto_and_refuses_bitsandbytes() -> None:
    assert "vllm" in registry.names() and all(r.name != "vllm" for r in registry.chosen("auto"))
    from dataclasses import replace

    from planner.core.errors import UnsupportedModel

    snap = vm.snapshot("meta-llama/Llama-3.1-8B")
    bnb = replace(snap, config={**snap.config, "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}})
    with pytest.raises(UnsupportedModel, match="bitsandbytes"):
        RT.model(bnb)


def test_facts_round_trip_through_the_cache() -> None:
    m = model("Qwen/Qwen3-30B-A3B")
    assert RT.model(vm.snapshot("Qwen/Qwen3-30B-A3B"), m.to_dict()) == m
    assert m.num_experts == 128 and m.experts_per_tok == 8 and sum(x.experts for x in m.layers) > 0.9 * m.weight_bytes


def test_users_keep_the_best_precision_then_the_fewest_gpus() -> None:
    # 64 users of 32768 tokens of Llama-3.1-70B: fp8 weights and KV would need 6 H100s, bf16
    # needs more; the precision comes first, so the plan is bf16 on the fewest GPUs that hold it
    p = chosen("meta-llama/Llama-3.1-70B-Instruct", "8x-h100-sxm-80gb", nodes=2, users=64, context=32768)
    assert p.quality == 16 and p.settings.kv_cache.dtype == "auto" and p.settings.quantization is None
    assert p.settings.kv_cache.max_concurrent_sequences >= 64
    hw = load("8x-h100-sxm-80gb", nodes=2)
    plans = RT.plans(model("meta-llama/Llama-3.1-70B-Instruct"), hw, Constraints(context=32768).with_options(users=64))
    assert all(len(x.memory) >= len(p.memory) for x in plans if x.fits and x.quality == 16)
    assert any(x.fits and len(x.memory) < len(p.memory) and x.quality < 16 for x in plans)


def test_a_vision_towers_layers_are_not_decoder_layers() -> None:
    import layouts

    from planner.core.records import Snapshot, Tensor

    spec = layouts.llava_1_5()
    tensors = tuple(Tensor(n, d, s, layouts.tensor_bytes(d, s), "model.safetensors") for n, (d, s) in spec.items())
    snap = Snapshot(id="llava-hf/llava-1.5-7b-hf", revision="main", commit=None, source="hub", config=layouts.LLAVA_1_5_CONFIG,
                    files=(), weight_format="safetensors", weight_files=("model.safetensors",), tensors=tensors)
    m = RT.model(snap)
    assert m.num_layers == 32 and len({x.split for x in m.layers}) == 1  # every decoder layer alike
    tower = sum(t.nbytes for t in tensors if t.name.startswith(("vision_tower.", "multi_modal_projector.")))
    assert m.other_bytes == tower > 500_000_000  # CLIP ViT-L: ~0.6 GB in fp16, on the first stage


def test_a_machine_without_cuda_gpus_gets_one_reason() -> None:
    plans = RT.plans(model("meta-llama/Llama-3.1-8B"), load("cpu-laptop-16gb"), Constraints())
    assert len(plans) == 1 and not plans[0].fits and "has no CUDA GPU" in plans[0].reasons[0]


def test_awq_group_size_limits_tp() -> None:
    # An AWQ (group 128) of Qwen2.5-72B's own shapes: MLP width 29568 / 8 = 3696, not a multiple
    # of 128, so vLLM's Marlin kernel refuses tp 8; tp 4 gives 7392 = 57.75 x 128 and tp 2 14784 =
    # 115.5 x 128, refused too
    import layouts

    from planner.core.records import Snapshot, Tensor

    cfg = {**vm.catalog("Qwen__Qwen2.5-72B-Instruct"),
           "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm", "zero_point": True}}
    spec = layouts.decoder(layouts.awq(), layers=cfg["num_hidden_layers"], hidden=cfg["hidden_size"],
                           intermediate=cfg["intermediate_size"], heads=cfg["num_attention_heads"],
                           kv_heads=cfg["num_key_value_heads"], vocab=cfg["vocab_size"], dtype="F16")
    tensors = tuple(Tensor(n, d, s, layouts.tensor_bytes(d, s), "model.safetensors") for n, (d, s) in spec.items())
    snap = Snapshot(id="Qwen/Qwen2.5-72B-Instruct-AWQ", revision="main", commit=None, source="hub", config=cfg, files=(),
                    weight_format="safetensors", weight_files=("model.safetensors",), tensors=tensors)
    m = RT.model(snap)
    assert m.quant_group == 128 and m.quant_bits == 4
    hw = load("8x-h100-sxm-80gb")
    plans = RT.plans(m, hw, Constraints(context=8192).with_options(tp=8, pp=1))
    assert "tp 8 splits the MLP width 29568 into 3696, not a multiple of the quantization group 128 and of 128" in plans[0].reasons
    ok = solve(RT.plans(m, hw, Constraints(context=8192)), "speed", where=hw.name).chosen
    assert ok.settings.parallel.tensor == 1 and ok.settings.checkpoint_quantization == "awq"  # tp 1 x pp N: the only layouts Marlin takes


def test_moe_active_parameters() -> None:
    # Qwen3-235B-A22B: 235B parameters, 22B active (8 of 128 experts per token)
    m = model("Qwen/Qwen3-235B-A22B")
    assert 234e9 < m.parameters < 236e9 and 21e9 < m.active_parameters < 23e9
    assert model("meta-llama/Llama-3.1-8B").active_parameters == model("meta-llama/Llama-3.1-8B").parameters


def test_serving_estimate_grows_with_the_batch_and_beats_one_sequence() -> None:
    from planner.runtimes.vllm import plans as vp

    m = model("meta-llama/Llama-3.1-70B-Instruct")
    hw = load("8x-h100-sxm-80gb")
    p = chosen("meta-llama/Llama-3.1-70B-Instruct", "8x-h100-sxm-80gb", users=32, kv_cache_dtype="auto", online_fp8=False)
    assert any(n.startswith("serving estimate: about") and "at 32 sequences" in n for n in p.notes)
    rk = vp.ranks(hw, 8, 1)
    rms = [mem.rank_memory(m, r, tp=8, pp=1, utilization=0.92, batched_tokens=8192, max_num_seqs=256) for r in rk]
    kv = mem.kv_bytes_per_token_layer(m, 8, 2)
    rates = [vp.serving_tokens_per_s(m, hw, rk, rms, tp=8, pp=1, batch=b, context=4096, kv_per_layer=kv) for b in (1, 8, 64)]
    assert rates[0] < rates[1] < rates[2]
    assert rates[2] < 64 * rates[0]  # the KV reads grow with the batch
