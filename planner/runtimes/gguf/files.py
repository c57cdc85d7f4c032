"""Which GGUF files of a repo make one model: one file, or one split set, per quant type.

A GGUF repo (TheBloke/*-GGUF, bartowski/*, unsloth/*) holds one file per quant type, named by
it ("llama-2-7b.Q4_K_M.gguf", "Meta-Llama-3.1-70B-Instruct-Q4_K_M-00001-of-00002.gguf",
"Q4_K_M/model-Q4_K_M-00001-of-00002.gguf"); a file too large for one upload is split with
llama.cpp's gguf-split (``-00001-of-0000N.gguf``). Vision projectors (``mmproj*.gguf``) are not
the model and are left out. Each group is one :class:`FileSelection` with ``group`` = its quant
type, the preferred first (the one whose headers the sources layer reads when no ``--quant``
names another).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from planner.core.errors import printable
from planner.core.records import FileSelection, RepoFile
from planner.sources.formats.gguf import split_info

# Quant types as llama.cpp's quantize names them (tools/quantize/quantize.cpp:34 QUANT_OPTIONS, the
# tree vendored in llama-cpp-python 0.3.36), plus
# the float types and the unsloth "UD-" dynamic and "_XL" variants.
_QUANT = re.compile(r"^(?:UD-)?(I?Q[1-8](?:_[0-9A-Z]+)*|TQ[12]_0|MXFP4(?:_MOE)?|BF16|F16|FP16|F32)$", re.IGNORECASE)
# When no --quant is given, the group read first: the usual default of GGUF users (llama.cpp's
# README recommends Q4_K_M as the balanced choice), then nearby sizes.
PREFERRED = ("Q4_K_M", "Q4_K_S", "Q5_K_M", "Q4_0", "Q5_K_S", "IQ4_XS", "Q6_K", "Q8_0", "Q3_K_M", "Q3_K_L", "Q5_0",
             "Q2_K", "F16", "BF16")


def quant_of(path: str) -> str:
    """The quant type a GGUF file name says ("Q4_K_M"), or its stem when it names none."""
    name = path.rsplit("/", 1)[-1]
    split = split_info(name)
    stem = split[0] if split else name[: -len(".gguf")] if name.lower().endswith(".gguf") else name
    for token in reversed(re.split(r"[.\-]", stem)):
        if _QUANT.match(token):
            return "F16" if token.upper() == "FP16" else token.upper()
    # a folder named by the quant (unsloth: "Q4_K_M/model-00001-of-00002.gguf")
    folder = path.rsplit("/", 2)[-2] if "/" in path else ""
    if folder and _QUANT.match(folder):
        return folder.upper()
    return stem


def groups(listing: Iterable[RepoFile]) -> dict[str, list[RepoFile]]:
    """Quant type -> its files (a split set in shard order), preferred first."""
    by: dict[str, dict[str, list[RepoFile]]] = {}
    for f in listing:
        base = f.path.rsplit("/", 1)[-1].lower()
        if not base.endswith(".gguf") or "mmproj" in base:
            continue
        by.setdefault(quant_of(f.path), {}).setdefault(_owner(f), []).append(f)
    out: dict[str, list[RepoFile]] = {}
    for key, sets in by.items():
        # two sets with the same quant (a copy in a folder, or two file names): keep the first by path
        files = sets[min(sets)]
        files.sort(key=lambda f: (split_info(f.path.rsplit("/", 1)[-1]) or ("", 1, 1))[1])
        out[key] = files
    rank = {q: i for i, q in enumerate(PREFERRED)}
    return dict(sorted(out.items(), key=lambda kv: (rank.get(kv[0], len(rank)), sum(f.size or 0 for f in kv[1]), kv[0])))


def _owner(f: RepoFile) -> str:
    split = split_info(f.path.rsplit("/", 1)[-1])
    return (f.path.rsplit("/", 1)[0] if "/" in f.path else "") + "|" + (split[0] if split else f.path)


def select(listing: Iterable[RepoFile]) -> tuple[FileSelection, ...]:
    """One selection per quant group (empty when the repo has no GGUF files)."""
    listing = list(listing)
    found = groups(listing)
    out = []
    skipped = sorted(f.path for f in listing if f.path.lower().endswith(".gguf") and "mmproj" in f.path.rsplit("/", 1)[-1].lower())
    for quant, files in found.items():
        notes = [printable(f"not the language model, not counted: {', '.join(skipped[:3])}")] if skipped else []
        paths = tuple(f.path for f in files)
        out.append(FileSelection("gguf", paths, weight_files=paths, group=quant, notes=tuple(notes)))
    return tuple(out)
