"""Checkpoint tensor names -> the module names of the model transformers builds.

transformers 5 renames some checkpoints' keys at load time (``conversion_mapping.py``,
``_checkpoint_conversion_mapping``): a device_map must use the model's names, so fitcheck
applies the same renames for the families it supports. Each rule cites the mapping it mirrors;
``tests/test_placement_vs_accelerate.py`` checks the result against meta-device models.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from planner.model.arch import Arch

# transformers/conversion_mapping.py, "llava" (also used by gemma3, mistral3, paligemma, aya_vision,
# internvl, got_ocr2, vipllava) and "llava_next": the language model moves under
# model.language_model, the tower and projector under model. CLIP and SigLIP towers also lose their
# "vision_model." level (conversion_mapping.py:971, PrefixChange(prefix_to_remove="vision_model")
# scoped to the CLIPVisionModel sub-model): Hub files name them vision_tower.vision_model.*, the
# checkpoints transformers 4.52-4.57 saved model.vision_tower.vision_model.*, transformers 5 saves
# vision_tower.*; all three load as model.vision_tower.* (checked on meta models in
# tests/test_multimodal.py).
_LLAVA = (
    (r"^language_model\.lm_head\.", "lm_head."),
    (r"^language_model\.model\.", "model.language_model."),
    (r"^language_model\.", "model.language_model."),
    (r"^vision_tower\.vision_model\.", "model.vision_tower."),
    (r"^vision_tower\.", "model.vision_tower."),
    (r"^model\.vision_tower\.vision_model\.", "model.vision_tower."),
    (r"^multi_modal_projector\.", "model.multi_modal_projector."),
    (r"^image_newline$", "model.image_newline"),
)
# transformers/models/qwen2_vl/modeling_qwen2_vl.py, _checkpoint_conversion_mapping: the text model
# moves under model.language_model and the vision tower "visual" under model.
_QWEN_VL = (
    (r"^model\.(?!language_model\.|visual\.)", "model.language_model."),
    (r"^visual\.", "model.visual."),
)
# transformers/conversion_mapping.py, "mixtral": block_sparse_moe becomes mlp.
_MIXTRAL = ((r"\.block_sparse_moe\.", ".mlp."),)

_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "llava": _LLAVA,
    "gemma3": _LLAVA,
    "mistral3": _LLAVA,
    "paligemma": _LLAVA,
    "aya_vision": _LLAVA,
    "llava_next": _LLAVA,
    "qwen2_vl": _QWEN_VL,
    "qwen2_5_vl": _QWEN_VL,
    "mixtral": _MIXTRAL,
}


def renamer(arch: Arch) -> Callable[[str], str]:
    """A function mapping a checkpoint tensor name to the loaded model's parameter name."""
    rules = _RULES.get(arch.outer_model_type) or _RULES.get(arch.model_type) or ()
    if not rules:
        return identity
    compiled = [(re.compile(p), r) for p, r in rules]

    def rename(name: str) -> str:
        for pattern, repl in compiled:
            new, n = pattern.subn(repl, name, count=1)
            if n:
                return new
        return name

    return rename


def head_name(arch: Arch, embed_unit: str) -> str:
    """The LM head's module name for a model whose head is tied to ``embed_unit``."""
    return "lm_head"


def identity(name: str) -> str:
    """The renamer of models whose checkpoint names are the loaded model's names."""
    return name
