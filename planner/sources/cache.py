"""fitcheck's on-disk metadata cache, and the compact snapshot format it shares with the catalog.

Layout under ``FITCHECK_CACHE_DIR`` (default ``$XDG_CACHE_HOME/fitcheck`` or ``~/.cache/fitcheck``)::

    entries/<sha256(endpoint, repo, commit)>.json   one snapshot, immutable
    refs/<sha256(endpoint, repo, revision)>.json     {"commit": ..., "time": ...}

An entry is keyed by commit, so it never goes stale: a pinned commit is served from the cache
forever. A branch or tag resolves through its ref, which is trusted for ``ttl`` seconds (or
indefinitely under ``HF_HUB_OFFLINE=1``) and otherwise revalidated by the caller. Writes go to a
temporary file in the same folder and are renamed into place (atomic on POSIX), so concurrent
fitcheck processes never see half an entry; every entry starts with a line holding the SHA-256 of its body, and one
that does not match is deleted and treated as a miss.

The compact format groups tensors whose names differ only in their numbers ("model.layers.{}.
mlp.experts.{}.down_proj.weight") and share dtype and shape, so a DeepSeek-V3-sized model's
~92,000 tensors take a few hundred kilobytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from planner.core.records import RepoFile, Snapshot, Tensor
from planner.core.units import tensor_nbytes
from planner.sources.formats.gguf import tensor_nbytes as gguf_nbytes

FORMAT = 1
# A name component that is a plain number: no leading zero ("01" would come back as "1") and at
# most 18 digits (int() refuses more than 4,300, and no model has a quintillion layers). Other
# numeric components stay in the template as text.
_NUM = re.compile(r"(?<=\.)(?:0|[1-9][0-9]{0,17})(?=\.|$)")


# What decoding an entry that is not what encode() wrote can raise (a wrong type, a missing key, a
# number too large for the float arithmetic of sizes): the entry is then discarded and read again.
CORRUPT = (KeyError, TypeError, ValueError, IndexError, AttributeError, ArithmeticError, RecursionError)


def cache_dir() -> Path:
    """The cache folder, read from the environment at call time."""
    env = os.environ.get("FITCHECK_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fitcheck"


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:40]


def lookup_ref(endpoint: str, repo: str, revision: str) -> tuple[str, float] | None:
    """(commit, seconds since it was recorded) for a branch or tag, if cached."""
    data = _read(cache_dir() / "refs" / f"{_key(endpoint, repo, revision)}.json")
    if not data or not isinstance(data.get("commit"), str) or not isinstance(data.get("time"), (int, float)):
        return None
    return data["commit"], max(0.0, time.time() - data["time"])


def store_ref(endpoint: str, repo: str, revision: str, commit: str) -> None:
    _write(cache_dir() / "refs" / f"{_key(endpoint, repo, revision)}.json", {"commit": commit, "time": time.time()})


def load(endpoint: str, repo: str, commit: str) -> Snapshot | None:
    """The cached snapshot of ``repo`` at ``commit``, or None (missing or corrupt)."""
    data = _read(cache_dir() / "entries" / f"{_key(endpoint, repo, commit)}.json")
    if data is None:
        return None
    try:
        return decode(data, source="cache")
    except CORRUPT:
        _discard(cache_dir() / "entries" / f"{_key(endpoint, repo, commit)}.json")
        return None


def store(endpoint: str, snap: Snapshot) -> None:
    """Cache a snapshot read from the Hub (only those with a commit: they are immutable)."""
    if snap.commit:
        _write(cache_dir() / "entries" / f"{_key(endpoint, snap.id, snap.commit)}.json", encode(snap))


def load_summary(endpoint: str, repo: str, commit: str, version: str) -> tuple[Snapshot, dict[str, Any]] | None:
    """The snapshot of ``repo`` at ``commit`` without tensors, and the model facts a runtime cached
    for it under ``version`` (:func:`store_summary`); None when there are none."""
    path = cache_dir() / "summaries" / f"{_key(endpoint, repo, commit, version)}.json"
    data = _read(path)
    if data is None:
        return None
    try:
        snap = decode({**data["snapshot"], "tensors": [], "tensor_files": []}, source="cache")
        return (snap, data["footprint"]) if isinstance(data["footprint"], dict) else None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        _discard(path)
        return None


def store_summary(endpoint: str, snap: Snapshot, footprint: dict[str, Any], version: str) -> None:
    """Cache a snapshot's model facts (a few kilobytes, even for 90,000 tensors) for warm plans."""
    if snap.commit:
        lite = dataclasses.replace(snap, tensors=())
        _write(cache_dir() / "summaries" / f"{_key(endpoint, snap.id, snap.commit, version)}.json",
               {"snapshot": encode(lite), "footprint": footprint})


def encode(snap: Snapshot) -> dict[str, Any]:
    """The compact JSON form of a snapshot."""
    files = {name: i for i, name in enumerate(dict.fromkeys(t.file for t in snap.tensors))}
    groups: dict[tuple[str, str, tuple[int, ...]], list[list[int]]] = {}
    for t in snap.tensors:
        nums = [int(n) for n in _NUM.findall(t.name)]
        template = _NUM.sub("{}", t.name)
        groups.setdefault((template, t.dtype, t.shape), []).append([*nums, files[t.file]])
    return {
        "format": FORMAT,
        "id": snap.id,
        "revision": snap.revision,
        "commit": snap.commit,
        "config": snap.config,
        "files": [[f.path, f.size] for f in snap.files],
        "weight_format": snap.weight_format,
        "weight_files": list(snap.weight_files),
        "gated": snap.gated,
        "notes": list(snap.notes),
        "tensor_files": list(files),
        "tensors": [[tpl, dtype, list(shape), rows] for (tpl, dtype, shape), rows in groups.items()],
        **({"gguf": snap.gguf} if snap.gguf is not None else {}),
    }


def decode(data: dict[str, Any], *, source: str) -> Snapshot:
    """Rebuild a snapshot from :func:`encode`'s form."""
    if data.get("format") != FORMAT:
        raise ValueError("unknown cache format")
    tensor_files = data["tensor_files"]
    tensors = []
    for template, dtype, shape, rows in data["tensors"]:
        shape = tuple(int(d) for d in shape)
        numel = 1
        for d in shape:
            numel *= d
        nbytes = gguf_nbytes(dtype, shape) if data.get("gguf") is not None else tensor_nbytes(dtype, numel)
        parts = template.split("{}")
        for row in rows:
            *nums, fi = row
            name = parts[0] + "".join(str(n) + p for n, p in zip(nums, parts[1:], strict=True))
            tensors.append(Tensor(name=name, dtype=dtype, shape=shape, nbytes=nbytes, file=tensor_files[fi]))
    return Snapshot(
        id=data["id"],
        revision=data["revision"],
        commit=data["commit"],
        source=source,
        config=data["config"],
        files=tuple(RepoFile(path=p, size=s) for p, s in data["files"]),
        weight_format=data["weight_format"],
        weight_files=tuple(data["weight_files"]),
        tensors=tuple(tensors),
        gated=bool(data.get("gated", False)),
        notes=tuple(data.get("notes", ())),
        gguf=data.get("gguf"),
    )


def _read(path: Path) -> dict[str, Any] | None:
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    try:
        digest, _, body = raw.partition(b"\n")
        if hashlib.sha256(body).hexdigest().encode() != digest:
            raise ValueError("checksum mismatch")
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        return data
    except (ValueError, KeyError, TypeError, AttributeError):
        _discard(path)
        return None


def _write(path: Path, data: dict[str, Any]) -> None:
    """Write atomically; a cache that cannot be written is not an error (the plan still works)."""
    try:
        body = json.dumps(data, separators=(",", ":")).encode()
    except (TypeError, ValueError, RecursionError):
        return  # not representable as JSON (a hostile config); the plan itself goes on
    wrapper = hashlib.sha256(body).hexdigest().encode() + b"\n" + body
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(wrapper)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            _discard(Path(tmp))
            raise
    except OSError:
        pass


def _discard(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
