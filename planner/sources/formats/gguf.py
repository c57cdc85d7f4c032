"""Strict, bounded parsing of GGUF headers, from bytes that strangers wrote.

A GGUF file (ggml docs/gguf.md; llama.cpp ggml/src/gguf.cpp:460 ``gguf_init_from_reader``, the
tree vendored in llama-cpp-python 0.3.36, where every file:line below points) is::

    magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
    n_kv x (string key | u32 type | value)          value: scalar, string, or array(u32 type, u64 n, n values)
    n_tensors x (string name | u32 n_dims | n_dims x u64 ne | u32 ggml type | u64 offset)
    padding to ``general.alignment`` (default 32) | tensor data

Strings are a u64 length and that many UTF-8 bytes. Everything is read through one callable,
``read(offset, n) -> bytes`` (a local file or HTTP Range requests), in chunks, so the same code
serves both. Large arrays (the tokenizer's tokens, scores, merges: several MB for a 150k
vocabulary) are walked without being materialised: only their element type and length are kept.
Every count and length is checked against what the rest of the file could hold before anything
is allocated, so a hostile header costs bounded time and memory and raises one
:class:`~planner.core.errors.BadHeader` naming the file and the field.

The tensors come back as :class:`planner.core.records.Tensor` with ``dtype`` the ggml type name
("Q4_K", "F16", ...) and ``offset`` absolute in the file.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from planner.core.errors import BadHeader
from planner.core.ids import show
from planner.core.records import Tensor, _ToDict

# b"GGUF" read as a little-endian u32 (ggml/include/gguf.h:41 GGUF_MAGIC).
MAGIC = b"GGUF"
# Versions llama.cpp reads: 1 had 32-bit counts and is refused by gguf.cpp ("GGUFv1 is no longer
# supported", ggml/src/gguf.cpp:512); 2 and 3 share the layout (3 added big-endian files, which we
# refuse as llama.cpp does on little-endian hosts: gguf.cpp:500-507, "is there a mismatch between
# the host and model endianness?"; newer than 3 is refused at :515).
VERSIONS = (2, 3)
# ggml/include/gguf.h:46 GGUF_DEFAULT_ALIGNMENT.
DEFAULT_ALIGNMENT = 32
# ggml/include/ggml.h:222 GGML_MAX_DIMS.
MAX_DIMS = 4

# ggml type id -> (name, elements per block, bytes per block): ggml/src/ggml.c:632 type_traits
# (blck_size, type_size), the same table as gguf-py's constants.GGML_QUANT_SIZES (a test compares
# the two). Ids 4, 5 (Q4_2, Q4_3) and 31-33, 36-38 are removed or unused types; files using them
# are refused.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}
TYPE_BY_NAME: dict[str, tuple[int, int, int]] = {name: (tid, bs, ts) for tid, (name, bs, ts) in GGML_TYPES.items()}

# GGUF value types (ggml/include/gguf.h enum gguf_type): id -> (name, struct format or None for
# string/array).
_SCALARS: dict[int, tuple[str, str]] = {0: ("UINT8", "<B"), 1: ("INT8", "<b"), 2: ("UINT16", "<H"), 3: ("INT16", "<h"),
                                        4: ("UINT32", "<I"), 5: ("INT32", "<i"), 6: ("FLOAT32", "<f"), 7: ("BOOL", "<?"),
                                        10: ("UINT64", "<Q"), 11: ("INT64", "<q"), 12: ("FLOAT64", "<d")}
_STRING, _ARRAY = 8, 9

# Hard limits; each is far above any real file and keeps hostile counts from costing time.
# Keys: gguf.cpp reads any length, but every key llama.cpp knows is under 100 bytes.
MAX_KEY = 1024
# A string value: chat templates are the longest (DeepSeek-V3's is ~ 8 KB; some Qwen3 ~ 20 KB).
MAX_STRING = 1 << 24
# Tensors: DeepSeek-V3 GGUF has ~1,100 tensors (experts fused per layer); a million is absurd.
MAX_TENSORS = 1_000_000
# KV pairs: real files hold 20-60.
MAX_KV = 100_000
# Tokenizer arrays hold up to ~262k tokens (Gemma 3) and ~500k merges; 2^26 bounds the walk.
MAX_ARRAY = 1 << 26
# Arrays with at most this many elements are kept (per-layer hyperparameters such as
# head_count_kv of OpenELM, sliding-window patterns); longer ones are kept as (type, length).
KEEP_ARRAY = 4096
# No tensor has more than 2^48 elements (as in formats/safetensors.py).
MAX_NUMEL = 2**48
# The most header bytes we will walk: DeepSeek-class tokenizers put ~10 MB before the tensors.
MAX_HEADER_BYTES = 256 * 1024 * 1024
# Bytes fetched per read: large enough that a 128k-vocabulary tokenizer (~7 MB of tokens and
# merges) takes a handful of requests, small enough that a tiny file is read in one.
CHUNK = 4 * 1024 * 1024

# "Model-00001-of-00003.gguf": llama.cpp's split naming (src/llama.cpp:545-552 llama_split_path:
# "%s-%05d-of-%05d.gguf").
SPLIT = re.compile(r"^(?P<prefix>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.gguf\Z")
# gguf-split writes these into every shard (tools/gguf-split/gguf-split.cpp:243-245 LLM_KV_SPLIT_*).
KEY_SPLIT_NO, KEY_SPLIT_COUNT, KEY_SPLIT_TENSORS = "split.no", "split.count", "split.tensors.count"

Reader = Callable[[int, int], bytes]


def tensor_nbytes(type_name: str, shape: tuple[int, ...]) -> int:
    """Bytes of a tensor of ggml type ``type_name``: elements / block size x bytes per block
    (ggml.c ggml_row_size; rows must hold whole blocks)."""
    _, block, size = TYPE_BY_NAME[type_name]
    numel = 1
    for d in shape:
        numel *= d
    return numel // block * size


def row_bytes(type_name: str, n: int) -> int:
    """ggml_row_size(type, n): bytes of ``n`` elements of ``type_name`` (n a multiple of the block)."""
    _, block, size = TYPE_BY_NAME[type_name]
    return n // block * size


@dataclass(frozen=True, slots=True)
class ArrayInfo(_ToDict):
    """An array value too long to keep: its element type and length."""

    type: str
    length: int


@dataclass(frozen=True, slots=True)
class GgufHeader(_ToDict):
    """One GGUF file's header.

    Attributes:
        file: the file name (a repo path).
        version: 2 or 3.
        metadata: key -> value (scalars, strings, short arrays as lists, long arrays as ArrayInfo).
        tensors: its tensors (dtype = ggml type name, offset absolute in the file).
        alignment: ``general.alignment`` or 32.
        data_offset: where the tensor data starts.
        header_bytes: bytes walked to read the header (data_offset).
        file_size: the file's size when known.
        reads, bytes_read: the reads made and bytes received to parse it.
    """

    file: str
    version: int
    metadata: dict[str, Any]
    tensors: tuple[Tensor, ...]
    alignment: int
    data_offset: int
    file_size: int | None = None
    reads: int = 0
    bytes_read: int = 0

    def summary(self) -> dict[str, Any]:
        """The plain-JSON summary (metadata with arrays as {"type", "length"}), no tensors."""
        md = {k: (v.to_dict() if isinstance(v, ArrayInfo) else v) for k, v in self.metadata.items()}
        return {"file": self.file, "version": self.version, "alignment": self.alignment, "data_offset": self.data_offset,
                "file_size": self.file_size, "n_tensors": len(self.tensors), "metadata": md}


class _Cursor:
    """Sequential reads over ``read(offset, n)``, fetched in chunks; at most one chunk is held."""

    def __init__(self, read: Reader, size: int | None, where: str, chunk: int) -> None:
        self.read, self.size, self.where, self.chunk = read, size, where, chunk
        self.pos = 0
        self.buf = b""
        self.buf_start = 0
        self.reads = 0
        self.bytes_read = 0

    def left(self) -> int | None:
        return None if self.size is None else self.size - self.pos

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > MAX_HEADER_BYTES:
            raise BadHeader(f"{self.where}: header runs past {MAX_HEADER_BYTES} bytes at {what}")
        if self.size is not None and self.pos + n > self.size:
            raise BadHeader(f"{self.where}: truncated: {what} needs {n} bytes at offset {self.pos}, the file has {self.size}")
        end = self.pos + n
        if not (self.buf_start <= self.pos and end <= self.buf_start + len(self.buf)):
            want = max(n, self.chunk)
            if self.size is not None:
                want = min(want, self.size - self.pos)
            got = self.read(self.pos, want)
            self.reads += 1
            self.bytes_read += len(got)
            if len(got) < n:
                raise BadHeader(f"{self.where}: truncated: {what} needs {n} bytes at offset {self.pos}, the file ends after {self.pos + len(got)}")
            self.buf, self.buf_start = got, self.pos
        lo = self.pos - self.buf_start
        self.pos = end
        return self.buf[lo:lo + n]

    def skip(self, n: int, what: str) -> None:
        if self.size is not None and self.pos + n > self.size:
            raise BadHeader(f"{self.where}: truncated: {what} needs {n} bytes at offset {self.pos}, the file has {self.size}")
        if self.pos + n > MAX_HEADER_BYTES:
            raise BadHeader(f"{self.where}: header runs past {MAX_HEADER_BYTES} bytes at {what}")
        self.pos += n

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.take(4, what))[0])

    def u64(self, what: str) -> int:
        return int(struct.unpack("<Q", self.take(8, what))[0])

    def string(self, what: str, limit: int) -> str:
        n = self.u64(f"the length of {what}")
        if n > limit:
            raise BadHeader(f"{self.where}: {what} claims {n} bytes; at most {limit} are accepted")
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadHeader(f"{self.where}: {what} is not UTF-8 (byte {e.start})") from None

    def skip_string(self, what: str) -> None:
        n = self.u64(f"the length of {what}")
        if n > MAX_STRING:
            raise BadHeader(f"{self.where}: {what} claims {n} bytes; at most {MAX_STRING} are accepted")
        self.skip(n, what)


def parse(read: Reader, *, file: str, where: str, file_size: int | None, chunk: int = CHUNK) -> GgufHeader:
    """Parse a GGUF header through ``read(offset, n)``.

    Args:
        read: returns up to ``n`` bytes of the file from ``offset`` (fewer only at its end).
        file: the file name recorded on each tensor.
        where: "<file> of <repo>" for messages.
        file_size: the file's size when known: then counts are bounded by it and every tensor's
            data must lie inside the file.

    Raises:
        BadHeader: anything llama.cpp's loader would refuse, or beyond the limits above.
    """
    cur = _Cursor(read, file_size, where, chunk)
    magic = cur.take(4, "the magic")
    if magic != MAGIC:
        raise BadHeader(f"{where}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
    version = cur.u32("the version")
    if version not in VERSIONS:
        if version & 0xFFFF == 0 and (version >> 24) in VERSIONS:
            raise BadHeader(f"{where}: big-endian GGUF; llama.cpp on this machine reads only little-endian files")
        raise BadHeader(f"{where}: GGUF version {version} is not supported (llama.cpp reads versions 2 and 3)")
    n_tensors = cur.u64("the tensor count")
    n_kv = cur.u64("the metadata count")
    # Each KV pair takes at least 8 (key length) + 4 (type) + 1 bytes; each tensor info 8 + 4 + 8 + 4 + 8.
    _bound(n_kv, MAX_KV, 13, cur, "metadata count")
    _bound(n_tensors, MAX_TENSORS, 32, cur, "tensor count")

    metadata: dict[str, Any] = {}
    for i in range(n_kv):
        key = cur.string(f"metadata key #{i}", MAX_KEY)
        if key in metadata:
            raise BadHeader(f"{where}: metadata key {show(key)} appears twice")
        vtype = cur.u32(f"the type of {show(key)}")
        metadata[key] = _value(cur, vtype, f"metadata {show(key)}")

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if type(alignment) is not int or alignment <= 0 or alignment & (alignment - 1) or alignment > 1 << 30:
        raise BadHeader(f"{where}: general.alignment {str(alignment)[:40]!r} is not a power of two")

    infos: list[tuple[str, tuple[int, ...], str, int, int]] = []
    names: set[str] = set()
    for i in range(n_tensors):
        name = cur.string(f"the name of tensor #{i}", 64 * 1024)
        label = f"tensor {show(name)}"
        if name in names:
            raise BadHeader(f"{where}: {label} appears twice")
        names.add(name)
        n_dims = cur.u32(f"the rank of {label}")
        if n_dims > MAX_DIMS:
            raise BadHeader(f"{where}: {label} has {n_dims} dimensions; ggml allows at most {MAX_DIMS}")
        shape = tuple(cur.u64(f"dimension {d} of {label}") for d in range(n_dims))
        numel = 1
        for d in shape:
            if d > MAX_NUMEL:
                raise BadHeader(f"{where}: {label} dimension {d} overflows")
            numel *= d
            if numel > MAX_NUMEL:
                raise BadHeader(f"{where}: {label} shape {list(shape)} overflows ({MAX_NUMEL} elements at most)")
        tid = cur.u32(f"the type of {label}")
        if tid not in GGML_TYPES:
            raise BadHeader(f"{where}: {label} has unknown ggml type {tid}")
        tname, block, _ = GGML_TYPES[tid]
        if shape and shape[0] % block:
            # gguf.cpp:737-743: "tensor '%s' of type %d (%s) has %ld elements per row, not a multiple of block size"
            raise BadHeader(f"{where}: {label} row of {shape[0]} elements is not a multiple of the {tname} block ({block})")
        offset = cur.u64(f"the offset of {label}")
        if offset % alignment:
            raise BadHeader(f"{where}: {label} offset {offset} is not a multiple of the alignment {alignment}")
        infos.append((name, shape, tname, offset, tensor_nbytes(tname, shape)))

    data_offset = -(-cur.pos // alignment) * alignment
    # gguf.cpp lays tensors out in order, each padded to the alignment, and refuses any other
    # offset (gguf.cpp:790-800: "tensor '%s' has offset %zu, expected %zu").
    expected = 0
    tensors: list[Tensor] = []
    for name, shape, tname, offset, nbytes in infos:
        if offset != expected:
            raise BadHeader(f"{where}: tensor {show(name)} has offset {offset}, expected {expected} (overlapping or out of order)")
        expected = offset + -(-nbytes // alignment) * alignment
        tensors.append(Tensor(name, tname, shape, nbytes, file, data_offset + offset))
    if file_size is not None and tensors:
        end = tensors[-1].offset + tensors[-1].nbytes
        if end > file_size:
            raise BadHeader(f"{where}: tensor data runs past the end of the file: byte {end} of {file_size} (truncated?)")
    return GgufHeader(file=file, version=version, metadata=metadata, tensors=tuple(tensors), alignment=alignment,
                      data_offset=data_offset, file_size=file_size, reads=cur.reads, bytes_read=cur.bytes_read)


def _bound(n: int, cap: int, min_bytes: int, cur: _Cursor, what: str) -> None:
    if n > cap:
        raise BadHeader(f"{cur.where}: {what} {n} exceeds {cap}")
    left = cur.left()
    if left is not None and n * min_bytes > left:
        raise BadHeader(f"{cur.where}: {what} {n} cannot fit in the {cur.size}-byte file")


def _value(cur: _Cursor, vtype: int, what: str) -> Any:
    if vtype in _SCALARS:
        fmt = _SCALARS[vtype][1]
        (v,) = struct.unpack(fmt, cur.take(struct.calcsize(fmt), what))
        return v
    if vtype == _STRING:
        return cur.string(what, MAX_STRING)
    if vtype != _ARRAY:
        raise BadHeader(f"{cur.where}: {what} has unknown value type {vtype}")
    etype = cur.u32(f"the element type of {what}")
    n = cur.u64(f"the length of {what}")
    if etype == _ARRAY:
        raise BadHeader(f"{cur.where}: {what} is an array of arrays, which llama.cpp does not read")
    if etype != _STRING and etype not in _SCALARS:
        raise BadHeader(f"{cur.where}: {what} has unknown element type {etype}")
    width = struct.calcsize(_SCALARS[etype][1]) if etype in _SCALARS else 8
    if n > MAX_ARRAY:
        raise BadHeader(f"{cur.where}: {what} claims {n} elements; at most {MAX_ARRAY} are accepted")
    left = cur.left()
    if left is not None and n * width > left:
        raise BadHeader(f"{cur.where}: {what} claims {n} elements, more than the rest of the file holds")
    ename = "STRING" if etype == _STRING else _SCALARS[etype][0]
    if n > KEEP_ARRAY:
        if etype == _STRING:
            for i in range(n):
                cur.skip_string(f"element {i} of {what}")
        else:
            cur.skip(n * width, what)
        return ArrayInfo(ename, n)
    if etype == _STRING:
        return [cur.string(f"element {i} of {what}", MAX_STRING) for i in range(n)]
    fmt = _SCALARS[etype][1]
    return list(struct.unpack(f"<{n}{fmt[1]}", cur.take(n * width, what)))


def split_info(path: str) -> tuple[str, int, int] | None:
    """(prefix, shard number, shard count) of a llama.cpp split file name, or None."""
    m = SPLIT.match(path)
    if not m:
        return None
    return m.group("prefix"), int(m.group("i")), int(m.group("n"))


def check_split(headers: list[GgufHeader], *, where: str) -> None:
    """Shards of one split set, in order: each names its number and the same count, and together
    they hold ``split.tensors.count`` tensors (llama.cpp src/llama-model-loader.cpp refuses
    "invalid split count" at :615 and "corrupted model: %d tensors expected but %d found" at :669)."""
    n = len(headers)
    first = headers[0].metadata
    count = first.get(KEY_SPLIT_COUNT, 1 if n == 1 else None)
    if count != n:
        raise BadHeader(f"{where}: split.count is {count!r} but {n} shard(s) were found")
    for i, h in enumerate(headers):
        no = h.metadata.get(KEY_SPLIT_NO, 0 if n == 1 else None)
        if no != i:
            raise BadHeader(f"{h.file} of {where}: split.no is {no!r}, expected {i}")
        if h.metadata.get(KEY_SPLIT_COUNT, count) != count:
            raise BadHeader(f"{h.file} of {where}: split.count differs from the first shard's")
    total = first.get(KEY_SPLIT_TENSORS)
    found = sum(len(h.tensors) for h in headers)
    if total is not None and total != found:
        raise BadHeader(f"{where}: split.tensors.count is {total} but the shards hold {found} tensors")


def file_reader(path: Any) -> tuple[Reader, Any]:
    """``read(offset, n)`` over a local file, and the open handle (close it when done)."""
    fh = open(path, "rb")  # noqa: SIM115 - the caller closes it

    def read(offset: int, n: int) -> bytes:
        fh.seek(offset)
        return fh.read(n)

    return read, fh
