"""Tiny real GGUF models whose cache is not plain per-layer K/V, written with the ``gguf`` package:
``deepseek2`` (MLA: llama.cpp caches the compressed latent), ``mamba`` and ``mamba2`` (a
recurrent state per sequence), ``jamba``, ``granitehybrid`` and ``lfm2`` (hybrids: attention
layers where ``head_count_kv`` is non-zero, Mamba or short-conv layers elsewhere), ``nemotron_h``
(Mamba-2, attention and FFN-only blocks) and ``falcon-h1`` (attention and Mamba-2 side by side in
every layer). Random weights; llama.cpp loads and runs them.

Tensor names and shapes follow gguf-py (constants.MODEL_TENSORS) and llama.cpp's
``load_tensors`` for each architecture (src/models/deepseek2.cpp, mamba.cpp, mamba2.cpp, jamba.cpp,
granite-hybrid.cpp, nemotron-h.cpp, lfm2.cpp, falcon-h1.cpp); the
numpy shapes below are ggml's ``ne`` reversed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gguf_models import FILE_TYPE, _quant, _vocab


class _Tensors:
    def __init__(self, qtype: str, seed: int) -> None:
        from gguf import GGMLQuantizationType as T

        self.q = T[qtype]
        self.f32 = T.F32
        self.rng = np.random.default_rng(seed)
        self.out: list[tuple[str, np.ndarray, Any]] = []

    def mat(self, name: str, *shape: int) -> None:
        """A matrix in the file's quant (ggml ne0 = shape[-1] must be a multiple of its block)."""
        arr, raw = _quant((self.rng.standard_normal(shape) * 0.02).astype(np.float32), self.q)
        self.out.append((name, arr, raw))

    def f16(self, name: str, *shape: int) -> None:
        self.out.append((name, (self.rng.standard_normal(shape) * 0.02).astype(np.float16), None))

    def f32s(self, name: str, *shape: int, value: float | None = None) -> None:
        data = np.full(shape, value, np.float32) if value is not None else (self.rng.standard_normal(shape) * 0.02).astype(np.float32)
        self.out.append((name, data, None))


def _start(path: Path, arch: str, *, n_layer: int, n_embd: int, n_ff: int, n_head: int, n_head_kv: int | Sequence[int],
           n_vocab: int, qtype: str) -> Any:
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"tiny-{arch}")
    w.add_context_length(4096)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(FILE_TYPE.get(qtype, 1))
    tokens, scores, types = _vocab(n_vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    return w


def _finish(w: Any, t: _Tensors, path: Path) -> Path:
    for name, data, raw in t.out:
        w.add_tensor(name, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _attention(t: _Tensors, b: str, *, n_embd: int, n_head: int, n_head_kv: int, head_dim: int) -> None:
    """An attention block's projections: q, k, v and output."""
    t.mat(b + "attn_q.weight", n_head * head_dim, n_embd)
    t.mat(b + "attn_k.weight", n_head_kv * head_dim, n_embd)
    t.mat(b + "attn_v.weight", n_head_kv * head_dim, n_embd)
    t.mat(b + "attn_output.weight", n_embd, n_head * head_dim)


def _gated_ffn(t: _Tensors, b: str, *, n_embd: int, n_ff: int, norm: str = "ffn_norm.weight") -> None:
    """A dense gated FFN with its norm (gate, up, down)."""
    t.f32s(b + norm, n_embd, value=1.0)
    t.mat(b + "ffn_gate.weight", n_ff, n_embd)
    t.mat(b + "ffn_up.weight", n_ff, n_embd)
    t.mat(b + "ffn_down.weight", n_embd, n_ff)


def write_deepseek2(path: Path, *, qtype: str = "Q8_0", n_layer: int = 3, n_embd: int = 256, n_ff: int = 512, n_head: int = 4,
                    q_lora_rank: int = 64, kv_lora_rank: int = 128, rope_dim: int = 32, qk_nope: int = 64, v_head: int = 64,
                    n_vocab: int = 2000, seed: int = 0) -> Path:
    """A tiny DeepSeek-V2-style model in the MLA layout convert_hf_to_gguf.py writes: one KV
    head, key_length = kv_lora_rank + rope dim and value_length = kv_lora_rank (the latent
    llama.cpp caches), key_length_mla / value_length_mla the per-head dims, split attn_k_b /
    attn_v_b. Every layer dense (leading_dense_block_count = n_layer)."""
    w = _start(path, "deepseek2", n_layer=n_layer, n_embd=n_embd, n_ff=n_ff, n_head=n_head, n_head_kv=1, n_vocab=n_vocab, qtype=qtype)
    w.add_leading_dense_block_count(n_layer)
    w.add_q_lora_rank(q_lora_rank)
    w.add_kv_lora_rank(kv_lora_rank)
    w.add_key_length(kv_lora_rank + rope_dim)
    w.add_value_length(kv_lora_rank)
    w.add_key_length_mla(qk_nope + rope_dim)
    w.add_value_length_mla(v_head)
    w.add_rope_dimension_count(rope_dim)
    w.add_expert_feed_forward_length(n_ff)
    w.add_expert_count(0)
    w.add_expert_shared_count(0)
    w.add_vocab_size(n_vocab)
    t = _Tensors(qtype, seed)
    t.mat("token_embd.weight", n_vocab, n_embd)
    for i in range(n_layer):
        b = f"blk.{i}."
        t.f32s(b + "attn_norm.weight", n_embd, value=1.0)
        t.mat(b + "attn_q_a.weight", q_lora_rank, n_embd)
        t.f32s(b + "attn_q_a_norm.weight", q_lora_rank, value=1.0)
        t.mat(b + "attn_q_b.weight", n_head * (qk_nope + rope_dim), q_lora_rank)
        t.mat(b + "attn_kv_a_mqa.weight", kv_lora_rank + rope_dim, n_embd)
        t.f32s(b + "attn_kv_a_norm.weight", kv_lora_rank, value=1.0)
        # the per-head absorption matrices stay F16: the CPU backend's AMX buffer (Q8_0 on this
        # machine) takes no 3-d matrices, and llama.cpp then aborts in graph_reserve
        # (ggml-backend.cpp: GGML_ASSERT(*cur_backend_id != -1))
        t.f16(b + "attn_k_b.weight", n_head, kv_lora_rank, qk_nope)
        t.f16(b + "attn_v_b.weight", n_head, v_head, kv_lora_rank)
        t.mat(b + "attn_output.weight", n_embd, n_head * v_head)
        _gated_ffn(t, b, n_embd=n_embd, n_ff=n_ff)
    t.f32s("output_norm.weight", n_embd, value=1.0)
    t.mat("output.weight", n_vocab, n_embd)
    return _finish(w, t, path)


def _mamba_layer(t: _Tensors, b: str, *, n_embd: int, d_inner: int, d_state: int, d_conv: int, dt_rank: int, norms: bool = False) -> None:
    t.mat(b + "ssm_in.weight", 2 * d_inner, n_embd)
    t.f32s(b + "ssm_conv1d.weight", d_inner, d_conv)
    t.f32s(b + "ssm_conv1d.bias", d_inner)
    t.mat(b + "ssm_x.weight", dt_rank + 2 * d_state, d_inner)
    t.f32s(b + "ssm_dt.weight", d_inner, dt_rank)
    t.f32s(b + "ssm_dt.bias", d_inner)
    t.f32s(b + "ssm_a", d_inner, d_state, value=-1.0)
    t.f32s(b + "ssm_d", d_inner, value=1.0)
    if norms:
        t.f32s(b + "ssm_dt_norm.weight", dt_rank, value=1.0)
        t.f32s(b + "ssm_b_norm.weight", d_state, value=1.0)
        t.f32s(b + "ssm_c_norm.weight", d_state, value=1.0)
    t.mat(b + "ssm_out.weight", n_embd, d_inner)


def write_mamba(path: Path, *, qtype: str = "Q8_0", n_layer: int = 3, n_embd: int = 256, d_inner: int = 512, d_state: int = 16,
                d_conv: int = 4, dt_rank: int = 16, n_vocab: int = 2000, seed: int = 0) -> Path:
    """A tiny Mamba (v1) model: ssm.{conv_kernel, inner_size, state_size, time_step_rank} as
    convert_hf_to_gguf.py MambaModel writes them, no attention (head counts 0)."""
    w = _start(path, "mamba", n_layer=n_layer, n_embd=n_embd, n_ff=0, n_head=0, n_head_kv=0, n_vocab=n_vocab, qtype=qtype)
    w.add_ssm_conv_kernel(d_conv)
    w.add_ssm_inner_size(d_inner)
    w.add_ssm_state_size(d_state)
    w.add_ssm_time_step_rank(dt_rank)
    t = _Tensors(qtype, seed)
    t.mat("token_embd.weight", n_vocab, n_embd)
    for i in range(n_layer):
        t.f32s(f"blk.{i}.attn_norm.weight", n_embd, value=1.0)
        _mamba_layer(t, f"blk.{i}.", n_embd=n_embd, d_inner=d_inner, d_state=d_state, d_conv=d_conv, dt_rank=dt_rank)
    t.f32s("output_norm.weight", n_embd, value=1.0)
    t.mat("output.weight", n_vocab, n_embd)
    return _finish(w, t, path)


def write_jamba(path: Path, *, qtype: str = "Q8_0", n_layer: int = 4, attn_every: int = 2, n_embd: int = 256, n_ff: int = 512,
                n_head: int = 4, n_head_kv: int = 2, d_inner: int = 512, d_state: int = 16, d_conv: int = 4, dt_rank: int = 16,
                n_vocab: int = 2000, seed: int = 0) -> Path:
    """A tiny Jamba hybrid: layer il attends when il % attn_every == attn_every - 1
    (head_count_kv per layer, 0 on the Mamba layers, as convert_hf_to_gguf.py JambaModel writes),
    the others are Mamba layers with dt/B/C norms; dense FFN on every layer."""
    kv = [n_head_kv if il % attn_every == attn_every - 1 else 0 for il in range(n_layer)]
    w = _start(path, "jamba", n_layer=n_layer, n_embd=n_embd, n_ff=n_ff, n_head=n_head, n_head_kv=kv, n_vocab=n_vocab, qtype=qtype)
    w.add_ssm_conv_kernel(d_conv)
    w.add_ssm_inner_size(d_inner)
    w.add_ssm_state_size(d_state)
    w.add_ssm_time_step_rank(dt_rank)
    head_dim = n_embd // n_head
    t = _Tensors(qtype, seed)
    t.mat("token_embd.weight", n_vocab, n_embd)
    for i in range(n_layer):
        b = f"blk.{i}."
        t.f32s(b + "attn_norm.weight", n_embd, value=1.0)
        if kv[i]:
            _attention(t, b, n_embd=n_embd, n_head=n_head, n_head_kv=kv[i], head_dim=head_dim)
        else:
            _mamba_layer(t, b, n_embd=n_embd, d_inner=d_inner, d_state=d_state, d_conv=d_conv, dt_rank=dt_rank, norms=True)
        _gated_ffn(t, b, n_embd=n_embd, n_ff=n_ff)
    t.f32s("output_norm.weight", n_embd, value=1.0)
    t.mat("output.weight", n_vocab, n_embd)
    return _finish(w, t, path)


def _mamba2_layer(t: _Tensors, b: str, *, n_embd: int, d_inner: int, d_state: int, d_conv: int, n_head: int, n_group: int) -> None:
    """A Mamba-2 mixer as llama.cpp's mamba2 / granite-hybrid load_arch_tensors create it: one
    in_proj to z, xBC and dt (2 d_inner + 2 n_group d_state + n_head rows), a conv over xBC, a
    per-head dt bias, A and D, a grouped RMS norm and out_proj."""
    conv_dim = d_inner + 2 * n_group * d_state
    t.mat(b + "ssm_in.weight", 2 * d_inner + 2 * n_group * d_state + n_head, n_embd)
    t.f32s(b + "ssm_conv1d.weight", conv_dim, d_conv)
    t.f32s(b + "ssm_conv1d.bias", conv_dim)
    t.f32s(b + "ssm_dt.bias", n_head)
    t.f32s(b + "ssm_a", n_head, 1, value=-1.0)
    t.f32s(b + "ssm_d", n_head, 1, value=1.0)
    t.f32s(b + "ssm_norm.weight", n_group, d_inner // n_group, value=1.0)
    t.mat(b + "ssm_out.weight", n_embd, d_inner)


def _ssm2_keys(w: Any, *, d_conv: int, d_inner: int, d_state: int, n_head: int, n_group: int) -> None:
    w.add_ssm_conv_kernel(d_conv)
    w.add_ssm_inner_size(d_inner)
    w.add_ssm_state_size(d_state)
    w.add_ssm_time_step_rank(n_head)
    w.add_ssm_group_count(n_group)


def write_mamba2(path: Path, *, qtype: str = "Q8_0", n_layer: int = 3, n_embd: int = 256, d_inner: int = 512, d_state: int = 64,
                 d_conv: int = 4, n_head: int = 8, n_group: int = 1, n_vocab: int = 2000, seed: int = 0) -> Path:
    """A tiny Mamba-2 model: ssm.{conv_kernel, inner_size, state_size, time_step_rank (the SSM
    head count), group_count} as convert_hf_to_gguf.py Mamba2Model writes them; no attention."""
    w = _start(path, "mamba2", n_layer=n_layer, n_embd=n_embd, n_ff=0, n_head=0, n_head_kv=0, n_vocab=n_vocab, qtype=qtype)
    _ssm2_keys(w, d_conv=d_conv, d_inner=d_inner, d_state=d_state, n_head=n_head, n_group=n_group)
    t = _Tensors(qtype, seed)
    t.mat("token_embd.weight", n_vocab, n_embd)
    for i in range(n_layer):
        t.f32s(f"blk.{i}.attn_norm.weight", n_embd, value=1.0)
        _mamba2_layer(t, f"blk.{i}.", n_embd=n_embd, d_inner=d_inner, d_state=d_state, d_conv=d_conv, n_head=n_head, n_group=n_group)
    t.f32s("output_norm.weight", n_embd, value=1.0)
    t.mat("output.weight", n_vocab, n_embd)
    return _finish(w, t, path)


def write_granitehybrid(path: Path, *, qtype: str = "Q8_0", n_layer: int = 4, attn_every: int = 4, n_embd: int = 256,
                        n_ff: int = 512, n_head: int = 4, n_head_kv: int = 2, d_state: int = 64, d_conv: int = 4,
                        ssm_head: int = 8, n_group: int = 1, n_vocab: int = 2000, seed: int = 0) -> Path:
    """A tiny Granite-4.0-H-style hybrid: Mamba-2 layers (head_count_kv 0) with an attention
    layer where il % attn_every == attn_every - 1, dense FFN on every layer; d_inner = 2 n_embd
    (granite-hybrid load_arch_tensors asserts an expansion of 2)."""
    kv = [n_head_kv if il % attn_every == attn_every - 1 else 0 for il in range(n_layer)]
    w = _start(path, "granitehybrid", n_layer=n_layer, n_embd=n_embd, n_ff=n_ff, n_head=n_head, n_head_kv=kv, n_vocab=n_vocab,
               qtype=qtype)
    d_inner = 2 * n_embd
    _ssm2_keys(w, d_conv=d_conv, d_inner=d_inner, d_state=d_state, n_head=ssm_head, n_group=n_group)
    head_dim = n_embd // n_head
    w.add_rope_dimension_count(head_dim)
    t = _Tensors(qtype, seed)
    t.mat("token_embd.weight", n_vocab, n_embd)
    for i in range(n_layer):
        b = f"blk.{i}."
        t.f32s(b + "attn_norm.weight", n_embd, value=1.0)
        if kv[i]:
            _attention(t, b, n_embd=n_embd, n_head=n_head, n_head_kv=kv[i], head_dim=head_dim)
        else:
            _mamba2_layer(t, b, n_embd=n_embd, d_inner=d_inner, d_state=d_state, d_conv=d_conv, n_head=ssm_head, n_group=n_group)
        _gated_ffn(t, b, n_embd=n_embd, n_ff=n_ff)
    t.f32s("output_norm.weight", n_embd, value=1.0)
    t.mat("output.weight", n_vocab, n_embd)
    return _finish(w, t, path)


def write_nemotron_h(path: Path, *, qtype: str = "Q8_0", pattern: str = "MAMF", n_embd: int = 256, n_ff: int = 512, n_head: int = 4,
                     n_head_kv: int = 2, d_inner: int = 512, d_state: int = 64, d_conv: int = 4, ssm_head: int = 8, n_group: int = 1,
                     n_vocab: int = 2000, seed: int = 0) -> Path:
    """A tiny Nemotron-H: one block kind per layer, as ``pattern`` spells it (M: Mamba-2, A:
    attention, F: a ReLU-squared FFN alone), told apart by head_count_kv and feed_forward_length
    per layer (llama.cpp src/models/nemotron-h.cpp: recurrent where both are 0, attention where
    head_count_kv is not, FFN where feed_forward_length is not)."""
    kv = [n_head_kv if c == "A" else 0 for c in pattern]
    ff = [n_ff if c == "F" else 0 for c in pattern]
    w = _start(path, "nemotron_h", n_layer=len(pattern), n_embd=n_embd, n_ff=0, n_head=n_head, n_head_kv=kv, n_vocab=n_vocab,
               qtype=qtype)
    del w.kv_data[0]["nemotron_h.feed_forward_length"]
    w.add_feed_forward_length(ff)
    w.add_layer_norm_eps(1e-5)  # required: the MTP head's final_layernorm epsilon (load_arch_hparams)
    _ssm2_keys(w, d_conv=d_conv, d_inner=d_inner, d_state=d_state, n_head=ssm_head, n_group=n_group)
    head_dim = n_embd // n_head
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    t = _Tensors(qtype, seed)
    t.mat("token_embd.weight", n_vocab, n_embd)
    for i, c in enumerate(pattern):
        b = f"blk.{i}."
        t.f32s(b + "attn_norm.weight", n_embd, value=1.0)
        if c == "M":
            _mamba2_layer(t, b, n_embd=n_embd, d_inner=d_inner, d_state=d_state, d_conv=d_conv, n_head=ssm_head, n_group=n_group)
        elif c == "A":
            _attention(t, b, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim)
        else:
            t.mat(b + "ffn_up.weight", n_ff, n_embd)
            t.mat(b + "ffn_down.weight", n_embd, n_ff)
    t.f32s("output_norm.weight", n_embd, value=1.0)
    t.mat("output.weight", n_vocab, n_embd)
    return _finish(w, t, path)


def write_lfm2(path: Path, *, qtype: str = "Q8_0", n_layer: int = 4, attn_every: int = 2, n_embd: int = 256, n_ff: int = 512,
               n_head: int = 4, n_head_kv: int = 2, l_cache: int = 3, n_vocab: int = 2000, seed: int = 0) -> Path:
    """A tiny LFM2: short-conv layers (head_count_kv 0: in_proj to B, C, x, a depthwise conv of
    ``shortconv.l_cache`` taps, out_proj) and attention layers with q/k norms where il %
    attn_every == attn_every - 1, dense FFN everywhere; the output norm is named
    token_embd_norm (llama.cpp src/models/lfm2.cpp, src/llama-arch.cpp LLM_TENSOR_OUTPUT_NORM_LFM2)."""
    kv = [n_head_kv if il % attn_every == attn_every - 1 else 0 for il in range(n_layer)]
    w = _start(path, "lfm2", n_layer=n_layer, n_embd=n_embd, n_ff=n_ff, n_head=n_head, n_head_kv=kv, n_vocab=n_vocab, qtype=qtype)
    w.add_shortconv_l_cache(l_cache)
    head_dim = n_embd // n_head
    w.add_rope_dimension_count(head_dim)
    t = _Tensors(qtype, seed)
    t.mat("token_embd.weight", n_vocab, n_embd)
    for i in range(n_layer):
        b = f"blk.{i}."
        t.f32s(b + "attn_norm.weight", n_embd, value=1.0)
        if kv[i]:
            t.f32s(b + "attn_q_norm.weight", head_dim, value=1.0)
            t.f32s(b + "attn_k_norm.weight", head_dim, value=1.0)
            _attention(t, b, n_embd=n_embd, n_head=n_head, n_head_kv=kv[i], head_dim=head_dim)  # n_head x head_dim = n_embd
        else:
            t.f32s(b + "shortconv.conv.weight", n_embd, l_cache)
            t.mat(b + "shortconv.in_proj.weight", 3 * n_embd, n_embd)
            t.mat(b + "shortconv.out_proj.weight", n_embd, n_embd)
        _gated_ffn(t, b, n_embd=n_embd, n_ff=n_ff)
    t.f32s("token_embd_norm.weight", n_embd, value=1.0)
    t.mat("output.weight", n_vocab, n_embd)
    return _finish(w, t, path)


def write_falcon_h1(path: Path, *, qtype: str = "Q8_0", n_layer: int = 3, n_embd: int = 256, n_ff: int = 512, n_head: int = 4,
                    n_head_kv: int = 2, d_inner: int = 512, d_state: int = 64, d_conv: int = 4, ssm_head: int = 8, n_group: int = 1,
                    n_vocab: int = 2000, seed: int = 0) -> Path:
    """A tiny Falcon-H1: every layer runs attention and a Mamba-2 mixer side by side (their
    outputs added, src/models/falcon-h1.cpp), then a dense FFN; llama.cpp looks its FFN norm up
    as ``blk.{i}.ffn_norm`` with no ``.weight`` (load_arch_tensors: tn(LLM_TENSOR_FFN_NORM, i))."""
    w = _start(path, "falcon-h1", n_layer=n_layer, n_embd=n_embd, n_ff=n_ff, n_head=n_head, n_head_kv=n_head_kv, n_vocab=n_vocab,
               qtype=qtype)
    _ssm2_keys(w, d_conv=d_conv, d_inner=d_inner, d_state=d_state, n_head=ssm_head, n_group=n_group)
    head_dim = n_embd // n_head
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    t = _Tensors(qtype, seed)
    t.mat("token_embd.weight", n_vocab, n_embd)
    for i in range(n_layer):
        b = f"blk.{i}."
        t.f32s(b + "attn_norm.weight", n_embd, value=1.0)
        _mamba2_layer(t, b, n_embd=n_embd, d_inner=d_inner, d_state=d_state, d_conv=d_conv, n_head=ssm_head, n_group=n_group)
        _attention(t, b, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim)
        _gated_ffn(t, b, n_embd=n_embd, n_ff=n_ff, norm="ffn_norm")
    t.f32s("output_norm.weight", n_embd, value=1.0)
    t.mat("output.weight", n_vocab, n_embd)
    return _finish(w, t, path)
