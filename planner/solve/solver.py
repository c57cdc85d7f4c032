"""The solver: plans from any runtimes -> the plan to use, its alternatives, and those that do
not fit. Pure: no I/O, no clock, no randomness; it reads only the generic fields of
:class:`planner.core.records.Plan` and never imports a runtime.

Policies (``prefer``):
- "speed" (default): the highest precision that keeps every weight on accelerators; when nothing
  fits there, the fastest plan by its speed estimate.
- "quality": the highest precision that fits anywhere, then speed.
- "memory": the smallest weights that fit, then speed.

Ties go to the plan that uses fewer accelerators.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from planner.core.errors import NoFeasiblePlan
from planner.core.records import PREFERENCES, Plan, Solution

__all__ = ["PREFERENCES", "rank_key", "solve"]

RankKey = tuple[float | int | bool, ...]


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
    ranked = sorted(fitting, key=rank_key(prefer), reverse=True)
    return Solution(chosen=ranked[0], alternatives=tuple(ranked[1:]), rejected=rejected)


def rank_key(prefer: str) -> Callable[[Plan], RankKey]:
    """The sort key of a policy (higher ranks first)."""

    def key(p: Plan) -> RankKey:
        on_acc = p.on_accelerators
        fewer = -_accelerators(p)
        speed = p.speed.score
        if prefer == "speed":
            return (on_acc, p.quality if on_acc else 0, speed, fewer)
        if prefer == "quality":
            return (p.quality, on_acc, speed, fewer)
        return (-sum(m.weights for m in p.memory.values()), speed, fewer)

    return key


def _accelerators(p: Plan) -> int:
    """Accelerators the plan uses: its devices other than the CPU and the disk (of any node)."""
    return sum(1 for d in p.memory if d.rsplit(":", 1)[-1] not in ("cpu", "disk") and d not in ("cpu", "disk"))
