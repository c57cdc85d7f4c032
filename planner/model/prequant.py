"""Pre-quantized checkpoints: what is stored, how many parameters it really holds.

A checkpoint with ``quantization_config`` in config.json stores packed weights plus their scales,
zeros and indices. Element counts of packed tensors are not parameter counts (llmfit and the Hub
API both make that mistake). Each format below says which tensors are packed and how many
parameters one stored element holds, from the layouts its writers produce:

============================  ===========================================  =========================
format                        packed weight (stored dtype, shape)          parameters per element
============================  ===========================================  =========================
GPTQ (auto-gptq, gptqmodel)   ``qweight`` I32 [in * bits / 32, out]        32 / bits
AWQ (GEMM)                    ``qweight`` I32 [in, out * bits / 32]        32 / bits
bitsandbytes 4-bit            ``weight`` U8 [n / 2, 1] (+ ``quant_state``) 8 / 4 (storage-dtype bits / 4)
bitsandbytes 8-bit            ``weight`` I8 [out, in] + ``SCB`` F32 [out]  1
FP8 (finegrained, fbgemm)     ``weight`` F8_E4M3 [out, in]                 1
MXFP4 (gpt-oss)               ``*_blocks`` U8 [E, out, in / 32, 16]        2 (fp4 e2m1, two per byte)
compressed-tensors pack       ``weight_packed`` I32 [out, in * bits / 32]  32 / bits (U8: 8 / bits)
compressed-tensors float/int  ``weight`` F8_E4M3 or I8 [out, in]           1
============================  ===========================================  =========================

Scales, zeros and indices (``qzeros``, ``scales``, ``g_idx``, ``absmax``, ``quant_map``,
``nested_*``, ``quant_state.*``, ``SCB``, ``weight_format``, ``weight_scale(_inv)``,
``*_scales``, ``weight_zero_point``, ``weight_shape``) hold no parameters: their bytes count,
their elements do not. What transformers does with each format on each device is
:mod:`planner.runtimes.transformers.quantizers`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from planner.core.errors import BadConfig, UnsupportedModel
from planner.core.records import Tensor, _ToDict
from planner.core.units import DTYPE_BITS

# Leaf names of the tensors that carry scales, zeros, indices or bookkeeping, per method.
_AUX: dict[str, frozenset[str]] = {
    "gptq": frozenset({"qzeros", "scales", "g_idx"}),
    "awq": frozenset({"qzeros", "scales"}),
    # bnb 4-bit: "<module>.weight.absmax", ".quant_map", ".nested_absmax", ".nested_quant_map",
    # ".quant_state.bitsandbytes__nf4" (Params4bit/QuantState.as_dict(packed=True)); 8-bit: ".SCB",
    # ".weight_format" (Linear8bitLt._save_to_state_dict). Verified by saving a tiny model on CPU.
    "bitsandbytes": frozenset({"SCB", "weight_format", "absmax", "quant_map", "nested_absmax", "nested_quant_map",
                               "offset", "nested_offset"}),
    "fp8": frozenset({"weight_scale_inv", "weight_scale", "input_scale", "activation_scale"}),
    "fbgemm_fp8": frozenset({"weight_scale", "input_scale", "activation_scale_ub"}),
    "compressed-tensors": frozenset({"weight_scale", "weight_zero_point", "weight_shape", "weight_g_idx", "input_scale",
                                     "weight_global_scale", "input_global_scale", "input_zero_point", "output_scale"}),
}


@dataclass(frozen=True, slots=True)
class PreQuant(_ToDict):
    """How a checkpoint is quantized.

    Attributes:
        method: quant_method from the config ("gptq", "awq", "bitsandbytes", "fp8", "fbgemm_fp8",
            "mxfp4", "compressed-tensors").
        bits: weight bits (4, 8; 4 for MXFP4 and NF4).
        detail: one line for people ("GPTQ 4-bit, group 128").
        variant: a sub-format the device rules distinguish: "fp8" for a compressed-tensors
            checkpoint whose every quantized group is 8-bit float, else "".
        pack_bits: bits of one value inside a packed integer word (``weight_packed``/``qweight``).
        config: the quantization_config as given (transformers reads it from the repo).
    """

    method: str
    bits: int
    detail: str
    config: dict[str, Any]
    variant: str = ""
    pack_bits: int = 4

    def packed_modules(self, names: Iterable[str]) -> frozenset[str]:
        """Weights that a bnb 4-bit checkpoint stores packed: those with a ``quant_state`` beside them.

        bnb's packed storage dtype is configurable (``bnb_4bit_quant_storage``: uint8 by default,
        bf16 possible), so the dtype alone cannot tell a packed weight from a plain one (lm_head).
        """
        if self.method != "bitsandbytes":
            return frozenset()
        return frozenset(n.split(".quant_state.", 1)[0] for n in names if ".quant_state." in n)

    def classify(self, t: Tensor, name: str, packed: frozenset[str] = frozenset()) -> tuple[str, int, int] | None:
        """(role, true parameters, rows) for a tensor this format packs or annotates; None for plain tensors.

        Args:
            t: the tensor as stored.
            name: its (renamed) name.
            packed: names of weights known to be packed (see :meth:`packed_modules`).
        """
        leaf = name.rsplit(".", 1)[-1]
        m = self.method
        bits = DTYPE_BITS.get(t.dtype, 0)
        if leaf in _AUX.get(m, ()) or (m == "bitsandbytes" and ".quant_state." in name):
            return "qaux", 0, 0
        if m in ("gptq", "awq"):
            if leaf == "qweight":
                return "packed", t.numel * bits // self.bits, 0
        elif m == "bitsandbytes":
            if self.bits == 4 and leaf == "weight" and (name in packed or t.dtype == "U8"):
                return "packed", t.numel * bits // 4, 0
            if self.bits == 8 and t.dtype == "I8" and leaf == "weight":
                return "packed", t.numel, 0
        elif m in ("fp8", "fbgemm_fp8"):
            if t.dtype.startswith("F8") and leaf == "weight":
                return "packed", t.numel, 0
        elif m == "mxfp4":
            if leaf.endswith("_blocks"):
                return "packed", t.numel * 2, 0  # fp4 e2m1: two values per byte
            if leaf.endswith("_scales"):
                return "qaux", 0, 0  # one e8m0 exponent per 32 values
        elif m == "compressed-tensors":
            if leaf == "weight_packed":
                return "packed", t.numel * bits // self.pack_bits, 0
            if leaf == "weight" and (t.dtype.startswith("F8") or t.dtype == "I8"):
                return "packed", t.numel, 0
        return None


# quant_method -> default weight bits. The packages each needs depend on what transformers does
# on the device: see planner.runtimes.transformers.quantizers.
_METHODS: dict[str, int] = {
    "gptq": 4,
    "awq": 4,
    "bitsandbytes": 4,
    "fp8": 8,
    "fbgemm_fp8": 8,
    "mxfp4": 4,
    "compressed-tensors": 4,
}


def detect(config: Mapping[str, Any] | None, *, where: str) -> PreQuant | None:
    """Read a config's ``quantization_config``; None when the checkpoint is not pre-quantized."""
    if config is None:
        return None
    method = config.get("quant_method")
    if method is None and ("load_in_4bit" in config or "load_in_8bit" in config):
        method = "bitsandbytes"
    if not isinstance(method, str):
        raise BadConfig(f"{where}: quantization_config has no 'quant_method'")
    method = method.lower()
    if method not in _METHODS:
        raise UnsupportedModel(
            f"{where}: quantization method {method[:40]!r} is not one fitcheck can size",
            hint="supported pre-quantized formats: " + ", ".join(sorted(_METHODS)),
        )
    bits = _METHODS[method]
    variant = ""
    pack_bits = 4
    if method == "bitsandbytes":
        bits = 8 if config.get("load_in_8bit") else 4
        detail = "bitsandbytes int8" if bits == 8 else f"bitsandbytes {str(config.get('bnb_4bit_quant_type', 'nf4'))[:8]}"
    elif method in ("gptq", "awq"):
        bits = _bits(config.get("bits", config.get("w_bit", bits)), where)
        pack_bits = bits
        group = config.get("group_size", config.get("q_group_size"))
        detail = f"{method.upper()} {bits}-bit" + (f", group {group}" if isinstance(group, int) and not isinstance(group, bool) else "")
    elif method in ("fp8", "fbgemm_fp8"):
        block: Any = config.get("weight_block_size")  # checked just below
        blocked = isinstance(block, (list, tuple)) and len(block) == 2 and all(isinstance(b, int) for b in block)
        detail = "FP8 e4m3" + (f", {block[0]}x{block[1]} block scales" if blocked else ", per-tensor or per-channel scales")
    elif method == "mxfp4":
        detail = "MXFP4 (fp4 e2m1, one e8m0 scale per 32 values)"
    else:
        bits, pack_bits, floats, fmt = _ct_groups(config)
        variant = "fp8" if floats and bits == 8 else ""
        detail = f"compressed-tensors {fmt} {bits}-bit".replace("  ", " ")
    return PreQuant(method=method, bits=bits, detail=detail, config=dict(config), variant=variant, pack_bits=pack_bits)


def dequantize_blockers(quant: PreQuant | None, tensors: Iterable[Tensor]) -> tuple[str, ...]:
    """Block-scaled FP8 weights that transformers 5.24 cannot dequantize.

    ``Fp8Dequantize`` derives the block from the scale grid and refuses a weight whose rows or
    columns do not divide evenly by it (integrations/finegrained_fp8.py:1149-1152), which is every
    weight with a dimension that is not a multiple of the 128 block: DeepSeek-V3's
    ``kv_a_proj_with_mqa`` [576, 7168] has a [5, 56] grid. Verified on CPU with a [320, 256]
    weight (tests/test_formats.py). Such a checkpoint loads only where FP8 runs as stored.
    """
    if quant is None or quant.method != "fp8":
        return ()
    tensors = list(tensors)
    scales = [t for t in tensors if t.name.endswith(".weight_scale_inv") and len(t.shape) == 2]
    if not scales:
        return ()
    shapes = dict(zip(map(itemgetter(0), tensors), map(itemgetter(2), tensors), strict=True))  # name -> shape, in C
    out = []
    for t in scales:
        weight = shapes.get(t.name[: -len("_scale_inv")])
        if weight is None or len(weight) != 2:
            continue
        if weight[0] % t.shape[0] or weight[1] % t.shape[1]:
            out.append(f"{t.name[: -len('_scale_inv')][:120]} {list(weight)} with a {list(t.shape)} scale grid does not divide evenly")
    return tuple(out)


def _bits(value: Any, where: str) -> int:
    if value not in (2, 3, 4, 8) or isinstance(value, bool):
        raise BadConfig(f"{where}: quantization_config 'bits' = {str(value)[:20]!r} is not 2, 3, 4 or 8")
    if value == 3:
        raise UnsupportedModel(f"{where}: 3-bit packing is not sized by fitcheck")
    return int(value)


def _ct_groups(config: Mapping[str, Any]) -> tuple[int, int, bool, str]:
    """(lowest weight bits, bits of the packed integer groups, every group is float, format) of a
    compressed-tensors config. Mixed configs (FP8 attention + INT4 experts) pack only the int groups."""
    groups = config.get("config_groups") or {}
    bits: list[int] = []
    int_bits: list[int] = []
    all_float = True
    for group in groups.values() if isinstance(groups, Mapping) else ():
        weights = group.get("weights") if isinstance(group, Mapping) else None
        if not isinstance(weights, Mapping):
            continue
        n = weights.get("num_bits")
        if not isinstance(n, int) or isinstance(n, bool) or n not in (4, 8):
            continue
        bits.append(n)
        if weights.get("type") == "float":
            continue
        all_float = False
        int_bits.append(n)
    fmt = f if isinstance(f := config.get("format"), str) else ""
    return (min(bits) if bits else 4), (min(int_bits) if int_bits else 4), bool(bits) and all_float, fmt[:40]
