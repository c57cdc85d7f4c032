"""Where a model's metadata comes from: a local folder, the caches, the Hub, or the bundled catalog.

Order, for ``org/name`` at a revision:

1. fitcheck's metadata cache (a commit: always; a branch: within ``ttl``, offline always, else
   after one HEAD request shows the branch still points at the cached commit);
2. the Hugging Face cache, when it holds the snapshot's config and weight files;
3. the Hub (the result is cached);
4. when the network is down or ``HF_HUB_OFFLINE=1``: the bundled catalog, saying so.

A path that exists, or that starts with ``.``, ``/`` or ``~``, is a local folder.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from planner.core import ids
from planner.core.errors import FitcheckError, HubError, HubUnavailable, OfflineCacheMiss, RepoNotFound, UsageError
from planner.core.paths import hf_cache_dir
from planner.core.records import Selector, Snapshot
from planner.sources import cache, catalog
from planner.sources.http import client_loaded
from planner.sources.local import read_folder

DEFAULT_ENDPOINT = "https://huggingface.co"
# Above this many tensors the full tensor list is not cached: encoding DeepSeek-V3's 91,991 tensors
# costs ~0.3 s of a cold plan (FINDINGS.md #5), and the footprint summary cached after the estimate
# is what warm plans read. Such a model is re-read from the Hub only if fitcheck's estimator changes.
FULL_ENTRY_MAX_TENSORS = 20_000
# How long a branch's commit is trusted without asking the Hub. Ten minutes keeps repeated
# pre-flight checks in a script free of network while a push shows up quickly.
DEFAULT_TTL_S = 600.0


def endpoint_now() -> str:
    """``HF_ENDPOINT``, read at call time (huggingface_hub reads it only at import)."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline_now() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``), read at call time."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def is_local(ref: str) -> bool:
    """A path, not a repo id: it starts like one, or names a folder that exists (as transformers decides).

    An empty or blank string is neither (``Path("")`` is the current folder): it is refused as a repo id.
    """
    if not ref.strip():
        return False
    return ref.startswith((".", "/", "~")) or Path(ref).is_dir() or (ref.endswith(".gguf") and Path(ref).is_file())


def read_model(ref: str, *, select: Selector, revision: str | None = None, token: str | bool | None = None,
               endpoint: str | None = None, timeout: float = 30.0, ttl: float = DEFAULT_TTL_S, use_cache: bool = True) -> Snapshot:
    """Read the metadata of a model given as a repo id or a local folder, tensors included.

    ``select`` names the files to read from the listing and config (the api builds it from the
    runtimes' ``select``). fitcheck's metadata cache and the catalog hold what an earlier read
    selected.

    Raises:
        UsageError: an invalid repo id or revision.
        FolderNotFound: a local path that is no folder.
        RepoNotFound, GatedRepo, HubUnavailable, OfflineCacheMiss, HubError, ModelFormatError.
    """
    return read(ref, select=select, revision=revision, token=token, endpoint=endpoint, timeout=timeout, ttl=ttl,
                use_cache=use_cache)[0]


def read(ref: str, *, select: Selector, version: str | None = None, revision: str | None = None, token: str | bool | None = None,
         endpoint: str | None = None, timeout: float = 30.0, ttl: float = DEFAULT_TTL_S,
         use_cache: bool = True) -> tuple[Snapshot, dict[str, Any] | None]:
    """:func:`read_model`, and the model facts cached for the snapshot's commit under ``version``.

    With cached facts (stored by :func:`remember` for the same commit and version) the snapshot
    comes without tensors: the runtime rebuilds its facts from the cached ones instead.
    """
    endpoint = (endpoint or endpoint_now()).rstrip("/")
    ref, revision = _pasted(ref, revision, endpoint)
    if is_local(ref):
        return read_folder(Path(os.path.expanduser(ref)), model_id=ref, select=select), None
    repo = ids.repo_id(ref)
    rev = ids.revision(revision) or "main"
    offline = offline_now()
    if not offline:
        client_loaded()
    # One deadline for every request of this read: the revision check and the Hub read share it.
    deadline = time.monotonic() + timeout

    if use_cache:
        hit = _from_metadata_cache(endpoint, repo, rev, version, select, offline=offline, ttl=ttl, token=token,
                                   timeout=timeout, deadline=deadline)
        if hit is not None:
            return hit
        snap = _from_hf_cache(repo, rev, select)
        if snap is not None:
            return snap, None
    if offline:
        return _from_catalog(repo, rev, "HF_HUB_OFFLINE is set") or _offline_miss(repo, rev), None

    from planner.sources.hub import read_hub

    try:
        snap = read_hub(repo, select=select, revision=revision, token=token, endpoint=endpoint, timeout=timeout, deadline=deadline)
    except HubUnavailable as e:
        fallback = _from_catalog(repo, rev, f"the Hub could not be reached ({_cause(e.message)})")
        if fallback is None:
            raise HubUnavailable(f"{e.message}; fitcheck's bundled catalog has no {repo}@{rev} either", hint=_catalog_hint(repo, e.hint)) from None
        return fallback, None
    if use_cache and snap.commit:
        # a GGUF snapshot holds one quant group of several: its facts (summaries) are cached instead
        if len(snap.tensors) <= FULL_ENTRY_MAX_TENSORS and snap.weight_format != "gguf":
            cache.store(endpoint, snap)
        if rev != snap.commit:
            cache.store_ref(endpoint, repo, rev, snap.commit)
    return snap, None


def _pasted(ref: str, revision: str | None, endpoint: str) -> tuple[str, str | None]:
    """What people paste, as a repo id (and the revision a URL names) or a local folder.

    A path to a ``.safetensors`` file means its folder; a path to a ``.gguf`` file is the GGUF
    runtime's, and without its reader in this build it is refused with a hint naming it.
    """
    from urllib.parse import urlsplit

    if is_local(ref) or Path(os.path.expanduser(ref)).is_file():
        path = Path(os.path.expanduser(ref))
        if path.is_file() and path.suffix == ".safetensors":
            return str(path.parent), revision
        if path.is_file() and path.suffix == ".gguf" and not _gguf_reader():
            raise UsageError(f"{ids.show(ref)} is a GGUF file, which the transformers runtime does not load",
                             hint="plan it with `--runtime gguf` (the GGUF runtime), or give a folder with config.json and safetensors")
        return ref, revision
    repo, url_rev = ids.model_ref(ref, hosts={(urlsplit(endpoint).hostname or "").lower()} - {""})
    if url_rev is not None and revision is not None and url_rev != revision:
        raise UsageError(f"the URL names revision {ids.show(url_rev)} and --revision says {ids.show(revision)}",
                         hint="leave out one of them")
    return repo, revision if revision is not None else url_rev


def _gguf_reader() -> bool:
    """Whether this build reads GGUF files (the GGUF runtime's reader, planner.sources.formats.gguf)."""
    import importlib.util

    return importlib.util.find_spec("planner.sources.formats.gguf") is not None


def _from_metadata_cache(endpoint: str, repo: str, rev: str, version: str | None, select: Selector, *, offline: bool, ttl: float,
                         token: str | bool | None, timeout: float, deadline: float) -> tuple[Snapshot, dict[str, Any] | None] | None:
    if ids.COMMIT.match(rev):
        hit = _cached(endpoint, repo, rev, version, select)
        # The entry may have been stored by a read of a branch: report the commit that was asked for.
        return (replace(hit[0], revision=rev), hit[1]) if hit is not None else None
    ref = cache.lookup_ref(endpoint, repo, rev)
    if ref is None:
        return None
    commit, age = ref
    if not offline and age > ttl:
        current = _head_commit(endpoint, repo, rev, token=token, timeout=timeout, deadline=deadline)
        if current != commit:
            return None
        cache.store_ref(endpoint, repo, rev, commit)
    hit = _cached(endpoint, repo, commit, version, select)
    return (replace(hit[0], revision=rev), hit[1]) if hit is not None else None


def _cached(endpoint: str, repo: str, commit: str, version: str | None,
            select: Selector) -> tuple[Snapshot, dict[str, Any] | None] | None:
    """The cached model facts of a commit (a few KB) when ``version`` made some, else the cached
    tensors (estimated again by the caller) when they are of the format ``select`` reads (an entry
    another runtime stored holds other files)."""
    if version is not None:
        summary = cache.load_summary(endpoint, repo, commit, version)
        if summary is not None:
            return summary
    snap = cache.load(endpoint, repo, commit)
    if snap is None:
        return None
    try:
        wanted = select(snap.files, snap.config or None)
    except FitcheckError:
        return None
    return (snap, None) if wanted.format == snap.weight_format else None


def derivatives(ref: str, *, library: str, token: str | bool | None = None, endpoint: str | None = None,
                timeout: float = 30.0) -> tuple[list[str], str | None]:
    """(the Hub's quantized derivatives of ``ref`` carrying the tag ``library``, most downloaded
    first; a note when they could not be looked up). Nothing for a local folder or offline."""
    if is_local(ref) or offline_now():
        return [], None
    from planner.sources.hub import quantized_derivatives

    try:
        found = quantized_derivatives(ids.repo_id(ref), library=library, token=token,
                                      endpoint=(endpoint or endpoint_now()).rstrip("/"), timeout=min(timeout, 10.0))
    except (HubUnavailable, HubError) as e:
        return [], f"{library} derivatives of {ref} could not be looked up: {e.message}"
    return found, None


def remember(endpoint: str | None, snap: Snapshot, facts: dict[str, Any], version: str) -> None:
    """Cache a runtime's model facts of a snapshot read from the Hub or the metadata cache, for warm plans."""
    if snap.commit and snap.source in ("hub", "cache") and snap.tensors:
        cache.store_summary((endpoint or endpoint_now()).rstrip("/"), snap, facts, version)


def _head_commit(endpoint: str, repo: str, rev: str, *, token: str | bool | None, timeout: float, deadline: float) -> str | None:
    """The commit a branch points at now, from one HEAD request; None when it cannot be told."""
    from huggingface_hub import hf_hub_url

    from planner.sources.http import Session

    try:
        session = Session(endpoint, token, min(timeout, 10.0), deadline=deadline)
        resp = session.get(hf_hub_url(repo, "config.json", revision=rev, endpoint=endpoint), what=f"revision check of {repo}",
                           limit=0, method="HEAD")
    except (HubUnavailable, RepoNotFound):
        return None
    return resp.headers.get("x-repo-commit") if resp is not None else None


def _from_hf_cache(repo: str, rev: str, select: Selector) -> Snapshot | None:
    root = hf_cache_dir() / ("models--" + repo.replace("/", "--"))
    commit = rev
    if not ids.COMMIT.match(rev):
        try:
            commit = (root / "refs" / rev).read_text().strip()
        except OSError:
            return None
        if not ids.COMMIT.match(commit):
            return None
    folder = root / "snapshots" / commit
    if not any((folder / name).is_file() for name in ("config.json", "model_index.json")):  # a model, or a diffusers pipeline
        return None
    try:
        snap = read_folder(folder, model_id=repo, select=select, source="cache", revision=rev, commit=commit)
    except (FitcheckError, OSError):
        return None  # an incomplete or damaged download in the HF cache: read the Hub instead
    return replace(snap, notes=(*snap.notes, f"read from the Hugging Face cache ({folder})"))


def _from_catalog(repo: str, rev: str, why: str) -> Snapshot | None:
    """The catalog's entry (matched case-insensitively) with one note saying why and what it is."""
    snap = catalog.lookup(repo)
    if snap is None or rev not in ("main", snap.commit):
        return None
    # One note, the same for every model of a run (a comparison prints it once): why the catalog,
    # and what its entries are (the entry's own note).
    what = "; ".join(snap.notes) or "header summary bundled with fitcheck"
    return replace(snap, notes=(f"{why}: planned from fitcheck's bundled catalog ({what})",))


def _cause(message: str) -> str:
    """What went wrong, from a HubUnavailable message without the request's name: "model info of x:
    the Hub cannot be reached (connection failed: ConnectError)" -> "connection failed: ConnectError";
    "...: no answer within the 5 s deadline (timed out)" -> "no answer within the 5 s deadline (timed out)"."""
    detail = message.split(": ", 1)[-1]
    if detail.startswith("the Hub cannot be reached ("):
        detail = detail.removeprefix("the Hub cannot be reached (").removesuffix(")")
    # "...; found 3 s ago" (planner.sources.http.unreachable) is left out: the note is the same for every model
    return detail.split("; found ")[0]


def _catalog_hint(repo: str, hint: str | None) -> str:
    close = catalog.near(repo)
    listed = f"`fitcheck catalog` lists the {len(catalog.names())} models it plans offline"
    return (f"near matches in the catalog: {', '.join(close)}; " if close else "") + listed + (f"; {hint}" if hint else "")


def _offline_miss(repo: str, rev: str) -> Snapshot:
    raise OfflineCacheMiss(
        f"{repo}@{rev}: HF_HUB_OFFLINE is set and neither fitcheck's cache, the Hugging Face cache nor the bundled catalog has it",
        hint=_catalog_hint(repo, "plan it once online, or unset HF_HUB_OFFLINE"),
    )
