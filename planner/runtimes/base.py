"""The Runtime seam: what every way of running a model supplies, and nothing more.

A *runtime* is one family of programs that load and run models (transformers + accelerate +
bitsandbytes; llama.cpp and its front ends; diffusers; fine-tuning; vLLM). Everything that is
true of only one of them lives in ``planner/runtimes/<name>/``; the rest of fitcheck sees only
this protocol and the records in :mod:`planner.core.records`:

    sources ──Snapshot──▶ runtime.model() ──facts──▶ runtime.plans() ──Plan*──▶ solve (rank)
                                                                              │
                                       runtime.emit(plan) ◀── the chosen Plan ┘ ──▶ report / cli
                                       runtime.verify_argv(plan file) (a child process measures)

A runtime:

1. ``select(listing, config)``: says which files of a repo it would read (and so which headers
   the sources layer must fetch), or None when the repo holds nothing it runs. It never reads
   them itself: only ``planner/sources`` and ``planner/hardware`` do I/O.
2. ``model(snapshot)``: turns what was read into its own model facts (a frozen record with
   ``to_dict()``; the solver never looks inside).
3. ``plans(model, hardware, request)``: every candidate setting it can take, each priced per
   device (:class:`~planner.core.records.DeviceMemory`) with a speed estimate; a candidate that
   does not fit is still returned, with ``fits=False`` and its reasons in numbers.
4. ``emit(plan, model, request)``: what runs the plan: files (script, config, Modelfile) and
   command lines (argv lists), all built from data and escaped by construction.
5. ``verify_argv(plan_path, out_path)``: the child process that runs a plan file and writes its
   measurements as JSON (or None when this runtime cannot be verified on this machine).

Runtimes never import each other; the solver never imports a runtime. A new runtime is a new
folder plus one line in :mod:`planner.runtimes.registry`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from planner.core.records import Hardware, RepoFile, Snapshot, _ToDict


@dataclass(frozen=True, slots=True)
class FileSelection(_ToDict):
    """The files a runtime would read from a repo.

    Attributes:
        format: how their headers are parsed: "safetensors", "gguf", "pytorch" (never read), or
            "json" (small JSON files only, e.g. a diffusers pipeline's model_index.json).
        files: repo paths whose headers (or, for "json", contents) the sources layer fetches.
        weight_files: the files a download for running the plan fetches (their sizes come from
            the listing).
        group: a label for a set of files that is one choice among several in the same repo
            (a GGUF quant type such as "Q4_K_M"; a diffusers variant such as "fp16"); "" if none.
    """

    format: str
    files: tuple[str, ...]
    weight_files: tuple[str, ...] = ()
    group: str = ""


@dataclass(frozen=True, slots=True)
class Artifacts(_ToDict):
    """What runs a plan.

    Attributes:
        files: file name (e.g. "load.py", "Modelfile", "ds_config.json") -> its text.
        commands: name (e.g. "llama_server", "vllm_serve") -> argv list.
        environment: environment variables the plan relies on (e.g. OLLAMA_NUM_PARALLEL).
        packages: pip requirements the emitted files need.
    """

    files: dict[str, str] = field(default_factory=dict)
    commands: dict[str, tuple[str, ...]] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    packages: tuple[str, ...] = ()


@runtime_checkable
class Runtime(Protocol):
    """One family of runners behind the seam (see the module docstring)."""

    #: the ``--runtime`` name that selects it
    name: ClassVar[str]
    #: the values a plan of this runtime may carry in ``Plan.runtime`` (e.g. "llama.cpp",
    #: "llama-cpp-python", "ollama" for the GGUF runtime); ``(name,)`` for most
    engines: ClassVar[tuple[str, ...]]

    def select(self, listing: Sequence[RepoFile], config: Mapping[str, Any] | None) -> Sequence[FileSelection]:
        """The file sets this runtime could run from a repo listing (empty: none)."""
        ...

    def model(self, snapshot: Snapshot) -> Any:
        """This runtime's facts about the model, from what the sources layer read."""
        ...

    def plans(self, model: Any, hardware: Hardware, request: Any) -> Iterable[Any]:
        """Every candidate, priced per device; those that do not fit carry their reasons."""
        ...

    def emit(self, plan: Any, model: Any, request: Any) -> Artifacts:
        """The files and command lines that run ``plan``."""
        ...

    def verify_argv(self, plan_path: str, out_path: str) -> list[str] | None:
        """The child process that runs the plan file and writes measurements to ``out_path``."""
        ...
