"""The runtimes fitcheck knows, by ``--runtime`` name, each imported only when first used.

A runtime registers in one line of :data:`RUNTIMES`: its name and ``"module:Class"``. The module
is imported lazily, so ``fitcheck --help`` and a plan import only what they use (no torch or
transformers on the plan path: tests/test_perf_imports.py).

``"auto"`` means every runtime whose ``select()`` finds files it runs in the repo, in the order
of :data:`RUNTIMES`, except those in :data:`ASKED_ONLY`: the plans of all of them are ranked in
one table.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from planner.core.errors import NoWeights, UsageError
from planner.core.records import FileSelection, Plan, RepoFile, Report
from planner.runtimes.base import Runtime

AUTO = "auto"
# name -> "module:Class"; one line per runtime, in the order "auto" tries them.
RUNTIMES: dict[str, str] = {
    "transformers": "planner.runtimes.transformers.runtime:TransformersRuntime",
    "vllm": "planner.runtimes.vllm.runtime:VllmRuntime",
    "sglang": "planner.runtimes.sglang.runtime:SglangRuntime",
    "training": "planner.runtimes.training.runtime:TrainingRuntime",
    "gguf": "planner.runtimes.gguf.runtime:GgufRuntime",
    "diffusers": "planner.runtimes.diffusers.runtime:DiffusersRuntime",
}

# Runtimes that plan only when asked (``--runtime NAME``, or an option of theirs such as
# ``--train``): they answer another question than "how do I run this model here".
ASKED_ONLY: frozenset[str] = frozenset({"training", "vllm", "sglang"})


def names() -> tuple[str, ...]:
    """The registered runtime names, in "auto" order."""
    return tuple(RUNTIMES)


@cache
def get(name: str) -> Runtime:
    """The runtime registered as ``name`` (one instance per process).

    Raises:
        UsageError: no runtime has that name.
    """
    target = RUNTIMES.get(name)
    if target is None:
        raise UsageError(f"--runtime {name!r} is not one of {', '.join((AUTO, *RUNTIMES))}")
    module, _, cls = target.partition(":")
    runtime: Runtime = getattr(importlib.import_module(module), cls)()
    return runtime


def chosen(name: str = AUTO) -> tuple[Runtime, ...]:
    """The runtimes ``--runtime name`` may plan with: the one named, or every one for "auto"."""
    return tuple(get(n) for n in RUNTIMES if n not in ASKED_ONLY) if name == AUTO else (get(name),)


def owner(plan: Plan) -> Runtime:
    """The registered runtime whose plans carry ``plan.runtime`` (its engine name).

    Raises:
        UsageError: no registered runtime has that engine.
    """
    for name in RUNTIMES:
        runtime = get(name)
        if plan.runtime in runtime.engines:
            return runtime
    raise UsageError(f"no runtime plans for {plan.runtime!r}")


def view(report: Report, plan: Plan) -> tuple[Runtime, Report]:
    """(the runtime that made ``plan``, ``report`` as that runtime made it)."""
    runtime = owner(plan)
    return runtime, report.view(runtime.name)


def select(listing: Sequence[RepoFile], config: Mapping[str, Any] | None, *, name: str = AUTO,
           where: str = "") -> list[tuple[Runtime, FileSelection]]:
    """Every (runtime, file set) that ``--runtime name`` could run from a repo, best first.

    Raises:
        NoWeights: none of them finds files it runs (naming what the repo holds instead), or
            the one runtime named finds its files in a state it cannot load.
    """
    found: list[tuple[Runtime, FileSelection]] = []
    problems: list[NoWeights] = []
    for runtime in chosen(name):
        try:
            found += [(runtime, sel) for sel in runtime.select(listing, config)]
        except NoWeights as e:
            problems.append(e)
    if found:
        return found
    if problems:
        raise NoWeights(f"{where}: {problems[0].message}", hint=problems[0].hint)
    weights = sorted(f.path for f in listing if f.path.endswith((".safetensors", ".bin", ".pth", ".pt", ".gguf", ".ckpt")))
    found_text = ", ".join(weights[:3]) if weights else "no weight files"
    runtimes = name if name != AUTO else ", ".join(RUNTIMES)
    raise NoWeights(f"{where}: has no weights {runtimes} runs; found {found_text}",
                    hint=f"the runtimes are: {', '.join(RUNTIMES)} (--runtime NAME)")
