"""Which files of a diffusers pipeline repo ``DiffusionPipeline.from_pretrained`` reads.

A pipeline repo has ``model_index.json`` at its root (``{component: [library, class]}``) and one
folder per component. Each model component holds its config and its weights:

* diffusers models (``ModelMixin``): ``diffusion_pytorch_model.safetensors`` or, sharded,
  ``diffusion_pytorch_model.safetensors.index.json`` and its shards (diffusers
  utils/constants.py:33-34);
* transformers models (text encoders, the safety checker): ``model.safetensors`` or
  ``model.safetensors.index.json`` and its shards.

A *variant* ``v`` inserts ``.v`` before the last suffix (diffusers utils/hub_utils.py:250-256,
``_add_variant``): ``diffusion_pytorch_model.fp16.safetensors``, the index
``diffusion_pytorch_model.safetensors.index.fp16.json``, and its shards
``diffusion_pytorch_model.fp16-00001-of-00002.safetensors`` (models/modeling_utils.py:771, the
shard name pattern). A component without the variant falls back to its default files, one
component at a time, as ``from_pretrained(variant=...)`` does.

This module only looks at the listing: the sources layer reads what it names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from planner.core.errors import printable
from planner.core.records import FileSelection

MODEL_INDEX = "model_index.json"
# the two weight-file stems a component folder may hold (diffusers, transformers)
_STEMS = ("diffusion_pytorch_model", "model")
# config files of a component folder worth reading (model configs; schedulers and tokenizers
# hold no weights and are not read)
COMPONENT_CONFIG = "config.json"
# the variant fitcheck prefers when the repo has it: half the download of fp32 weights, and the
# files diffusers' own examples load for fp16/bf16 runs
PREFERRED_VARIANT = "fp16"

VARIANT_RE = re.compile(r"^(?:diffusion_pytorch_model|model)(?:\.safetensors\.index\.([A-Za-z0-9_]+)\.json"
                         r"|\.([A-Za-z0-9_]+)(?:-\d+-of-\d+)?\.safetensors)\Z")


@dataclass(frozen=True, slots=True)
class ComponentFiles:
    """The files one component folder loads from under a variant.

    Attributes:
        folder: the component's folder (its name in model_index.json).
        weights: the safetensors files (one, or the shards of the index).
        index: the shard index file, or "".
        variant: the variant these files are ("" for the default files).
    """

    folder: str
    weights: tuple[str, ...]
    index: str = ""
    variant: str = ""


def _shard_re(stem: str, variant: str) -> re.Pattern[str]:
    v = re.escape(f".{variant}") if variant else ""
    return re.compile(rf"^{re.escape(stem)}{v}-\d+-of-\d+\.safetensors\Z")


def component_files(folder: str, names: set[str], variant: str) -> ComponentFiles | None:
    """What ``folder`` (its file names ``names``, relative to it) loads under ``variant`` ("" =
    default), falling back to the default files when it lacks the variant; None: no safetensors."""
    for v in dict.fromkeys((variant, "")):
        for stem in _STEMS:
            single = f"{stem}.{v}.safetensors" if v else f"{stem}.safetensors"
            index = f"{stem}.safetensors.index.{v}.json" if v else f"{stem}.safetensors.index.json"
            # diffusers loads the shards when the index exists (modeling_utils.from_pretrained:
            # is_sharded = index_file is not None); transformers the single file first (files.py
            # of the transformers runtime: modeling_utils _get_resolved_checkpoint_files)
            order = (index, single) if stem == "diffusion_pytorch_model" else (single, index)
            for name in order:
                if name not in names:
                    continue
                if name == single:
                    return ComponentFiles(folder, (f"{folder}/{single}",), variant=v)
                pattern = _shard_re(stem, v)
                shards = tuple(sorted(f"{folder}/{n}" for n in names if pattern.match(n)))
                return ComponentFiles(folder, shards, index=f"{folder}/{index}", variant=v)
    return None


def folders(paths: Iterable[str]) -> dict[str, set[str]]:
    """Top-level folder -> the names of the files directly inside it."""
    out: dict[str, set[str]] = {}
    for p in paths:
        head, sep, tail = p.partition("/")
        if sep and "/" not in tail:
            out.setdefault(head, set()).add(tail)
    return out


def variants(paths: Iterable[str]) -> tuple[str, ...]:
    """The weight variants present in any component folder (e.g. ("fp16",)), sorted."""
    found = set()
    for names in folders(paths).values():
        for n in names:
            m = VARIANT_RE.match(n)
            if m:
                found.add(m.group(1) or m.group(2))
    return tuple(sorted(found))


def choose(paths: Iterable[str], variant: str) -> dict[str, ComponentFiles]:
    """Component folder -> the files it loads under ``variant`` (folders without safetensors left out)."""
    out = {}
    for folder, names in sorted(folders(paths).items()):
        got = component_files(folder, names, variant)
        if got is not None:
            out[folder] = got
    return out


def download_bytes(sizes: Mapping[str, int | None], components: Iterable[str], variant: str) -> int:
    """Bytes a download of ``components`` under ``variant`` fetches (weights, indexes, configs)."""
    wanted = set(components)
    chosen = choose(sizes, variant)
    total = sizes.get(MODEL_INDEX) or 0
    for folder, cf in chosen.items():
        if folder in wanted:
            total += sum(sizes.get(p) or 0 for p in (*cf.weights, cf.index) if p)
    for p, size in sizes.items():  # the small files of every component: configs, tokenizers
        head, sep, tail = p.partition("/")
        if sep and head in wanted and not tail.endswith((".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".onnx", ".msgpack", ".h5")) \
                and ".index." not in tail:
            total += size or 0
    return total


def select(paths: Iterable[str]) -> tuple[FileSelection, ...]:
    """The runtime's ``select``: one file set (the preferred variant where the repo has it, falling
    back per component), or none when the repo is not a diffusers pipeline."""
    paths = list(paths)
    if MODEL_INDEX not in paths:
        return ()
    present = variants(paths)
    variant = PREFERRED_VARIANT if PREFERRED_VARIANT in present else ""
    chosen = choose(paths, variant)
    files: list[str] = [MODEL_INDEX]
    weights: list[str] = []
    for folder, cf in chosen.items():
        config = f"{folder}/{COMPONENT_CONFIG}"
        if config in paths:
            files.append(config)
        if cf.index:
            files.append(cf.index)
        files.extend(cf.weights)
        weights.extend(cf.weights)
    # folders with a config but no safetensors (e.g. only .bin weights) cannot be sized from headers
    notes = []
    bins = sorted(f for f, names in folders(paths).items() if f not in chosen and any(n.endswith(".bin") for n in names))
    if bins:
        notes.append(printable(f"components with only pickled .bin weights are not read: {', '.join(bins[:4])}"))
    other = [v for v in present if v != variant]
    if other:
        notes.append(printable(f"other weight variants in the repo, not read: {', '.join(other[:4])}"))
    return (FileSelection("pipeline", tuple(files), weight_files=tuple(weights), group=variant, notes=tuple(notes)),)
