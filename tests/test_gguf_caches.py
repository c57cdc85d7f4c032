"""GGUF caches that are not plain per-layer K/V, against real llama.cpp loads (llama-cpp-python
on CPU): an MLA latent cache (deepseek2), a recurrent state per sequence (mamba, mamba2) and
hybrids (jamba, granitehybrid, nemotron_h, lfm2: K/V on their attention layers, state on their
Mamba or short-conv layers; falcon-h1: both on every layer). fitcheck's bytes must print as
llama.cpp prints its own ("%8.2f MiB", src/llama-kv-cache.cpp and src/llama-memory-recurrent.cpp):
the buffer totals and each of K, V, R and S, over contexts, cache types and sequence counts."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("llama_cpp") is None:
    pytest.skip("llama-cpp-python is not installed (docs/gguf.md: building it)", allow_module_level=True)

from gguf_cache_models import (
    write_deepseek2,
    write_falcon_h1,
    write_granitehybrid,
    write_jamba,
    write_lfm2,
    write_mamba,
    write_mamba2,
    write_nemotron_h,
)

from planner import api
from planner.core.errors import UnsupportedModel
from planner.core.records import Constraints, Hardware
from planner.runtimes.gguf import memory
from planner.runtimes.gguf.model import GgufModel

MiB = 1024**2
GiB = 1024**3
HW = Hardware(name="test-cpu", source="profile", gpus=(), ram_total=16 * GiB, ram_free=8 * GiB, disk_free=100 * GiB,
              cache_disk_free=100 * GiB)
# llama.cpp's own C API, so that the CPU backend's extra buffer types can be switched off: with
# them on (AMX on this machine) the 0.3.36 build aborts reserving deepseek2's graph
# (ggml-backend.cpp: GGML_ASSERT(*cur_backend_id != -1)); the caches do not depend on them.
CHILD = """
import sys
import llama_cpp
path, n_ctx, n_seq, fa, kv = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5]
types = {"f16": 1, "q8_0": 8, "q4_0": 2}  # ggml.h enum ggml_type
llama_cpp.llama_backend_init()
mp = llama_cpp.llama_model_default_params()
mp.use_extra_bufts = False
model = llama_cpp.llama_model_load_from_file(path.encode(), mp)
cp = llama_cpp.llama_context_default_params()
cp.n_ctx, cp.n_seq_max, cp.flash_attn_type, cp.n_threads = n_ctx, n_seq, 1 if fa else 0, 2
cp.type_k = cp.type_v = types[kv]
ctx = llama_cpp.llama_init_from_model(model, cp)
sys.exit(0 if ctx else 3)
"""
NUM = r"\s*([0-9.]+) MiB"
PATTERNS = {
    "kv_buffer": r"llama_kv_cache:\s+CPU KV buffer size =" + NUM,
    "rs_buffer": r"llama_memory_recurrent:\s+CPU RS buffer size =" + NUM,
    "compute": r"CPU compute buffer size =" + NUM,
    "k": r"llama_kv_cache: size = .*K \(\w+\):" + NUM,
    "v": r"llama_kv_cache: size = .*V \(\w+\):" + NUM,
    "r": r"llama_memory_recurrent: size = .*R \(f32\):" + NUM,
    "s": r"llama_memory_recurrent: size = .*S \(f32\):" + NUM,
}


def load(path: Path, n_ctx: int, n_seq: int, fa: bool, kv: str) -> dict[str, str]:
    """What llama.cpp logs creating a context for ``path``: each figure as it prints it."""
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), str(n_ctx), str(n_seq), "1" if fa else "0", kv],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = {}
    for name, pat in PATTERNS.items():
        m = re.search(pat, proc.stderr)
        if m:
            out[name] = m.group(1)
    return out


def mib(n: int) -> str:
    return f"{n / MiB:.2f}"


def facts(path: Path) -> GgufModel:
    r = api.plan(str(path), hardware=HW, constraints=Constraints(context=256, new_tokens=16), runtime="gguf")
    assert isinstance(r.footprint, GgufModel)
    return r.footprint  # type: ignore[return-value]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("gguf-caches")
    return {"deepseek2": write_deepseek2(d / "tiny-deepseek2-Q8_0.gguf"), "mamba": write_mamba(d / "tiny-mamba-Q8_0.gguf"),
            "jamba": write_jamba(d / "tiny-jamba-Q8_0.gguf"),
            "deepseek2-wide": write_deepseek2(d / "tiny-deepseek2-wide-Q8_0.gguf", n_head=8, n_vocab=4000),
            # a wider mamba, so that its state is far from the log's 0.01 MiB resolution
            "mamba-wide": write_mamba(d / "tiny-mamba-wide-Q8_0.gguf", n_layer=4, n_embd=1024, d_inner=2048, d_state=32, d_conv=4,
                                      dt_rank=64, n_vocab=1000),
            "mamba2": write_mamba2(d / "tiny-mamba2-Q8_0.gguf"),
            # two groups of B/C and a wider state, so that n_group shows in the conv state
            "mamba2-wide": write_mamba2(d / "tiny-mamba2-wide-Q8_0.gguf", n_layer=4, n_embd=1024, d_inner=2048, d_state=128,
                                        n_head=32, n_group=2, n_vocab=1000),
            "granitehybrid": write_granitehybrid(d / "tiny-granitehybrid-Q8_0.gguf"),
            "granitehybrid-2": write_granitehybrid(d / "tiny-granitehybrid-2-Q8_0.gguf", n_layer=6, attn_every=3, n_group=2,
                                                   n_vocab=4000),
            "nemotron_h": write_nemotron_h(d / "tiny-nemotron_h-Q8_0.gguf"),
            "nemotron_h-2": write_nemotron_h(d / "tiny-nemotron_h-2-Q8_0.gguf", pattern="MFMAMFMFA", n_group=2, n_head_kv=1,
                                             n_embd=512, n_head=8, d_inner=1024, ssm_head=16, n_vocab=4000),
            "lfm2": write_lfm2(d / "tiny-lfm2-Q8_0.gguf"),
            # 6 short-conv layers 1024 wide, so that 8 sequences' conv state shows (0.38 MiB)
            "lfm2-wide": write_lfm2(d / "tiny-lfm2-wide-Q8_0.gguf", n_layer=8, attn_every=4, n_embd=1024, n_ff=2048, n_head=8,
                                    n_head_kv=4, n_vocab=4000),
            "falcon-h1": write_falcon_h1(d / "tiny-falcon-h1-Q8_0.gguf"),
            "falcon-h1-wide": write_falcon_h1(d / "tiny-falcon-h1-wide-Q8_0.gguf", n_layer=4, n_embd=512, n_ff=1024, n_head=8,
                                              n_head_kv=2, d_inner=768, d_state=128, ssm_head=12, n_group=2, n_vocab=4000),
            "lfm2-l4": write_lfm2(d / "tiny-lfm2-l4-Q8_0.gguf", n_embd=512, n_ff=1024, n_head=8, l_cache=4, n_vocab=8000)}


def parts(m: GgufModel, s: memory.Setting) -> dict[str, int]:
    """fitcheck's cache bytes split as llama.cpp logs them."""
    attn = [il for il, la in enumerate(m.layers) if la.n_head_kv]  # falcon-h1's layers are in both lists
    recr = [la for la in m.layers if la.recurrent]
    k = sum(memory.cells(m, s, m.layers[il].swa) * memory.row_bytes(s.type_k.upper(), m.head_dim_k * m.layers[il].n_head_kv)
            for il in attn)
    state = memory.state_layer(m) * max(1, s.n_seq) * len(recr)
    kv = sum(memory.kv_layer(m, il, s) for il in range(m.n_layer)) - state
    conv = 4 * (m.ssm_d_conv - 1) * (m.ssm_d_inner + 2 * m.ssm_n_group * m.ssm_d_state) * len(recr) * max(1, s.n_seq)
    return {"kv_buffer": kv, "k": k, "v": kv - k, "rs_buffer": state, "r": conv, "s": state - conv}


@pytest.mark.parametrize(("name", "n_ctx", "n_seq", "fa", "kv"), [
    ("deepseek2", 1024, 1, False, "f16"), ("deepseek2", 3000, 1, True, "f16"), ("deepseek2", 2048, 2, True, "q8_0"),
    ("deepseek2", 4096, 1, True, "q4_0"),
    ("mamba", 1024, 1, False, "f16"), ("mamba", 4096, 3, True, "f16"), ("mamba-wide", 512, 1, False, "f16"),
    ("mamba-wide", 2048, 4, True, "q8_0"),
    ("jamba", 1000, 1, False, "f16"), ("jamba", 4096, 2, True, "q8_0"), ("jamba", 2048, 3, False, "f16"),
    ("mamba2", 1024, 1, False, "f16"), ("mamba2", 4096, 3, True, "f16"), ("mamba2-wide", 512, 1, False, "f16"),
    ("mamba2-wide", 2048, 4, True, "q8_0"),
    ("granitehybrid", 1000, 1, False, "f16"), ("granitehybrid", 4096, 2, True, "q8_0"), ("granitehybrid-2", 2048, 3, False, "f16"),
    ("granitehybrid-2", 8192, 1, True, "q4_0"),
    ("nemotron_h", 1024, 1, False, "f16"), ("nemotron_h", 4096, 2, True, "q8_0"), ("nemotron_h-2", 2048, 3, False, "f16"),
    ("nemotron_h-2", 8192, 1, True, "q4_0"),
    ("lfm2", 1024, 1, False, "f16"), ("lfm2", 2048, 8, True, "q8_0"), ("lfm2-wide", 2048, 8, True, "f16"),
    ("lfm2-wide", 4096, 3, False, "f16"), ("lfm2-l4", 8192, 6, True, "q4_0"),
    ("falcon-h1", 1024, 1, False, "f16"), ("falcon-h1", 4096, 2, True, "q8_0"), ("falcon-h1-wide", 2048, 3, False, "f16"),
    ("falcon-h1-wide", 8192, 1, True, "q4_0"),
])
def test_cache_bytes_are_what_llama_cpp_allocates(models: dict[str, Path], name: str, n_ctx: int, n_seq: int, fa: bool,
                                                  kv: str) -> None:
    m = facts(models[name])
    s = memory.Setting(n_ctx=n_ctx, n_gpu_layers=0, type_k=kv, type_v=kv, flash_attn=fa, n_seq=n_seq)
    assert memory.kv_type_problem(m, s) is None
    logged = load(models[name], n_ctx, n_seq, fa, kv)
    ours = parts(m, s)
    has_kv, has_rs = "kv_buffer" in logged, "rs_buffer" in logged
    assert has_kv == any(la.n_head_kv for la in m.layers) and has_rs == any(la.recurrent for la in m.layers), logged
    for key in (["kv_buffer", "k", "v"] if has_kv else []) + (["rs_buffer", "r", "s"] if has_rs else []):
        assert mib(ours[key]) == logged[key], (key, ours[key], logged)
    total = sum(memory.kv_layer(m, il, s) for il in range(m.n_layer))
    assert total == ours["kv_buffer"] + ours["rs_buffer"]
    if m.mla:
        assert logged["v"] == "0.00" and ours["v"] == 0  # V is a view of the latent K


def test_the_state_does_not_grow_with_the_context(models: dict[str, Path]) -> None:
    m = facts(models["mamba-wide"])
    per = memory.state_layer(m)
    # (d_conv - 1) x d_inner conv floats + d_state x d_inner SSM floats, f32
    assert per == 4 * (3 * 2048 + 32 * 2048)
    short = memory.Setting(n_ctx=512, n_gpu_layers=0, n_seq=2)
    long = memory.Setting(n_ctx=32768, n_gpu_layers=0, n_seq=2)
    assert sum(memory.kv_layer(m, il, short) for il in range(4)) == sum(memory.kv_layer(m, il, long) for il in range(4)) == 2 * 4 * per
    assert memory.kv_per_token(m, long) == 0
    jamba = facts(models["jamba"])
    assert [la.recurrent for la in jamba.layers] == [True, False, True, False]
    # the two attention layers: 2 KV heads of 64, K and V in f16
    assert memory.kv_per_token(jamba, long) == 2 * 2 * (2 * 64 * 2)
    m2 = facts(models["mamba2-wide"])
    # Mamba-2: the conv state also holds B and C, 2 n_group d_state wide (llama.cpp n_embd_r)
    assert (m2.ssm_n_group, memory.state_layer(m2)) == (2, 4 * (3 * (2048 + 2 * 2 * 128) + 128 * 2048))
    granite = facts(models["granitehybrid-2"])
    assert [la.recurrent for la in granite.layers] == [True, True, False, True, True, False]
    assert memory.kv_per_token(granite, long) == 2 * 2 * (2 * 64 * 2)
    nemotron = facts(models["nemotron_h-2"])
    # M F M A M F M F A: an FFN block holds neither K/V nor state
    assert [la.recurrent for la in nemotron.layers] == [c == "M" for c in "MFMAMFMFA"]
    assert [la.n_head_kv for la in nemotron.layers] == [int(c == "A") for c in "MFMAMFMFA"]
    assert sum(memory.kv_layer(nemotron, il, short) for il in (1, 5, 7)) == 0
    lfm2 = facts(models["lfm2-wide"])
    # a short-conv layer: (l_cache - 1) x n_embd conv floats, no SSM state (llama.cpp n_embd_r, n_embd_s)
    assert [la.recurrent for la in lfm2.layers] == [True, True, True, False] * 2
    assert memory.state_layer(lfm2) == 4 * 2 * 1024
    falcon = facts(models["falcon-h1-wide"])
    # every layer both attends and scans: K/V per token and a state per sequence on all 4
    assert all(la.recurrent and la.n_head_kv == 2 for la in falcon.layers)
    assert memory.kv_per_token(falcon, long) == 4 * (2 * 64 * 2 * 2)
    assert memory.kv_layer(falcon, 0, long) - memory.kv_layer(falcon, 0, short) == (32768 - 512) * 2 * 64 * 2 * 2


@pytest.mark.parametrize(("name", "n_ctx", "fa", "n_seq"), [
    ("mamba", 512, False, 1), ("mamba", 4096, False, 1), ("jamba", 1024, False, 1), ("jamba", 4096, True, 1),
    ("deepseek2", 1024, False, 1), ("deepseek2", 4096, True, 1), ("deepseek2-wide", 1024, True, 1), ("deepseek2-wide", 4096, False, 1),
    ("mamba-wide", 2048, False, 1), ("mamba2", 512, False, 1), ("mamba2", 4096, True, 1), ("mamba2-wide", 1024, False, 1),
    ("mamba2-wide", 1024, False, 4), ("granitehybrid", 1024, False, 1), ("granitehybrid", 4096, True, 1), ("granitehybrid-2", 2048, True, 4),
    ("granitehybrid-2", 8192, True, 1), ("granitehybrid-2", 512, False, 1), ("jamba", 16384, True, 1),
    ("nemotron_h", 1024, False, 1), ("nemotron_h", 8192, True, 1), ("nemotron_h-2", 512, False, 1), ("nemotron_h-2", 4096, True, 1),
    ("nemotron_h-2", 2048, True, 4), ("lfm2", 512, False, 1), ("lfm2", 8192, True, 1), ("lfm2-wide", 512, True, 1),
    ("lfm2-wide", 4096, False, 1), ("lfm2-wide", 2048, True, 8), ("lfm2-l4", 512, True, 1), ("lfm2-l4", 8192, True, 1),
    ("falcon-h1", 1024, False, 1), ("falcon-h1", 8192, True, 1), ("falcon-h1-wide", 512, False, 1), ("falcon-h1-wide", 4096, True, 1),
    ("falcon-h1-wide", 2048, True, 4),
])
def test_compute_buffer_covers_what_llama_cpp_reserves(models: dict[str, Path], name: str, n_ctx: int, fa: bool,
                                                       n_seq: int) -> None:
    m = facts(models[name])
    s = memory.Setting(n_ctx=n_ctx, n_gpu_layers=0, flash_attn=fa, n_seq=n_seq)
    logged = float(load(models[name], n_ctx, n_seq, fa, "f16")["compute"]) * MiB
    predicted = memory.compute(m, s)
    assert logged <= predicted <= logged * 1.6 + MiB, (predicted, logged)


def test_plans_price_the_state_as_the_cache(models: dict[str, Path]) -> None:
    c = Constraints(context=4000, new_tokens=16, options=(("engine", "llama-cpp-python"),))
    r = api.plan(str(models["jamba"]), hardware=HW, constraints=c, runtime="gguf")
    assert r.solution is not None
    p = r.solution.chosen
    m = r.footprint
    assert isinstance(m, GgufModel)
    s = p.settings.setting()  # type: ignore[attr-defined]
    assert p.memory["cpu"].kv_cache == sum(memory.kv_layer(m, il, s) for il in range(m.n_layer))
    assert p.kv_bytes_per_token == memory.kv_per_token(m, s) > 0


def test_unverified_caches_are_still_refused(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    # rwkv, plamo2, lfm2moe, nemotron_h_moe and qwen3next were not loaded here; deepseek2 in the
    # pre-MLA layout (kv_lora_rank without key_length_mla) caches full per-head K and V: not checked either
    why = {"rwkv6": "WKV state", "plamo2": "layer split", "lfm2moe": "routed-expert",
           "nemotron_h_moe": "three layer kinds", "qwen3next": "delta-net", "deepseek2": "MLA cache"}
    for arch, reason in why.items():
        path = tmp_path / f"{arch}.gguf"
        w = gguf.GGUFWriter(str(path), arch)
        w.add_block_count(2)
        w.add_embedding_length(64)
        w.add_head_count(4)
        if arch == "deepseek2":
            w.add_kv_lora_rank(32)
        w.add_tensor("token_embd.weight", np.zeros((8, 64), np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        with pytest.raises(UnsupportedModel, match=f"not sized by fitcheck yet.*{reason}|{reason}.*not sized by fitcheck yet"):
            api.plan(str(path), hardware=HW, constraints=Constraints(context=256, new_tokens=16), runtime="gguf")
