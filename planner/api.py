"""The library API the CLI is a thin layer over: read -> model -> plans -> solve, as one call.

>>> from planner import api
>>> report = api.plan("meta-llama/Llama-3.1-8B", hardware="rtx-4090")   # doctest: +SKIP
>>> report.solution.chosen.label                                          # doctest: +SKIP
'bf16 on gpu'

Which runtime plans is chosen by ``runtime``: a registry name, or "auto" for every runtime whose
``select()`` finds files it runs in the repo (planner.runtimes.registry).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from planner.core.errors import FitcheckError, NoFeasiblePlan, NoWeights, UsageError
from planner.core.records import Constraints, FileSelection, Hardware, ModelFacts, Plan, RepoFile, Report, Snapshot
from planner.core.units import fmt_bytes
from planner.hardware import cluster
from planner.hardware.probe import apply_overrides, probe
from planner.hardware.profiles import list_profiles
from planner.report.verify import Verification, verify_plan_file, verify_plan_text
from planner.runtimes import registry
from planner.runtimes.base import Artifacts, Runtime
from planner.solve import context
from planner.solve.solver import solve
from planner.sources import resolve

__all__ = ["Constraints", "Report", "emit", "max_context", "plan", "plan_each", "plan_many", "read_model", "resolve_hardware", "verify",
           "verify_plan_text"]


def resolve_hardware(*, hardware: str | None = None, gpus: tuple[int, ...] | None = None, ram: int | None = None,
                     disk: int | None = None, offload_dir: str | None = None, nodes: int | None = None) -> Hardware:
    """This machine (probed) or a named machine or cluster profile, with overrides applied; with
    ``nodes``, that many copies of the machine as one cluster (planner.hardware.cluster)."""
    hw = cluster.load(hardware, nodes=None) if hardware else probe(offload_dir=offload_dir)
    if gpus is not None or ram is not None or disk is not None:
        hw = apply_overrides(hw, gpus=gpus, ram=ram, disk=disk)
    return cluster.replicate(hw, nodes) if nodes is not None else hw


class _Selector:
    """The sources layer's ``select``: the first file set a chosen runtime finds; remembers whose."""

    def __init__(self, runtime: str, where: str, group: str | None = None) -> None:
        self.runtime_name, self.where, self.group = runtime, where, group
        self.runtime: Runtime | None = None

    def __call__(self, listing: Sequence[RepoFile], config: Mapping[str, Any] | None) -> FileSelection:
        found = registry.select(listing, config, name=self.runtime_name, where=self.where)
        # a group the user named (--quant Q4_K_M) is read instead of the runtime's first choice
        runtime, selection = next((x for x in found if self.group and x[1].group.upper() == self.group.upper()), found[0])
        self.runtime = runtime
        return selection


def read_model(model: str, *, runtime: str = registry.AUTO, **kw: Any) -> Snapshot:
    """Read ``model`` (repo id or local folder) with the files ``runtime`` selects, tensors included."""
    return resolve.read_model(model, select=_Selector(runtime, model), **kw)


def _read(model: str, runtime: str, kw: dict[str, Any], group: str | None = None) -> tuple[Snapshot, Runtime, Mapping[str, Any] | None]:
    select = _Selector(runtime, model, group)
    # the cache holds what an earlier read selected: its facts are reused only for one runtime
    named = registry.get(runtime) if runtime != registry.AUTO else registry.chosen()[0]
    snap, cached = resolve.read(model, select=select, version=_facts_version(named, group), **kw)
    if select.runtime is None and runtime == registry.AUTO:
        select(snap.files, snap.config)  # read from a cache or the catalog: whose files are these?
    return snap, select.runtime or named, cached


def _facts_version(rt: Runtime, group: str | None = None) -> str:
    """The key the sources layer caches ``rt``'s model facts under: runtimes never share facts, and
    facts read for a named file group (``--quant Q4_K_M``) differ from another group's."""
    base = rt.version if rt.name == "transformers" else f"{rt.name}/{rt.version}"
    return base + (f"#{group.upper()}" if group else "")


def _facts(snap: Snapshot, rt: Runtime, cached: Mapping[str, Any] | None, endpoint: str | None, fresh: bool,
           group: str | None = None) -> ModelFacts:
    facts = rt.model(snap, cached)
    if fresh and cached is None:
        resolve.remember(endpoint, snap, facts.to_dict(), _facts_version(rt, group))
    return facts


def plan(model: str, *, hardware: Hardware | Callable[[], Hardware], constraints: Constraints = Constraints(),
         revision: str | None = None, token: str | bool | None = None, endpoint: str | None = None, timeout: float = 30.0,
         snapshot: Snapshot | None = None, runtime: str = registry.AUTO) -> Report:
    """Read ``model``, let the runtime price every candidate on ``hardware``, and rank them.

    ``runtime`` "auto" plans with every runtime (but those that plan only when asked) that finds
    files it runs in the repo, and ranks all their plans in one table (the report's ``others``
    hold what the runtimes besides the chosen plan's read).

    ``hardware`` may be a callable (e.g. the probe): it then runs while the Hub is read.
    A model that fits nowhere still returns a Report (``fits`` is False, ``rejected`` says why and
    ``suggestion`` names the smallest profile that would fit); errors reading it raise.
    """
    kw: dict[str, Any] = {"revision": revision, "token": token, "endpoint": endpoint, "timeout": timeout}
    cached: Mapping[str, Any] | None = None
    quant = constraints.option("quant")  # a file group the user named: read it instead of the first choice
    if runtime != registry.AUTO and constraints.option(f"{runtime}_repo"):
        model = constraints.option(f"{runtime}_repo")  # e.g. --gguf-repo with --runtime gguf: plan that repo
    if snapshot is not None:
        rt = registry.get(runtime) if runtime != registry.AUTO else registry.chosen()[0]
        snap = snapshot
        if callable(hardware):
            hardware = hardware()
    elif callable(hardware):
        with ThreadPoolExecutor(max_workers=1) as pool:
            probing = pool.submit(hardware)
            snap, rt, cached = _read(model, runtime, kw, quant)
            hardware = probing.result()
    else:
        snap, rt, cached = _read(model, runtime, kw, quant)
    read = [(snap, rt, _facts(snap, rt, cached, endpoint, snapshot is None, quant))]
    if runtime == registry.AUTO and snapshot is None:
        read += _also(model, snap, rt, kw, endpoint, quant)
        read += _derived(model, snap, read, constraints, kw, endpoint, quant)
    return _solved(read, hardware, constraints)


def _also(model: str, first: Snapshot, first_rt: Runtime, kw: dict[str, Any], endpoint: str | None,
          group: str | None) -> list[tuple[Snapshot, Runtime, ModelFacts]]:
    """What the other "auto" runtimes that find files of theirs in the same listing read."""
    out: list[tuple[Snapshot, Runtime, ModelFacts]] = []
    for rt in registry.chosen():
        if rt is first_rt or not first.files:
            continue
        try:
            if not rt.select(first.files, first.config or None):
                continue
        except NoWeights:
            continue
        snap, got, cached = _read(model, rt.name, kw, group)
        out.append((snap, got, _facts(snap, got, cached, endpoint, True, group)))
    return out


def _derived(model: str, first: Snapshot, read: list[tuple[Snapshot, Runtime, ModelFacts]], c: Constraints,
             kw: dict[str, Any], endpoint: str | None, group: str | None) -> list[tuple[Snapshot, Runtime, ModelFacts]]:
    """For each "auto" runtime that runs quantized derivatives (``derivative_tag``, e.g. GGUF repos)
    and found nothing in the repo itself: the repo the user named for it (``--gguf-repo``), else
    the most downloaded derivative the Hub's model tree lists, read and planned too."""
    out: list[tuple[Snapshot, Runtime, ModelFacts]] = []
    have = {rt.name for _, rt, _ in read}
    for rt in registry.chosen():
        tag = getattr(rt, "derivative_tag", None)
        if tag is None or rt.name in have:
            continue
        named = c.option(f"{rt.name}_repo")
        if named is None and first.source != "hub":
            continue  # derivatives are looked up on the Hub only when the model itself came from it
        found, trouble = ([named], None) if named else resolve.derivatives(first.id, library=tag, token=kw["token"],
                                                                           endpoint=endpoint, timeout=kw["timeout"])
        for repo in found:
            snap, got, cached = _read(repo, rt.name, kw, group)
            why = "named by --" + f"{rt.name}-repo" if named else f"a {tag} derivative of {first.id} in the Hub's model tree"
            snap = replace(snap, notes=(*snap.notes, f"{got.name} plans from {repo} ({why})"))
            out.append((snap, got, _facts(snap, got, cached, endpoint, True, group)))
        if trouble is not None:
            first_snap, first_rt, first_facts = read[0]
            read[0] = (replace(first_snap, notes=(*first_snap.notes, trouble)), first_rt, first_facts)
    return out


def _solved(read: Sequence[tuple[Snapshot, Runtime, ModelFacts]], hw: Hardware, c: Constraints) -> Report:
    """Rank the plans of every runtime in ``read`` together; the report is the chosen plan's runtime's."""
    if hw.nodes:  # a cluster: only the runtimes that plan across machines
        read = [x for x in read if getattr(x[1], "multi_node", False)]
        if not read:
            raise UsageError(f"{hw.name} is a cluster of {len(hw.nodes)} nodes; this runtime plans one machine",
                             hint="use --runtime vllm or --runtime sglang (--runtime gguf for a GGUF model, over llama.cpp RPC;"
                                  " --train to fine-tune) for a cluster, or plan one node")
    # the context within the model's limit (the same model, so the first runtime's facts tell)
    limited = [(*_within_limit(snap, facts, c), rt, facts) for snap, rt, facts in read]
    c = limited[0][1]
    read = [(snap, rt, facts) for snap, _, rt, facts in limited]
    plans = [p for _, rt, facts in read for p in rt.plans(facts, hw, c)]
    views = [Report(snap, facts, hw, c, None, runtime=rt.name) for snap, rt, facts in read]
    try:
        solution = solve(plans, c.prefer, where=hw.name)
    except NoFeasiblePlan as e:
        first = views[0]
        snap, rt, facts = read[0]
        return replace(first, rejected=tuple(e.rejections), suggestion=smallest_fit(facts, rt, c), others=tuple(views[1:]))
    owner = registry.owner(solution.chosen).name
    main = next((v for v in views if v.runtime == owner), views[0])
    return replace(main, solution=solution, rejected=solution.rejected, others=tuple(v for v in views if v is not main))


def _within_limit(snap: Snapshot, facts: ModelFacts, c: Constraints) -> tuple[Snapshot, Constraints]:
    """The default context lowered to the model's trained limit; a warning when the asked one is beyond it."""
    limit = getattr(facts, "max_context", None)
    if not isinstance(limit, int) or limit < 1:
        return snap, c
    note = None
    if c.context_is_default and c.context + c.new_tokens > limit:
        c = replace(c, context=max(1, limit - c.new_tokens))
        note = (f"context {c.context}: the model's limit is {limit} tokens (max_position_embeddings), "
                f"{c.new_tokens} of them kept for the answer")
    elif c.context + c.new_tokens > limit:
        note = (f"warning: context {c.context} + {c.new_tokens} new tokens is beyond the model's limit of {limit} tokens "
                f"(max_position_embeddings): it was not trained that long and its output past {limit} tokens is unreliable; "
                f"--context {max(1, limit - c.new_tokens)} is the most it supports")
    if note is not None:
        snap = replace(snap, notes=(*snap.notes, note))
    return snap, c


def smallest_fit(facts: ModelFacts, rt: Runtime, c: Constraints) -> str | None:
    """The smallest bundled hardware profile on which some plan fits, in words."""

    def size(hw: Hardware) -> tuple[int, int]:
        return (sum(g.total_bytes for g in hw.gpus), hw.ram_total)

    floor = rt.min_bytes(facts)
    for hw in sorted(list_profiles(), key=size):
        room = sum(g.free_bytes for g in hw.gpus if not g.unified) + hw.ram_free + (hw.disk_free if c.offload else 0)
        if room < floor:
            continue  # not even the smallest weights fit: skip solving it
        try:
            sol = solve(rt.plans(facts, hw, c), c.prefer, where=hw.name)
        except NoFeasiblePlan:
            continue
        gpu = f"{len(hw.gpus)}x {fmt_bytes(hw.gpus[0].total_bytes)} GPU" if hw.gpus else "no GPU"
        return f"{hw.name} ({gpu}, {fmt_bytes(hw.ram_total)} RAM): {sol.chosen.label}"
    return None


def plan_many(models: list[str], *, hardware: Hardware | Callable[[], Hardware], constraints: Constraints = Constraints(),
              revision: str | None = None, token: str | bool | None = None, endpoint: str | None = None,
              timeout: float = 30.0, runtime: str = registry.AUTO) -> list[Report]:
    """Plan several models concurrently on the same hardware (one thread per model, one HTTP pool)."""
    if callable(hardware):
        hardware = hardware()
    hw = hardware

    def one(m: str) -> Report:
        return plan(m, hardware=hw, constraints=constraints, revision=revision, token=token, endpoint=endpoint, timeout=timeout,
                    runtime=runtime)

    with ThreadPoolExecutor(max_workers=min(16, len(models))) as pool:
        return list(pool.map(one, models))


def plan_each(models: list[str], **kw: Any) -> list[Report | FitcheckError]:
    """:func:`plan_many`, but a model that cannot be planned gives its error in its place (the
    others still plan): a comparison shows every row it can."""
    hardware = kw.pop("hardware")
    hw = hardware() if callable(hardware) else hardware

    def one(m: str) -> Report | FitcheckError:
        try:
            return plan(m, hardware=hw, **kw)
        except FitcheckError as e:
            return e

    with ThreadPoolExecutor(max_workers=min(16, len(models))) as pool:
        return list(pool.map(one, models))


def emit(report: Report, plan: Plan | None = None, **options: Any) -> Artifacts:
    """What runs ``plan`` (default: the chosen one): files and command lines, from its runtime."""
    chosen = plan or (report.solution.chosen if report.solution else None)
    if chosen is None:
        raise NoFeasiblePlan("nothing fits, so there is nothing to emit", rejections=report.rejected)
    runtime, view = registry.view(report, chosen)
    return runtime.emit(view, chosen, options)


def max_context(report: Report) -> context.MaxContext:
    """The largest context that still fits ``report``'s chosen plan (its runtime prices each step)."""
    if report.solution is None:
        raise NoFeasiblePlan("nothing fits, so there is no largest context", rejections=report.rejected)
    rt, view = registry.view(report, report.solution.chosen)
    return context.max_context(report, lambda c, p: rt.reprice(view.footprint, report.hardware, c, p))


def verify(path: Path, **kw: Any) -> Verification:
    """Verify the plan file at ``path`` (planner.report.verify)."""
    return verify_plan_file(path, **kw)

