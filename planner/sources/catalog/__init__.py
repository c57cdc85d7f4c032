"""The bundled catalog: header summaries of popular models, for planning with no network.

Each ``*.json`` file here is a snapshot in :mod:`planner.sources.cache`'s compact form plus a
``provenance`` block: where its config.json came from, how the tensor list was derived
(transformers on the meta device, named as ``save_pretrained`` names them) and the published
parameter count it reproduces. ``benchmarks/build_catalog.py`` writes them; a test checks every
entry against its published count.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from planner.core.records import Snapshot


@lru_cache(maxsize=1)
def _index() -> dict[str, str]:
    out = {}
    for entry in resources.files(__name__).iterdir():
        if entry.name.endswith(".json"):
            out[entry.name[: -len(".json")].replace("__", "/")] = entry.name
    return out


@lru_cache(maxsize=1)
def _folded() -> dict[str, str]:
    """Lower-cased id -> the id as the Hub spells it: the Hub matches repo ids case-insensitively
    (huggingface.co/Meta-Llama/llama-3.1-8b redirects to meta-llama/Llama-3.1-8B)."""
    return {name.lower(): name for name in _index()}


def _pipelines() -> dict[str, str]:
    """Diffusers pipelines (``pipelines/*.json``, written by benchmarks/build_pipeline_catalog.py):
    looked up like the rest, but not among :func:`names`, whose entries are transformers models."""
    folder = resources.files(__name__).joinpath("pipelines")
    if not folder.is_dir():
        return {}
    return {e.name[: -len(".json")].replace("__", "/"): f"pipelines/{e.name}" for e in folder.iterdir() if e.name.endswith(".json")}


def pipeline_names() -> tuple[str, ...]:
    """Repo ids of the diffusers pipelines in the catalog."""
    return tuple(sorted(_pipelines()))


def names() -> tuple[str, ...]:
    """Repo ids in the catalog."""
    return tuple(sorted(_index()))


def canonical(repo: str) -> str | None:
    """The catalog's spelling of ``repo`` (matched case-insensitively), or None."""
    return _folded().get(repo.lower())


def near(repo: str, n: int = 3) -> list[str]:
    """Up to ``n`` catalog ids closest to ``repo`` (difflib's ratio, case-insensitive; the name
    without its org counts too, so ``llama-3.1-8b`` finds ``meta-llama/Llama-3.1-8B``)."""
    import difflib

    folded = _folded()
    want = repo.lower()
    found = difflib.get_close_matches(want, list(folded), n=n, cutoff=0.6)
    by_name: dict[str, str] = {}
    for key in folded:
        by_name.setdefault(key.rpartition("/")[2], key)
    found += [by_name[k] for k in difflib.get_close_matches(want.rpartition("/")[2], list(by_name), n=n, cutoff=0.6)]
    return [folded[k] for k in dict.fromkeys(found)][:n]


def raw(repo: str) -> dict[str, Any] | None:
    """The catalog entry as stored (with provenance), or None; ``repo`` matches case-insensitively."""
    name = canonical(repo)
    path = _index()[name] if name is not None else _pipelines().get(repo)
    if path is None:
        return None
    return json.loads(resources.files(__name__).joinpath(path).read_text())
    if name is None:
        return None
    return json.loads(resources.files(__name__).joinpath(_index()[name]).read_text())


def lookup(repo: str) -> Snapshot | None:
    """The catalog's snapshot of ``repo`` (source "catalog"), or None; ``repo`` matches case-insensitively."""
    from planner.sources.cache import decode

    data = raw(repo)
    return decode(data, source="catalog") if data is not None else None


def entries() -> list[dict[str, Any]]:
    """One row per entry, for ``fitcheck catalog``: id, parameters, bf16 weight bytes, weight files, gated."""
    rows = []
    for name in names():
        data = raw(name)
        assert data is not None
        prov = data.get("provenance", {})
        rows.append({"id": name, "parameters": prov.get("computed_parameters"), "weights_bytes": prov.get("computed_weight_bytes"),
                     "weight_files": len(data.get("weight_files", ())), "gated": bool(data.get("gated")),
                     "model_type": data.get("config", {}).get("model_type")})
    return rows
