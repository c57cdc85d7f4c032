"""The largest context that still fits the chosen plan (``fitcheck plan --max-context``).

The plan's settings and devices stay fixed; its runtime places and prices it again at each context
tried (``Runtime.reprice``, passed in as ``price``), since a longer context leaves less room for
weights. What must fit grows with the context (KV cache, prefill activations, the attention mask
of sliding layers), so the fit is monotone and a doubling search followed by a binary search
finds the boundary in about 2 log2(context) evaluations, each pure arithmetic. The result is
capped at the model's ``max_position_embeddings``, counting the tokens generated after the prompt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from planner.core.errors import NoFeasiblePlan
from planner.core.records import Constraints, Plan, Report, _ToDict
from planner.core.units import fmt_bytes

# (constraints, plan) -> the plan's settings priced under those constraints
Price = Callable[[Constraints, Plan], Plan]

# Searching past this without a max_position_embeddings to stop at: 16M tokens is beyond any
# published model's trained context (Llama 4 Scout: 10M).
SEARCH_LIMIT = 1 << 24
# The table's first row; each next row doubles it.
TABLE_START = 1024


@dataclass(frozen=True, slots=True)
class ContextRow(_ToDict):
    """The plan priced at one context.

    Attributes:
        context: prompt tokens per sequence.
        kv_cache: KV cache bytes of all layers at this context, the batch and the new tokens.
        required: device -> bytes that must fit there (disk left out). When ``placed`` is
            False, only what was placed: the rest found room nowhere.
        capacity: device -> what the plan may use there (free memory minus the margin).
        fits: every device fits at this context.
        placed: every unit found a device (False: the need exceeds the capacity by more than
            ``required`` shows).
    """

    context: int
    kv_cache: int
    required: dict[str, int]
    capacity: dict[str, int]
    fits: bool
    placed: bool = True


@dataclass(frozen=True, slots=True)
class MaxContext(_ToDict):
    """The largest prompt that fits the chosen plan at the report's batch.

    Attributes:
        plan: the chosen plan's label.
        batch: sequences per generate.
        new_tokens: tokens generated after the prompt (their KV counts too).
        max_context: the largest prompt, in tokens per sequence, that fits.
        limit: what stops it: "memory" (one more token does not fit), or
            "max_position_embeddings" (the model's trained context, prompt + new tokens).
        limiting_device: the device that runs out first past ``max_context`` ("" when the limit
            is the model's context).
        max_position_embeddings: the model's trained context, when its config gives one.
        kv_bytes_per_token: KV bytes one token of one sequence adds while no layer is past its
            sliding window.
        headroom: device -> capacity less what must fit, at ``max_context``: the plan table's
            "spare" (the margin is kept besides it).
        table: the plan priced at 1k, 2k, 4k, ... tokens up to the maximum, the maximum itself,
            and the first power of two past it.
    """

    plan: str
    batch: int
    new_tokens: int
    max_context: int
    limit: str
    limiting_device: str
    max_position_embeddings: int | None
    kv_bytes_per_token: int
    headroom: dict[str, int]
    table: tuple[ContextRow, ...]


def max_context(report: Report, price: Price) -> MaxContext:
    """The largest context that still fits ``report``'s chosen plan at its batch; ``price``
    prices the plan at another context (its runtime's ``reprice``).

    Raises:
        NoFeasiblePlan: the report has no plan that fits, or not one token of context fits its plan.
    """
    # A search step prices the whole plan (placement included): ~1 ms for a 30-unit model, so the
    # ~40 steps of a 128k-token search stay well under a second even for 160-unit models.
    if report.solution is None:
        raise NoFeasiblePlan("nothing fits at the given context, so there is no largest context to report",
                             hint="try a smaller --context or --batch", rejections=report.rejected)
    c, chosen = report.constraints, report.solution.chosen
    trained = _trained_context(report)
    cache: dict[int, Plan] = {}

    def at(context: int) -> Plan:
        if context not in cache:
            cache[context] = price(replace(c, context=context), chosen)
        return cache[context]

    cap = SEARCH_LIMIT
    if trained:
        cap = max(1, min(cap, trained - c.new_tokens))
    lo: int = min(c.context, cap)
    hi: int | None = None
    if not at(lo).fits:
        # the chosen plan fits at the report's context, so only a context past the model's cap
        # (priced at the cap) gets here; search below it
        lo, hi = 0, lo
    probe = lo
    while hi is None and probe < cap:  # doubling until something does not fit
        probe = min(cap, probe * 2)
        if at(probe).fits:
            lo = probe
        else:
            hi = probe
    if hi is not None:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if at(mid).fits:
                lo = mid
            else:
                hi = mid
    if lo == 0:
        raise NoFeasiblePlan(f"not even one token of context fits {chosen.label}", hint="try a smaller --batch")
    best = at(lo)
    limit = "memory" if hi is not None else "max_position_embeddings"
    limiting = _limiting_device(at(hi)) if hi is not None else ""

    contexts = []
    n = TABLE_START
    while n < lo:
        contexts.append(n)
        n *= 2
    contexts.append(lo)
    if n == lo:
        n *= 2
    if n <= cap:
        contexts.append(n)
    table = tuple(_row(at(x), x) for x in contexts)
    return MaxContext(
        plan=chosen.label,
        batch=c.batch,
        new_tokens=c.new_tokens,
        max_context=lo,
        limit=limit,
        limiting_device=limiting,
        max_position_embeddings=trained,
        kv_bytes_per_token=chosen.kv_bytes_per_token,
        headroom={d: m.capacity - m.required for d, m in best.memory.items() if d != "disk"},
        table=table,
    )


def _limiting_device(p: Plan) -> str:
    over = [d for d, m in p.memory.items() if d != "disk" and m.required > m.capacity]
    if over:
        return max(over, key=lambda d: p.memory[d].required - p.memory[d].capacity)
    # Nothing is over its capacity, yet it does not fit: units could not be placed anywhere.
    return next((d for d in p.memory if d != "disk"), "")


def _trained_context(report: Report) -> int | None:
    """The model's trained context (``max_position_embeddings``), when its facts give one."""
    value = getattr(report.footprint, "max_position_embeddings", None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _row(p: Plan, context: int) -> ContextRow:
    kv_total = p.kv_bytes
    devices = {d: m for d, m in p.memory.items() if d != "disk"}
    over = any(m.required > m.capacity for m in devices.values())
    return ContextRow(context=context, kv_cache=kv_total, required={d: m.required for d, m in devices.items()},
                      capacity={d: m.capacity for d, m in devices.items()}, fits=p.fits, placed=p.fits or over)


def render_table(mc: MaxContext) -> str:
    """The result for people: one line, then KV cache and what must fit against context."""
    if mc.limit == "memory":
        why = f"memory: one more token does not fit on {mc.limiting_device}"
    else:
        why = f"the model's max_position_embeddings ({mc.max_position_embeddings:,}) less {mc.new_tokens} new tokens"
    spare = ", ".join(f"{d} {fmt_bytes(h)}" for d, h in mc.headroom.items())
    lines = [f"Largest context for {mc.plan} at batch {mc.batch}: {mc.max_context:,} tokens (+{mc.new_tokens} new); "
             f"limited by {why}.",
             f"  spare at the maximum (usable less needs; the margin is kept besides): {spare}; KV cache {fmt_bytes(mc.kv_bytes_per_token)} per token per sequence"]
    devices = list(mc.table[0].required) if mc.table else []
    head = f"  {'context':>10} {'KV cache':>11} " + " ".join(f"{'needs ' + d:>14}" for d in devices) + "   fits"
    lines.append(head)
    for r in mc.table:
        # a row whose units found no device shows no partial figures: they would read as less
        # than the maximum's need (issue 13 item 9)
        needs = " ".join(f"{fmt_bytes(r.required.get(d, 0)) if r.placed else '-':>14}" for d in devices)
        mark = "yes" if r.fits else ("no" if r.placed else "no*")
        star = "  <- max" if r.context == mc.max_context else ""
        lines.append(f"  {r.context:>10,} {fmt_bytes(r.kv_cache):>11} {needs}   {mark:>4}{star}")
    if any(not r.placed for r in mc.table):
        lines.append("  * some layers fit on no device: it needs more than these devices have")
    return "\n".join(lines)
