"""Options of the SGLang runtime (planner/runtimes/sglang); any of them implies ``--runtime sglang``.

SGLang also takes the serving options of planner/cli/options/vllm.py that name it (``--users``,
``--tp``, ``--kv-cache-dtype``, ``--online-fp8``), and ``--nodes`` (planner/cli/options/cluster.py).
"""

from __future__ import annotations

from typing import Any

import click

OPTIONS = [
    click.option("--mem-fraction-static", type=click.FloatRange(0.05, 0.99),
                 help="SGLang's share of each GPU for weights and the KV pool (default: SGLang's own for the GPU and layout)."),
    click.option("--max-running-requests", type=click.IntRange(1, 1_000_000),
                 help="SGLang's cap on running requests (default: SGLang derives it from the KV pool)."),
]


def collect(o: dict[str, Any]) -> dict[str, Any]:
    """The SGLang requests the user gave (and ``runtime: sglang`` when any was given)."""
    out = {key: o[key] for key in ("mem_fraction_static", "max_running_requests") if o.get(key) is not None}
    if out:
        out["runtime"] = "sglang"
    return out
