"""Which files of a repo transformers loads: the rule both the Hub reader and local reader use.

transformers 5 (modeling_utils ``_get_resolved_checkpoint_files``) looks in the repo root for
``model.safetensors``, then ``model.safetensors.index.json``, then ``pytorch_model.bin`` and its
index. Everything else -- ``consolidated*.safetensors``, an ``original/`` folder, ``.gguf`` or
``.pth`` copies, ``model.fp16.safetensors`` variants -- is not loaded and not downloaded by
``from_pretrained``, so fitcheck neither counts nor fetches it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from planner.core.errors import NoWeights

SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
BIN_SINGLE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
_BIN_SHARD = re.compile(r"^pytorch_model-\d+-of-\d+\.bin\Z")
_SAFE_SHARD = re.compile(r"^model-\d+-of-\d+\.safetensors\Z")


@dataclass(frozen=True, slots=True)
class WeightSet:
    """The weight files to read: format, and either one file or an index naming the shards.

    Attributes:
        format: "safetensors" or "pytorch".
        single: the one weight file, when not sharded.
        index: the index file naming the shards, when sharded.
        bin_files: for "pytorch", the .bin files from the listing (sized, never opened).
        ignored: weight files present but not loaded (duplicates), for a note.
    """

    format: str
    single: str | None
    index: str | None
    bin_files: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()


def is_safe_shard(path: str) -> bool:
    """Whether ``path`` is a safetensors shard that transformers would load (``model-00001-of-00004.safetensors``)."""
    return bool(_SAFE_SHARD.match(path))


def choose(paths: Iterable[str], *, where: str) -> WeightSet:
    """Pick the weight set transformers would load from a repo's file paths.

    Raises:
        NoWeights: when the root holds no loadable weights (naming what it found instead).
    """
    paths = list(paths)
    root = {p for p in paths if "/" not in p}
    others = tuple(sorted(p for p in paths if p.endswith((".safetensors", ".bin", ".pth", ".pt", ".gguf", ".ckpt"))
                          and p != SAFE_SINGLE and not _SAFE_SHARD.match(p) and not _BIN_SHARD.match(p) and p != BIN_SINGLE))
    if SAFE_SINGLE in root:
        return WeightSet("safetensors", SAFE_SINGLE, None, ignored=others)
    if SAFE_INDEX in root:
        return WeightSet("safetensors", None, SAFE_INDEX, ignored=others)
    if any(_SAFE_SHARD.match(p) for p in root):
        raise NoWeights(f"{where}: has sharded safetensors but no {SAFE_INDEX}; transformers cannot load it")
    bins = tuple(sorted(p for p in root if p == BIN_SINGLE or _BIN_SHARD.match(p)))
    if bins:
        return WeightSet("pytorch", None, BIN_INDEX if BIN_INDEX in root else None, bin_files=bins, ignored=others)
    found = ", ".join(others[:3]) if others else "no weight files"
    raise NoWeights(
        f"{where}: has no weights transformers loads ({SAFE_SINGLE}, {SAFE_INDEX} or {BIN_SINGLE}); found {found}",
        hint="GGUF-only, diffusers and consolidated-only repos are not loadable with AutoModel.from_pretrained",
    )
