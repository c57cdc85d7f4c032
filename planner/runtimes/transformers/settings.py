"""The transformers runtime's settings record: how one plan loads with from_pretrained."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from planner.core.records import Settings, _ToDict
from planner.core.units import LOAD_DTYPE_BYTES

_SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
# The quantizations this runtime plans: bnb LLM.int8, bnb 4-bit NF4, or none.
QUANTS = ("none", "int8", "nf4")


@dataclass(frozen=True, slots=True)
class Scheme(_ToDict):
    """How weights are loaded.

    Attributes:
        dtype: the ``dtype`` passed to from_pretrained ("float32", "bfloat16", "float16"); for
            bnb, also the compute dtype and the dtype of the modules bnb leaves alone.
        quantization: "none", "int8" (bnb LLM.int8), "nf4" (bnb 4-bit NF4 with double
            quantization) or "prequantized" (the checkpoint's own format).
    """

    dtype: str
    quantization: str = "none"

    @property
    def dtype_bytes(self) -> int:
        return LOAD_DTYPE_BYTES[self.dtype]

    @property
    def bnb(self) -> bool:
        return self.quantization in ("int8", "nf4")

    @property
    def label(self) -> str:
        if self.quantization == "none":
            return _SHORT[self.dtype]
        if self.quantization == "prequantized":
            return f"as stored + {_SHORT[self.dtype]}"
        return f"{self.quantization} + {_SHORT[self.dtype]}"


@dataclass(frozen=True, slots=True)
class TransformersSettings(Settings):
    """One transformers + accelerate (+ bitsandbytes) load.

    Attributes:
        scheme: dtype and quantization.
        placement: "gpu", "gpu+cpu", "gpu+cpu+disk", "cpu", "cpu+disk", "mps".
        strategy: "single", "sequential" or "balanced" (how units are spread over several GPUs).
        device_map: unit (module name) -> device ("cuda:0" as 0, "cpu", "disk", "mps"), as
            accelerate takes it.
    """

    scheme: Scheme
    placement: str
    strategy: str
    device_map: dict[str, Any]

    @property
    def label(self) -> str:
        where = self.placement if self.strategy in ("single", "") else f"{self.placement} ({self.strategy})"
        return f"{self.scheme.label} on {where}"

    def to_dict(self) -> dict[str, Any]:
        """The plan's JSON entries of this runtime (the report adds its ``load`` block)."""
        return {"dtype": self.scheme.dtype, "quantization": self.scheme.quantization, "placement": self.placement,
                "strategy": self.strategy, "device_map": self.device_map}
