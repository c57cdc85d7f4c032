"""The vLLM memory model against figures vLLM itself logged (published in vLLM's issues and PRs).

Each case names its source; the tolerances are what the comparison in docs/vllm.md reports.
No GPU was lent to this work, so these are the only real-vLLM checks so far.
"""

from __future__ import annotations

import vllm_models as vm

from planner.runtimes import registry
from planner.runtimes.vllm import memory as mem

GiB = 1024**3
RT = registry.get("vllm")


def test_llama3_8b_weights_per_rank_match_vllms_log() -> None:
    # vllm-project/vllm PR 10511 (vLLM 0.6.5, Meta-Llama-3-8B on H100): "model weights take
    # 14.96GiB" at TP 1 and "7.48GiB" at TP 2; Llama-3.1-8B has the same shapes. The issue quotes
    # "Loading model weights took 14.99 GiB" for Llama-3.1-8B on an A10G.
    m = RT.model(vm.snapshot("meta-llama/Llama-3.1-8B"))
    assert abs(mem.rank_weights(m, 1, 1, 0) / GiB - 14.96) < 0.01
    assert abs(mem.rank_weights(m, 2, 1, 0) / GiB - 7.48) < 0.01
    assert abs(mem.rank_weights(m, 1, 1, 0) / GiB - 14.99) < 0.05


def test_llama3_8b_activation_peak_is_above_the_measured_one() -> None:
    # PR 10511: "PyTorch activation peak memory 1.26GiB" at TP 1 and TP 2 (8192 batched tokens,
    # 256 sequences, the defaults of that release)
    m = RT.model(vm.snapshot("meta-llama/Llama-3.1-8B"))
    for tp in (1, 2):
        peak = mem.activations(m, tp, 1, 0, batched_tokens=8192, max_num_seqs=256) / GiB
        assert 1.26 <= peak < 1.26 * 1.2, (tp, peak)


def test_qwen3_235b_kv_tokens_per_gib_match_vllms_log() -> None:
    # vllm-project/vllm issue 21348: Qwen3-235B-A22B-FP8 on 4x H100 at TP 4, "Available KV cache
    # memory: 8.11 GiB", "GPU KV cache size: 178,880 tokens". 4 KV heads over 4 ranks: one head,
    # K and V of 128 in bf16, 94 layers: 48,128 bytes per token per GPU.
    m = RT.model(vm.snapshot("Qwen/Qwen3-235B-A22B"))
    per_token = mem.kv_bytes_per_token_layer(m, 4, 2) * m.num_layers
    assert per_token == 48_128
    predicted = int(8.11 * GiB) // per_token
    assert abs(predicted - 178_880) / 178_880 < 0.02  # 180,935: 1.1 % above (8.11 is rounded in the log)


def test_calibration_script_reads_vllms_log_lines_and_plans_a_sparse_folder(tmp_path) -> None:
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).parent.parent / "benchmarks" / "vllm_calibration.py"
    spec = importlib.util.spec_from_file_location("vllm_calibration", path)
    cal = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cal)
    # the log lines of vLLM 0.34's format strings (gpu/model_runner.py:442, gpu_worker.py:796,
    # kv_cache_utils.py:1169), with figures from issue 21348
    log = ("INFO [gpu_model_runner.py] Model loading took 54.71 GiB memory and 41.2 seconds\n"
           "INFO [gpu_worker.py] Available KV cache memory: 8.11 GiB\n"
           "INFO [kv_cache_utils.py] GPU KV cache size: 178,880 tokens, Maximum concurrency for 40,960 tokens per request: 4.37x\n")
    assert cal.parse_log(log) == {"weights_gib": 54.71, "kv_available_gib": 8.11, "kv_tokens": 178880, "concurrency": 4.37}
    # a config-only folder with a sparse header-only checkpoint: fitcheck plans it from the header
    cal.write_folder(tmp_path, json.loads((vm.CATALOG / "meta-llama__Llama-3.1-8B.config.json").read_text()))
    assert (tmp_path / "model.safetensors").stat().st_size > 16 * 10**9
    predicted, argv = cal.predict(tmp_path, {"context": 8192}, hardware="h200")
    assert abs(predicted["weights_gib"] - 14.96) < 0.01 and predicted["kv_tokens"] > 500_000
    assert argv[:3] == ["vllm", "serve", str(tmp_path)] and "--revision" not in argv
