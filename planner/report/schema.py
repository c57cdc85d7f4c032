"""The JSON form of a plan report (``fitcheck plan --json``), documented in README's "JSON schema".

Bytes are integers; nothing here is rounded for people. The dict is built only from records, and
every string passes through :func:`planner.core.secrets.redact`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from planner import __version__
from planner.runtimes.transformers.emit import load_settings
from planner.runtimes.transformers.memory import kv
from planner.core.records import Plan
from planner.core.secrets import redact

if TYPE_CHECKING:
    from planner.api import Report

SCHEMA_VERSION = 1


def report_dict(r: Report) -> dict[str, Any]:
    fp, snap = r.footprint, r.snapshot
    arch = fp.arch
    out = {
        "schema": SCHEMA_VERSION,
        "fitcheck_version": __version__,
        "model": {
            "id": snap.id,
            "revision": snap.revision,
            "commit": snap.commit,
            "source": snap.source,
            "model_type": arch.model_type,
            "architectures": list(arch.architectures),
            "auto_class": arch.auto_class,
            "parameters": fp.parameters,
            "active_parameters": fp.active_parameters,
            "weights_bytes": fp.stored_bytes,
            "download_bytes": fp.download_bytes,
            "stored_dtype": fp.stored_dtype,
            "prequantized": _prequantized(fp),
            "weight_format": snap.weight_format,
            "weight_files": list(snap.weight_files),
            "unloaded_bytes": fp.unloaded_bytes,
            # vision tower, projector and language model (encoder, decoder, shared for seq2seq)
            "components": {name: {"parameters": params, "bytes": nbytes} for name, (params, nbytes) in fp.components.items()},
            "kv_bytes_per_token": kv.bytes_per_token(arch, dtype_bytes=2),
            "layers": arch.num_layers,
            "max_position_embeddings": arch.max_position_embeddings,
            "notes": list(snap.notes),
            "fetch": snap.fetch.to_dict(),
            "units": [
                {"name": u.name, "kind": u.kind, "layer": u.layer, "parameters": u.params, "bytes": u.stored_bytes,
                 "modules": u.modules, "tied_to": u.tied_to}
                for u in fp.units
            ],
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
    return _redacted(out)


def _prequantized(fp: Any) -> dict[str, Any] | None:
    """The checkpoint's quantization, with its bytes as stored: packed weights, and their scales,
    zeros and indices (which hold no parameters)."""
    if fp.prequant is None:
        return None
    roles = [s for u in fp.units for role, s in u.roles.items() if role in ("packed", "qaux")]
    packed = [s for u in fp.units for role, s in u.roles.items() if role == "packed"]
    return {**fp.prequant.to_dict(),
            "packed_parameters": sum(s.params for s in packed),
            "packed_bytes": sum(s.bytes for s in packed),
            "scale_bytes": sum(s.bytes for s in roles) - sum(s.bytes for s in packed)}


def plan_dict(r: Report, p: Plan) -> dict[str, Any]:
    return {
        "label": p.label,
        "dtype": p.scheme.dtype,
        "quantization": p.scheme.quantization,
        "placement": p.placement,
        "strategy": p.strategy,
        "device_map": p.device_map,
        "memory": {d: m.to_dict() for d, m in p.memory.items()},
        "tokens_per_s": round(p.tokens_per_s, 3),
        "quality_bits": p.quality,
        "offloaded_bytes": p.offloaded_bytes,
        "disk_bytes": p.disk_bytes,
        "notes": list(p.notes),
        "load": load_settings(r, p),
    }


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value
