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
