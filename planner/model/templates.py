"""Tensors whose names differ only in their numbers (``model.layers.{}.mlp.experts.{}.w1``).

A checkpoint repeats a few dozen tensor shapes under thousands of numbered names; the estimate
classifies one representative per template and counts the members by their numbers, so its
regexes run ~100 times on DeepSeek-V3 instead of ~92,000 (benchmarks/perf/FINDINGS.md #7).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from planner.core.records import Tensor

# A whole numeric component of a tensor name ("model.layers.12.mlp" -> "12").
NUM = re.compile(r"(?<=\.)\d+(?=\.|$)")
# The same, captured: split() gives the text around the numbers and the numbers, alternately.
NUM_SPLIT = re.compile(r"(?<=\.)(\d+)(?=\.|$)")


def groups(renamed: Iterable[tuple[str, Tensor]], *, by_template: bool):
    """Group tensors whose names differ only in their numbers and that share dtype and shape.

    Yields (representative name, representative tensor, members) where each member is the tuple
    of numeric components of its name. DeepSeek-V3's 91,991 tensors fall into ~100 groups, so the
    regexes of the estimate run ~100 times instead of ~92,000 (FINDINGS.md #7). Names whose numbers
    cannot be substituted back exactly (leading zeros, braces) are their own group.
    """
    found: dict[tuple[str, str, tuple[int, ...]], list] = {}
    for name, t in renamed:
        parts = NUM_SPLIT.split(name) if by_template else ()
        if len(parts) < 2 or "{" in name or "}" in name:
            yield name, t, [None]
            continue
        nums = tuple(parts[1::2])
        if ".0" in name and any(len(n) > 1 and n[0] == "0" for n in nums):
            yield name, t, [None]
            continue
        key = ("{}".join(parts[0::2]), t.dtype, t.shape)
        g = found.get(key)
        if g is None:
            found[key] = [name, t, [nums]]
        else:
            g[2].append(nums)
    for name, t, members in found.values():
        yield name, t, members


class Filler:
    """Turns a member's numbers into its unit, layer, experts module and module names, given the
    representative's: each is a prefix of the tensor name, so its numbers are the name's first ones."""

    def __init__(self, name: str, unit: str, layer: int | None, experts: str | None, module: str) -> None:
        template = NUM.sub("{}", name)
        self.rep: tuple[str, int | None, str | None, str | None] = (unit, layer, experts, module)

        def part(prefix: str) -> tuple[str, int]:
            t = ".".join(template.split(".")[: prefix.count(".") + 1])
            return t, t.count("{}")

        self.unit, self.unit_n = part(unit)
        self.experts: str | None
        self.experts, self.experts_n = part(experts) if experts is not None else (None, 0)
        self.module, self.module_n = part(module)
        # how many of a member's leading numbers decide its names
        self.width = max(self.unit_n, self.experts_n if experts is not None else self.module_n)

    def __call__(self, nums: tuple[str, ...] | None) -> tuple[str, int | None, str | None, str | None]:
        if nums is None:
            return self.rep
        unit = self.unit.format(*nums[: self.unit_n])
        layer = int(nums[self.unit_n - 1]) if self.unit_n else None
        if self.experts is not None:
            # the module inside an experts module is not a device_map key: leave it out, so the
            # 256 experts of a layer count as one key
            return unit, layer, self.experts.format(*nums[: self.experts_n]), None
        return unit, layer, None, self.module.format(*nums[: self.module_n])
