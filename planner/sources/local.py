"""Reading a model from a folder on disk: a local checkpoint or a Hugging Face cache snapshot.

Only config.json, the index and the first 8 + N bytes of each safetensors file are read; tensor
data is never touched, so sizing a local 70B folder reads a few hundred kilobytes.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from planner.core import ids
from planner.core.errors import BadConfig, BadHeader, FolderNotFound, NoWeights, UnsupportedModel
from planner.core.records import RepoFile, Selector, Snapshot, Tensor
from planner.sources.formats.safetensors import MAX_HEADER_BYTES, SAFE_INDEX, SAFE_SINGLE, header_length, parse_header

MAX_CONFIG_BYTES = 4_000_000  # as in hub.py
MAX_INDEX_BYTES = 64_000_000
# A model folder has tens of files; a walk that finds more than this is not a model folder.
_MAX_FILES = 20_000


def read_folder(folder: Path, *, model_id: str, select: Selector, source: str = "local", revision: str = "local",
                commit: str | None = None) -> Snapshot:
    """Read the model in ``folder``: its listing, config and the headers of the files ``select`` names.

    Args:
        folder: the model folder (for the HF cache, a ``snapshots/<commit>`` folder).
        select: which files to read, from the listing and the config.
        model_id: the id to report (the path given, or the repo id for cache snapshots).
        source: "local" or "cache".
    """
    if folder.suffix == ".gguf" and folder.is_file():  # a path to one GGUF file (or shard 1 of a split set)
        files = _gguf_siblings(folder)
        folder = folder.parent
    else:
        if not folder.is_dir():
            raise FolderNotFound(f"{model_id}: no such folder" if not folder.exists() else f"{model_id}: is a file, not a model folder",
                                 hint="a local model is a folder with config.json; a Hub repo id is org/name, without ./ or /")
        files = _listing(folder, model_id)
    sizes = {f.path: f.size for f in files}
    try:
        config: dict[str, Any] | None = _read_json(folder / "config.json", f"config.json of {model_id}", MAX_CONFIG_BYTES, BadConfig)
        config_error = None
    except BadConfig as e:
        config, config_error = None, e
    ws = select(files, config)
    if ws.format == "gguf":  # GGUF carries its own metadata: a config.json is optional
        from planner.sources import gguf_files

        found, summary = gguf_files.read_local(folder, model_id, ws)
        return Snapshot(id=model_id, revision=revision, commit=commit, source=source, config=config or {}, files=files,
                        weight_format="gguf", weight_files=ws.files, tensors=tuple(found), notes=ws.notes, gguf=summary)
    if config_error is not None or config is None:
        raise config_error or BadConfig(f"config.json of {model_id}: missing")

    tensors: list[Tensor] = []
    notes: list[str] = list(ws.notes)
    if ws.format not in ("safetensors", "pytorch"):
        raise UnsupportedModel(f"{model_id}: reading {ws.format} files from a folder is not supported yet")
    if ws.format == "pytorch":
        weight_files = ws.weight_files
        notes.append("only pickled pytorch_model*.bin weights: sized from file sizes and config, never unpickled; loading them unpickles code-capable files")
    elif SAFE_SINGLE in ws.files:
        weight_files = (SAFE_SINGLE,)
        tensors = read_header(folder / SAFE_SINGLE, file=SAFE_SINGLE, where=f"{SAFE_SINGLE} of {model_id}")
    else:
        index = _read_json(folder / SAFE_INDEX, f"{SAFE_INDEX} of {model_id}", MAX_INDEX_BYTES, BadHeader)
        wm = index.get("weight_map")
        if not isinstance(wm, dict) or not wm:
            raise BadHeader(f"{SAFE_INDEX} of {model_id}: field 'weight_map' is missing or empty")
        for name, shard in wm.items():
            if not isinstance(shard, str):
                raise BadHeader(f"{SAFE_INDEX} of {model_id}: field 'weight_map' maps {ids.show(name)} to a non-string")
        shards = sorted({ids.repo_path(s, where=f"{SAFE_INDEX} of {model_id}") for s in wm.values()})
        for shard in shards:
            if shard not in sizes:
                raise BadHeader(f"{SAFE_INDEX} of {model_id}: names shard {ids.show(shard)}, which the folder does not have")
            tensors += read_header(folder / shard, file=shard, where=f"{shard} of {model_id}")
        weight_files = tuple(shards)
    return Snapshot(
        id=model_id,
        revision=revision,
        commit=commit,
        source=source,
        config=config,
        files=files,
        weight_format=ws.format,
        weight_files=weight_files,
        tensors=tuple(tensors),
        notes=tuple(notes),
    )


def read_header(path: Path, *, file: str, where: str) -> list[Tensor]:
    """Parse one local safetensors file's header, reading only the header bytes."""
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a FIFO or a device would block or never end
            raise NoWeights(f"{where}: is not a regular file")
        size = st.st_size
        with open(path, "rb") as fh:
            n = header_length(fh.read(8), where=where, file_size=size)
            raw = fh.read(min(n, MAX_HEADER_BYTES))
    except OSError as e:
        raise NoWeights(f"{where}: cannot be read ({e.strerror or type(e).__name__})") from None
    if len(raw) < n:
        raise BadHeader(f"{where}: header is {n} bytes but the file ends after {len(raw)}")
    tensors, _ = parse_header(raw, file=file, where=where, file_size=size)
    return tensors


def _gguf_siblings(path: Path) -> tuple[RepoFile, ...]:
    """The listing for a path to one .gguf file: that file, or every shard of its split set."""
    from planner.sources.formats.gguf import split_info

    split = split_info(path.name)
    names = [path.name]
    if split is not None:
        prefix, _, count = split
        names = [f"{prefix}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]
    out = []
    for name in names:
        try:
            out.append(RepoFile(path=name, size=(path.parent / name).stat().st_size))
        except OSError:
            continue  # a missing shard: the split check names it
    return tuple(out)


def _listing(folder: Path, model_id: str) -> tuple[RepoFile, ...]:
    out: list[RepoFile] = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            full = Path(root) / name
            rel = full.relative_to(folder).as_posix()
            try:
                size = full.stat().st_size  # follows the HF cache's blob symlinks
            except OSError:
                size = None
            out.append(RepoFile(path=rel, size=size))
            if len(out) > _MAX_FILES:
                raise NoWeights(f"{model_id}: folder has more than {_MAX_FILES} files; it is not a model folder")
    return tuple(sorted(out, key=lambda f: f.path))


def _read_json(path: Path, where: str, limit: int, error: type) -> dict[str, Any]:
    try:
        if path.exists() and not path.is_file():  # a FIFO would block, a device never end
            raise error(f"{where}: is not a regular file")
        with open(path, "rb") as fh:
            raw = fh.read(limit + 1)
    except FileNotFoundError:
        raise error(f"{where}: missing") from None
    except OSError as e:
        raise error(f"{where}: cannot be read ({e.strerror})") from None
    if len(raw) > limit:
        raise error(f"{where}: larger than {limit} bytes")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise error(f"{where}: is not valid JSON") from None
    if not isinstance(value, dict):
        raise error(f"{where}: is a JSON {type(value).__name__}, not an object")
    return value
