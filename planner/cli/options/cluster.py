"""``--nodes``: the hardware as a cluster of N copies of the machine (planner.hardware.cluster).

It is a hardware option, not one runtime's: the CLI itself reads it (planner/cli/main.py passes
it to ``api.resolve_hardware``), and every runtime that plans across machines takes it. Given
alone under ``--runtime auto`` it implies the first of :data:`MULTI_NODE` (vLLM); beside another
runtime's options (``--train``, ``--rpc-hosts``, ``--tp``) it leaves the choice to them. With a
``--runtime`` named it implies nothing: planner.api refuses a cluster for a runtime that plans one
machine, with its own message.
"""

from __future__ import annotations

from typing import Any

import click

# the runtimes whose class sets ``multi_node = True`` (planner/runtimes/*/runtime.py), vLLM first:
# --nodes alone under auto means serving; tests/test_training_nodes.py checks this list against
# the registry (the CLI does not import the runtimes, so that --help stays fast)
MULTI_NODE = ("vllm", "sglang", "gguf", "training")

OPTIONS = [
    click.option("--nodes", type=click.IntRange(1, 1024),
                 help=("Plan for N copies of the machine (--hardware or this one) as a cluster"
                       " (vLLM, SGLang, training with --train; with --runtime gguf, llama.cpp RPC).")),
]


def collect(o: dict[str, Any]) -> dict[str, Any]:
    """``runtime``: the runtimes that plan a cluster, when ``--nodes`` was given under auto."""
    if o.get("nodes") is None or o.get("runtime") not in (None, "auto"):
        return {}
    return {"runtime": MULTI_NODE}
