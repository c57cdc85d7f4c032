"""The JSON form of a plan report (``fitcheck plan --json``), documented in docs/json-schema.md.

Bytes are integers; nothing here is rounded for people. The dict is built only from records and
what the report's runtime says of them (``describe_model``, ``describe_plan``, the settings
record), and every string passes through :func:`planner.core.secrets.redact`.
"""

from __future__ import annotations

from typing import Any

from planner import __version__
from planner.core.records import Plan, Report
from planner.core.secrets import redact
from planner.runtimes import registry

SCHEMA_VERSION = 1


def report_dict(r: Report) -> dict[str, Any]:
    """The whole report as JSON-ready data."""
    snap = r.snapshot
    runtime = registry.get(r.runtime)
    out: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "fitcheck_version": __version__,
        "model": {
            "id": snap.id,
            "revision": snap.revision,
            "commit": snap.commit,
            "source": snap.source,
            **runtime.describe_model(r),
            "notes": list(snap.notes),
            "fetch": snap.fetch.to_dict(),
        },
        "hardware": r.hardware.to_dict(),
        "constraints": {
            "context": r.constraints.context,
            "batch": r.constraints.batch,
            "new_tokens": r.constraints.new_tokens,
            "prefer": r.constraints.prefer,
            "dtype": r.constraints.dtype,
            "quantization": r.constraints.quantization,
            "offload": r.constraints.offload,
            "margin_fraction": r.constraints.margin_fraction,
            "margin_floor": r.constraints.margin_floor,
        },
        "fits": r.fits,
        "download_fits": r.download_fits,
        "plan": plan_dict(r, r.solution.chosen) if r.solution else None,
        "alternatives": [plan_dict(r, p) for p in r.solution.alternatives] if r.solution else [],
        "rejected": [{"label": p.label, "reasons": list(p.reasons)} for p in r.rejected],
        "suggestion": r.suggestion,
    }
    if r.others:  # --runtime auto: what the other runtimes that planned it read
        out["model"]["also_planned_by"] = [
            {"runtime": o.runtime, "source": o.snapshot.source, **registry.get(o.runtime).describe_model(o)} for o in r.others]
    redacted: dict[str, Any] = _redacted(out)
    return redacted


def plan_dict(r: Report, p: Plan) -> dict[str, Any]:
    """One plan: the generic fields, its settings record, and its runtime's own entries."""
    return {
        "runtime": p.runtime,
        "label": p.label,
        **p.settings.to_dict(),
        "memory": {d: m.to_dict() for d, m in p.memory.items()},
        "tokens_per_s": round(p.speed.tokens_per_s, 3) if p.speed.tokens_per_s is not None else None,
        # the other speed figures appear only from runtimes that estimate them
        **({"speed": p.speed.to_dict()} if _more_speed(p) else {}),
        "quality_bits": p.quality,
        "offloaded_bytes": p.offloaded_bytes,
        "disk_bytes": p.disk_bytes,
        "notes": list(p.notes),
        **_describe_plan(r, p),
    }


def _describe_plan(r: Report, p: Plan) -> dict[str, Any]:
    runtime, view = registry.view(r, p)
    return runtime.describe_plan(view, p)


def _more_speed(p: Plan) -> bool:
    return any(v is not None for k, v in p.speed.to_dict().items() if k != "tokens_per_s")


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value
