"""Issue 13 item 9: the plan table's columns are defined once (render.COLUMNS, the README, --help),
each row adds up to "needs", spare never exceeds usable, the peak RSS never exceeds what the
device has, and the --max-context table is monotone: a rejected context needs more than the
largest that fits. Checked on every solver case."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_solver_cases import run_case

from planner import api
from planner.cli import render
from planner.solve.context import render_table

ROOT = Path(__file__).resolve().parents[1]
CASES = sorted((ROOT / "tests" / "solver_cases").glob("*.json"))


@pytest.fixture(scope="module", params=CASES, ids=lambda p: p.stem)
def report(request) -> api.Report:
    return run_case(json.loads(request.param.read_text()))


def test_every_row_adds_up_and_spare_is_within_usable(report: api.Report) -> None:
    if not report.fits:
        return
    for p in [report.solution.chosen, *report.solution.alternatives]:
        for d, m in p.memory.items():
            parts = render.table_parts(m)
            assert all(x >= 0 for x in parts), (p.label, d, parts)
            assert sum(parts) == m.required, (p.label, d, parts, m.required)
            assert 0 <= m.capacity - m.required <= m.capacity, (p.label, d)
            if d != "disk":
                assert m.required <= render.peak_rss(m) <= max(m.free, m.required), (p.label, d)
        text = "\n".join(render.memory_table(p))
        assert "headroom" not in text


def test_rejected_plans_need_more_than_usable(report: api.Report) -> None:
    for p in report.rejected:
        if all("needs" in reason for reason in p.reasons):
            assert any(m.required > m.capacity for m in p.memory.values()), (p.label, p.reasons)


def test_max_context_table_is_monotone(report: api.Report) -> None:
    if not report.fits:
        return
    mc = api.max_context(report)
    assert all(h >= 0 for h in mc.headroom.values())
    best = next(r for r in mc.table if r.context == mc.max_context)
    assert best.fits
    single = report.solution.chosen.settings.placement in ("gpu", "cpu", "mps") and len(best.required) <= 2
    for a, b in zip(mc.table, mc.table[1:]):
        assert a.context < b.context
        if single and b.placed:  # units never move between devices: every need grows with the context
            for d in a.required:
                assert a.required[d] <= b.required[d], (d, a.context, b.context)
    text = render_table(mc)
    for r in mc.table:
        if not r.fits:
            assert r.context > mc.max_context
            if r.placed:  # a device over its usable memory, so over what the maximum needs there
                over = [d for d in r.required if r.required[d] > r.capacity[d]]
                assert over and all(r.required[d] > best.required[d] for d in over), r
            else:  # no partial figures shown
                row = next(line for line in text.splitlines() if line.strip().startswith(f"{r.context:,} "))
                assert "no*" in row and "-" in row.split()[2:-1]
    assert "headroom" not in text


def test_columns_are_defined_in_the_readme_and_help() -> None:
    readme = (ROOT / "README.md").read_text()
    # the README's guide to its sample output defines each column once
    section = readme[readme.index("How to read it:"):]
    section = section[:section.index("\n## ")]
    for name, _ in render.COLUMNS:
        assert f"**{name}**" in section, name
    out = subprocess.run([sys.executable, "-m", "planner.cli.main", "plan", "--help"], capture_output=True, text=True, timeout=60)
    for name in ("needs", "usable", "spare"):
        assert name in out.stdout
