"""Runtime-specific command-line options of ``plan`` and ``check``, one module per runtime
(and ``cluster``: ``--nodes``, which several take).

Each module listed in :data:`GROUPS` defines:

* ``OPTIONS``: click option decorators (their parameter names must not clash with another
  group's or with the common options in ``planner/cli/main.py``);
* ``collect(o) -> dict``: from click's parsed values, the runtime requests for
  :attr:`planner.core.records.Constraints.options` (only those the user gave). The key
  ``"runtime"`` in the result, when present, names the runtime those options imply (e.g.
  ``--train`` implies the training runtime) unless ``--runtime`` names another; a tuple of
  names for options several runtimes take (``--tp`` is vLLM's and SGLang's): ``--runtime``
  picks among them, the first is implied otherwise.

The modules import only click and the core layer, so ``fitcheck --help`` stays fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from planner.core.errors import UsageError

# one line per runtime that has options of its own
GROUPS: tuple[str, ...] = (
    "planner.cli.options.cluster",  # --nodes: a hardware option every multi-node runtime takes
    "planner.cli.options.vllm",
    "planner.cli.options.sglang",
    "planner.cli.options.training",
    "planner.cli.options.gguf",
    "planner.cli.options.diffusers",
)


def _modules() -> list[ModuleType]:
    return [importlib.import_module(name) for name in GROUPS]


def apply(f: Callable[..., Any]) -> Callable[..., Any]:
    """``f`` with every group's options added."""
    for module in reversed(_modules()):
        for opt in reversed(module.OPTIONS):
            f = opt(f)
    return f


def collect(o: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """(the runtime options the user gave, the runtime they imply or None).

    Raises:
        UsageError: options of two runtimes that imply different runtimes.
    """
    options: dict[str, Any] = {}
    accepted: tuple[str, ...] | None = None  # the runtimes that take every option given so far
    cluster_only = False  # accepted so far only because of --nodes
    for module in _modules():
        got = dict(module.collect(o))
        runtime = got.pop("runtime", None)
        if runtime is not None:
            names = (runtime,) if isinstance(runtime, str) else tuple(runtime)
            both = names if accepted is None else tuple(n for n in accepted if n in names)
            if not both and cluster_only:
                raise UsageError(f"--nodes cannot be combined with the options of the {names[0]} runtime, which plans one machine")
            if not both:
                raise UsageError(f"options for the {accepted[0] if accepted else ''} and the {names[0]} runtimes cannot be combined")
            cluster_only = accepted is None and module.__name__.endswith(".cluster")
            accepted = both
        options.update(got)
    if accepted is None:
        return options, None
    asked = o.get("runtime")
    return options, asked if asked in accepted else accepted[0]
