"""The Runtime seam: what every way of running a model supplies, and nothing more.

A *runtime* is one family of programs that load and run models (transformers + accelerate +
bitsandbytes; llama.cpp and its front ends; diffusers; fine-tuning; vLLM). Everything that is
true of only one of them lives in ``planner/runtimes/<name>/``; the rest of fitcheck sees only
this protocol and the records in :mod:`planner.core.records`:

    sources ──listing, config──▶ runtime.select() ──FileSelection──▶ sources read those files
    sources ──Snapshot──▶ runtime.model() ──facts──▶ runtime.plans() ──Plan*──▶ solve (rank)
                                                                               │
       report/cli ◀── runtime.describe_model(), describe_plan(), emit() ◀── chosen Plan
                      runtime.verify_argv(plan file) (a child process measures)

A runtime (a class with these members; see :class:`Runtime`):

1. ``name``, ``engines`` and ``version``: its ``--runtime`` name, the values its plans may carry
   in ``Plan.runtime`` (e.g. "llama.cpp", "llama-cpp-python", "ollama"), and the version of its
   model facts (the sources layer caches facts keyed by it).
2. ``select(listing, config)``: which files of a repo it would read (and so which headers the
   sources layer must fetch); empty when the repo holds nothing it runs. It never reads them:
   only ``planner/sources`` and ``planner/hardware`` do I/O.
3. ``model(snapshot, cached)``: what was read -> its own model facts (a frozen record with
   ``parameters``, ``download_bytes`` and ``to_dict()``: :class:`planner.core.records.ModelFacts`).
   ``cached`` is an earlier ``to_dict()`` of the facts for this commit, when the sources layer's
   cache holds one: rebuild from it instead of from the tensors.
4. ``plans(model, hardware, request)``: every candidate setting it can take, each a
   :class:`~planner.core.records.Plan` priced per device
   (:class:`~planner.core.records.DeviceMemory`) with a :class:`~planner.core.records.Speed`; a
   candidate that does not fit is still returned, with ``fits=False`` and its reasons in numbers.
   The generic solver ranks them (``planner.solve.solver.solve``).
5. ``reprice(model, hardware, request, plan)``: ``plan``'s settings priced again under another
   request (the largest-context search varies the context); ``min_bytes(model)``: a lower bound
   of any plan's memory, so that machines with less are not priced.
6. ``describe_model(report)`` and ``describe_plan(report, plan)``: this runtime's entries of the
   JSON report's ``model`` block and of each plan's block (on top of ``plan.settings.to_dict()``).
7. ``emit(report, plan, options)``: what runs the plan: files (script, config, Modelfile) and
   command lines (argv lists), all built from data and escaped by construction.
8. ``verify_argv(plan_doc, plan_path, out_path)``: the child process that runs a plan file and
   writes its measurements as JSON (None when this runtime cannot be verified here); raises
   :class:`~planner.core.errors.VerifyError` for a plan file it could not have written.

Two optional class attributes, read with a default by planner.api: ``multi_node = True`` for a
runtime that plans clusters (``--nodes``; the others refuse one), and ``derivative_tag`` (e.g.
"gguf") for a runtime that runs the Hub's quantized derivatives of a model: ``--runtime auto``
then plans the most downloaded one beside the model itself.

Runtimes never import each other; the solver never imports a runtime (tests/test_layers.py). A
new runtime is a folder ``planner/runtimes/NAME/`` with a class implementing :class:`Runtime`,
one line in :mod:`planner.runtimes.registry`, and its tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from planner.core.records import Constraints, FileSelection, Hardware, ModelFacts, Plan, RepoFile, Report, Snapshot, _ToDict

__all__ = ["Artifacts", "FileSelection", "Runtime"]


@dataclass(frozen=True, slots=True)
class Artifacts(_ToDict):
    """What runs a plan.

    Attributes:
        files: file name (e.g. "load.py", "Modelfile", "ds_config.json") -> its text.
        commands: name (e.g. "llama_server", "vllm_serve") -> argv list.
        environment: environment variables the plan relies on (e.g. OLLAMA_NUM_PARALLEL).
        packages: pip requirements the emitted files need.
        main: the key in ``files`` of the file a user runs (``--script`` writes it); "" if none.
            ``files["plan.json"]``, when present, is the plan file ``--config`` writes and
            ``fitcheck verify`` reads (it names its runtime in ``"runtime"``).
    """

    files: dict[str, str] = field(default_factory=dict)
    commands: dict[str, tuple[str, ...]] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    packages: tuple[str, ...] = ()
    main: str = ""


@runtime_checkable
class Runtime(Protocol):
    """One family of runners behind the seam (see the module docstring)."""

    #: the ``--runtime`` name that selects it
    name: ClassVar[str]
    #: the values a plan of this runtime may carry in ``Plan.runtime`` (e.g. "llama.cpp",
    #: "llama-cpp-python", "ollama" for the GGUF runtime); ``(name,)`` for most
    engines: ClassVar[tuple[str, ...]]
    #: the version of its model facts: facts cached under another version are not reused (raise
    #: it with every change to what the facts hold or how they are computed)
    version: ClassVar[str]

    def select(self, listing: Sequence[RepoFile], config: Mapping[str, Any] | None) -> Sequence[FileSelection]:
        """The file sets this runtime could run from a repo listing (empty: none).

        Raises:
            NoWeights: the repo holds this runtime's files in a state it cannot load (e.g.
                safetensors shards without their index).
        """
        ...

    def model(self, snapshot: Snapshot, cached: Mapping[str, Any] | None = None) -> ModelFacts:
        """This runtime's facts about the model, from what the sources layer read."""
        ...

    def plans(self, model: Any, hardware: Hardware, request: Constraints) -> list[Plan]:
        """Every candidate, priced per device; those that do not fit carry their reasons."""
        ...

    def reprice(self, model: Any, hardware: Hardware, request: Constraints, plan: Plan) -> Plan:
        """``plan``'s settings on the same devices, priced again under ``request``."""
        ...

    def min_bytes(self, model: Any) -> int:
        """A lower bound of the memory any plan of the model needs (over all devices): a machine
        with less is not even priced (0 when unknown)."""
        ...

    def describe_model(self, report: Report) -> dict[str, Any]:
        """This runtime's entries of the JSON report's ``model`` block."""
        ...

    def describe_plan(self, report: Report, plan: Plan) -> dict[str, Any]:
        """This runtime's entries of a plan's JSON block besides ``plan.settings.to_dict()``."""
        ...

    def emit(self, report: Report, plan: Plan, options: Mapping[str, Any]) -> Artifacts:
        """The files and command lines that run ``plan`` (``options``: what the user chose for
        them, e.g. ``offload_dir``, ``trust_remote_code``; a runtime ignores what it does not use)."""
        ...

    def verify_argv(self, plan_doc: Mapping[str, Any], plan_path: str, out_path: str) -> list[str] | None:
        """The child process that runs the plan file and writes measurements to ``out_path``."""
        ...
