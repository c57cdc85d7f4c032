"""vLLM data parallelism (--data-parallel-size) and expert parallelism (--enable-expert-parallel).

Full-size configs with header-level tensor lists (tests/vllm_models.py) on the bundled HGX
profiles. The expected figures are worked out here from the configs and the rules of vLLM 0.34.0
that planner/runtimes/vllm cites: each DP replica holds the attention and dense weights of its TP
shard and a KV pool of its own; the routed experts spread over tp x dp GPUs, whole experts with EP
(E // ep each, one more on the first E % ep ranks) or every expert tensor-sliced without it.
"""

from __future__ import annotations

import math

import pytest
import vllm_models as vm

from planner import api
from planner.core.records import Constraints, Plan
from planner.hardware.cluster import load
from planner.model.serving import expert_bytes, pad_vocab
from planner.runtimes import registry
from planner.runtimes.vllm import emit, speed
from planner.runtimes.vllm import memory as mem
from planner.runtimes.vllm import plans as vp
from planner.solve.solver import solve

RT = registry.get("vllm")
GiB = 1024**3


def model(repo: str):
    return RT.model(vm.snapshot(repo))


def candidates(repo: str, hardware: str, nodes: int | None = None, context: int = 8192, **options) -> list[Plan]:
    options.setdefault("online_fp8", False)  # the checkpoint's precision (a no-op for the FP8 checkpoint)
    c = Constraints(context=context).with_options(kv_cache_dtype="auto", **options)
    return RT.plans(model(repo), load(hardware, nodes=nodes), c)


def one(repo: str, hardware: str, nodes: int | None = None, **options) -> Plan:
    plans = candidates(repo, hardware, nodes, **options)
    assert len(plans) == 1, [p.label for p in plans]
    return plans[0]


def test_deepseek_v3_dp8_ep_on_one_h200_node_holds_more_sequences_than_tp8() -> None:
    m = model("deepseek-ai/DeepSeek-V3")
    routed = sum(x.experts for x in m.layers)
    dpep = one("deepseek-ai/DeepSeek-V3", "8x-h200", tp=1, dp=8)
    tp8 = one("deepseek-ai/DeepSeek-V3", "8x-h200", tp=8, pp=1, dp=1)
    assert dpep.fits and tp8.fits
    s = dpep.settings
    assert (s.parallel.tensor, s.parallel.data, s.parallel.expert, len(dpep.memory)) == (1, 8, 8, 8)
    # every GPU: all the attention/dense weights (tp 1) and 256 / 8 = 32 whole experts of each MoE layer
    for r in dpep.memory.values():
        assert abs(r.weights - (m.weight_bytes - routed + routed // 8)) <= 61
    # MLA: each DP rank caches the whole latent (576 values x 2 bytes) for its own requests
    assert s.kv_cache.bytes_per_token_per_gpu == tp8.settings.kv_cache.bytes_per_token_per_gpu == 61 * 576 * 2
    per_replica = (s.kv_cache.blocks - 1) // (8192 // 64)
    assert s.kv_cache.max_concurrent_sequences == 8 * per_replica
    assert s.kv_cache.tokens == (s.kv_cache.blocks - 1) * 64  # what each DP engine logs
    # 8 pools, each smaller than tp 8's one pool (more weights per GPU), hold more sequences in all
    assert s.kv_cache.max_concurrent_sequences > 2 * tp8.settings.kv_cache.max_concurrent_sequences
    assert any(n.startswith("expert parallel 8: 32 of the 256 experts whole on each GPU") for n in dpep.notes)
    assert "tp 1 x pp 1 x dp 8, EP 8 (8x NVIDIA H200)" in dpep.label
    # one sequence is slower (each GPU reads all attention weights), the deployment makes more tokens
    assert dpep.speed.tokens_per_s < tp8.speed.tokens_per_s

    def total(p: Plan) -> float:
        note = next(n for n in p.notes if n.startswith("serving estimate"))
        return float(note.split("about ", 1)[1].split(" tokens/s", 1)[0].replace(",", ""))

    assert total(dpep) > 2 * total(tp8)


def test_users_beyond_tp_pick_a_data_parallel_layout() -> None:
    # 200 sequences of 8192 tokens without pipeline stages: tp 8 holds 78, tp 4 x dp 2 142, tp 2 x
    # dp 4 and tp 1 x dp 8 more (with stages allowed, tp 1 x pp 7 holds 324 on 7 GPUs: fewer GPUs win)
    hw = load("8x-h200")
    c = Constraints(context=8192, prefer="quality").with_options(users=200, kv_cache_dtype="auto", pp=1)
    plans = RT.plans(model("deepseek-ai/DeepSeek-V3"), hw, c)
    tp8 = next(p for p in plans if p.settings.parallel.tensor == 8 and p.settings.parallel.data == 1)
    assert not tp8.fits and any("--users asks for 200" in r for r in tp8.reasons)
    chosen = solve(plans, "quality", where=hw.name).chosen
    assert chosen.settings.parallel.data > 1 and chosen.settings.parallel.expert == 8
    assert chosen.settings.kv_cache.max_concurrent_sequences >= 200
    # --max-num-seqs is per DP rank: the users spread over the replicas
    assert chosen.settings.max_num_seqs >= math.ceil(200 / chosen.settings.parallel.data)


def test_a_replica_short_of_users_says_so_per_replica() -> None:
    p = one("deepseek-ai/DeepSeek-V3", "8x-h200", tp=1, dp=8, users=5000)
    assert not p.fits
    assert any(r.startswith("the KV caches of 8 DP replicas hold") and "--users asks for 5000" in r for r in p.reasons)


def test_qwen3_235b_dp_ep_on_two_h100_nodes_and_the_profile_batch() -> None:
    m = model("Qwen/Qwen3-235B-A22B")
    routed = sum(x.experts for x in m.layers)
    p = one("Qwen/Qwen3-235B-A22B", "8x-h100-sxm-80gb", nodes=2, tp=4, dp=4)
    s = p.settings
    assert p.fits and (s.parallel.tensor, s.parallel.data, s.parallel.expert, s.parallel.nodes) == (4, 4, 16, 2)
    tp4 = mem.rank_weights(m, 4, 1, 0)  # the same tp 4 shard, experts sliced 4 ways
    want = tp4 - sum(math.ceil(x.experts / 4) for x in m.layers) + sum(x.experts * 8 // 128 for x in m.layers)
    assert abs(next(iter(p.memory.values())).weights - want) <= 94
    assert abs(want - (tp4 - routed * 3 // 16)) <= 2 * 94  # 1/16 of the experts, not 1/4
    # the profile run's MoE part counts all 4 DP ranks' 8192 tokens (the all-gather of the default backend)
    h, heads, kv, d = 4096, 64 // 4, 4 // 4, 128
    moe = 8 * (3 * 1536 + h) + 4 * 128 // 2
    per_token = (4 * h + heads * d + 2 * kv * d + 4 * moe) * 2
    logits = 1024 * pad_vocab(151936) * 4 * 2
    assert mem.activations(m, 4, 1, 0, batched_tokens=8192, max_num_seqs=1024, dp=4) == int((8192 * per_token + logits) * 1.10)
    assert next(iter(p.memory.values())).activations == int((8192 * per_token + logits) * 1.10)


def test_uneven_experts_and_too_few_of_them() -> None:
    m = model("Qwen/Qwen3-30B-A3B")  # 128 experts
    layer = m.layers[0]
    # 128 over 3 ranks: 43, 43, 42 (determine_expert_map): the busiest holds ceil(128 / 3)
    assert expert_bytes(m, layer.experts, 3, whole=True) == layer.experts * 43 // 128
    assert expert_bytes(m, layer.experts, 3, whole=False) == math.ceil(layer.experts / 3)
    # Mixtral's 8 experts cannot go whole to 16 GPUs; by default its DP layouts slice them instead
    asked = one("mistralai/Mixtral-8x22B-v0.1", "8x-h100-sxm-80gb", nodes=2, tp=1, dp=16, expert_parallel=True)
    assert "expert parallel 16 exceeds the 8 experts: some GPUs would hold none" in asked.reasons
    default = one("mistralai/Mixtral-8x22B-v0.1", "8x-h100-sxm-80gb", nodes=2, tp=1, dp=16)
    assert default.settings.parallel.expert == 1
    assert any("tensor-sliced over 16 GPUs" in n for n in default.notes)
    # a dense model has nothing for EP to split
    dense = one("meta-llama/Llama-3.1-8B", "8x-h100-sxm-80gb", tp=1, dp=2, expert_parallel=True, online_fp8=False)
    assert "--enable-expert-parallel: the model has no routed experts" in dense.reasons


def test_without_ep_the_expert_slice_follows_tp_x_dp_and_the_fp8_block() -> None:
    # DeepSeek-V3's expert width 2048 over tp 2 x dp 16 = 32 GPUs is 64 wide: not a whole FP8 block
    sliced = one("deepseek-ai/DeepSeek-V3", "8x-h100-sxm-80gb", nodes=4, tp=2, dp=16, expert_parallel=False)
    assert "tp 2 x dp 16 splits the MLP width 2048 into 64, not a multiple of the FP8 block 128" in sliced.reasons
    whole = one("deepseek-ai/DeepSeek-V3", "8x-h100-sxm-80gb", nodes=4, tp=2, dp=16, expert_parallel=True)
    assert not any("FP8 block" in r for r in whole.reasons)
    assert whole.settings.parallel.expert == 32


def test_dense_data_parallel_is_independent_replicas() -> None:
    m = model("meta-llama/Llama-3.1-8B")
    single = one("meta-llama/Llama-3.1-8B", "8x-h100-sxm-80gb", tp=1, pp=1, dp=1, online_fp8=False)
    dp8 = one("meta-llama/Llama-3.1-8B", "8x-h100-sxm-80gb", tp=1, dp=8, online_fp8=False)
    a, b = single.memory["node0:cuda:0"], dp8.memory["node0:cuda:7"]
    # a full replica on every GPU, the same profile run, and no collectives between them
    assert (b.weights, b.activations, b.overhead, b.kv_cache) == (a.weights, a.activations, a.overhead, a.kv_cache)
    assert dp8.settings.kv_cache.tokens == single.settings.kv_cache.tokens
    assert dp8.settings.kv_cache.max_concurrent_sequences == 8 * single.settings.kv_cache.max_concurrent_sequences
    assert dp8.settings.parallel.expert == 1 and dp8.speed.tokens_per_s == single.speed.tokens_per_s
    hw = load("8x-h100-sxm-80gb")
    rk1, rk8 = vp.ranks(hw, 1, 1), vp.ranks(hw, 1, 1, 8)
    assert rk1 is not None and rk8 is not None and [r.replica for r in rk8] == list(range(8))
    kv = mem.kv_bytes_per_token_layer(m, 1, 2)

    def rms(rk: list[mem.Rank]) -> list[mem.RankMemory]:
        return [mem.rank_memory(m, r, tp=1, pp=1, utilization=0.92, batched_tokens=8192, max_num_seqs=1024) for r in rk]

    rate1 = speed.serving_tokens_per_s(m, hw, rk1, rms(rk1), tp=1, pp=1, batch=16, context=4096, kv_per_layer=kv)
    rate8 = speed.serving_tokens_per_s(m, hw, rk8, rms(rk8), tp=1, pp=1, batch=16, context=4096, kv_per_layer=kv, dp=8)
    assert math.isclose(rate8, 8 * rate1, rel_tol=1e-12)
    assert speed.moe_exchange_s(m, hw, rk8, mem.Layout(1, 1, 8), start=0, end=32, tokens=16) == 0.0


def test_the_moe_exchange_is_a_bandwidth_term_over_nvlink_or_the_network() -> None:
    m = model("Qwen/Qwen3-235B-A22B")
    hw = load("8x-h200")
    rk = vp.ranks(hw, 1, 1, 8)
    assert rk is not None
    t = speed.moe_exchange_s(m, hw, rk, mem.Layout(1, 1, 8, True), start=0, end=94, tokens=64)
    # all-gather then reduce-scatter per MoE layer: (8 - 1) x 64 tokens x 4096 x 2 bytes over 450 GB/s each
    assert math.isclose(t, 94 * 2 * (10e-6 + 7 * 64 * 4096 * 2 / 450e9), rel_tol=1e-12)
    two = load("8x-h100-sxm-80gb", nodes=2)
    rk2 = vp.ranks(two, 4, 1, 4)
    assert rk2 is not None and {r.device.split(":")[0] for r in rk2} == {"node0", "node1"}
    t2 = speed.moe_exchange_s(m, two, rk2, mem.Layout(4, 1, 4, True), start=0, end=94, tokens=64)
    # across nodes: 25 us and the 50 GB/s port shared by the 4 TP ranks' rings
    assert math.isclose(t2, 94 * 2 * (25e-6 + 3 * 64 * 4096 * 2 / (50e9 / 4)), rel_tol=1e-12)


def test_emitted_commands_one_node_and_per_node_across_two() -> None:
    snap = vm.snapshot("deepseek-ai/DeepSeek-V3")
    c = Constraints(context=8192).with_options(tp=1, dp=8, kv_cache_dtype="auto")
    r = api.plan(snap.id, hardware=load("8x-h200"), snapshot=snap, runtime="vllm", constraints=c)
    assert r.solution is not None
    argv = list(api.emit(r).commands["vllm_serve"])
    i = argv.index("--data-parallel-size")
    assert argv[i + 1] == "8" and "--enable-expert-parallel" in argv
    assert "--distributed-executor-backend" not in argv and "--data-parallel-address" not in argv
    assert r.solution.chosen.settings.to_dict()["parallel"] == {"tensor": 1, "pipeline": 1, "nodes": 1, "gpus_per_node": 8,
                                                               "data": 8, "expert": 8}
    c2 = Constraints(context=8192).with_options(tp=1, dp=16, kv_cache_dtype="auto", max_num_batched_tokens=2048)
    r2 = api.plan(snap.id, hardware=load("8x-h100-sxm-80gb", nodes=2), snapshot=snap, runtime="vllm", constraints=c2)
    assert r2.solution is not None
    cmds = api.emit(r2).commands
    assert set(cmds) == {"vllm_serve", "vllm_serve_dp_node0", "vllm_serve_dp_node1"}  # no Ray: replicas stay in a node
    from planner.runtimes.vllm import emit as vllm_emit

    assert vllm_emit.placement_group(r2.solution.chosen) is None  # nor a Ray placement group
    head, worker = list(cmds["vllm_serve_dp_node0"]), list(cmds["vllm_serve_dp_node1"])
    assert list(cmds["vllm_serve"]) == head

    def flag(argv: list[str], name: str) -> str:
        return argv[argv.index(name) + 1]

    for a in (head, worker):
        assert flag(a, "--data-parallel-size") == "16" and flag(a, "--data-parallel-size-local") == "8"
        assert flag(a, "--data-parallel-address") == emit.HEAD and flag(a, "--data-parallel-rpc-port") == "29550"
    assert "--data-parallel-start-rank" not in head and "--headless" not in head
    assert flag(worker, "--data-parallel-start-rank") == "8" and worker[-1] == "--headless"
    readme = api.emit(r2).files["README.md"]
    assert "## Data parallel across nodes" in readme and "per DP replica" in readme
    # reprice keeps the layout
    p = r2.solution.chosen
    again = RT.reprice(r2.footprint, load("8x-h100-sxm-80gb", nodes=2), c2, p)
    assert again.settings == p.settings and again.memory == p.memory


@pytest.mark.parametrize("repo", ["deepseek-ai/DeepSeek-V3", "Qwen/Qwen3-235B-A22B"])
def test_default_candidates_compare_dp_ep_with_tp_and_pp(repo: str) -> None:
    for hw, nodes in (("8x-h200", None), ("8x-h100-sxm-80gb", 2)):
        plans = candidates(repo, hw, nodes)
        fitting = [p.settings.parallel for p in plans if p.fits]
        assert any(x.data > 1 and x.expert == x.tensor * x.data for x in fitting), (repo, hw)
        assert any(x.data == 1 and x.expert == 1 for x in fitting), (repo, hw)
