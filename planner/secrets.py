"""Keeping tokens out of everything fitcheck says or writes.

Tokens come from ``--token``, ``HF_TOKEN`` or the huggingface_hub login file. fitcheck passes them
to huggingface_hub and nowhere else. As a second line of defence every error message, hint, JSON
document and plan file goes through :func:`redact`, which removes every token it has been told
about (:func:`register`), the current ``HF_TOKEN``, and anything shaped like a Hub token.
"""

from __future__ import annotations

import os
import re
import threading

# Hub user access tokens are "hf_" followed by 34 letters (https://huggingface.co/docs/hub/security-tokens);
# anything "hf_" + 20 or more word characters is treated as one, to err on the side of hiding.
_TOKEN_SHAPE = re.compile(r"hf_[A-Za-z0-9]{20,}")
_MASK = "hf_***"

_known: set[str] = set()
_lock = threading.Lock()


def register(token: str | None) -> None:
    """Remember a token so that :func:`redact` removes it wherever it appears."""
    if token and len(token) >= 4:
        with _lock:
            _known.add(token)


def redact(text: str) -> str:
    """Return ``text`` with every known or token-shaped secret replaced by a mask."""
    if not text:
        return text
    secrets = set(_known)
    env = os.environ.get("HF_TOKEN")
    if env and len(env) >= 4:
        secrets.add(env)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, _MASK)
    return _TOKEN_SHAPE.sub(_MASK, text)
