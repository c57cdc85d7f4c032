"""A long fuzz run over everything fitcheck parses from strangers.

Mutational, coverage-blind and dependency-free (atheris has no wheel for this Python): seeds are
valid inputs (safetensors headers of several layouts, the hostile catalogue of
``tests/hostile.py``, configs of eight model families, cache entries, index files), and each input
is a seed with 1-8 random mutations at the byte level or the JSON level. Every target has an
oracle: the exceptions it may raise (fitcheck's own, one line, at most 1000 printable
characters) and, when it succeeds, invariants (a header's tensors tile its data; a config's
numbers are in range; the cache gives back what it was given).

    python fuzz/fuzz_parsers.py --seconds 600 --seed 1 --out fuzz/last-run.json

Anything else -- a crash, a message that is not one clear line, an input that takes over a
second -- is written to ``fuzz/crashes/`` and counted. The figures of the committed run are in
fuzz/RESULTS.md. The property tests (tests/test_properties.py) are the same oracles driven by
hypothesis; ``FUZZ_EXAMPLES=N`` runs them N times each, randomly.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import random
import re
import struct
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("FITCHECK_CACHE_DIR", str(Path("/tmp") / f"fitcheck-fuzz-{os.getpid()}"))

from fixtures_models import decoder_tensors, safetensors_header  # noqa: E402
from hostile import CONFIGS, HEADERS, INDEXES  # noqa: E402
from planner.sources import cache
from planner.sources import hub
from planner.core import ids
from planner.model import prequant
from planner.core import secrets  # noqa: E402
from planner.model.arch import read_arch  # noqa: E402
from planner.core.errors import FitcheckError, NoFeasiblePlan, printable  # noqa: E402
from planner.model.footprint import estimate  # noqa: E402
from planner.sources.formats.safetensors import header_length, parse_header  # noqa: E402
from planner.core.records import Gpu, Hardware, RepoFile, Snapshot, Tensor  # noqa: E402
from planner.core.records import Constraints
from planner.runtimes.transformers.plans import plans as transformers_plans
from planner.solve.solver import solve  # noqa: E402
from planner.core.units import DTYPE_BITS, GiB, parse_size  # noqa: E402

SLOW_INPUT_S = 1.0  # an input taking longer than this is a finding (unbounded work)
INTERESTING_INTS = [0, 1, 2, 7, 8, 9, 255, 256, 4095, 4096, 99_992, 99_999, 100_000, 100_001, 2**31 - 1, 2**31, 2**32, 2**48, 2**53 + 1,
                    2**63 - 1, 2**63, 2**64 - 1, 2**64, -1, -(2**63), 10**12, 10**100]
INTERESTING_JSON: list[Any] = [None, True, False, 0, -1, 1, 2**63, 2**64, 10**30, 1.5, 1e308, float("nan"), float("inf"), "", "F32", "BF16",
                               "F4", "..", "../x", "\x1b[2J", "\u202e", "\ud800", "x" * 2000, [], [0], [[1]], {}, {"a": "b"}, [1] * 9]
DTYPES = sorted(DTYPE_BITS)


class Finding(Exception):
    """An oracle violation: what went wrong, in one line."""


# --------------------------------------------------------------------------------------------
# Mutations
# --------------------------------------------------------------------------------------------


def _count(rng: random.Random) -> int:
    """How many mutations: usually one, sometimes up to eight (a valid seed stays near-valid)."""
    return min(8, 1 + int(rng.expovariate(1.2)))


def mutate_bytes(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(_count(rng)):
        op = rng.choice([0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 7, 7, 8])
        i = rng.randrange(len(b) + 1) if b else 0
        if op == 0 and b:
            b[min(i, len(b) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[min(i, len(b) - 1)] = rng.choice(b'\x00\xff"{}[],:\\ -0129eE.\n')
        elif op == 2:
            b[i:i] = bytes(rng.choice(b'"{}[],:0123456789 ') for _ in range(rng.randint(1, 8)))
        elif op == 3 and b:
            del b[i : i + rng.randint(1, 16)]
        elif op == 4 and len(b) > 2:
            j = rng.randrange(len(b))
            b[i:i] = b[j : j + rng.randint(1, 64)]
        elif op == 5:
            other = rng.choice(corpus)
            j = rng.randrange(len(other) + 1)
            b = b[:i] + bytearray(other[j:])
        elif op == 6:  # the length prefix
            n = rng.choice(INTERESTING_INTS + [len(b) - 8, len(b) - 7, len(b) - 9])
            b[:8] = struct.pack("<Q", n % 2**64)
        elif op == 7:  # a number in the JSON
            spans = [m.span() for m in re.finditer(rb"-?\d+", bytes(b[8:]))]
            if spans:
                s, e = rng.choice(spans)
                b[8 + s : 8 + e] = str(rng.choice(INTERESTING_INTS)).encode()
        elif op == 8 and b:
            b = b[: rng.randrange(len(b))]
    return bytes(b)


def random_json(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if depth > 3 or r < 0.6:
        # half the time a plausible value (a small count, a power of two, a dtype), half an edge
        plausible = rng.choice([rng.randint(-2, 70), 2 ** rng.randint(0, 14), rng.choice(DTYPES), "w", True, "llama"])
        return rng.choice(INTERESTING_JSON) if rng.random() < 0.5 else plausible
    if r < 0.8:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(["dtype", "shape", "data_offsets", "w", "__metadata__", "x"]): random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def mutate_json(rng: random.Random, value: Any, keys: list[str]) -> Any:
    """Replace, delete or add one node somewhere in ``value`` (a few times)."""
    for _ in range(_count(rng)):
        value = _mutate_once(rng, value, keys)
    return value


def _mutate_once(rng: random.Random, value: Any, keys: list[str]) -> Any:
    if isinstance(value, dict) and value and rng.random() < 0.75:
        key = rng.choice(list(value))
        op = rng.randrange(4)
        out = dict(value)
        if op == 0:
            del out[key]
        elif op == 1:
            out[rng.choice(keys)] = random_json(rng)
        else:
            out[key] = _mutate_once(rng, value[key], keys)
        return out
    if isinstance(value, list) and value and rng.random() < 0.75:
        i = rng.randrange(len(value))
        out = list(value)
        if rng.random() < 0.2:
            del out[i]
        else:
            out[i] = _mutate_once(rng, value[i], keys)
        return out
    return random_json(rng)


# --------------------------------------------------------------------------------------------
# Oracles
# --------------------------------------------------------------------------------------------


def clean_error(e: FitcheckError) -> None:
    msg = e.message
    if "\n" in msg or not msg.isprintable() or len(msg) > 1000:
        raise Finding(f"{type(e).__name__} message is not one clear line: {msg[:120]!r}")


def check_tiling(tensors: list[Tensor], data_bytes: int | None) -> None:
    end = 0
    for t in tensors:
        if t.offset != end or t.nbytes != t.numel * DTYPE_BITS[t.dtype] // 8 or any(d < 0 for d in t.shape):
            raise Finding(f"accepted a tensor that does not tile: {t.name[:40]!r}")
        end += t.nbytes
    if data_bytes is not None and end != data_bytes:
        raise Finding(f"accepted tensors ending at {end} of a {data_bytes}-byte data region")


def header_seeds() -> list[bytes]:
    """The catalogue's headers (valid ones three times over: mutations of a valid header reach
    deeper than mutations of a broken one) and decoder layouts in several dtypes."""
    seeds = [case.prefix[: case.size] + bytes(max(0, min(case.size, 4096) - len(case.prefix))) for case in HEADERS.values()
             if len(case.prefix) < 200_000 for _ in range(3 if case.error is None else 1)]
    for layers, tied, dtype in [(1, True, "BF16"), (2, False, "F32"), (3, False, "F8_E4M3")]:
        specs = decoder_tensors(layers=layers, hidden=64, intermediate=128, heads=4, kv_heads=2, vocab=100, tied=tied, dtype=dtype)
        header, size = safetensors_header(specs)
        seeds.append(header)
    header, _ = safetensors_header({"w": ("F4", (4, 6)), "s": ("F8_E8M0", (4,)), "e": ("F32", (0, 3)), "b": ("BOOL", ())}, None)
    seeds.append(header)
    return seeds


def target_header_bytes(rng: random.Random, seeds: list[bytes]) -> str:
    data = mutate_bytes(rng, rng.choice(seeds), seeds)
    size = rng.choice([None, len(data), len(data) + rng.randint(0, 10**6), rng.randint(0, 2**64)])
    try:
        n = header_length(data[:8], where="f of r", file_size=size)
        tensors, _ = parse_header(data[8 : 8 + n], file="f", where="f of r", file_size=size)
    except FitcheckError as e:
        clean_error(e)
        return "refused"
    if size is not None and len(data) >= 8 + n:
        check_tiling(tensors, size - 8 - n)
    return "accepted"


def gguf_seeds() -> list[bytes]:
    """Tiny GGUF files written by the gguf package (tests/gguf_models.py) and the hostile GGUF
    catalogue of tests/test_gguf_format.py."""
    import tempfile

    from gguf_models import write_llama
    from test_gguf_format import HOSTILE

    seeds = [data for data, _, _ in HOSTILE.values()]
    with tempfile.TemporaryDirectory() as tmp:
        for q, vocab in (("Q8_0", 300), ("F16", 5000), ("Q4_0", 300)):
            path = write_llama(Path(tmp) / f"s-{q}.gguf", qtype=q, n_layer=1, n_vocab=vocab)
            seeds += [path.read_bytes()] * 3
    return seeds


def target_gguf(rng: random.Random, seeds: list[bytes]) -> str:
    from planner.sources.formats import gguf

    data = mutate_bytes(rng, rng.choice(seeds), seeds)
    size = rng.choice([None, len(data), len(data) + rng.randint(0, 10**6)])
    try:
        h = gguf.parse(lambda off, n: data[off:off + n], file="f.gguf", where="f.gguf of r", file_size=size, chunk=4096)
    except FitcheckError as e:
        clean_error(e)
        return "refused"
    for t in h.tensors:
        if (t.offset - h.data_offset) % h.alignment or t.nbytes != gguf.tensor_nbytes(t.dtype, t.shape):
            raise Finding(f"accepted a misplaced GGUF tensor: {t.name[:40]!r}")
        if size is not None and t.offset + t.nbytes > size:
            raise Finding(f"accepted a GGUF tensor past the end of the file: {t.name[:40]!r}")
    return "accepted"


def target_header_json(rng: random.Random, seeds: list[Any]) -> str:
    obj = mutate_json(rng, rng.choice(seeds), ["dtype", "shape", "data_offsets", "__metadata__", "w", "model.norm.weight"])
    try:
        raw = json.dumps(obj).encode()
    except (ValueError, RecursionError):
        return "skipped"
    try:
        tensors, meta = parse_header(raw, file="f", where="f of r")
    except FitcheckError as e:
        clean_error(e)
        return "refused"
    check_tiling(tensors, None)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise Finding("accepted a __metadata__ that is not strings to strings")
    return "accepted"


_FIELDS = ["model_type", "architectures", "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
           "intermediate_size", "vocab_size", "max_position_embeddings", "sliding_window", "layer_types", "num_local_experts",
           "num_experts_per_tok", "n_routed_experts", "tie_word_embeddings", "torch_dtype", "quantization_config", "text_config",
           "is_encoder_decoder", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "use_sliding_window",
           "max_window_layers", "sliding_window_pattern", "auto_map", "n_layer", "n_embd", "n_head", "quant_method", "bits", "group_size",
           "load_in_4bit", "load_in_8bit", "weight_block_size", "moe_intermediate_size", "decoder_layers", "multi_query"]
_HW = Hardware(name="fuzz", source="test", gpus=(Gpu(0, "g", "cuda", 24 * GiB, 23 * GiB, (8, 9), True, 10**12, 3 * 10**10),),
               ram_total=64 * GiB, ram_free=60 * GiB, disk_free=10**12, cache_disk_free=10**12, ram_bandwidth=5 * 10**10,
               disk_bandwidth=2 * 10**9, cpu_count=16)
_TENSORS = tuple(Tensor(n, d, s, math.prod(s) * DTYPE_BITS[d] // 8, "model.safetensors") for n, (d, s) in
                 decoder_tensors(layers=2, hidden=64, intermediate=128, heads=4, kv_heads=2, vocab=100).items())


_FAMILIES: list[dict[str, Any]] = [
    {"model_type": "qwen2", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 4,
     "vocab_size": 100, "use_sliding_window": True, "sliding_window": 32, "max_window_layers": 2},
    {"model_type": "gemma2", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 4,
     "vocab_size": 100, "sliding_window": 16, "head_dim": 16},
    {"model_type": "mixtral", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 100,
     "num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": 32},
    {"model_type": "deepseek_v3", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 100,
     "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16, "n_routed_experts": 4, "num_experts_per_tok": 2},
    {"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"], "vision_config": {"model_type": "clip"},
     "text_config": {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 100}},
    {"model_type": "t5", "is_encoder_decoder": True, "d_model": 64, "num_heads": 4, "num_layers": 2, "num_decoder_layers": 2,
     "vocab_size": 100, "d_kv": 16, "d_ff": 128},
]


def config_seeds() -> list[dict[str, Any]]:
    """The valid configs of the catalogue (llama and gpt2 shapes, remote code, odd values), six
    more families (sliding windows, MoE, MLA, multimodal, encoder-decoder), pre-quantized ones."""
    seeds = [v for v, error, _ in CONFIGS.values() if isinstance(v, dict) and error is None] + _FAMILIES
    base = json.loads(json.dumps(seeds[0]))
    seeds += [{**base, "quantization_config": q} for q in ({"quant_method": "gptq", "bits": 4, "group_size": 128},
                                                         {"quant_method": "bitsandbytes", "load_in_4bit": True},
                                                         {"quant_method": "fp8", "weight_block_size": [128, 128]},
                                                         {"quant_method": "mxfp4"}, {"quant_method": "compressed-tensors", "format": "pack"})]
    return seeds


def target_config(rng: random.Random, seeds: list[dict[str, Any]], *, full: bool) -> str:
    cfg = mutate_json(rng, rng.choice(seeds), _FIELDS)
    try:
        arch = read_arch(cfg, where="config.json of r")
        prequant.detect(arch.quantization_config, where="config.json of r")
    except FitcheckError as e:
        clean_error(e)
        return "refused"
    if not (1 <= arch.num_layers <= 2000 and arch.encoder_layers <= 2000 and 1 <= arch.num_kv_heads <= arch.num_heads <= 10_000
            and arch.head_dim >= 1 and len(arch.layer_types) == arch.num_layers):
        raise Finding(f"accepted an absurd config: layers {arch.num_layers}, heads {arch.num_heads}/{arch.num_kv_heads}, head_dim {arch.head_dim}")
    numbers = {k: getattr(arch, k) for k in arch.__dataclass_fields__ if type(getattr(arch, k)) is int}
    if any(not 0 <= v <= 2**32 for v in numbers.values()):
        raise Finding(f"accepted an absurd config: {sorted((k, v) for k, v in numbers.items() if not 0 <= v <= 2**32)[:3]}")
    if not full:
        return "accepted"
    snap = Snapshot(id="r", revision="main", commit=None, source="local", config=cfg, files=(RepoFile("model.safetensors", 10**6),),
                    weight_format="safetensors", weight_files=("model.safetensors",), tensors=_TENSORS)
    try:
        fp = estimate(snap)
        solution = solve(fp, _HW, Constraints(context=rng.choice([1, 512, 4096, 131072])))
    except NoFeasiblePlan:
        return "accepted, nothing fits"
    except FitcheckError as e:
        clean_error(e)
        return "accepted, refused by estimate"
    for p in (solution.chosen, *solution.alternatives):
        if any(m.required > m.capacity for m in p.memory.values()):
            raise Finding(f"a plan that fits exceeds a device's capacity: {p.label}")
    return "accepted, planned"


def cache_seeds() -> list[dict[str, Any]]:
    out = []
    for names in (["model.layers.0.w", "model.layers.1.w", "model.layers.01.w", "x"], ["a.{}.b", "c"]):
        tensors = tuple(Tensor(n, "BF16", (4, 4), 32, "f") for n in names)
        snap = Snapshot(id="o/m", revision="main", commit="a" * 40, source="hub", config={"k": 1}, files=(RepoFile("f", 1),),
                        weight_format="safetensors", weight_files=("f",), tensors=tensors)
        out.append(json.loads(json.dumps(cache.encode(snap))))
    return out


def target_cache(rng: random.Random, seeds: list[dict[str, Any]]) -> str:
    data = mutate_json(rng, rng.choice(seeds), ["format", "tensors", "tensor_files", "files", "config", "id", "commit", "weight_files"])
    if not isinstance(data, dict):
        return "skipped"
    try:
        cache.decode(data, source="cache")
    except cache.CORRUPT:
        return "refused"  # what cache.load treats as a corrupt entry: discarded and read again
    return "accepted"


def index_seeds() -> list[dict[str, Any]]:
    return [{"metadata": {"total_size": 1}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}]


def target_index(rng: random.Random, seeds: list[dict[str, Any]]) -> str:
    index = mutate_json(rng, rng.choice(seeds), ["weight_map", "metadata", "a", "b", "../x"])
    listing = {"model-00001-of-00002.safetensors": 10, "model-00002-of-00002.safetensors": None, "../x": 1}
    if not isinstance(index, dict):
        return "skipped"
    try:
        shards = hub._shards(index, "r", listing)
    except FitcheckError as e:
        clean_error(e)
        return "refused"
    for shard in shards:
        if shard not in listing or ".." in shard.split("/"):
            raise Finding(f"accepted a shard outside the listing: {shard[:60]!r}")
    return "accepted"


def target_names(rng: random.Random, corpus: list[str]) -> str:
    base = rng.choice(corpus)
    chars = list(base)
    for _ in range(rng.randint(0, 4)):
        i = rng.randrange(len(chars) + 1)
        chars.insert(i, chr(rng.choice([rng.randrange(0, 0x80), rng.randrange(0x80, 0x3000), 0x202E, 0x2028, 0xD800])))
    text = "".join(chars)
    for check in (ids.repo_id, ids.revision):
        try:
            value = check(text)
        except FitcheckError as e:
            clean_error(e)
        else:
            if value != text or ".." in text or not text.isascii() or not text.isprintable() or set(text) & set(" \\'\"`$;|&<>(){}*?~^:%#@!\n"):
                raise Finding(f"{check.__name__} accepted {text[:60]!r}")
    try:
        ids.repo_path(text, where="i")
    except FitcheckError as e:
        clean_error(e)
    else:
        if ".." in text.split("/") or text.startswith("/") or "\\" in text:
            raise Finding(f"repo_path accepted {text[:60]!r}")
    try:
        value = parse_size(text, what="--gpu")
    except FitcheckError as e:
        clean_error(e)
    else:
        if not (isinstance(value, int) and 0 < value <= 1024**6):
            raise Finding(f"parse_size({text[:40]!r}) = {value}")
    token = "tok" + hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    secrets.register(token)
    if token in secrets.redact(text + token + text) or not printable(text).isprintable():
        raise Finding("redaction or escaping failed")
    secrets._known.discard(token)
    return "checked"


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600.0, help="total time, shared by the targets")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args()
    sys.setrecursionlimit(1000)

    h_seeds = header_seeds()
    j_seeds = []
    for s in h_seeds:
        try:
            obj = json.loads(s[8 : 8 + struct.unpack("<Q", s[:8])[0]]) if len(s) >= 8 else None
        except (ValueError, RecursionError, struct.error, OverflowError):
            continue
        if isinstance(obj, dict):
            j_seeds.append(obj)
    c_seeds, k_seeds, i_seeds, g_seeds = config_seeds(), cache_seeds(), index_seeds(), gguf_seeds()
    n_corpus = ["org/model", "meta-llama/Llama-3.1-8B", "main", "refs/pr/1", "a" * 40, "24GiB", "1.5 TB", "512MiB", "0",
                *[v for v, _ in INDEXES.values() if isinstance(v, str)], "model-00001-of-00002.safetensors"]
    rng = random.Random(args.seed)
    targets: dict[str, tuple[float, Callable[[], str]]] = {
        "safetensors header bytes": (0.30, lambda: target_header_bytes(rng, h_seeds)),
        "safetensors header JSON": (0.20, lambda: target_header_json(rng, j_seeds)),
        "config.json (reader)": (0.15, lambda: target_config(rng, c_seeds, full=False)),
        "config.json (reader, estimate, solve)": (0.10, lambda: target_config(rng, c_seeds, full=True)),
        "cache entries": (0.10, lambda: target_cache(rng, k_seeds)),
        "index weight_map": (0.05, lambda: target_index(rng, i_seeds)),
        "ids, revisions, paths, sizes, redaction": (0.10, lambda: target_names(rng, n_corpus)),
        "gguf header bytes": (0.10, lambda: target_gguf(rng, g_seeds)),
    }
    crashes_dir = Path(__file__).parent / "crashes"
    figures: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    for name, (share, run) in targets.items():
        budget = args.seconds * share
        t0 = time.monotonic()
        tried = 0
        slowest = 0.0
        found: Counter[str] = Counter()
        outcomes: Counter[str] = Counter()
        while time.monotonic() - t0 < budget:
            state = rng.getstate()
            a = time.perf_counter()
            try:
                outcomes[run()] += 1
            except Finding as f:
                found[f"finding: {f}"[:200]] += 1
                _save(crashes_dir, name, state, str(f))
            except Exception as e:  # noqa: BLE001 - the point: anything not ours is a crash
                key = f"{type(e).__name__}: {str(e)[:100]} at {traceback.extract_tb(e.__traceback__)[-1].name}"
                found[key] += 1
                if found[key] == 1:
                    _save(crashes_dir, name, state, traceback.format_exc())
            took = time.perf_counter() - a
            slowest = max(slowest, took)
            if took > SLOW_INPUT_S:
                found[f"slow input: {took:.2f} s"] += 1
            tried += 1
        figures[name] = {"inputs": tried, "outcomes": dict(outcomes), "seconds": round(time.monotonic() - t0, 1),
                         "slowest_input_s": round(slowest, 4), "findings": dict(found)}
        print(f"{name:42} {tried:>9,} inputs  {time.monotonic() - t0:6.1f} s  slowest {slowest * 1000:7.1f} ms  findings {sum(found.values())}",
              flush=True)
        print("    " + ", ".join(f"{k}: {v:,}" for k, v in sorted(outcomes.items())), flush=True)
        for key, count in found.items():
            print(f"    {count:>6} x {key}", flush=True)
    total = sum(f["inputs"] for f in figures.values())
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python {platform.python_version()}",
        "seed": args.seed, "seconds": round(time.monotonic() - started, 1), "inputs": total,
        "findings": sum(sum(f["findings"].values()) for f in figures.values()), "targets": figures,
    }
    print(f"total: {total:,} inputs in {summary['seconds']} s, {summary['findings']} findings")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if summary["findings"] else 0


def _save(folder: Path, target: str, state: Any, what: str) -> None:
    """Record a finding with the generator state that reproduces it (``random.setstate``)."""
    folder.mkdir(exist_ok=True)
    digest = hashlib.sha1(what.encode()).hexdigest()[:12]
    (folder / f"{re.sub(r'[^a-z]+', '-', target.lower()).strip('-')}-{digest}.txt").write_text(
        f"target: {target}\n{what}\nrng state (random.setstate): {state!r}\n")


if __name__ == "__main__":
    sys.exit(main())
