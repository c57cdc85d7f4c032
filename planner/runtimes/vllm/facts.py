"""What vLLM needs to know about a checkpoint: the shared serving facts (planner.model.serving:
its architecture and its weight bytes by how tensor parallelism shards them), and the
pre-quantized formats vLLM 0.34 loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from planner.core.records import Snapshot
from planner.model.serving import LayerBytes, ServingModel, build

__all__ = ["FACTS_VERSION", "MIN_CAPABILITY", "VLLM_PREQUANT", "LayerBytes", "VllmModel", "facts"]

FACTS_VERSION = "vllm-4"  # 4: sliding_layer_ids

# Pre-quantized formats vLLM 0.34 loads (model_executor/layers/quantization/__init__.py:15-51,
# QuantizationMethods); bitsandbytes and GGUF are not among them (removed in 0.33), so such a
# checkpoint is refused rather than planned.
VLLM_PREQUANT = frozenset({"awq", "gptq", "fp8", "fbgemm_fp8", "compressed-tensors", "mxfp4", "modelopt", "modelopt_fp4"})
# Minimum compute capability per format, from each config's get_min_capability(): fp8.py:144
# returns 75 (Marlin weight-only below 8.9); mxfp4.py:73 returns 80. The others are taken as 7.5
# (Turing), the oldest card fitcheck's profiles hold.
MIN_CAPABILITY = {"fp8": (7, 5), "fbgemm_fp8": (7, 5), "mxfp4": (8, 0), "modelopt": (8, 9), "modelopt_fp4": (10, 0),
                  "awq": (7, 5), "gptq": (7, 5), "compressed-tensors": (7, 5)}

#: the vLLM runtime's model facts are the shared serving facts
VllmModel = ServingModel


def facts(snapshot: Snapshot, cached: Mapping[str, Any] | None = None) -> ServingModel:
    """The facts of ``snapshot`` (or rebuilt from ``cached``, an earlier ``to_dict()``).

    Raises:
        BadConfig, UnsupportedModel: a config vLLM cannot serve or fitcheck cannot size.
    """
    return build(snapshot, cached, engine="vLLM 0.34", loads=VLLM_PREQUANT,
                 refused_hint="vLLM removed bitsandbytes and GGUF; use an AWQ, GPTQ, FP8 or unquantized checkpoint")
