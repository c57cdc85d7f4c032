"""Options of the vLLM runtime (planner/runtimes/vllm): layouts over GPUs and nodes, KV cache, lengths.

Any of them implies ``--runtime vllm``, except the serving options SGLang takes too (``--users``,
``--tp``, ``--kv-cache-dtype``, ``--online-fp8``), which go to ``--runtime sglang`` when it is
named. They become Constraints.options. ``--nodes`` is a hardware option of its own
(planner/cli/options/cluster.py).
"""

from __future__ import annotations

from typing import Any

import click

from planner.core.errors import UsageError


def _max_model_len(ctx: click.Context, param: click.Parameter, value: str | None) -> int | str | None:
    if value is None or value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        raise click.BadParameter("give a number of tokens or 'auto'") from None
    if not 1 <= n <= 1 << 32:
        raise click.BadParameter("must be from 1 to 2^32 tokens")
    return n


OPTIONS = [
    click.option("--users", type=click.IntRange(1, 1_000_000), help="Concurrent sequences of --context tokens to serve: the fewest GPUs that do (vLLM, SGLang)."),
    click.option("--tp", type=click.IntRange(1, 1024), help="Tensor-parallel size (vLLM, SGLang; default: every size that fits)."),
    click.option("--pp", type=click.IntRange(1, 1024), help="vLLM pipeline-parallel size (default: every size that fits)."),
    click.option("--dp", type=click.IntRange(1, 1024),
                 help="vLLM data-parallel size: replicas of tp x pp GPUs, each with its own KV cache (default: 1 and powers of two that fit)."),
    click.option("--expert-parallel/--no-expert-parallel", "expert_parallel", default=None,
                 help="vLLM --enable-expert-parallel: whole MoE experts per GPU over tp x dp (default: with data parallelism on MoE models)."),
    click.option("--kv-cache-dtype", type=click.Choice(["auto", "fp8"]), help="KV cache dtype (vLLM, SGLang: fp8 is fp8_e4m3; default: both are priced)."),
    click.option("--gpu-memory-utilization", type=click.FloatRange(0.05, 1.0), help="vLLM's budget per GPU as a fraction of its memory (default 0.92)."),
    click.option("--max-model-len", callback=_max_model_len, metavar="TOKENS|auto", help="vLLM max_model_len (default: --context; auto: the largest that fits)."),
    click.option("--max-num-seqs", type=click.IntRange(1, 1_000_000), help="vLLM max_num_seqs (default: max(--users, vLLM's default))."),
    click.option("--max-num-batched-tokens", type=click.IntRange(1, 10_000_000), help="vLLM max_num_batched_tokens (default: vLLM's for the GPU)."),
    click.option("--online-fp8/--no-online-fp8", "online_fp8", default=None, help="--quantization fp8 of a 16-bit checkpoint (vLLM, SGLang; default: both are priced)."),
]

_KEYS = {"users": "users", "tp": "tp", "pp": "pp", "dp": "dp", "kv_cache_dtype": "kv_cache_dtype",
         "gpu_memory_utilization": "gpu_memory_utilization", "max_model_len": "max_model_len", "max_num_seqs": "max_num_seqs",
         "max_num_batched_tokens": "max_num_batched_tokens"}
# the options planner/runtimes/sglang reads too
SHARED = frozenset({"users", "tp", "kv_cache_dtype", "online_fp8"})


def collect(o: dict[str, Any]) -> dict[str, Any]:
    """The vLLM requests the user gave (and the runtime they imply: ``vllm``, or ``("vllm", "sglang")``
    when only options SGLang takes too were given)."""
    out = {key: o[name] for name, key in _KEYS.items() if o.get(name) is not None}
    if o.get("online_fp8") is not None:
        out["online_fp8"] = bool(o["online_fp8"])
    if o.get("expert_parallel") is not None:
        out["expert_parallel"] = bool(o["expert_parallel"])
    if o.get("gpu_memory_utilization") is not None and o["gpu_memory_utilization"] != o["gpu_memory_utilization"]:
        raise UsageError("--gpu-memory-utilization is not a number")
    given = set(out)
    if given - SHARED:
        out["runtime"] = "vllm"
    elif given:
        out["runtime"] = ("vllm", "sglang")
    return out
