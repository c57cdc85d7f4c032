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


def raw(repo: str) -> dict[str, Any] | None:
    """The catalog entry as stored (with provenance), or None."""
    name = _index().get(repo) or _pipelines().get(repo)
    if name is None:
        return None
    return json.loads(resources.files(__name__).joinpath(name).read_text())


def lookup(repo: str) -> Snapshot | None:
    """The catalog's snapshot of ``repo`` (source "catalog"), or None."""
    from planner.sources.cache import decode

    data = raw(repo)
    return decode(data, source="catalog") if data is not None else None
