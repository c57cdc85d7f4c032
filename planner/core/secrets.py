"""Keeping tokens out of everything fitcheck says or writes.

Tokens come from ``--token``, ``HF_TOKEN`` or the huggingface_hub login file. fitcheck passes them
to huggingface_hub and nowhere else. As a second line of defence every error message, hint, JSON
document and plan file goes through :func:`redact`, which removes every token it has been told
about (:func:`register`), the current ``HF_TOKEN`` (and its legacy name ``HUGGING_FACE_HUB_TOKEN``),
the token in the huggingface_hub login file, and anything shaped like a Hub token.
"""

from __future__ import annotations

import os
import re
import threading

# Hub user access tokens are "hf_" followed by 34 letters (https://huggingface.co/docs/hub/security-tokens);
# anything "hf_" + 20 or more word characters is treated as one, to err on the side of hiding.
_TOKEN_SHAPE = re.compile(r"hf_[A-Za-z0-9]{20,}")
_MASK = "hf_***"

# The login file is a token, not a document: read at most this much of it.
_MAX_TOKEN_FILE_BYTES = 4096

_known: set[str] = set()
_lock = threading.Lock()
_file_cache: dict[tuple[str, int, int], str | None] = {}


def register(token: str | None) -> None:
    """Remember a token so that :func:`redact` removes it wherever it appears."""
    if token and len(token) >= 4:
        with _lock:
            _known.add(token)


def redact(text: str) -> str:
    """Return ``text`` with every known or token-shaped secret replaced by a mask."""
    if not text:
        return text
    for secret in _secrets():
        text = text.replace(secret, _MASK)
    return _TOKEN_SHAPE.sub(_MASK, text)


def contains_known(text: str) -> bool:
    """Whether ``text`` holds a token fitcheck knows (registered, HF_TOKEN, the login file).

    Generated code and plan files are checked with this instead of being redacted: masking a
    token-shaped module name would change what the script loads, so fitcheck refuses to write a
    file holding a real token rather than editing it."""
    return bool(text) and any(secret in text for secret in _secrets())


def _secrets() -> list[str]:
    found = set(_known)
    for candidate in (os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN"), _login_token()):
        if candidate and len(candidate) >= 4:
            found.add(candidate)
    return sorted(found, key=len, reverse=True)


def _login_token() -> str | None:
    """The token ``hf auth login`` saved, found as huggingface_hub finds it (constants.py:
    ``HF_TOKEN_PATH``, else ``$HF_HOME/token`` with ``HF_HOME`` defaulting to
    ``$XDG_CACHE_HOME/huggingface``), so that it is hidden even when it is not ``hf_``-shaped and no
    request has sent it yet. Cached per file version: ``redact`` runs on every string of a report."""
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    path = os.environ.get("HF_TOKEN_PATH") or os.path.join(os.path.expandvars(os.path.expanduser(home)), "token")
    path = os.path.expandvars(os.path.expanduser(path))
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    key = (path, st.st_mtime_ns, st.st_size)
    with _lock:
        if key in _file_cache:
            return _file_cache[key]
    try:
        with open(path, "rb") as fh:
            value = fh.read(_MAX_TOKEN_FILE_BYTES).decode("utf-8", "replace").strip() or None
    except OSError:
        value = None
    with _lock:
        _file_cache.clear()
        _file_cache[key] = value
    return value
