"""Validation of the names that reach URLs, paths and emitted code: repo ids, revisions, file paths.

Rules follow the Hub's own (huggingface_hub ``validate_repo_id``: letters, digits, ``-``, ``_``,
``.``, at most 96 characters, no ``--`` or ``..``), tightened where a name would otherwise reach
the filesystem: no ``..`` component, no absolute path, no backslash, no control character.
"""

from __future__ import annotations

import re

from planner.core.errors import BadHeader, UsageError

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?\Z")
# Git ref names (git check-ref-format): no "..", no control characters, spaces or ~^:?*[\ ; a
# 40-hex commit sha is also a revision.
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/+-]{0,254}\Z")
_REPO_PATH = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9._/+-]{0,499}\Z")
COMMIT = re.compile(r"^[0-9a-f]{40}\Z")
# The patterns end in \Z, not $: "$" also matches before a final newline, which would let
# "main\n" through as a revision and "org/m\n" as a repo id.


def repo_id(value: str) -> str:
    """Return ``value`` if it is a valid Hub repo id, else raise UsageError."""
    if not isinstance(value, str) or not _REPO_ID.match(value) or "--" in value or ".." in value or value.endswith((".git", ".")):
        raise UsageError(
            f"{_show(value)} is not a Hub repo id or an existing local folder",
            hint="a repo id looks like org/name (letters, digits, '-', '_', '.'); a local model is a folder with config.json",
        )
    return value


def revision(value: str | None) -> str | None:
    """Return ``value`` if it is a plausible branch, tag or commit, else raise UsageError."""
    if value is None:
        return None
    if not isinstance(value, str) or not _REVISION.match(value) or ".." in value or "//" in value or value.endswith(("/", ".lock")):
        raise UsageError(f"revision {_show(value)} is not a valid branch, tag or commit", hint="e.g. main, v1.0, refs/pr/3, or a 40-hex commit sha")
    return value


def repo_path(value: str, *, where: str) -> str:
    """Return ``value`` if it is a safe relative path inside a repo (shard names from an index)."""
    if not isinstance(value, str) or not _REPO_PATH.match(value) or any(p in ("", ".", "..") for p in value.split("/")):
        raise BadHeader(f"{where}: names the file {_show(value)}, which is not a plain path inside the repo")
    return value


def show(value: object) -> str:
    """``repr(value)`` cut to 80 characters: how a name from outside is quoted in a message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "...'"


_show = show


# Hosts whose URLs name a model repo: the Hub and its short domain (huggingface.co/docs/hub
# "Repository URLs": https://huggingface.co/<org>/<name>[/tree|blob|resolve/<revision>/...]).
HUB_HOSTS = frozenset({"huggingface.co", "www.huggingface.co", "hf.co"})
# The path parts after a repo id that carry a revision next (the Hub's own routes).
_REV_ROUTES = frozenset({"tree", "blob", "resolve", "commit"})
# First path parts that are not a model's org (the Hub's other repo kinds and pages).
_NOT_MODELS = frozenset({"datasets", "spaces", "docs", "models", "collections", "papers", "settings", "organizations"})


def model_ref(value: str, *, hosts: frozenset[str] | set[str] = frozenset()) -> tuple[str, str | None]:
    """A model reference as people paste it -> (repo id or path, revision named in it or None).

    Accepts a Hub URL (``https://huggingface.co/org/name``, ``.../tree/REV``, ``.../blob/REV/file``,
    with or without the scheme; ``hosts`` adds others, e.g. HF_ENDPOINT's), and a repo id with a
    trailing slash. Anything else comes back unchanged (stripped), to be
    checked by :func:`repo_id` or read as a local path.

    Raises:
        UsageError: a URL of another site, or of a Hub page that is not a model repo.
    """
    from urllib.parse import unquote, urlsplit

    # Blanks are not stripped: " org/m" is a mistake to show, not to guess at (tests/hostile.py).
    text = value
    if not isinstance(text, str):
        return text, None
    known = HUB_HOSTS | {h.lower() for h in hosts}
    lowered = text.lower()
    is_url = "://" in text
    if not is_url and not any(lowered == h or lowered.startswith(h + "/") for h in known):
        # a repo id or a path: drop trailing slashes of an id only (a path keeps its own)
        if not text.startswith((".", "/", "~")) and text.endswith("/") and text.rstrip("/"):
            return text.rstrip("/"), None
        return text, None
    parts = urlsplit(text if is_url else "https://" + text)
    if parts.scheme not in ("http", "https") or (parts.hostname or "").lower() not in known:
        raise UsageError(f"{_show(value)} is not a Hub repo id, nor a Hugging Face Hub URL",
                         hint="give a repo id (org/name), a Hub URL (https://huggingface.co/org/name) or a local folder")
    segs = [s for s in parts.path.split("/") if s]
    if not segs or segs[0] in _NOT_MODELS:
        raise UsageError(f"{_show(value)} is not the URL of a model repo", hint="a model URL looks like https://huggingface.co/org/name")
    if len(segs) >= 2 and segs[1] not in _REV_ROUTES:
        repo, rest = "/".join(segs[:2]), segs[2:]
    else:
        repo, rest = segs[0], segs[1:]  # a repo without an org (https://huggingface.co/gpt2)
    rev = None
    if rest:
        if rest[0] not in _REV_ROUTES or len(rest) < 2:
            raise UsageError(f"{_show(value)} is a Hub page, not a model repo or a revision of one",
                             hint=f"give the repo URL, https://huggingface.co/{repo}, or .../tree/REVISION")
        rev = unquote(rest[1])  # the Hub writes a branch's slashes as %2F (refs%2Fpr%2F3)
    return repo, rev
