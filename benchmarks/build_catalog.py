"""Build fitcheck's bundled catalog, ``planner/sources/catalog/<org>__<name>.json``, from published configs.

Run by hand (it imports torch and transformers; tests never run it)::

    python benchmarks/build_catalog.py            # write the entries
    python benchmarks/build_catalog.py --check    # rebuild in memory, exit 1 if an entry is stale

For every ``<org>__<name>.config.json`` in the configs folder (default: ``shared/catalog-configs``
beside or above the checkout, else the copy a clone carries, ``tests/data/catalog-configs``) it:

1. builds the model from the config with ``AutoModelForCausalLM.from_config`` under
   ``torch.device("meta")`` in the config's ``torch_dtype`` (no memory is allocated);
2. takes the tensors ``save_pretrained`` would write: ``model.state_dict()`` (persistent buffers
   only), minus tied aliases (transformers' own ``remove_tied_weights_from_state_dict``);
3. splits them into files with huggingface_hub's ``split_torch_state_dict_into_shards`` -- the
   function ``save_pretrained`` calls -- at the ``max_shard_size`` the real repo was saved with
   (``SHARDING`` below says how each was decided);
4. sizes each file exactly: 8-byte length prefix + the header JSON as safetensors writes it
   (checked against ``safetensors.torch.save`` on every run) + the tensor data;
5. writes :func:`planner.sources.cache.encode` of the resulting :class:`planner.core.records.Snapshot`, plus a
   ``provenance`` block.

It exits non-zero when a computed parameter count or byte count differs from the published one
in the configs folder's README, or a shard count differs from the Hub's. The output is
deterministic: an entry whose content is unchanged keeps its file (and its build date) untouched.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import hashlib
import json
import math
import re
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
CATALOG_DIR = REPO_ROOT / "planner" / "sources" / "catalog"
# The configs a clone carries (copies of the workspace's shared/catalog-configs, README included).
BUNDLED_CONFIGS = REPO_ROOT / "tests" / "data" / "catalog-configs"
sys.path.insert(0, str(REPO_ROOT))

from planner.core.records import RepoFile, Snapshot, Tensor  # noqa: E402
from planner.sources.cache import encode  # noqa: E402


@dataclass(frozen=True)
class ShardRule:
    """How a repo's weights are split into files on the Hub.

    Attributes:
        max_shard_size: the ``max_shard_size`` the repo was saved with (huggingface_hub's decimal
            units: "5GB" is 5 * 10**9 bytes).
        files: how many weight files the Hub repo has.
        why: how the two were decided, recorded in the provenance.
    """

    max_shard_size: str
    files: int
    why: str


# save_pretrained's default max_shard_size was "10GB" before transformers 4.35 and "5GB" after
# (modeling_utils.save_pretrained); the `transformers_version` each config.json records says which
# default applied. Each rule is confirmed by the split reproducing the Hub's file sizes, quoted in
# `why` in decimal GB as the Hub lists them.
SHARDING: dict[str, ShardRule] = {
    "meta-llama/Llama-3.1-8B": ShardRule(
        "5GB", 4,
        "4 shards (catalog-configs README). 5GB, save_pretrained's default when it was saved (4.43): the greedy split "
        "reproduces the Hub's 4.98/5.00/4.92/1.17 GB files and the shard boundaries of its model.safetensors.index.json "
        "(KNOWN_PLACEMENTS)"),
    "meta-llama/Llama-3.2-1B": ShardRule(
        "5GB", 1, "a single model.safetensors (catalog-configs README); 2.47 GB is under the 5GB default of 4.45"),
    "Qwen/Qwen2.5-7B-Instruct": ShardRule(
        "4GB", 4,
        "4 shards (catalog-configs README). 4GB: the Hub lists 3.95/3.86/3.86/3.56 GB files, which the greedy split "
        "gives at 4GB (3.945/3.865/3.865/3.556) and not at the 5GB default (4.88/4.93/4.33/1.09); sizes as recalled "
        "from the Hub listing, not re-read online"),
    "mistralai/Mistral-7B-v0.1": ShardRule(
        "10GB", 2,
        "2 shards (the Hub repo's model-0000{1,2}-of-00002.safetensors, 9.94/4.54 GB, as recalled, not re-read "
        "online). 10GB, save_pretrained's default before 4.35 (the config says 4.34.0.dev0), gives exactly that split; "
        "5GB would give 3 files"),
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0": ShardRule(
        "10GB", 1,
        "a single model.safetensors (catalog-configs README); 2.20 GB is under either default (10GB before 4.35, 5GB since)"),
    "microsoft/Phi-3-mini-4k-instruct": ShardRule(
        "5GB", 2,
        "2 shards (the Hub repo's model-0000{1,2}-of-00002.safetensors, 4.97/2.67 GB, as recalled, not re-read "
        "online). 5GB, save_pretrained's default in 4.40, gives exactly that split (4.97/2.67 GB)"),
}

# Tensor -> shard facts read from a real index, checked on every build. Source: the
# model.safetensors.index.json of meta-llama/Llama-3.1-8B (identical for Meta-Llama-3-8B), as
# quoted in full in a public zml example: the first tensor of each shard and the last of the one
# before it, in the order the model's state_dict lists them.
KNOWN_PLACEMENTS: dict[str, dict[str, str]] = {
    "meta-llama/Llama-3.1-8B": {
        "model.embed_tokens.weight": "model-00001-of-00004.safetensors",
        "model.layers.8.post_attention_layernorm.weight": "model-00001-of-00004.safetensors",
        "model.layers.9.self_attn.q_proj.weight": "model-00002-of-00004.safetensors",
        "model.layers.20.mlp.gate_proj.weight": "model-00002-of-00004.safetensors",
        "model.layers.20.mlp.up_proj.weight": "model-00003-of-00004.safetensors",
        "model.layers.31.mlp.up_proj.weight": "model-00003-of-00004.safetensors",
        "model.layers.31.mlp.down_proj.weight": "model-00004-of-00004.safetensors",
        "model.norm.weight": "model-00004-of-00004.safetensors",
        "lm_head.weight": "model-00004-of-00004.safetensors",
    },
}

# The small files of each repo besides config.json (sized from the shared copy) and the index
# (sized exactly). Their sizes are approximate: recalled from the Hub's listings, not read from the
# Hub, within a few percent; they only feed the download estimate, where they are < 0.1 %.
# Files from_pretrained never fetches (README, LICENSE, original/, .bin duplicates, remote code)
# are left out and named in the provenance.
SMALL_FILES: dict[str, dict[str, int]] = {
    "meta-llama/Llama-3.1-8B": {
        "generation_config.json": 185, "special_tokens_map.json": 73, "tokenizer.json": 9_085_657,
        "tokenizer_config.json": 50_977},
    "meta-llama/Llama-3.2-1B": {
        "generation_config.json": 185, "special_tokens_map.json": 301, "tokenizer.json": 9_085_657,
        "tokenizer_config.json": 50_500},
    "Qwen/Qwen2.5-7B-Instruct": {
        "generation_config.json": 243, "merges.txt": 1_671_839, "tokenizer.json": 7_031_645,
        "tokenizer_config.json": 7_305, "vocab.json": 2_776_833},
    "mistralai/Mistral-7B-v0.1": {
        "generation_config.json": 116, "special_tokens_map.json": 72, "tokenizer.json": 1_795_303,
        "tokenizer.model": 493_443, "tokenizer_config.json": 967},
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0": {
        "generation_config.json": 124, "special_tokens_map.json": 551, "tokenizer.json": 1_842_767,
        "tokenizer.model": 499_723, "tokenizer_config.json": 1_289},
    "microsoft/Phi-3-mini-4k-instruct": {
        "added_tokens.json": 293, "generation_config.json": 172, "special_tokens_map.json": 569,
        "tokenizer.json": 1_937_869, "tokenizer.model": 499_723, "tokenizer_config.json": 3_440},
}
LEFT_OUT: dict[str, str] = {
    "meta-llama/Llama-3.1-8B": "README.md, LICENSE, USE_POLICY.md, .gitattributes, original/ (Meta's consolidated.00.pth, params.json, tokenizer.model)",
    "meta-llama/Llama-3.2-1B": "README.md, LICENSE.txt, USE_POLICY.md, .gitattributes, original/ (Meta's consolidated.00.pth, params.json, tokenizer.model)",
    "Qwen/Qwen2.5-7B-Instruct": "README.md, LICENSE, .gitattributes",
    "mistralai/Mistral-7B-v0.1": "README.md, .gitattributes, pytorch_model-0000{1,2}-of-00002.bin and pytorch_model.bin.index.json (a duplicate weight set transformers does not load when safetensors exist)",
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0": "README.md, eval_results.json, .gitattributes",
    "microsoft/Phi-3-mini-4k-instruct": "README.md, LICENSE, NOTICE.md, SECURITY.md, CODE_OF_CONDUCT.md, .gitattributes, configuration_phi3.py, modeling_phi3.py, sample_finetune.py (remote code; transformers loads phi3 natively)",
}

# Gated on the Hub: the catalog-configs README says Meta's Llama repos are.
GATED = frozenset({"meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.2-1B"})

# Configs in the folder whose entry a meta-device build cannot derive honestly, and why.
NOT_BUILT: dict[str, str] = {
    "deepseek-ai/DeepSeek-V3": (
        "its Hub checkpoint stores FP8 E4M3 weights with F32 128x128 block scales (quantization_config) and the "
        "multi-token-prediction layer 61 (14B), neither of which AutoModelForCausalLM.from_config builds; an entry derived "
        "that way would describe 671B bf16 tensors (1.34 TB) instead of the files on the Hub"),
}

NOTE = "header summary derived from the published config.json with transformers on the meta device, not read from the repo"

# torch dtype -> safetensors dtype string (safetensors/torch.py _TYPES, inverted).
_ST_DTYPE = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}
# safetensors orders a header's tensors by dtype, largest alignment first, then by name
# (safetensors/src/tensor.rs, `prepare`); the order of its Dtype enum decides ties of width.
_ST_ORDER = {"F32": 2, "BF16": 1, "F16": 0}
_ST_BYTES = {"F32": 4, "BF16": 2, "F16": 2}


# ---------------------------------------------------------------------------------------------
# Published figures
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    """A row of the configs README: the exact published count, or only the nominal size ("14B")."""

    repo: str
    parameters: int | None  # exact, when published
    nominal: str | None  # e.g. "14B", "0.6B", "46.7B", when only that is known
    bf16_bytes: int | None
    weight_files: str

    def check(self, computed: int) -> str | None:
        """Why ``computed`` contradicts the published figure, or None.

        The configs README: an exact count must be reproduced exactly; a nominal size must be what
        the derived count rounds (or truncates, as model names do: Qwen2.5-14B has 14.77B) to at
        the nominal's precision.
        """
        if self.parameters is not None:
            return None if computed == self.parameters else f"computed {computed:,} parameters, published {self.parameters:,}"
        assert self.nominal is not None
        digits = len(self.nominal.partition(".")[2])
        value = computed / 1e9
        want = float(self.nominal)
        rounded, cut = round(value, digits), math.floor(value * 10**digits) / 10**digits
        if math.isclose(rounded, want) or math.isclose(cut, want):
            return None
        return f"computed {computed:,} parameters, which is not {self.nominal}B"


def read_published(readme: Path) -> dict[str, Published]:
    """Config file name -> published figures, from the table in the configs folder's README.

    Rows are ``| file | repo | parameters | weight files |`` (an older layout had a bf16 bytes
    column before the weight files). Parameters are ``3,085,938,688 (exact)`` or ``14B (nominal...)``.
    """
    out: dict[str, Published] = {}
    for line in readme.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) not in (4, 5) or not cells[0].endswith(".config.json"):
            continue
        name, repo, params = cells[:3]
        nbytes = cells[3] if len(cells) == 5 else ""
        files = cells[-1]
        exact = re.match(r"^([\d,]+)(\s|$)", params)
        nominal = re.match(r"^(\d+(?:\.\d+)?)B\b", params)
        size = re.match(r"^([\d,]+)$", nbytes)
        if not exact and not nominal:
            raise SystemExit(f"README row for {name}: no parameter count in {params!r}")
        out[name] = Published(repo, int(exact.group(1).replace(",", "")) if exact else None,
                              None if exact else nominal.group(1),  # type: ignore[union-attr]
                              int(size.group(1).replace(",", "")) if size else None, files)
    return out


def readme_files(published: Published) -> int | None:
    """How many weight files the README says the Hub repo has, when it says."""
    if published.weight_files == "model.safetensors":
        return 1
    m = re.match(r"^(\d+) shards$", published.weight_files)
    return int(m.group(1)) if m else None


def default_rule(repo: str, config: dict[str, Any], published: Published) -> ShardRule:
    """The sharding of a repo without a :data:`SHARDING` rule: save_pretrained's default for the
    transformers version the config records ("10GB" before 4.35, "5GB" since), or, where the
    README gives the file count, the first of the usual sizes whose split gives that count."""
    version = tuple(int(x) for x in re.findall(r"\d+", str(config.get("transformers_version", "4.35")))[:2])
    default = "10GB" if version < (4, 35) else "5GB"
    files = readme_files(published)
    why = (f"save_pretrained's default max_shard_size for transformers {config.get('transformers_version')} "
           f"(modeling_utils.save_pretrained: 10GB before 4.35, 5GB since)")
    if files is None:
        return ShardRule(default, 0, why + "; the Hub's file count is not known here, so it is not checked")
    return ShardRule(default, files, why + f"; the configs README gives {files} weight file(s)")


# ---------------------------------------------------------------------------------------------
# What save_pretrained writes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Derived:
    tensors: list[tuple[str, str, tuple[int, ...]]]  # (name, safetensors dtype, shape) in state_dict order
    shards: dict[str, list[str]]  # file -> tensor names, in file order
    parameters: int  # model.num_parameters(): tied weights once
    model_class: str
    reverted: bool = False  # names and shapes reverted from transformers 5's conversion (fused experts)


def derive(config: dict[str, Any], rule: ShardRule) -> Derived:
    import torch
    from huggingface_hub import split_torch_state_dict_into_shards
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.core_model_loading import revert_weight_conversion
    from transformers.modeling_utils import remove_tied_weights_from_state_dict

    dtype_name = config.get("torch_dtype") or config.get("dtype")
    if dtype_name not in _ST_DTYPE:
        raise SystemExit(f"config torch_dtype {dtype_name!r} is not one of {sorted(_ST_DTYPE)}")
    # A deep copy: transformers edits nested dicts it is given (it adds rope_theta to rope_scaling),
    # and the entry must keep the config exactly as published.
    cfg = AutoConfig.for_model(**copy.deepcopy(config))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype_name))
    # The steps of PreTrainedModel.save_pretrained (transformers 5), in its order.
    state = model.state_dict()  # parameters and persistent buffers; non-persistent ones are not in it
    for key in model._keys_to_ignore_on_save or ():
        state.pop(key, None)
    state = remove_tied_weights_from_state_dict(state, model)
    reverted = revert_weight_conversion(model, dict(state))
    renamed = set(reverted) != set(state)
    if renamed:
        # transformers 5 loads some checkpoints under other names (MoE experts fused into one
        # tensor) and save_pretrained reverts them to the checkpoint's own names and shapes: the
        # reverted dict is what the Hub files hold. Every element must survive the round trip.
        if sum(t.numel() for t in reverted.values()) != sum(t.numel() for t in state.values()):
            raise SystemExit(f"{type(model).__name__}: reverting transformers' weight conversion changes the element count")
        # Fresh meta tensors: a reverted expert is a view of the fused tensor, and the split would
        # count the whole fused storage for each view (one file per expert).
        state = {k: torch.empty(t.shape, dtype=t.dtype, device="meta") for k, t in reverted.items()}
    split = split_torch_state_dict_into_shards(state, filename_pattern="model{suffix}.safetensors",
                                               max_shard_size=rule.max_shard_size)
    tensors = []
    for name, t in state.items():
        st = _ST_DTYPE.get(str(t.dtype).removeprefix("torch."))
        if st is None:
            raise SystemExit(f"{name}: dtype {t.dtype} has no safetensors name here")
        tensors.append((name, st, tuple(int(d) for d in t.shape)))
    return Derived(tensors=tensors, shards={f: list(names) for f, names in split.filename_to_tensors.items()},
                   parameters=int(model.num_parameters()), model_class=type(model).__name__, reverted=renamed)


def header_json(entries: list[tuple[str, str, tuple[int, ...]]], metadata: dict[str, str]) -> tuple[bytes, dict[str, int]]:
    """The header safetensors writes for ``entries`` (padded), and each tensor's data offset.

    Format (safetensors/src/tensor.rs, ``prepare`` and ``serialize``): ``__metadata__`` first,
    then the tensors sorted by dtype (widest first) and name, as compact JSON with keys dtype,
    shape, data_offsets; padded with spaces to a multiple of 8 bytes.
    """
    ordered = sorted(entries, key=lambda e: (-_ST_ORDER[e[1]], e[0]))
    obj: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    offsets: dict[str, int] = {}
    pos = 0
    for name, dtype, shape in ordered:
        n = _ST_BYTES[dtype]
        for d in shape:
            n *= d
        obj[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, pos + n]}
        offsets[name] = pos
        pos += n
    raw = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    return raw + b" " * (-len(raw) % 8), offsets


def check_header_format() -> str:
    """Compare :func:`header_json` with ``safetensors.torch.save`` on small tensors; return the version."""
    import safetensors
    import torch
    from safetensors.torch import save

    cases = [
        {"b.weight": (torch.bfloat16, (3, 5)), "a.10.x": (torch.bfloat16, (7,)), "a.2.x": (torch.bfloat16, (2, 2))},
        {"model.norm.weight": (torch.float16, (9,)), "lm_head.weight": (torch.float16, (3, 11)), "z": (torch.float32, (1,))},
        {"x": (torch.bfloat16, (1,))},
    ]
    for case in cases:
        real = save({k: torch.zeros(s, dtype=dt_) for k, (dt_, s) in case.items()}, metadata={"format": "pt"})
        (n,) = struct.unpack("<Q", real[:8])
        mine, _ = header_json([(k, _ST_DTYPE[str(dt_).removeprefix("torch.")], s) for k, (dt_, s) in case.items()],
                              {"format": "pt"})
        if real[8:8 + n] != mine:
            raise SystemExit(f"header format differs from safetensors {safetensors.__version__}:\n{real[8:8 + n]!r}\n{mine!r}")
    return safetensors.__version__


def index_json(weight_map: dict[str, str], total_size: int) -> bytes:
    """model.safetensors.index.json as transformers 4.x wrote it (5.x adds total_parameters)."""
    index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    return (json.dumps(index, indent=2, sort_keys=True) + "\n").encode()


# ---------------------------------------------------------------------------------------------
# One entry
# ---------------------------------------------------------------------------------------------


def build_entry(config_path: Path, published: Published, versions: dict[str, str]) -> dict[str, Any]:
    repo = published.repo
    config_bytes = config_path.read_bytes()
    config = json.loads(config_bytes)
    rule = SHARDING.get(repo) or default_rule(repo, config, published)
    derived = derive(config, rule)
    if repo not in SHARDING and rule.files and len(derived.shards) != rule.files:
        for size in ("4GB", "5GB", "10GB", "2GB", "3GB"):  # the sizes repos are saved with, most usual first
            if size != rule.max_shard_size and len((other := derive(config, ShardRule(size, rule.files, ""))).shards) == rule.files:
                derived, rule = other, ShardRule(size, rule.files, (
                    f"the configs README gives {rule.files} weight files; save_pretrained's default ({rule.max_shard_size}) gives "
                    f"{len(derived.shards)}, the greedy split at {size} (the first of 4GB/5GB/10GB/2GB/3GB that gives "
                    f"{rule.files}) is used; file sizes not checked against the Hub"))
                break
    if config != json.loads(config_bytes):
        raise SystemExit(f"{repo}: building the model changed the config dict")

    computed_params = sum(_numel(shape) for _, _, shape in derived.tensors)
    errors = []
    if (wrong := published.check(computed_params)) is not None:
        errors.append(wrong)
    if derived.parameters != computed_params:
        errors.append(f"model.num_parameters() is {derived.parameters:,} but the saved tensors hold {computed_params:,}")
    weight_bytes = sum(_numel(s) * _ST_BYTES[d] for _, d, s in derived.tensors)
    if published.bf16_bytes is not None and weight_bytes != published.bf16_bytes:
        errors.append(f"computed {weight_bytes:,} weight bytes, published {published.bf16_bytes:,}")
    if rule.files and len(derived.shards) != rule.files:
        errors.append(f"{len(derived.shards)} weight files at max_shard_size={rule.max_shard_size}, the Hub has {rule.files}")
    where = {name: f for f, names in derived.shards.items() for name in names}
    for name, f in KNOWN_PLACEMENTS.get(repo, {}).items():
        if where.get(name) != f:
            errors.append(f"{name} lands in {where.get(name)}, the Hub index has it in {f}")
    if errors:
        raise SystemExit(f"{repo}: " + "; ".join(errors))

    by_name = {name: (d, s) for name, d, s in derived.tensors}
    tensors: list[Tensor] = []
    sizes: dict[str, int] = {}
    for f in sorted(derived.shards):
        entries = [(n, *by_name[n]) for n in derived.shards[f]]
        header, offsets = header_json(entries, {"format": "pt"})
        data = 0
        for n, d, s in sorted(entries, key=lambda e: offsets[e[0]]):
            nbytes = _numel(s) * _ST_BYTES[d]
            tensors.append(Tensor(name=n, dtype=d, shape=s, nbytes=nbytes, file=f, offset=offsets[n]))
            data += nbytes
        sizes[f] = 8 + len(header) + data
    weight_files = tuple(sorted(derived.shards))

    files = {"config.json": len(config_bytes), **SMALL_FILES.get(repo, {}), **sizes}
    index_bytes = None
    if len(weight_files) > 1:
        index_bytes = len(index_json(dict(sorted(where.items())), weight_bytes))
        files["model.safetensors.index.json"] = index_bytes
    snapshot = Snapshot(
        id=repo, revision="main", commit=None, source="catalog", config=config,
        files=tuple(RepoFile(path=p, size=s) for p, s in sorted(files.items())),
        weight_format="safetensors", weight_files=weight_files, tensors=tuple(tensors),
        gated=repo in GATED or repo.startswith("meta-llama/"), notes=(NOTE,),
    )
    entry = encode(snapshot)
    entry["provenance"] = {
        "config": {"file": config_path.name, "sha256": hashlib.sha256(config_bytes).hexdigest(), "hub_repo": repo,
                   "note": "the model's published config.json, copied from public mirrors of the Hub repo"},
        "tensors": (f"{derived.model_class} built by AutoModelForCausalLM.from_config on torch.device('meta') in "
                    f"{config.get('torch_dtype')}; state_dict() minus tied aliases (remove_tied_weights_from_state_dict), "
                    "as save_pretrained writes it" + ("; transformers 5's weight conversion (fused experts) reverted to the "
                                                      "checkpoint names with revert_weight_conversion, as save_pretrained does"
                                                      if derived.reverted else "")
                    + "; header offsets as safetensors orders them"),
        "versions": versions,
        "published_parameters": published.parameters,
        "published_nominal": f"{published.nominal}B" if published.nominal else None,
        "computed_parameters": computed_params,
        "published_bf16_bytes": published.bf16_bytes,
        "computed_weight_bytes": weight_bytes,
        "shards": {"count": len(weight_files), "max_shard_size": rule.max_shard_size,
                   "split": "huggingface_hub.split_torch_state_dict_into_shards in state_dict order (what save_pretrained calls)",
                   "decided": rule.why},
        "file_sizes": ("weight files exact (8-byte prefix + header as safetensors writes it + data); config.json is the "
                       "shared copy's size" + ("; model.safetensors.index.json exact for the transformers 4.x format"
                                               if index_bytes else "")
                       + ("; the other small files approximate (recalled from the Hub listing, not read from the Hub)"
                          if repo in SMALL_FILES else "; no other file is listed")),
        "listing_omits": LEFT_OUT.get(repo, "every file besides config.json and the weights (tokenizer, generation "
                                                "config, README): their sizes are not known without the Hub"),
        "commit": "none recorded: the commit the Hub files belong to was not read",
        "built": dt.datetime.now(dt.timezone.utc).date().isoformat(),
    }
    return entry


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def dumps(entry: dict[str, Any]) -> str:
    """Stable, diff-friendly JSON: one top-level key a line, one tensor group or file a line."""
    compact = {"separators": (",", ":"), "ensure_ascii": False}
    lines = []
    for key, value in entry.items():
        if key in ("tensors", "files") and value:
            inner = ",\n  ".join(json.dumps(v, **compact) for v in value)
            text = f"[\n  {inner}\n ]"
        elif key == "provenance":
            text = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n ")
        else:
            text = json.dumps(value, **compact)
        lines.append(f" {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _without_date(entry: dict[str, Any]) -> dict[str, Any]:
    out = dict(entry)
    out["provenance"] = {k: v for k, v in entry.get("provenance", {}).items() if k != "built"}
    return out


def find_configs(root: Path) -> Path | None:
    """The configs folder: the workspace's shared/catalog-configs beside or above the checkout,
    else the copy every clone carries (tests/data/catalog-configs)."""
    for p in (root / "shared" / "catalog-configs", root.parent / "shared" / "catalog-configs",
              root / "tests" / "data" / "catalog-configs"):
        if (p / "README.md").is_file():
            return p
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", type=Path, default=None, help="folder of <org>__<name>.config.json and README.md")
    parser.add_argument("--out", type=Path, default=CATALOG_DIR, help="catalog folder to write")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if an entry would change")
    parser.add_argument("--only", action="append", metavar="REPO", help="build only this repo id (repeatable)")
    args = parser.parse_args(argv)

    configs = args.configs or find_configs(REPO_ROOT)
    if configs is None or not configs.is_dir():
        parser.error("no catalog-configs folder found; pass --configs")
    published = read_published(configs / "README.md")

    import huggingface_hub
    import torch
    import transformers

    versions = {"transformers": transformers.__version__, "torch": torch.__version__,
                "huggingface_hub": huggingface_hub.__version__, "safetensors": check_header_format()}
    stale = []
    for path in sorted(configs.glob("*.config.json")):
        if path.name not in published:
            raise SystemExit(f"{path.name}: not in {configs / 'README.md'}; add its published figures there")
        if args.only and published[path.name].repo not in args.only:
            continue
        if published[path.name].repo in NOT_BUILT:
            print(f"{published[path.name].repo:38} not built: {NOT_BUILT[published[path.name].repo]}")
            continue
        entry = build_entry(path, published[path.name], versions)
        target = args.out / f"{path.name.removesuffix('.config.json')}.json"
        try:
            old = json.loads(target.read_text())
        except (OSError, ValueError):
            old = None
        if old is not None and _without_date(old) == _without_date(entry):
            status = "unchanged"
        elif args.check:
            status = "STALE"
            stale.append(target.name)
        else:
            target.write_text(dumps(entry))
            status = "written"
        prov = entry["provenance"]
        print(f"{entry['id']:38} {prov['computed_parameters']:>15,} params (published "
              f"{prov['published_parameters'] or 0:,} {prov['published_nominal'] or ''})"
              f"  {prov['shards']['count']} file(s)  {target.stat().st_size if target.exists() else 0:>7,} B  {status}")
    if stale:
        print(f"stale: {', '.join(stale)}; run without --check to rewrite", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
