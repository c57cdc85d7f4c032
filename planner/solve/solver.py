"""The solver: plans from any runtimes -> the plan to use, its alternatives, and those that do
not fit. Pure: no I/O, no clock, no randomness; it reads only the generic fields of
:class:`planner.core.records.Plan` and never imports a runtime.

Each policy (``prefer``) optimises one figure the plan table shows, and the alternatives are
sorted by the same key (:data:`POLICY_KEYS` names it for people):

- "speed" (default): the shortest estimated time to an answer of :data:`ANSWER_TOKENS` tokens:
  the first token (which includes the load where the runtime estimates it: a bitsandbytes load
  on a CPU quantizes for minutes) plus the answer at the decode tokens/s; with no load estimate
  this is the tokens/s order. Equal times (within :data:`SAME_SPEED`) go to the higher
  precision, then to the runtime's own order of preference (``Plan.preference``: training tries
  AdamW before an 8-bit optimizer, no checkpointing before checkpointing), then to the plan that
  fills its fullest device less when that is over
  :data:`CROWDED` (a balanced split over a 94 % full first GPU), then to fewer accelerators.
- "quality": the highest effective weight precision (bits), then as "speed".
- "memory": the least memory needed, summed over GPUs and RAM (the "needs" column; disk is not
  memory), among plans no more than :data:`MEMORY_SLOWDOWN` times slower than the fastest plan
  that fits: a few hundred MiB are never worth a 20-50x slower plan. Slower plans follow, by the
  same key. Then as "speed".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import replace

from planner.core.errors import NoFeasiblePlan
from planner.core.records import PREFERENCES, Plan, Solution
from planner.core.units import fmt_bytes

__all__ = ["ANSWER_TOKENS", "CROWDED", "MEMORY_SLOWDOWN", "POLICY_KEYS", "PREFERENCES", "SLOW_TOKENS_PER_S", "answer_seconds",
           "is_slow", "memory_needed", "pace", "rank", "rank_key", "slow_note", "solve"]

RankKey = tuple[float | int | bool, ...]

# What each policy sorts by, in the words of the plan table's columns.
POLICY_KEYS = {
    "speed": "time to a 200-token answer, 1st tok + 200 / tok/s (then precision, then headroom)",
    "quality": "precision bits (then as speed)",
    "memory": "memory needed on GPUs + RAM, among plans at most 3x slower than the fastest (then as speed)",
}
# "memory" takes no plan slower than this factor times the fastest one that fits. A policy
# choice, not a measurement: a 3x slower plan that saves memory is a trade a user can want (nf4
# at 0.6x of bf16's speed on a GPU, bitsandbytes#611); CPU or disk offload at 20-50x slower, to
# save a few hundred MiB, is not (issue 13 item 1).
MEMORY_SLOWDOWN = 3.0
# Devices filled up to this share of their usable memory count as equally full, so that fewer GPUs
# win; above it the plan that fills its fullest device less wins (a policy choice: a device 94 %
# full leaves no room for a longer prompt, issue 13 item 2).
CROWDED = 0.8
# A plan that fits but makes fewer tokens per second than this is marked slow, with what would be
# faster. A policy choice: at 1 token/s a short answer (ANSWER_TOKENS) takes over 3 minutes, and
# people read at about 4-5 tokens/s (~200-250 words a minute).
SLOW_TOKENS_PER_S = 1.0
ANSWER_TOKENS = 200
# Speed estimates closer than this (relative) rank as equal: the estimate is not that precise,
# and fp16 against bf16, or one GPU against two of the same, differ by rounding only.
SAME_SPEED = 0.02


def solve(plans: Iterable[Plan], prefer: str, *, where: str) -> Solution:
    """Rank the plans that fit by ``prefer``; ``where`` names the machine for the error.

    Raises:
        NoFeasiblePlan: nothing fits; ``rejections`` holds every plan with its reasons.
    """
    every = list(plans)
    fitting = [p for p in every if p.fits]
    rejected = tuple(p for p in every if not p.fits)
    if not fitting:
        raise NoFeasiblePlan(f"no plan fits {where}", rejections=rejected)
    ranked = rank(fitting, prefer)
    chosen = ranked[0]
    if is_slow(chosen):
        chosen = replace(chosen, notes=(*chosen.notes, slow_note(chosen, rejected)))
    return Solution(chosen=chosen, alternatives=tuple(ranked[1:]), rejected=rejected)


def is_slow(p: Plan) -> bool:
    """A plan that fits but decodes too slowly to use (under :data:`SLOW_TOKENS_PER_S`)."""
    return p.speed.tokens_per_s is not None and p.speed.tokens_per_s < SLOW_TOKENS_PER_S


def slow_note(p: Plan, rejected: tuple[Plan, ...]) -> str:
    """What would be faster than a slow plan: the fastest plan that misses only memory (with the
    memory it needs), a pre-quantized or GGUF build, a smaller model."""
    rate = p.speed.tokens_per_s or 0.0
    minutes = ANSWER_TOKENS / rate / 60 if rate > 0 else float("inf")
    faster = []
    short = [q for q in rejected if q.reasons and all(" needs " in r for r in q.reasons) and pace(q) > 2 * pace(p)]
    if short:
        best = max(short, key=pace)
        more = ", ".join(f"{fmt_bytes(m.required, up=True)} usable on {d} ({fmt_bytes(max(0, m.capacity))} now)"
                         for d, m in best.memory.items() if m.required > m.capacity)
        faster.append(f"more memory: {best.label} at about {best.speed.score:.1f} tokens/s needs {more}")
    faster += ["a pre-quantized 4-bit checkpoint of this model (GPTQ/AWQ), loaded as stored",
               "a GGUF build run by llama.cpp", "a smaller model"]
    return (f"slow: about {rate:.2g} tokens/s, so a {ANSWER_TOKENS}-token answer takes about {minutes:.0f} min; "
            f"faster: {'; '.join(faster)}")


def answer_seconds(p: Plan) -> float:
    """Estimated seconds to an answer of ANSWER_TOKENS tokens (for an image pipeline: to one image)."""
    s = p.speed
    if s.tokens_per_s:
        return (s.first_token_s or 0.0) + ANSWER_TOKENS / s.tokens_per_s
    if s.image_s:
        return s.image_s
    return math.inf


def pace(p: Plan) -> float:
    """Answers per second (higher is faster): what "speed" and the memory band rank by."""
    seconds = answer_seconds(p)
    return 1.0 / seconds if seconds > 0 else math.inf


def rank(plans: list[Plan], prefer: str) -> list[Plan]:
    """``plans`` best first under ``prefer``."""
    fastest = max((pace(p) for p in plans), default=0.0)
    return sorted(plans, key=rank_key(prefer, fastest=fastest), reverse=True)


def memory_needed(p: Plan) -> int:
    """Bytes the plan needs on its GPUs and in RAM together (the sum of the "needs" column, disk aside)."""
    return sum(m.required for d, m in p.memory.items() if d.rsplit(":", 1)[-1] != "disk")


def rank_key(prefer: str, *, fastest: float = 0.0) -> Callable[[Plan], RankKey]:
    """The sort key of a policy (higher ranks first); ``fastest``: the best speed among the plans ranked."""

    def key(p: Plan) -> RankKey:
        speed = _speed_bucket(pace(p))
        then = (speed, p.quality, -p.preference, -max(CROWDED, round(_fullest(p), 2)), -_accelerators(p), -memory_needed(p))
        if prefer == "quality":
            return (p.quality, *then)
        if prefer == "memory":
            near = fastest <= 0 or pace(p) * MEMORY_SLOWDOWN >= fastest
            return (near, -memory_needed(p), *then)
        return then

    return key


def _speed_bucket(score: float) -> float:
    """Speeds within SAME_SPEED of each other fall in one bucket (log scale)."""
    if score <= 0 or not math.isfinite(score):
        return score
    return math.floor(math.log(score) / math.log1p(SAME_SPEED))


def _fullest(p: Plan) -> float:
    """The largest share of usable memory any device but the disk needs (0-1+)."""
    return max((m.required / m.capacity for d, m in p.memory.items() if d.rsplit(":", 1)[-1] != "disk" and m.capacity > 0
                and m.weights > 0), default=0.0)


def _accelerators(p: Plan) -> int:
    """Accelerators the plan uses: its devices other than the CPU and the disk (of any node)."""
    return sum(1 for d in p.memory if d.rsplit(":", 1)[-1] not in ("cpu", "disk") and d not in ("cpu", "disk"))
