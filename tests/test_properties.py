"""Property-based tests (hypothesis) of the header parser, the config reader, the cache format,
the name and size checks, and the solver's invariants.

Examples are few and derandomised so that the suite stays fast and repeatable; the long, random
run over the same properties is ``fuzz/fuzz_parsers.py`` (its figures: fuzz/RESULTS.md).
"""

from __future__ import annotations

import json
import math
import os
import struct
from typing import Any

import pytest

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fixtures_models import decoder_tensors, safetensors_header
from planner.sources import cache
from planner.core import ids
from planner.model import prequant
from planner.core import secrets
from planner.model.arch import read_arch
from planner.core.errors import BadConfig, BadHeader, FitcheckError, NoFeasiblePlan, UnsupportedModel, UsageError
from planner.model.footprint import estimate
from planner.sources.formats.safetensors import MAX_HEADER_BYTES, header_length, parse_header
from planner.runtimes.transformers.memory import weights
from planner.core.records import Gpu, Hardware, RepoFile, Snapshot, Tensor
from planner.core.records import Constraints
from planner.runtimes.transformers.plans import plans as transformers_plans
from planner.solve.solver import solve
from planner.core.units import DTYPE_BITS, GiB, MiB, parse_size

# FUZZ_EXAMPLES turns the suite into a long random run (fuzz/README.md): N examples per
# property, not derandomised.
_FUZZ = int(os.environ.get("FUZZ_EXAMPLES", "0"))
FAST = settings(max_examples=_FUZZ or 200, deadline=None, database=None, derandomize=not _FUZZ, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=_FUZZ // 10 or 80, deadline=None, database=None, derandomize=not _FUZZ, suppress_health_check=list(HealthCheck))


# -- JSON of any shape ---------------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
                         st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)


def _mutate(value: Any, path: list[int], replacement: Any) -> Any:
    """``value`` with the node that ``path`` picks (indices modulo the children) replaced."""
    if not path or not isinstance(value, (dict, list)) or not value:
        return replacement
    if isinstance(value, dict):
        key = list(value)[path[0] % len(value)]
        return {**value, key: _mutate(value[key], path[1:], replacement)}
    i = path[0] % len(value)
    return [*value[:i], _mutate(value[i], path[1:], replacement), *value[i + 1 :]]


# --------------------------------------------------------------------------------------------
# safetensors headers
# --------------------------------------------------------------------------------------------

_whole_byte = [d for d in DTYPE_BITS]
tensor_layouts = st.dictionaries(
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40).filter(lambda n: n != "__metadata__"),
    st.tuples(st.sampled_from(_whole_byte), st.lists(st.integers(0, 64), max_size=4)).filter(lambda t: math.prod(t[1]) * DTYPE_BITS[t[0]] % 8 == 0),
    max_size=12,
)


def _check_tiling(tensors: list[Tensor], data_bytes: int) -> None:
    end = 0
    for t in tensors:
        assert t.offset == end and t.nbytes == t.numel * DTYPE_BITS[t.dtype] // 8
        end += t.nbytes
    assert end == data_bytes


@FAST
@given(layout=tensor_layouts, pad=st.integers(0, 64), metadata=st.none() | st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3))
def test_valid_headers_parse_exactly(layout: dict[str, Any], pad: int, metadata: dict[str, str] | None) -> None:
    specs = {name: (dtype, tuple(shape)) for name, (dtype, shape) in layout.items()}
    header, size = safetensors_header(specs, metadata)
    n = len(header) - 8
    header, size = safetensors_header(specs, metadata, header_size=n + pad)
    assert header_length(header[:8], where="f", file_size=size) == n + pad
    tensors, meta = parse_header(header[8:], file="f", where="f", file_size=size)
    assert meta == (metadata or {})
    assert {t.name: (t.dtype, t.shape) for t in tensors} == specs
    _check_tiling(tensors, size - 8 - n - pad)


@FAST
@given(raw=st.binary(max_size=300), size=st.none() | st.integers(0, 2**64))
def test_any_bytes_parse_or_fail_with_bad_header(raw: bytes, size: int | None) -> None:
    try:
        n = header_length(raw[:8], where="f", file_size=size)
        assert 2 <= n <= MAX_HEADER_BYTES and (size is None or 8 + n <= size)
        tensors, _ = parse_header(raw[8 : 8 + n], file="f", where="f", file_size=size)
    except BadHeader as e:
        assert "\n" not in e.message and e.message.isprintable() and len(e.message) <= 1000
    else:
        if size is not None and len(raw) >= 8 + n:
            _check_tiling(tensors, size - 8 - n)


@FAST
@given(layout=tensor_layouts.filter(bool), path=st.lists(st.integers(0, 20), max_size=4), replacement=json_values)
def test_mutated_headers_parse_or_fail_with_bad_header(layout: dict[str, Any], path: list[int], replacement: Any) -> None:
    specs = {name: (dtype, tuple(shape)) for name, (dtype, shape) in layout.items()}
    header, size = safetensors_header(specs, None)
    obj = _mutate(json.loads(header[8:]), path, replacement)
    raw = json.dumps(obj).encode()
    try:
        tensors, _ = parse_header(raw, file="f", where="f")
    except BadHeader as e:
        assert "\n" not in e.message and len(e.message) <= 1000
    else:
        _check_tiling(tensors, sum(t.nbytes for t in tensors))


# --------------------------------------------------------------------------------------------
# config.json
# --------------------------------------------------------------------------------------------

_BASES = [
    {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
     "num_hidden_layers": 2, "vocab_size": 100, "intermediate_size": 128},
    {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 100, "n_positions": 128},
    {"model_type": "gemma2", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 4,
     "vocab_size": 100, "sliding_window": 16, "head_dim": 16},
    {"model_type": "mixtral", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 100,
     "num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": 32},
    {"model_type": "deepseek_v3", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 100,
     "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16, "n_routed_experts": 4, "num_experts_per_tok": 2},
    {"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"], "vision_config": {"model_type": "clip"},
     "text_config": {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 100}},
]
_FIELDS = ["model_type", "architectures", "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
           "intermediate_size", "vocab_size", "max_position_embeddings", "sliding_window", "layer_types", "num_local_experts",
           "num_experts_per_tok", "tie_word_embeddings", "torch_dtype", "quantization_config", "text_config", "is_encoder_decoder",
           "kv_lora_rank", "qk_rope_head_dim", "use_sliding_window", "max_window_layers", "sliding_window_pattern", "auto_map", "n_layer"]
_plausible = st.one_of(st.integers(-3, 70), st.sampled_from([2**31, 2**63, 10**12, 0.5, 1.0, "8", None, True, [], {}]))
configs = st.tuples(st.sampled_from(_BASES), st.dictionaries(st.sampled_from(_FIELDS), st.one_of(_plausible, json_values), max_size=4))
_HEADER_TENSORS = tuple(Tensor(n, "BF16", s, 2 * math.prod(s), "model.safetensors") for n, s in
                        [("model.embed_tokens.weight", (100, 64)), ("model.layers.0.mlp.down_proj.weight", (64, 128)),
                         ("model.layers.1.self_attn.q_proj.weight", (64, 64)), ("model.norm.weight", (64,))])


@FAST
@given(config=configs)
def test_config_reader_accepts_only_sane_configs(config: tuple[dict[str, Any], dict[str, Any]]) -> None:
    base, changes = config
    cfg = {**base, **changes}
    try:
        arch = read_arch(cfg, where="config.json of r")
        prequant.detect(arch.quantization_config, where="config.json of r")
    except (BadConfig, UnsupportedModel) as e:
        assert "config.json of r" in e.message and "\n" not in e.message
        return
    assert 1 <= arch.num_layers <= 2000 and 1 <= arch.num_heads <= 10_000 and arch.head_dim >= 1 and arch.vocab_size >= 1
    assert 1 <= arch.num_kv_heads <= arch.num_heads
    assert len(arch.layer_types) == arch.num_layers and set(arch.layer_types) <= {"full_attention", "sliding_attention"}
    assert arch.sliding_window is None or arch.sliding_window >= 1
    assert arch.model_type.isprintable() and all(a.isidentifier() for a in arch.architectures)


@SLOW
@given(config=configs)
def test_any_config_plans_or_fails_cleanly(config: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """Past the reader: estimate and solve on any config that passed it raise only our errors."""
    base, changes = config
    snap = Snapshot(id="r", revision="main", commit=None, source="local", config={**base, **changes},
                    files=(RepoFile("model.safetensors", 10**6),), weight_format="safetensors", weight_files=("model.safetensors",),
                    tensors=_HEADER_TENSORS)
    try:
        solve(transformers_plans(estimate(snap), _HW_4090, Constraints(context=128)), "speed", where=_HW_4090.name)
    except FitcheckError:
        pass


# --------------------------------------------------------------------------------------------
# The cache format, names, sizes, redaction
# --------------------------------------------------------------------------------------------

tensor_names = st.lists(st.from_regex(r"[a-z_{}]{1,6}(\.(0|[0-9]{1,25}|[a-z_{}]{1,6})){0,4}", fullmatch=True), min_size=1, max_size=20, unique=True)


@settings(FAST, max_examples=_FUZZ or 100)  # generating names from a regex is the slow part
@given(names=tensor_names, dtype=st.sampled_from(["BF16", "F32", "I8", "F4"]), shape=st.lists(st.integers(0, 9), max_size=3))
def test_the_cache_gives_back_exactly_what_it_was_given_or_nothing(names: list[str], dtype: str, shape: list[int]) -> None:
    assume(math.prod(shape) * DTYPE_BITS[dtype] % 8 == 0)
    nbytes = math.prod(shape) * DTYPE_BITS[dtype] // 8
    tensors = tuple(Tensor(n, dtype, tuple(shape), nbytes, f"f{i % 2}") for i, n in enumerate(names))
    snap = Snapshot(id="o/m", revision="main", commit="a" * 40, source="hub", config={"x": 1}, files=(RepoFile("f0", 1), RepoFile("f1", None)),
                    weight_format="safetensors", weight_files=("f0", "f1"), tensors=tensors)
    data = json.loads(json.dumps(cache.encode(snap)))
    try:
        back = cache.decode(data, source="cache")
    except ValueError:
        assert any("{}" in n for n in names)  # a template marker in a name: refused (and read again), never misread
        return
    assert sorted((t.name, t.dtype, t.shape, t.nbytes, t.file) for t in back.tensors) == sorted(
        (t.name, t.dtype, t.shape, t.nbytes, t.file) for t in tensors)


@FAST
@given(text=st.text(max_size=120))
def test_repo_ids_and_revisions_are_safe_or_refused(text: str) -> None:
    for check in (ids.repo_id, ids.revision):
        try:
            value = check(text)
        except UsageError as e:
            assert e.message.isprintable() and len(e.message) < 400
            continue
        assert value == text and ".." not in text and text.isascii() and text.isprintable()
        assert not set(text) & set(" \t\n\r\\'\"`$;|&<>(){}[]*?~^:%#@!")


@FAST
@given(text=st.text(max_size=30) | st.from_regex(r"-?[0-9]{1,400}(\.[0-9]{1,5})?\s?[KMGTPE]?i?B?", fullmatch=True))
def test_sizes_parse_to_positive_bounded_ints_or_fail_cleanly(text: str) -> None:
    try:
        value = parse_size(text, what="--gpu")
    except UsageError:
        return
    assert isinstance(value, int) and 0 < value <= 1024**6


@FAST
@given(before=st.text(max_size=30), after=st.text(max_size=30), token=st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=8, max_size=40))
def test_a_registered_token_never_survives_redaction(before: str, after: str, token: str) -> None:
    secrets.register(token)
    assert token not in secrets.redact(before + token + after + token)


# --------------------------------------------------------------------------------------------
# The solver
# --------------------------------------------------------------------------------------------

_HW_4090 = Hardware(name="t", source="test", gpus=(Gpu(0, "g", "cuda", 24 * GiB, 23 * GiB, (8, 9), True, 10**12, 3 * 10**10),),
                    ram_total=64 * GiB, ram_free=60 * GiB, disk_free=10**12, cache_disk_free=10**12, ram_bandwidth=5 * 10**10,
                    disk_bandwidth=2 * 10**9, cpu_count=16)


@st.composite
def models(draw: Any) -> Snapshot:
    heads = draw(st.sampled_from([1, 2, 4, 8, 16, 32]))
    head_dim = draw(st.sampled_from([16, 32, 64, 128]))
    kv = draw(st.sampled_from([d for d in (1, 2, 4, 8, 16, 32) if heads % d == 0]))
    layers = draw(st.integers(1, 12))
    hidden = heads * head_dim
    inter = hidden * draw(st.integers(1, 4))
    vocab = draw(st.sampled_from([100, 32_000, 128_256]))
    tied = draw(st.booleans())
    dtype = draw(st.sampled_from(["BF16", "F16", "F32"]))
    specs = decoder_tensors(layers=layers, hidden=hidden, intermediate=inter, heads=heads, kv_heads=kv, vocab=vocab, tied=tied, dtype=dtype)
    tensors = tuple(Tensor(n, d, s, math.prod(s) * DTYPE_BITS[d] // 8, "model.safetensors") for n, (d, s) in specs.items())
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": hidden, "num_attention_heads": heads,
              "num_key_value_heads": kv, "num_hidden_layers": layers, "intermediate_size": inter, "vocab_size": vocab,
              "tie_word_embeddings": tied, "max_position_embeddings": 8192}
    return Snapshot(id="r", revision="main", commit=None, source="local", config=config, files=(RepoFile("model.safetensors", sum(t.nbytes for t in tensors)),),
                    weight_format="safetensors", weight_files=("model.safetensors",), tensors=tensors)


def _free(draw: Any, total: int) -> int:
    """Mostly most of ``total`` free (a machine in use), sometimes anything down to nothing."""
    return draw(st.one_of(st.integers(total * 3 // 4, total), st.integers(0, total)))


@st.composite
def machines(draw: Any) -> Hardware:
    sizes = st.one_of(st.sampled_from([4 * GiB, 8 * GiB, 12 * GiB, 16 * GiB, 24 * GiB, 80 * GiB]), st.integers(256 * MiB, 96 * GiB))
    kind = draw(st.sampled_from(["cuda", "none", "mps"]))
    gpus: tuple[Gpu, ...] = ()
    if kind == "cuda":
        count = draw(st.integers(1, 3))
        for i in range(count):
            total = draw(sizes)
            cc = draw(st.sampled_from([(8, 9), (7, 5), (8, 0), (9, 0)]))
            gpus += (Gpu(i, "g", "cuda", total, _free(draw, total), cc, cc >= (8, 0), draw(st.none() | st.integers(10**11, 3 * 10**12)),
                         draw(st.none() | st.integers(10**9, 6 * 10**10))),)
    ram = draw(st.one_of(st.sampled_from([8 * GiB, 16 * GiB, 64 * GiB]), st.integers(1 * GiB, 512 * GiB)))
    if kind == "mps":
        gpus = (Gpu(0, "m", "mps", ram, _free(draw, ram), None, True, 4 * 10**11, None, unified=True),)
    return Hardware(name="h", source="test", gpus=gpus, ram_total=ram, ram_free=_free(draw, ram), disk_free=draw(st.integers(0, 10**12)),
                    cache_disk_free=10**12, ram_bandwidth=draw(st.none() | st.integers(10**9, 10**11)),
                    disk_bandwidth=draw(st.none() | st.integers(10**8, 10**10)), cpu_count=draw(st.none() | st.integers(1, 64)))


constraints = st.builds(Constraints, context=st.one_of(st.sampled_from([512, 4096]), st.integers(1, 65536)), batch=st.integers(1, 4),
                        new_tokens=st.integers(0, 512),
                        prefer=st.sampled_from(["speed", "quality", "memory"]), dtype=st.none() | st.sampled_from(["float32", "bfloat16", "float16"]),
                        quantization=st.none() | st.sampled_from(["none", "int8", "nf4"]), offload=st.booleans())


@SLOW
@given(snap=models(), hw=machines(), c=constraints)
def test_solver_invariants(snap: Snapshot, hw: Hardware, c: Constraints) -> None:
    fp = estimate(snap)
    try:
        solution = solve(transformers_plans(fp, hw, c), c.prefer, where=hw.name)
    except NoFeasiblePlan as e:
        assert e.rejections and all(not p.fits and p.reasons for p in e.rejections)
        return
    units = {u.name: u for u in fp.units}
    for plan in (solution.chosen, *solution.alternatives):
        assert plan.fits and not plan.reasons
        # Every unit placed once, on a device the plan accounts for.
        assert set(plan.settings.device_map) == set(units)
        devices = {f"cuda:{v}" if isinstance(v, int) else v for v in plan.settings.device_map.values()}
        assert devices <= set(plan.memory)
        cpu_exec = plan.settings.placement in ("cpu", "cpu+disk")
        executing = {"cpu"} if cpu_exec else {d for d in plan.memory if d.startswith("cuda") or d == "mps"}
        placed = 0
        for name, where in plan.settings.device_map.items():
            u = units[name]
            if u.tied_to is not None:
                assert where == plan.settings.device_map[u.tied_to]  # a tied head sits with its embedding
                continue
            dev = f"cuda:{where}" if isinstance(where, int) else where
            placed += weights.unit_bytes(u, plan.settings.scheme, offloaded=dev not in executing, prequant=fp.prequant, cpu=cpu_exec)
        # The weights the devices hold (and a CPU run leaves unread in the mapped file) add up to
        # the model's, priced where each unit sits.
        assert sum(m.weights + m.unread for m in plan.memory.values()) == placed
        for d, m in plan.memory.items():
            # No device gets more than it may use; a plan that fits is within capacity everywhere.
            assert 0 <= m.capacity <= m.free
            assert m.weights <= m.capacity
            assert m.required <= m.capacity
            assert m.total - m.reclaimable <= m.capacity
            assert m.total >= m.weights + m.kv_cache
        assert plan.speed.tokens_per_s >= 0 and math.isfinite(plan.speed.tokens_per_s)
    if c.dtype:
        assert all(p.settings.scheme.dtype == c.dtype for p in (solution.chosen, *solution.alternatives))
    if not c.offload:
        assert all(v not in ("cpu", "disk") or not hw.gpus for p in (solution.chosen, *solution.alternatives) for v in p.settings.device_map.values()
                   if p.settings.placement not in ("cpu", "cpu+disk"))


def test_length_prefix_properties_at_the_limits() -> None:
    for n in (2, 100, MAX_HEADER_BYTES):
        assert header_length(struct.pack("<Q", n), where="f") == n
    for n in (0, 1, MAX_HEADER_BYTES + 1, 2**63, 2**64 - 1):
        try:
            header_length(struct.pack("<Q", n), where="f")
        except BadHeader:
            continue
        raise AssertionError(n)
