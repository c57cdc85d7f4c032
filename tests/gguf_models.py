"""Tiny real GGUF models for tests, written with the ``gguf`` package (a test dependency only).

``write_llama(path, ...)`` writes a llama-architecture model with random weights and a
SentencePiece-style vocabulary (256 byte tokens plus a few words) that llama.cpp loads and runs;
``write_split`` writes the same as a ``-0000i-of-0000N.gguf`` set the way gguf-split does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _vocab(n_vocab: int) -> tuple[list[str], list[float], list[int]]:
    # token types: llama.cpp src/llama-vocab.h LLAMA_TOKEN_TYPE_{NORMAL=1, UNKNOWN=2, CONTROL=3, BYTE=6}
    tokens = ["<unk>", "<s>", "</s>"]
    types = [2, 3, 3]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [6] * 256
    words = ["\u2581the", "\u2581a", "\u2581is", "\u2581of", "\u2581and", "\u2581to", "\u2581in", "\u2581it", "\u2581hello", "\u2581world"]
    i = 0
    while len(tokens) < n_vocab:
        tokens.append(words[i] if i < len(words) else f"\u2581w{i}")
        types.append(1)
        i += 1
    scores = [0.0] * 3 + [-1000.0] * 256 + [-float(k) for k in range(len(tokens) - 259)]
    return tokens, scores, types


def _quant(data: np.ndarray, qtype: Any) -> tuple[np.ndarray, Any]:
    import gguf
    from gguf import GGMLQuantizationType as T

    if qtype == T.F32:
        return data.astype(np.float32), None
    if qtype == T.F16:
        return data.astype(np.float16), None
    return gguf.quants.quantize(data.astype(np.float32), qtype), qtype


def llama_tensors(*, n_layer: int, n_embd: int, n_ff: int, n_head: int, n_head_kv: int, n_vocab: int, qtype: str,
                  seed: int = 0, tied: bool = False, n_expert: int = 0, expert_qtype: str = "") -> list[tuple[str, np.ndarray, Any]]:
    """(name, data, raw ggml type or None) in llama.cpp's naming (gguf-py constants.MODEL_TENSOR);
    the experts in ``expert_qtype`` when given, else in ``qtype`` like the rest."""
    from gguf import GGMLQuantizationType as T

    rng = np.random.default_rng(seed)
    q = T[qtype]
    qe = T[expert_qtype] if expert_qtype else q
    head_dim = n_embd // n_head

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    out: list[tuple[str, np.ndarray, Any]] = []

    def add(name: str, data: np.ndarray, qt: Any = None) -> None:
        arr, raw = _quant(data, qt if qt is not None else q)
        out.append((name, arr, raw))

    add("token_embd.weight", w(n_vocab, n_embd))
    for i in range(n_layer):
        add(f"blk.{i}.attn_norm.weight", np.ones(n_embd, np.float32), T.F32)
        add(f"blk.{i}.attn_q.weight", w(n_embd, n_embd))
        add(f"blk.{i}.attn_k.weight", w(n_head_kv * head_dim, n_embd))
        add(f"blk.{i}.attn_v.weight", w(n_head_kv * head_dim, n_embd))
        add(f"blk.{i}.attn_output.weight", w(n_embd, n_embd))
        add(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, np.float32), T.F32)
        if n_expert:
            add(f"blk.{i}.ffn_gate_inp.weight", w(n_expert, n_embd), T.F32)
            add(f"blk.{i}.ffn_gate_exps.weight", w(n_expert, n_ff, n_embd), qe)
            add(f"blk.{i}.ffn_up_exps.weight", w(n_expert, n_ff, n_embd), qe)
            add(f"blk.{i}.ffn_down_exps.weight", w(n_expert, n_embd, n_ff), qe)
        else:
            add(f"blk.{i}.ffn_gate.weight", w(n_ff, n_embd))
            add(f"blk.{i}.ffn_up.weight", w(n_ff, n_embd))
            add(f"blk.{i}.ffn_down.weight", w(n_embd, n_ff))
    add("output_norm.weight", np.ones(n_embd, np.float32), T.F32)
    if not tied:
        add("output.weight", w(n_vocab, n_embd))
    return out


# llama.cpp src/llama-model.h enum llama_ftype: the general.file_type of each quant we write.
FILE_TYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10, "Q4_K": 15, "Q6_K": 18}


def _writer(path: Path, *, arch: str, n_layer: int, n_embd: int, n_ff: int, n_head: int, n_head_kv: int, n_vocab: int,
            n_ctx_train: int, qtype: str, n_expert: int = 0, n_expert_used: int = 0, swa: int = 0) -> Any:
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny")
    w.add_context_length(n_ctx_train)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(FILE_TYPE.get(qtype, 1))
    if n_expert:
        w.add_expert_count(n_expert)
        w.add_expert_used_count(n_expert_used)
    if swa:
        w.add_sliding_window(swa)
    tokens, scores, types = _vocab(n_vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    return w


def write_llama(path: Path, *, qtype: str = "Q8_0", n_layer: int = 2, n_embd: int = 64, n_ff: int = 128, n_head: int = 4,
                n_head_kv: int = 2, n_vocab: int = 320, n_ctx_train: int = 2048, seed: int = 0, tied: bool = False,
                n_expert: int = 0, n_expert_used: int = 0, expert_qtype: str = "", arch: str = "llama", swa: int = 0) -> Path:
    """Write a tiny llama (or, with ``n_expert``, a Mixtral-style MoE, its experts in
    ``expert_qtype`` when given) GGUF file at ``path``; ``arch`` and ``swa`` (a sliding_window
    key) only label it, for header-only tests of other archs."""
    w = _writer(path, arch=arch, n_layer=n_layer, n_embd=n_embd, n_ff=n_ff, n_head=n_head, n_head_kv=n_head_kv, n_vocab=n_vocab,
                n_ctx_train=n_ctx_train, qtype=qtype, n_expert=n_expert, n_expert_used=n_expert_used, swa=swa)
    for name, data, raw in llama_tensors(n_layer=n_layer, n_embd=n_embd, n_ff=n_ff, n_head=n_head, n_head_kv=n_head_kv,
                                         n_vocab=n_vocab, qtype=qtype, seed=seed, tied=tied, n_expert=n_expert,
                                         expert_qtype=expert_qtype):
        w.add_tensor(name, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_split(folder: Path, prefix: str, n_split: int, **kw: Any) -> list[Path]:
    """The model of :func:`write_llama` as ``prefix-0000i-of-0000N.gguf`` shards (gguf-split's KV:
    split.no, split.count, split.tensors.count; metadata in shard 1 only)."""
    import gguf

    qtype = kw.pop("qtype", "Q8_0")
    dims = {"n_layer": 2, "n_embd": 64, "n_ff": 128, "n_head": 4, "n_head_kv": 2, "n_vocab": 320}
    dims.update({k: kw.pop(k) for k in list(kw) if k in dims})
    tensors = llama_tensors(qtype=qtype, **dims)  # type: ignore[arg-type]
    per = -(-len(tensors) // n_split)
    paths = []
    for i in range(n_split):
        path = folder / f"{prefix}-{i + 1:05d}-of-{n_split:05d}.gguf"
        if i == 0:
            w = _writer(path, arch="llama", n_ctx_train=2048, qtype=qtype, **dims)  # type: ignore[arg-type]
        else:
            w = gguf.GGUFWriter(str(path), "llama")
            del w.kv_data[0][gguf.Keys.General.ARCHITECTURE]
        w.add_uint16("split.no", i)
        w.add_uint16("split.count", n_split)
        w.add_int32("split.tensors.count", len(tensors))
        for name, data, raw in tensors[i * per:(i + 1) * per]:
            w.add_tensor(name, data, raw_dtype=raw)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        paths.append(path)
    return paths


def _gguf_string(s: str) -> bytes:
    import struct

    raw = s.encode()
    return struct.pack("<Q", len(raw)) + raw


def sparse_header(kv: list[tuple[str, str, Any]], tensors: list[tuple[str, tuple[int, ...], str]]) -> tuple[bytes, int]:
    """(the header bytes of a GGUF file, its full size) for ``tensors`` (name, ggml shape ne0
    first, type name) laid out as llama.cpp expects: serve it as a ``fakehub.SparseFile`` to have
    a 40 GB file whose only real bytes are its header. ``kv`` values: ("u32", int),
    ("i32", int), ("u16", int), ("str", str), ("strs", list[str]), ("i32s", list[int])."""
    import struct

    from planner.sources.formats.gguf import TYPE_BY_NAME, tensor_nbytes

    codes = {"u16": (2, "<H"), "u32": (4, "<I"), "i32": (5, "<i")}
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)))
    for key, kind, value in kv:
        out += _gguf_string(key)
        if kind in codes:
            out += struct.pack("<I", codes[kind][0]) + struct.pack(codes[kind][1], value)
        elif kind == "str":
            out += struct.pack("<I", 8) + _gguf_string(value)
        elif kind == "strs":
            out += struct.pack("<IIQ", 9, 8, len(value)) + b"".join(_gguf_string(v) for v in value)
        elif kind == "i32s":
            out += struct.pack("<IIQ", 9, 5, len(value)) + struct.pack(f"<{len(value)}i", *value)
    offset = 0
    for name, shape, tname in tensors:
        out += _gguf_string(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape)
        out += struct.pack("<IQ", TYPE_BY_NAME[tname][0], offset)
        offset += -(-tensor_nbytes(tname, shape) // 32) * 32
    out += b"\0" * (-len(out) % 32)
    return bytes(out), len(out) + offset


def llama70b_split(prefix: str = "Llama-3.1-70B-Instruct-Q4_K_M", n_split: int = 2) -> dict[str, tuple[bytes, int]]:
    """A Llama-3.1-70B-shaped Q4_K split set (80 layers, 8192 wide, 128,256-token BPE vocabulary
    with 280,147 merges, as in the real tokenizer): file name -> (header, size)."""
    n_vocab, n_embd, n_ff, n_layer, n_kv = 128_256, 8192, 28_672, 80, 8
    tensors: list[tuple[str, tuple[int, ...], str]] = [("token_embd.weight", (n_embd, n_vocab), "Q4_K")]
    for i in range(n_layer):
        tensors += [(f"blk.{i}.attn_norm.weight", (n_embd,), "F32"), (f"blk.{i}.attn_q.weight", (n_embd, n_embd), "Q4_K"),
                    (f"blk.{i}.attn_k.weight", (n_embd, n_kv * 128), "Q4_K"), (f"blk.{i}.attn_v.weight", (n_embd, n_kv * 128), "Q6_K"),
                    (f"blk.{i}.attn_output.weight", (n_embd, n_embd), "Q4_K"), (f"blk.{i}.ffn_norm.weight", (n_embd,), "F32"),
                    (f"blk.{i}.ffn_gate.weight", (n_embd, n_ff), "Q4_K"), (f"blk.{i}.ffn_up.weight", (n_embd, n_ff), "Q4_K"),
                    (f"blk.{i}.ffn_down.weight", (n_ff, n_embd), "Q6_K")]
    tensors += [("output_norm.weight", (n_embd,), "F32"), ("output.weight", (n_embd, n_vocab), "Q6_K")]
    tokens = [f"tok{i:06d}" for i in range(n_vocab)]
    merges = [f"t{i:05d} k{i:05d}" for i in range(280_147)]
    base = [("general.architecture", "str", "llama"), ("llama.block_count", "u32", n_layer), ("llama.context_length", "u32", 131_072),
            ("llama.embedding_length", "u32", n_embd), ("llama.feed_forward_length", "u32", n_ff),
            ("llama.attention.head_count", "u32", 64), ("llama.attention.head_count_kv", "u32", n_kv),
            ("llama.rope.dimension_count", "u32", 128), ("general.file_type", "u32", 15), ("tokenizer.ggml.model", "str", "gpt2"),
            ("tokenizer.ggml.tokens", "strs", tokens), ("tokenizer.ggml.token_type", "i32s", [1] * n_vocab),
            ("tokenizer.ggml.merges", "strs", merges)]
    per = -(-len(tensors) // n_split)
    out = {}
    for i in range(n_split):
        split = [("split.no", "u16", i), ("split.count", "u16", n_split), ("split.tensors.count", "i32", len(tensors))]
        kv = (base if i == 0 else []) + split
        out[f"{prefix}-{i + 1:05d}-of-{n_split:05d}.gguf"] = sparse_header(kv, tensors[i * per:(i + 1) * per])
    return out


def write_gemma2(path: Path, *, qtype: str = "Q8_0", n_layer: int = 4, n_embd: int = 256, n_ff: int = 512, n_head: int = 4,
                 n_head_kv: int = 2, n_vocab: int = 2000, n_swa: int = 256, seed: int = 0) -> Path:
    """A tiny gemma2 (sliding-window attention on every other layer, tied output: llama.cpp
    src/llama-model.cpp LLM_ARCH_GEMMA2, set_swa_pattern(2)) GGUF file."""
    import gguf
    from gguf import GGMLQuantizationType as T

    rng = np.random.default_rng(seed)
    head_dim = n_embd // n_head
    w = gguf.GGUFWriter(str(path), "gemma2")
    w.add_name("tiny-gemma2")
    w.add_context_length(8192)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_sliding_window(n_swa)
    w.add_attn_logit_softcapping(50.0)
    w.add_final_logit_softcapping(30.0)
    w.add_file_type(FILE_TYPE.get(qtype, 1))
    tokens, scores, types = _vocab(n_vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    q = T[qtype]

    def mat(*shape: int) -> tuple[np.ndarray, Any]:
        return _quant((rng.standard_normal(shape) * 0.02).astype(np.float32), q)

    def norm() -> tuple[np.ndarray, Any]:
        return np.ones(n_embd, np.float32), None

    tensors = [("token_embd.weight", mat(n_vocab, n_embd))]
    for i in range(n_layer):
        tensors += [(f"blk.{i}.attn_norm.weight", norm()), (f"blk.{i}.attn_q.weight", mat(n_head * head_dim, n_embd)),
                    (f"blk.{i}.attn_k.weight", mat(n_head_kv * head_dim, n_embd)), (f"blk.{i}.attn_v.weight", mat(n_head_kv * head_dim, n_embd)),
                    (f"blk.{i}.attn_output.weight", mat(n_embd, n_head * head_dim)), (f"blk.{i}.post_attention_norm.weight", norm()),
                    (f"blk.{i}.ffn_norm.weight", norm()), (f"blk.{i}.ffn_gate.weight", mat(n_ff, n_embd)),
                    (f"blk.{i}.ffn_up.weight", mat(n_ff, n_embd)), (f"blk.{i}.ffn_down.weight", mat(n_embd, n_ff)),
                    (f"blk.{i}.post_ffw_norm.weight", norm())]
    tensors.append(("output_norm.weight", norm()))
    for name, (data, raw) in tensors:
        w.add_tensor(name, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
