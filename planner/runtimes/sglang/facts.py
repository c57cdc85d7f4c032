"""What SGLang needs to know about a checkpoint: the shared serving facts (planner.model.serving;
SGLang's parallel layers shard a decoder as vLLM's do) and the pre-quantized formats SGLang 0.5.23
loads, with the compute capability each needs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from planner.core.records import Snapshot
from planner.model.serving import ServingModel, build

FACTS_VERSION = "sglang-1"

# Pre-quantized formats of SGLang 0.5.23 that fitcheck sizes (sglang/srt/layers/quantization/
# __init__.py:63-158, BASE_QUANTIZATION_METHODS, which also has "bitsandbytes" and "gguf": their
# tensor-parallel loading is not modelled here, so they are refused).
SGLANG_PREQUANT = frozenset({"awq", "gptq", "fp8", "compressed-tensors", "mxfp4", "modelopt", "modelopt_fp4"})
# Minimum compute capability per format, from each config's get_min_capability() in 0.5.23:
# fp8.py:339 (80), awq/awq.py:308 (80), gptq/gptq.py:140 (60), mxfp4.py:339 (80),
# modelopt_quant.py:463 (89, FP8) and :1550 (80, FP4), compressed_tensors/compressed_tensors.py:161 (70).
MIN_CAPABILITY: dict[str, tuple[int, int]] = {"fp8": (8, 0), "awq": (8, 0), "gptq": (6, 0), "mxfp4": (8, 0),
                                              "modelopt": (8, 9), "modelopt_fp4": (8, 0), "compressed-tensors": (7, 0)}


def facts(snapshot: Snapshot, cached: Mapping[str, Any] | None = None) -> ServingModel:
    """The facts of ``snapshot`` (or rebuilt from ``cached``, an earlier ``to_dict()``).

    Raises:
        BadConfig, UnsupportedModel: a config SGLang cannot serve or fitcheck cannot size.
    """
    return build(snapshot, cached, engine="SGLang 0.5.23", loads=SGLANG_PREQUANT,
                 refused="fitcheck does not plan {detail} checkpoints on {engine}",
                 refused_hint="fitcheck plans AWQ, GPTQ, FP8, compressed-tensors, MXFP4, ModelOpt and unquantized checkpoints on SGLang")
