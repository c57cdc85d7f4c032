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
from typing import Any

from planner.core.errors import NoWeights, printable
from planner.core.records import FileSelection
from planner.model.arch import remote_code_note
from planner.sources.formats.safetensors import SAFE_INDEX, SAFE_SINGLE, is_safe_shard

BIN_SINGLE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
_BIN_SHARD = re.compile(r"^pytorch_model-\d+-of-\d+\.bin\Z")


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


def choose(paths: Iterable[str], *, where: str) -> WeightSet:
    """Pick the weight set transformers would load from a repo's file paths.

    Raises:
        NoWeights: when the root holds no loadable weights (naming what it found instead).
    """
    paths = list(paths)
    where = f"{where}: " if where else ""
    root = {p for p in paths if "/" not in p}
    others = tuple(sorted(p for p in paths if p.endswith((".safetensors", ".bin", ".pth", ".pt", ".gguf", ".ckpt"))
                          and p != SAFE_SINGLE and not is_safe_shard(p) and not _BIN_SHARD.match(p) and p != BIN_SINGLE))
    if SAFE_SINGLE in root:
        return WeightSet("safetensors", SAFE_SINGLE, None, ignored=others)
    if SAFE_INDEX in root:
        return WeightSet("safetensors", None, SAFE_INDEX, ignored=others)
    if any(is_safe_shard(p) for p in root):
        raise NoWeights(f"{where}has sharded safetensors but no {SAFE_INDEX}; transformers cannot load it")
    bins = tuple(sorted(p for p in root if p == BIN_SINGLE or _BIN_SHARD.match(p)))
    if bins:
        return WeightSet("pytorch", None, BIN_INDEX if BIN_INDEX in root else None, bin_files=bins, ignored=others)
    found = ", ".join(others[:3]) if others else "no weight files"
    raise NoWeights(
        f"{where}has no weights transformers loads ({SAFE_SINGLE}, {SAFE_INDEX} or {BIN_SINGLE}); found {found}",
        hint="GGUF-only, diffusers and consolidated-only repos are not loadable with AutoModel.from_pretrained",
    )


# The files AutoTokenizer builds a tokenizer from (transformers tokenization_utils_base.py,
# PreTrainedTokenizerBase.vocab_files_names of the fast, sentencepiece and byte-level BPE classes):
# tokenizer.json (the `tokenizers` library, installed with transformers), tokenizer.model
# (sentencepiece; transformers converts it with the sentencepiece package), vocab.json + merges.txt
# (GPT-2-style BPE), vocab.txt (WordPiece).
TOKENIZER_JSON = "tokenizer.json"
SENTENCEPIECE = "tokenizer.model"
_TOKENIZER_SETS = ((TOKENIZER_JSON,), (SENTENCEPIECE,), ("vocab.json", "merges.txt"), ("vocab.txt",))
NO_TOKENIZER_NOTE = ("no tokenizer files in the repo (tokenizer.json, tokenizer.model, vocab.json + merges.txt): "
                     "the emitted script generates from token ids and prints ids")


def tokenizer_files(paths: Iterable[str]) -> tuple[str, ...]:
    """The tokenizer files of a repo's root listing that AutoTokenizer would use, best first; () if none."""
    root = {p for p in paths if "/" not in p}
    for files in _TOKENIZER_SETS:
        if all(f in root for f in files):
            return files
    return ()


def select(paths: Iterable[str], config: Any) -> tuple[FileSelection, ...]:
    """The runtime's ``select``: the one file set transformers loads, or none.

    Raises:
        NoWeights: sharded safetensors without their index.
    """
    paths = list(paths)
    try:
        ws = choose(paths, where="")
    except NoWeights as e:
        if "no weights transformers loads" in e.message:
            return ()
        raise
    notes: list[str] = []
    remote = remote_code_note(config)
    if remote:
        notes.append(remote)
    if ws.ignored:
        # File names are the repo owner's choice: escape anything a terminal would act on.
        notes.append(printable(f"not loaded by transformers, not counted: {', '.join(ws.ignored[:4])}"
                               + (" ..." if len(ws.ignored) > 4 else "")))
    tokenizer = tokenizer_files(paths)
    if not tokenizer:
        notes.append(NO_TOKENIZER_NOTE)
    elif tokenizer == (SENTENCEPIECE,):
        notes.append(f"the tokenizer is {SENTENCEPIECE} alone: transformers needs the sentencepiece package to read it")
    files = (ws.single,) if ws.single else (ws.index,) if ws.index else ()
    return (FileSelection(ws.format, tuple(f for f in files if f), weight_files=ws.bin_files, notes=tuple(notes)),)
