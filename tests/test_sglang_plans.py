"""SGLang plans (planner/runtimes/sglang): SGLang 0.5.23's defaults, the KV pool per rank, the
layouts and their rejections, and the emitted commands, on real configs with header-level tensor
lists (tests/vllm_models.py) and the bundled hardware profiles."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace

import pytest
import vllm_models as vm

from planner import api
from planner.core.records import Constraints
from planner.hardware import cluster
from planner.runtimes import registry
from planner.runtimes.sglang import defaults, memory
from planner.runtimes.sglang.settings import SglangSettings

GiB = 1024**3
MiB = 1024**2


def _report(repo: str, hardware: str, *, nodes: int | None = None, context: int = 8192, prefer: str = "quality", **options):
    snap = vm.snapshot(repo)
    return api.plan(snap.id, hardware=cluster.load(hardware, nodes=nodes), snapshot=snap, runtime="sglang",
                    constraints=Constraints(context=context, prefer=prefer).with_options(**options))


def _plans(repo: str, hardware: str, *, nodes: int | None = None, context: int = 8192, **options):
    rt = registry.get("sglang")
    return rt.plans(rt.model(vm.snapshot(repo)), cluster.load(hardware, nodes=nodes),
                    Constraints(context=context).with_options(**options))


def _settings(plan) -> SglangSettings:
    assert isinstance(plan.settings, SglangSettings)
    return plan.settings


def test_mem_fraction_static_defaults_follow_sglangs_formula() -> None:
    # memory_hook.py:301-328 worked by hand for an H100 (nvidia-smi: 81559 MiB), TP 1 and TP 8:
    # chunked_prefill_size 8192; decode max_bs 256 (tp < 4) or 512; 58 prefill capture sizes up to 8192
    assert len(defaults.prefill_capture_sizes(8192)) == 8 + 14 + 8 + 8 + 12 + 8
    h100 = cluster.load("h100-sxm-80gb").gpus[0].total_bytes
    one = defaults.gpu_defaults(h100, tp=1)
    assert (one.chunked_prefill_size, one.cuda_graph_max_bs) == (8192, 256)
    assert one.reserved_mib == 512 + 8192 * 1.5 + 1 / 8 * 1024 + 256 * 2 + 58 * 8
    assert one.mem_fraction_static == round((81559 - one.reserved_mib) / 81559, 3) == 0.83
    eight = defaults.gpu_defaults(h100, tp=8)
    assert eight.cuda_graph_max_bs == 512 and eight.reserved_mib == 512 + 12288 + 1024 + 1024 + 464
    assert eight.mem_fraction_static < one.mem_fraction_static
    # an RTX 4090 (24 GiB): 4096-token chunks, max_bs 48; MLA models reserve 1.5 GiB for the prefill graph
    rtx = cluster.load("rtx-4090").gpus[0].total_bytes
    small = defaults.gpu_defaults(rtx, tp=1)
    assert (small.chunked_prefill_size, small.cuda_graph_max_bs, small.prefill_graph_sizes) == (4096, 48, 50)
    assert defaults.gpu_defaults(rtx, tp=1, mla=True).reserved_mib == small.reserved_mib - 50 * 8 + 1536
    # --max-running-requests below the graph's max_bs lowers it (memory_hook.py:178-185)
    assert defaults.gpu_defaults(h100, tp=1, max_running_requests=64).cuda_graph_max_bs == 64


def test_kv_pool_is_fraction_of_baseline_less_weights_over_cell_size() -> None:
    report = _report("meta-llama/Llama-3.1-8B", "h100-sxm-80gb", kv_cache_dtype="auto", online_fp8=False)
    plan = report.solution.chosen
    s = _settings(plan)
    gpu = cluster.load("h100-sxm-80gb").gpus[0]
    weights = sum(t.nbytes for t in vm.snapshot("meta-llama/Llama-3.1-8B").tensors)  # tp 1: every tensor on the GPU
    baseline = gpu.free_bytes - memory.CUDA_CONTEXT
    cell = 8 * (128 + 128) * 32 * 2  # 8 KV heads x (K + V) x 32 layers x bf16
    assert s.kv_cache.bytes_per_token_per_gpu == cell
    assert s.mem_fraction_static == 0.83 and s.mem_fraction_default
    assert s.kv_cache.tokens == (int(baseline * 0.83) - weights) // cell
    assert s.kv_cache.max_concurrent_sequences == s.kv_cache.tokens // 8192
    # resolve_max_num_reqs: tokens / context x 512 clamped to [2048, 4096], at most half the tokens
    assert s.kv_cache.max_running_requests == min(max(min(int(s.kv_cache.tokens / 8192 * 512), 4096), 2048), s.kv_cache.tokens // 2)
    m = plan.memory["node0:cuda:0"]
    assert m.weights == weights and m.kv_cache == s.kv_cache.tokens * cell and m.total <= m.free
    assert m.activations == baseline - int(baseline * 0.83)  # SGLang's headroom for activations and CUDA graphs


def test_mla_cell_is_the_latent_on_every_rank() -> None:
    plans = _plans("deepseek-ai/DeepSeek-V3", "8x-h200", tp=8, kv_cache_dtype="auto")
    s = _settings(plans[0])
    assert s.kv_cache.bytes_per_token_per_gpu == (512 + 64) * 61 * 2  # (kv_lora_rank + rope) x layers x bf16, not / tp
    assert plans[0].fits and s.checkpoint_quantization == "fp8"


def test_rejections_carry_numbers() -> None:
    by_tp = {_settings(p).layout.tensor: p for p in _plans("meta-llama/Llama-3.1-70B-Instruct", "8x-h100-sxm-80gb", tp=3)}
    assert "tp 3 does not divide 64 attention heads" in by_tp[3].reasons
    assert "tp 3 and 8 KV heads: neither divides the other" in by_tp[3].reasons
    qwen = _plans("Qwen/Qwen3-30B-A3B", "8x-h100-sxm-80gb", tp=8, kv_cache_dtype="auto", online_fp8=False)
    assert qwen[0].fits  # 32 heads, 4 KV heads: tp 8 replicates each KV head on two ranks
    big = _plans("meta-llama/Llama-3.1-405B", "8x-h100-sxm-80gb", tp=8, kv_cache_dtype="auto", online_fp8=False)
    why = big[0].reasons[0]
    assert why.startswith("weights ") and "leave no KV cache within --mem-fraction-static" in why and not big[0].fits
    long = _plans("meta-llama/Llama-3.1-8B", "h100-sxm-80gb", context=200_000, kv_cache_dtype="auto", online_fp8=False)
    assert any("context_length 200000 exceeds the model's max_position_embeddings 131072" in r for r in long[0].reasons)
    many = _plans("meta-llama/Llama-3.1-8B", "h100-sxm-80gb", users=100, kv_cache_dtype="auto", online_fp8=False)
    assert any(r.startswith("the KV pool holds ") and "--users asks for 100" in r for r in many[0].reasons)
    t4 = _plans("meta-llama/Llama-3.1-8B", "t4", tp=1)
    assert {p.settings.kv_cache.dtype for p in t4} == {"auto", "fp8_e4m3"}
    assert all(not p.fits for p in t4 if p.settings.kv_cache.dtype == "fp8_e4m3")  # compute capability 7.5
    assert all(p.settings.quantization is None for p in t4)  # no online fp8 below 8.0 (fp8.py:339)


def test_tensor_parallel_spans_whole_nodes() -> None:
    report = _report("meta-llama/Llama-3.1-405B", "8x-h100-sxm-80gb", nodes=2, kv_cache_dtype="auto", online_fp8=False)
    plan = report.solution.chosen
    s = _settings(plan)
    assert (s.layout.tensor, s.layout.nodes, s.layout.gpus_per_node) == (16, 2, 8) and plan.fits
    assert len(plan.memory) == 16 and "node1:cuda:7" in plan.memory
    cmds = api.emit(report).commands
    for r in (0, 1):
        argv = list(cmds[f"sglang_serve_node{r}"])
        flags = dict(zip(argv[3::2], argv[4::2], strict=False))
        assert flags["--tp-size"] == "16" and flags["--nnodes"] == "2" and flags["--node-rank"] == str(r)
        assert flags["--dist-init-addr"] == "HEAD_IP:25000"
    assert cmds["sglang_serve"] == cmds["sglang_serve_node0"]
    # a TP group of 12 fits neither one node of 8 nor whole nodes
    odd = _plans("meta-llama/Llama-3.1-405B", "8x-h100-sxm-80gb", nodes=2, tp=12)
    assert any("tp 12 needs 12 GPUs in one node or in whole nodes" in r for r in odd[0].reasons)


def test_users_pick_the_fewest_gpus_and_the_command_carries_the_plan() -> None:
    report = _report("meta-llama/Llama-3.1-70B-Instruct", "8x-h100-sxm-80gb", nodes=2, context=32768, users=16,
                     kv_cache_dtype="auto", online_fp8=False)
    plan = report.solution.chosen
    s = _settings(plan)
    assert s.kv_cache.max_concurrent_sequences >= 16
    assert s.layout.tensor == 8  # tp 4 holds 10 such sequences; tp 16 (two nodes) is turned away
    assert any(p.reasons[0].startswith("uses 16 GPUs; 8 already serve the users") for p in report.solution.rejected if p.reasons)
    argv = list(api.emit(report).commands["sglang_serve"])
    assert argv[:5] == ["python", "-m", "sglang.launch_server", "--model-path", "meta-llama/Llama-3.1-70B-Instruct"]
    flags = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert flags["--tp-size"] == str(s.layout.tensor) and flags["--context-length"] == "32768"
    assert float(flags["--mem-fraction-static"]) == s.mem_fraction_static and "--kv-cache-dtype" not in flags
    assert flags["--revision"] == "0" * 40


def test_asked_fraction_and_running_requests() -> None:
    plans = _plans("meta-llama/Llama-3.1-8B", "h100-sxm-80gb", mem_fraction_static=0.95, max_running_requests=32,
                   kv_cache_dtype="fp8", online_fp8=False)
    s = _settings(plans[0])
    assert s.mem_fraction_static == 0.95 and not s.mem_fraction_default and s.kv_cache.dtype == "fp8_e4m3"
    assert s.kv_cache.max_running_requests == 32 and s.cuda_graph_max_bs == 32
    own = defaults.gpu_defaults(cluster.load("h100-sxm-80gb").gpus[0].total_bytes, tp=1, max_running_requests=32)
    assert any("leaves" in n and f"SGLang's default ({own.mem_fraction_static:g}) reserves" in n for n in plans[0].notes)
    crowd = _plans("meta-llama/Llama-3.1-8B", "h100-sxm-80gb", users=40, max_running_requests=32, kv_cache_dtype="auto",
                   online_fp8=False)
    assert any("SGLang caps running requests at 32" in r for r in crowd[0].reasons)


def test_readme_plan_file_and_registry() -> None:
    report = _report("Qwen/Qwen3-30B-A3B", "8x-h100-sxm-80gb", users=4, kv_cache_dtype="fp8")
    art = api.emit(report)
    line = shlex.join(art.commands["sglang_serve"])
    assert line in art.files["README.md"] and shlex.split(line) == list(art.commands["sglang_serve"])
    doc = json.loads(art.files["plan.json"])
    assert doc["runtime"] == "sglang" and doc["load"]["command"] == list(art.commands["sglang_serve"])
    assert doc["kv_cache"]["dtype"] == "fp8_e4m3" and "--kv-cache-dtype" in doc["commands"]["sglang_serve"]
    assert "sglang" in registry.ASKED_ONLY and all(rt.name != "sglang" for rt in registry.chosen("auto"))
    assert registry.owner(report.solution.chosen).name == "sglang"


def test_refused_checkpoints() -> None:
    from planner.core.errors import UnsupportedModel

    cfg, _ = vm.config_and_spec("meta-llama/Llama-3.1-8B")
    snap = vm.snapshot("meta-llama/Llama-3.1-8B")
    bnb = replace(snap, config={**cfg, "quantization_config": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}})
    with pytest.raises(UnsupportedModel, match="fitcheck does not plan bitsandbytes nf4 checkpoints on SGLang 0.5.23"):
        registry.get("sglang").model(bnb)


def test_kv_pool_against_sglangs_published_log() -> None:
    # vllm-project/vllm issue 21348: Qwen3-235B-A22B-FP8 on 4x H100, `sglang.launch_server --tp 4
    # --mem-fraction-static 0.93` logged "KV Cache is allocated. #tokens: 367404, K size: 8.23 GB,
    # V size: 8.23 GB"; vLLM logged "Model loading took 54.71 GiB" for the same checkpoint and TP.
    model = registry.get("sglang").model(vm.snapshot("Qwen/Qwen3-235B-A22B"))
    cell = memory.cell_size(model, 4, "auto")
    assert cell == 1 * (128 + 128) * 94 * 2  # 4 KV heads over 4 ranks, bf16 K and V, 94 layers
    assert abs(367404 * cell / 2 / GiB - 8.23) < 0.005  # SGLang's K size is half the pool: the cell is SGLang's
    h100 = cluster.load("h100-sxm-80gb").gpus[0]
    baseline = h100.free_bytes - memory.CUDA_CONTEXT - memory.COMMUNICATION
    predicted = (int(0.93 * baseline) - int(54.71 * GiB)) // cell
    assert abs(predicted - 367404) / 367404 < 0.02  # 364,579: 0.8 % below the log (401k, +9 %, without the 1.79 GiB)


def test_a_machine_without_a_cuda_gpu_gets_one_rejection() -> None:
    plans = _plans("meta-llama/Llama-3.1-8B", "cpu-laptop-16gb")
    assert len(plans) == 1 and not plans[0].fits
    assert plans[0].reasons == ("cpu-laptop-16gb has no CUDA GPU; fitcheck plans SGLang on CUDA GPUs (use --hardware PROFILE)",)
