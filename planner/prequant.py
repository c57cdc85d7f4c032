"""Pre-quantized checkpoints: what is stored, how many parameters it really holds.

A checkpoint with ``quantization_config`` in config.json stores packed weights plus their scales,
zeros and indices. Element counts of packed tensors are not parameter counts (llmfit and the Hub
API both make that mistake); each method's packing factor below says how many parameters one
stored element holds, from the format's reference implementation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from planner.errors import BadConfig, UnsupportedModel
from planner.records import Tensor, _ToDict


@dataclass(frozen=True, slots=True)
class PreQuant(_ToDict):
    """How a checkpoint is quantized.

    Attributes:
        method: quant_method from the config ("gptq", "awq", "bitsandbytes", "fp8", "mxfp4",
            "compressed-tensors").
        bits: weight bits (4, 8; 4 for MXFP4 and NF4).
        detail: one line for people ("GPTQ 4-bit, group 128").
        package: the extra pip package transformers needs to load it, if any.
        config: the quantization_config as given (emitted unchanged; transformers reads it from the repo).
    """

    method: str
    bits: int
    detail: str
    package: str | None
    config: dict[str, Any]

    def classify(self, t: Tensor, name: str) -> tuple[str, int, int] | None:
        """(role, true parameters, rows) for a tensor this format packs, or None for plain tensors."""
        leaf = name.rsplit(".", 1)[-1]
        m = self.method
        if m in ("gptq", "awq"):
            if leaf == "qweight":
                return "packed", t.numel * (32 // self.bits), 0
            if leaf in ("qzeros", "scales", "g_idx"):
                return "qaux", 0, 0
        elif m == "bitsandbytes":
            if t.dtype == "U8" and leaf == "weight" and self.bits == 4:
                return "packed", t.numel * 2, 0  # two 4-bit values per byte (bnb Params4bit)
            if t.dtype == "I8" and leaf == "weight":
                return "packed", t.numel, 0
            if leaf in ("SCB", "weight_format", "absmax", "quant_map", "nested_absmax", "nested_quant_map") or ".quant_state." in name or leaf.startswith("quant_state"):
                return "qaux", 0, 0
        elif m in ("fp8", "fbgemm_fp8"):
            if t.dtype.startswith("F8") and leaf == "weight":
                return "packed", t.numel, 0
            if leaf in ("weight_scale_inv", "weight_scale", "input_scale", "activation_scale_ub"):
                return "qaux", 0, 0
        elif m == "mxfp4":
            if leaf.endswith("_blocks"):
                return "packed", t.numel * 2, 0  # fp4 e2m1: two values per byte
            if leaf.endswith("_scales"):
                return "qaux", 0, 0
        elif m == "compressed-tensors":
            if leaf == "weight_packed":
                return "packed", t.numel * (32 // self.bits), 0
            if t.dtype.startswith("F8") and leaf == "weight":
                return "packed", t.numel, 0
            if leaf in ("weight_scale", "weight_zero_point", "weight_shape", "weight_g_idx", "input_scale", "weight_global_scale", "input_global_scale"):
                return "qaux", 0, 0
        return None


# quant_method -> (default bits, pip package transformers needs, from transformers/quantizers/auto.py
# and each quantizer's validate_environment).
_METHODS: dict[str, tuple[int, str | None]] = {
    "gptq": (4, "gptqmodel"),
    "awq": (4, "autoawq"),
    "bitsandbytes": (4, "bitsandbytes"),
    "fp8": (8, None),
    "fbgemm_fp8": (8, "fbgemm-gpu"),
    "mxfp4": (4, "kernels"),
    "compressed-tensors": (4, "compressed-tensors"),
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
            f"{where}: quantization method {method!r} is not one fitcheck can size",
            hint="supported pre-quantized formats: " + ", ".join(sorted(_METHODS)),
        )
    bits, package = _METHODS[method]
    if method == "bitsandbytes":
        bits = 8 if config.get("load_in_8bit") else 4
        detail = "bitsandbytes int8" if bits == 8 else f"bitsandbytes {config.get('bnb_4bit_quant_type', 'nf4')}"
    elif method in ("gptq", "awq"):
        bits = _bits(config.get("bits", config.get("w_bit", bits)), where)
        group = config.get("group_size", config.get("q_group_size"))
        detail = f"{method.upper()} {bits}-bit" + (f", group {group}" if group else "")
    elif method in ("fp8", "fbgemm_fp8"):
        block = config.get("weight_block_size")
        detail = "FP8 e4m3" + (f", {block[0]}x{block[1]} block scales" if isinstance(block, list) and len(block) == 2 else ", per-tensor scales")
    elif method == "mxfp4":
        detail = "MXFP4 (fp4 e2m1 with e8m0 scales per 32)"
    else:
        bits = _ct_bits(config)
        detail = f"compressed-tensors {config.get('format', '')} {bits}-bit".replace("  ", " ")
    return PreQuant(method=method, bits=bits, detail=detail, package=package, config=dict(config))


def _bits(value: Any, where: str) -> int:
    if value not in (2, 3, 4, 8):
        raise BadConfig(f"{where}: quantization_config 'bits' = {str(value)[:20]!r} is not 2, 3, 4 or 8")
    if value == 3:
        raise UnsupportedModel(f"{where}: 3-bit packing is not sized by fitcheck")
    return int(value)


def _ct_bits(config: Mapping[str, Any]) -> int:
    groups = config.get("config_groups") or {}
    for group in groups.values() if isinstance(groups, Mapping) else ():
        weights = group.get("weights") if isinstance(group, Mapping) else None
        if isinstance(weights, Mapping) and isinstance(weights.get("num_bits"), int) and weights["num_bits"] in (4, 8):
            return int(weights["num_bits"])
    return 4
