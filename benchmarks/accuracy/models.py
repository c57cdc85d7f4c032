"""The benchmark's models: small, with real (random) weights, built once and kept in the work folder.

Each is big enough that weights, KV cache and activations, not the fixed ~0.4 GiB of a torch
process, decide the peak (155-215 M parameters, 0.3-0.45 GB in bf16), and small enough that a
prefill of 8k tokens takes tens of seconds on two cores. One full-size model (Llama-3.2-1B's
config) checks how the fitted coefficients carry over to a real model. Every width is a multiple of 64: bnb's
CPU 4-bit kernel needs output sizes divisible by 32 and repacks in blocks of 64.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ModelSpec:
    """One benchmark model: the transformers model_type and its config."""

    name: str
    arch: str
    what: str
    config: dict[str, Any]

    @property
    def key(self) -> str:
        """A short hash of the spec: a changed spec builds a new folder."""
        raw = json.dumps([self.arch, self.config], sort_keys=True).encode()
        return hashlib.sha1(raw).hexdigest()[:8]


_COMMON = {"max_position_embeddings": 32768, "vocab_size": 32000}
# The architecture fields of published configs (tests/data), for full-size models.
_ARCH_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "head_dim", "vocab_size", "max_position_embeddings", "tie_word_embeddings", "rope_scaling", "rope_theta",
                "rms_norm_eps", "sliding_window", "use_sliding_window", "max_window_layers")


def _published(file: str) -> dict[str, Any]:
    doc = json.loads((ROOT / "tests" / "data" / file).read_text())
    return {k: doc[k] for k in _ARCH_FIELDS if k in doc}


MODELS: dict[str, ModelSpec] = {m.name: m for m in (
    # Llama with grouped-query attention (16 query heads, 4 KV heads), untied head: 155 M.
    ModelSpec("llama-gqa", "llama", "dense, GQA 16/4, untied",
              {**_COMMON, "hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 8,
               "num_attention_heads": 16, "num_key_value_heads": 4}),
    # Gemma 3 text: tied embeddings over a 64k vocabulary (the embedding is 40 % of the weights),
    # 5 sliding (window 512) : 1 global layers, q/k norms: 167 M.
    ModelSpec("gemma3-tied", "gemma3_text", "tied embeddings, 5:1 sliding/global (window 512)",
              {**_COMMON, "vocab_size": 65536, "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 8,
               "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 128, "sliding_window": 512,
               "tie_word_embeddings": True}),
    # Mistral: every layer slides, window 1024 (smaller than the 2k-8k contexts), GQA 16/8: 178 M.
    ModelSpec("mistral-swa", "mistral", "sliding window 1024 on every layer, GQA 16/8",
              {**_COMMON, "hidden_size": 1024, "intermediate_size": 3584, "num_hidden_layers": 8,
               "num_attention_heads": 16, "num_key_value_heads": 8, "sliding_window": 1024}),
    # Mixtral: 8 experts, top-2; transformers 5 fuses the experts at load; bnb leaves them alone: 212 M.
    ModelSpec("mixtral-moe", "mixtral", "MoE 8 experts top-2 (fused at load, not quantized by bnb)",
              {**_COMMON, "hidden_size": 768, "intermediate_size": 1024, "num_hidden_layers": 8,
               "num_attention_heads": 12, "num_key_value_heads": 4, "num_local_experts": 8,
               "num_experts_per_tok": 2}),
    # Full size: Llama-3.2-1B's published config (1.24 B, 2.5 GB in bf16, tied 128k-token
    # embedding), to see how coefficients fitted on the small models carry to a real model.
    ModelSpec("llama-3.2-1b", "llama", "meta-llama/Llama-3.2-1B's config, full size",
              _published("meta-llama__Llama-3.2-1B.config.json")),
    # Full size, 7B: Mistral-7B-v0.1's published config (7.24 B, 14.5 GB in bf16), run only at short
    # contexts (a 7B prefill on two cores takes minutes), and never used to fit a constant.
    ModelSpec("mistral-7b", "mistral", "mistralai/Mistral-7B-v0.1's config, full size",
              _published("mistralai__Mistral-7B-v0.1.config.json")),
    # Qwen2.5-7B's layers (its tensor shapes: 128k-row embedding and head, MLP weights whose packed
    # 4-bit form is just over glibc's 32 MiB threshold), 14 of its 28 layers to stay within this
    # machine's RAM in nf4: 4.3 B. Held out: run after the heap constants were fitted.
    ModelSpec("qwen2.5-7b-half", "qwen2", "Qwen/Qwen2.5-7B-Instruct's config, 14 of 28 layers",
              {**_published("Qwen__Qwen2.5-7B-Instruct.config.json"), "num_hidden_layers": 14, "max_window_layers": 14}),
)}


def build(spec: ModelSpec, root: Path) -> Path:
    """The folder of ``spec`` under ``root``, built (bf16 safetensors + tokenizer) if missing."""
    folder = root / f"{spec.name}-{spec.key}"
    if (folder / "config.json").exists() and (folder / ".complete").exists():
        return folder
    sys.path.insert(0, str(ROOT / "tests"))
    from fixtures_models import make_tiny_model  # noqa: PLC0415 - tests/ holds the model builder

    tmp = root / f".building-{spec.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    built = make_tiny_model(tmp, spec.arch, "bfloat16", **spec.config)
    shutil.rmtree(folder, ignore_errors=True)
    built.rename(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    (folder / ".complete").write_text(json.dumps({"arch": spec.arch, "config": spec.config}, indent=1))
    return folder
