"""Folders fitcheck reads or writes, resolved from the environment at call time."""

from __future__ import annotations

import os
from pathlib import Path


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder, resolved as huggingface_hub does, without importing it.

    Order (huggingface_hub ``constants.py``): ``HF_HUB_CACHE``, then the legacy
    ``HUGGINGFACE_HUB_CACHE``, then ``$HF_HOME/hub``, where ``HF_HOME`` defaults to
    ``$XDG_CACHE_HOME/huggingface`` and ``XDG_CACHE_HOME`` to ``~/.cache``. ``~`` and
    ``$VARS`` are expanded as huggingface_hub expands them.
    """
    env = os.environ

    def expand(p: str) -> str:
        return os.path.expandvars(os.path.expanduser(p))

    default_home = os.path.join(os.path.expanduser("~"), ".cache")
    hf_home = expand(env.get("HF_HOME", os.path.join(env.get("XDG_CACHE_HOME", default_home), "huggingface")))
    legacy = env.get("HUGGINGFACE_HUB_CACHE", os.path.join(hf_home, "hub"))
    return Path(expand(env.get("HF_HUB_CACHE", legacy)))
