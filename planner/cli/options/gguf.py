"""Options of the GGUF runtime (llama.cpp, llama-cpp-python, Ollama): planner.runtimes.gguf."""

from __future__ import annotations

from typing import Any

import click

OPTIONS = [
    click.option("--quant", metavar="TYPE", help="GGUF: plan this quant file only (e.g. Q4_K_M); its header is read."),
    click.option("--n-gpu-layers", "n_gpu_layers", type=click.IntRange(0, 100_000), metavar="N",
                 help="GGUF: offload exactly N layers (llama.cpp -ngl; the output layer counts) instead of the most that fit."),
    click.option("--kv-type", "kv_type", type=click.Choice(["f16", "q8_0", "q4_0"]), help="GGUF: KV cache type (-ctk/-ctv)."),
    click.option("--engine", "engine", type=click.Choice(["llama.cpp", "llama-cpp-python", "ollama"]),
                 help="GGUF: the program the plan is for (default llama.cpp)."),
    click.option("--mlock", "mlock", is_flag=True, default=None,
                 help="GGUF: lock the CPU weights in RAM (llama.cpp --load-mode mmap+mlock, use_mlock=True); "
                      "refused when they exceed RLIMIT_MEMLOCK (ulimit -l)."),
    click.option("--rpc-hosts", "rpc_hosts", metavar="HOST[,HOST...]",
                 help="GGUF on a cluster (--nodes, a cluster profile): the address of each worker node, in node order, "
                      "for the llama.cpp RPC commands (default node1, node2, ...)."),
    click.option("--gguf-repo", "gguf_repo", metavar="ORG/NAME",
                 help="GGUF: plan this GGUF repo beside the model (default: its most downloaded GGUF derivative on the Hub)."),
]


def collect(o: dict[str, Any]) -> dict[str, Any]:
    out = {k: o[k] for k in ("quant", "n_gpu_layers", "kv_type", "engine", "mlock", "rpc_hosts") if o.get(k) is not None}
    if out:
        out["runtime"] = "gguf"
    if o.get("gguf_repo") is not None:  # compared with the model's own plans: no runtime implied
        from planner.core import ids

        out["gguf_repo"] = ids.repo_id(ids.model_ref(o["gguf_repo"])[0])
    return out
