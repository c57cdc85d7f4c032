"""Reading a model from the Hub: listing, config.json and the safetensors headers, nothing more.

Round trips are what a cold plan costs, so requests are made concurrently and speculatively:

1. at once: the model info (listing with sizes, commit sha), config.json, the safetensors index,
   the first bytes of ``model.safetensors`` and, on ``main``, the all-shard-headers endpoint
   (``/api/models/{id}/safetensors-metadata/{index}``), each of which may be absent;
2. only when the endpoint is unavailable: every shard's header in parallel, each read sized from
   the index (the tensor names it lists say how long the header is);
3. rarely: the rest of a header that the first read did not cover, sized from its length prefix.

No file is fetched twice, and a speculative read that turns out unneeded is a few bytes; it gets
one attempt, so a fault on it costs no retries, and it is asked again (with retries) only when it
turns out to be needed. Every answer must come from the commit the model info names; a branch
that moved mid-read is re-read at that commit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

from planner.core import ids
from planner.core.errors import BadConfig, BadHeader, FitcheckError, HubError, HubUnavailable, UnsupportedModel
from planner.core.records import Fetch, FileSelection, RepoFile, Selector, Snapshot, Tensor
from planner.sources import pipeline
from planner.sources.formats.safetensors import SAFE_INDEX, SAFE_SINGLE, header_length, is_safe_shard, parse_header
from planner.sources.http import Response, Session, json_body

# First read of a lone model.safetensors when its header size is unknown: huggingface_hub reads
# the first 100,000 bytes because 97 % of headers on the Hub are smaller
# (huggingface_hub hf_api.py, parse_safetensors_file_metadata, and its PR #1855).
FIRST_READ = 100_000
# JSON bytes per tensor entry besides its name: '"":{"dtype":"BF16","shape":[16384,53248],
# "data_offsets":[12345678901,12345678901]},' is 82 characters with 5-digit dims and 11-digit
# offsets; 100 covers 4-D shapes. Sizing the read from the index keeps 30 shards of a 70B model
# at ~100 KB in all, against 3 MB for 100 KB per shard.
HEADER_BYTES_PER_TENSOR = 100
# Limits on the small JSON files; a larger one is hostile. DeepSeek-V3's index (91,991 tensors)
# is 8.9 MB, its config 1.7 KB.
MAX_CONFIG_BYTES = 4_000_000
MAX_INDEX_BYTES = 64_000_000
MAX_INFO_BYTES = 64_000_000
MAX_ALL_HEADERS_BYTES = 256_000_000
# Concurrent requests: enough to read a 163-shard repo in one round trip; httpx's pool allows 100
# connections by default, and the Hub serves each from its CDN.
MAX_WORKERS = 64


def read_hub(repo_id: str, *, select: Selector, revision: str | None, token: str | bool | None, endpoint: str, timeout: float,
             deadline: float | None = None) -> Snapshot:
    """Read a repo's listing, config and the headers of the weight files ``select`` names.

    Raises:
        RepoNotFound, GatedRepo, HubUnavailable, HubError: the Hub did not give what was asked.
        BadHeader, BadConfig, NoWeights: what it gave is not a model fitcheck can size.
    """
    started = time.monotonic()
    session = Session(endpoint, token, timeout, deadline=deadline)
    rev = revision or "main"
    with ThreadPoolExecutor(max_workers=MAX_WORKERS) as pool:
        snap = _read(session, pool, repo_id, rev, select, requested=revision)
    fetch = Fetch(requests=session.requests, bytes=session.bytes, seconds=round(time.monotonic() - started, 4))
    return _replace(snap, fetch=fetch)


# The derivatives a plan looks at: the most downloaded few (each costs one more repo read).
MAX_DERIVATIVES = 1
MAX_SEARCH_BYTES = 1_000_000


def quantized_derivatives(repo_id: str, *, library: str, token: str | bool | None, endpoint: str, timeout: float,
                          limit: int = MAX_DERIVATIVES) -> list[str]:
    """The repos the Hub's model tree lists as quantized from ``repo_id`` that carry the tag
    ``library`` (e.g. "gguf"), most downloaded first: one search request, ``GET /api/models`` with
    ``filter=base_model:quantized:<id>`` (the tag the Hub derives from a card's ``base_model`` with
    ``base_model_relation: quantized``; huggingface.co/docs/hub/model-cards#specifying-a-base-model).

    Raises:
        HubUnavailable, HubError: the search did not answer.
    """
    from urllib.parse import urlencode

    session = Session(endpoint, token, timeout)
    query = urlencode([("filter", f"base_model:quantized:{repo_id}"), ("filter", library), ("sort", "downloads"),
                       ("direction", "-1"), ("limit", str(limit))])
    what = f"the {library} derivatives of {repo_id}"
    found = json_body(session.get(f"{endpoint.rstrip('/')}/api/models?{query}", what=what, limit=MAX_SEARCH_BYTES), what)
    if not isinstance(found, list):
        raise HubError(f"{what}: the Hub answered something that is not a list of models")
    out = []
    for m in found:
        name = m.get("id") or m.get("modelId") if isinstance(m, dict) else None
        try:
            name = ids.repo_id(name) if isinstance(name, str) else None
        except FitcheckError:
            name = None  # an id the Hub should never send: skipped, not trusted
        if name is not None and name != repo_id:
            out.append(name)
    return out[:limit]


def _read(session: Session, pool: ThreadPoolExecutor, repo_id: str, rev: str, select: Selector, *, requested: str | None,
          pinned: bool = False) -> Snapshot:
    url = _Urls(session.endpoint, repo_id, rev)
    info_f = pool.submit(session.get, url.info(), what=f"model info of {repo_id}@{rev}", limit=MAX_INFO_BYTES)
    config_f = pool.submit(session.get, url.file("config.json"), what=f"config.json of {repo_id}", limit=MAX_CONFIG_BYTES, ok_missing=True)
    # On main the all-shard-headers answer carries the index's metadata: the index itself (8.9 MB for
    # DeepSeek-V3) is then asked for only if that answer is missing (benchmarks/perf/FINDINGS.md #4).
    index_f = _Speculative(pool, session, url.file(SAFE_INDEX), what=f"{SAFE_INDEX} of {repo_id}", limit=MAX_INDEX_BYTES,
                           ok_missing=True, eager=rev != "main")
    single_f = _Speculative(pool, session, url.file(SAFE_SINGLE), what=f"header of {SAFE_SINGLE} of {repo_id}",
                            limit=FIRST_READ, byte_range=(0, FIRST_READ - 1), ok_missing=True)
    all_f = None
    if rev == "main":
        all_f = _Speculative(pool, session, url.all_headers(), what=f"shard headers of {repo_id}", limit=MAX_ALL_HEADERS_BYTES, ok_missing=True)
    futures = [f for f in (config_f, index_f, single_f, all_f) if f is not None]
    try:
        info = json_body(info_f.result(), f"model info of {repo_id}")
    except BaseException:
        _drain(futures)
        raise
    commit, files, gated = _listing(info, repo_id)
    listing = {f.path: f.size for f in files}

    moved = [f for f in futures if _commit_of(f) not in (None, commit)]
    if moved and not pinned and commit:
        _drain(futures)
        return _read(session, pool, repo_id, commit, select, requested=requested, pinned=True)

    try:
        config_resp = config_f.result()
        config, config_error = None, None
        if config_resp is not None:
            try:
                config = _json_object(config_resp.body, f"config.json of {repo_id}", BadConfig)
            except BadConfig as e:
                config_error = e
        ws = select(files, config)
    except BaseException:
        _drain(futures)
        raise
    if ws.format == "gguf":  # GGUF carries its own metadata: a config.json is optional
        _drain(futures)
        from planner.sources import gguf_files

        found, summary = gguf_files.read_hub(session, url.file, repo_id, ws, listing, pool)
        return Snapshot(id=repo_id, revision=requested or "main", commit=commit, source="hub", config=config or {}, files=files,
                        weight_format="gguf", weight_files=ws.files, tensors=tuple(found), gated=gated, notes=ws.notes, gguf=summary)
    if ws.format == pipeline.PIPELINE:  # a diffusers pipeline: model_index.json, no root config.json
        _drain(futures)
        return read_pipeline(session, pool, url, repo_id, ws, files, commit=commit, gated=gated, revision=requested or "main")
    if config_resp is None:
        _drain(futures)
        raise BadConfig(f"{repo_id}: has no config.json", hint="fitcheck needs the model's config.json to size its cache and layers")
    if config_error is not None or config is None:
        _drain(futures)
        raise config_error or BadConfig(f"config.json of {repo_id}: unreadable")

    tensors: list[Tensor] = []
    weight_files: tuple[str, ...]
    notes: list[str] = list(ws.notes)
    if ws.format not in ("safetensors", "pytorch"):
        _drain(futures)
        raise UnsupportedModel(f"{repo_id}: reading {ws.format} files from the Hub is not supported yet")
    if ws.format == "pytorch":
        weight_files = ws.weight_files
        notes.append("only pickled pytorch_model*.bin weights: sized from the file listing and config, never downloaded or unpickled; "
                     "loading them unpickles code-capable files")
        _drain(futures)
    elif SAFE_SINGLE in ws.files:
        _drain([f for f in futures if f is not single_f])
        weight_files = (SAFE_SINGLE,)
        size = listing.get(SAFE_SINGLE)
        if size is not None and size < 8:
            _drain([single_f])  # a range read of an empty file is answered 416: say what is wrong instead
            raise BadHeader(f"{SAFE_SINGLE} of {repo_id}: file is {size} bytes, too short for a safetensors header")
        first = single_f.result()
        if first is None:
            raise HubError(f"{SAFE_SINGLE} of {repo_id}: listed but not served")
        tensors = _finish_header(session, url, repo_id, SAFE_SINGLE, first.body, size)
    else:
        got = None
        if all_f is not None:
            got = _optional_all_headers(all_f, repo_id, listing, commit)
        if got is not None:
            index, tensors = got
            weight_files = tuple(sorted({t.file for t in tensors}))
            _drain([index_f])
        else:
            index_resp = index_f.result()
            if index_resp is None:
                raise HubError(f"{SAFE_INDEX} of {repo_id}: listed but not served")
            index = _json_object(index_resp.body, f"{SAFE_INDEX} of {repo_id}", BadHeader)
            shards = _shards(index, repo_id, listing)
            weight_files = tuple(sorted(shards))
            jobs = {name: pool.submit(_read_shard, session, url, repo_id, name, names, listing.get(name)) for name, names in shards.items()}
            for job in jobs.values():
                tensors.extend(job.result())
        _drain([single_f])
    _check_unique(tensors, repo_id)
    return Snapshot(
        id=repo_id,
        revision=requested or "main",
        commit=commit,
        source="hub",
        config=config,
        files=files,
        weight_format=ws.format,
        weight_files=weight_files,
        tensors=tuple(tensors),
        gated=gated,
        notes=tuple(notes),
    )


def read_pipeline(session: Session, pool: ThreadPoolExecutor, url: _Urls, repo_id: str, ws: FileSelection, files: tuple[RepoFile, ...],
                  *, commit: str | None, gated: bool, revision: str) -> Snapshot:
    """The snapshot of a diffusers pipeline: the JSON files and weight headers ``ws`` names
    (:mod:`planner.sources.pipeline`), each header read as a lone model.safetensors is."""
    sizes = {f.path: f.size for f in files}

    def read_json(path: str) -> dict[str, Any]:
        resp = session.get(url.file(path), what=f"{path} of {repo_id}", limit=MAX_INDEX_BYTES)
        return _json_object(resp.body, f"{path} of {repo_id}", BadConfig)

    def read_header(path: str) -> list[Tensor]:
        size = sizes.get(path)
        if size is not None and size < 8:
            raise BadHeader(f"{path} of {repo_id}: file is {size} bytes, too short for a safetensors header")
        first = min(FIRST_READ, size) if size is not None else FIRST_READ
        resp = session.get(url.file(path), what=f"header of {path} of {repo_id}", limit=first, byte_range=(0, first - 1))
        return _finish_header(session, url, repo_id, path, resp.body, size)

    config, tensors = pipeline.read(ws, sizes, where=repo_id, read_json=read_json, read_header=read_header, pool=pool)
    return Snapshot(id=repo_id, revision=revision, commit=commit, source="hub", config=config, files=files,
                    weight_format=pipeline.PIPELINE, weight_files=ws.weight_files, tensors=tuple(tensors), gated=gated,
                    notes=ws.notes)


class _Speculative:
    """A request sent before it is known to be needed: it gets one attempt, so that a fault on a
    read that turns out unneeded costs no retries (and no wait for them); :meth:`result` asks
    again, with retries, when it is needed after all."""

    def __init__(self, pool: ThreadPoolExecutor, session: Session, url: str, *, eager: bool = True, **kw: Any) -> None:
        self._session, self._url, self._kw = session, url, kw
        self.future: Future[Response | None] | None = pool.submit(lambda: session.get(url, attempts=1, **kw)) if eager else None

    def result(self) -> Response | None:
        if self.future is None:  # not sent ahead: ask now, with retries
            return self._session.get(self._url, **self._kw)
        try:
            return self.future.result()
        except HubUnavailable:
            return self._session.get(self._url, **self._kw)


class _Urls:
    def __init__(self, endpoint: str, repo_id: str, rev: str) -> None:
        self.endpoint, self.repo_id, self.rev = endpoint, repo_id, rev

    def info(self) -> str:
        return f"{self.endpoint}/api/models/{self.repo_id}/revision/{quote(self.rev, safe='')}?blobs=true"

    def file(self, path: str) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(self.repo_id, path, revision=self.rev, endpoint=self.endpoint)

    def all_headers(self) -> str:
        # huggingface_hub's HfApi.get_sharded_safetensors_metadata calls this endpoint (main only).
        return f"{self.endpoint}/api/models/{self.repo_id}/safetensors-metadata/{quote(SAFE_INDEX, safe='/')}"


def _listing(info: Any, repo_id: str) -> tuple[str | None, tuple[RepoFile, ...], bool]:
    if not isinstance(info, dict) or not isinstance(info.get("siblings"), list):
        raise HubError(f"model info of {repo_id}: has no file listing")
    commit = info.get("sha")
    if commit is not None and not (isinstance(commit, str) and ids.COMMIT.match(commit)):
        raise HubError(f"model info of {repo_id}: commit {str(commit)[:60]!r} is not a sha")
    files = []
    for s in info["siblings"]:
        path = s.get("rfilename") if isinstance(s, dict) else None
        if not isinstance(path, str):
            raise HubError(f"model info of {repo_id}: a listing entry has no file name")
        size = s.get("size")
        lfs = s.get("lfs")
        if isinstance(lfs, dict) and isinstance(lfs.get("size"), int):
            size = lfs["size"]
        files.append(RepoFile(path=path, size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None))
    gated = info.get("gated") not in (None, False)
    return commit, tuple(files), gated


def _shards(index: dict[str, Any], repo_id: str, listing: dict[str, int | None]) -> dict[str, list[str]]:
    where = f"{SAFE_INDEX} of {repo_id}"
    wm = index.get("weight_map")
    if not isinstance(wm, dict) or not wm:
        raise BadHeader(f"{where}: field 'weight_map' is missing or empty")
    shards: dict[str, list[str]] = {}
    for name, shard in wm.items():
        if not isinstance(shard, str):
            raise BadHeader(f"{where}: field 'weight_map' maps {ids.show(name)} to a non-string")
        ids.repo_path(shard, where=where)
        if shard not in listing:
            raise BadHeader(f"{where}: names shard {ids.show(shard)}, which the repo does not have")
        shards.setdefault(shard, []).append(name)
    return shards


def _read_shard(session: Session, url: _Urls, repo_id: str, shard: str, names: list[str], size: int | None) -> list[Tensor]:
    if size is not None and size < 8:
        raise BadHeader(f"{shard} of {repo_id}: file is {size} bytes, too short for a safetensors header")
    guess = 8 + 2 + sum(len(n) + HEADER_BYTES_PER_TENSOR for n in names) + 64
    guess = max(4096, -(-guess // 4096) * 4096)
    if size is not None:
        guess = min(guess, size)
    resp = session.get(url.file(shard), what=f"header of {shard} of {repo_id}", limit=guess, byte_range=(0, guess - 1))
    return _finish_header(session, url, repo_id, shard, resp.body, size)


def _finish_header(session: Session, url: _Urls, repo_id: str, file: str, first: bytes, size: int | None) -> list[Tensor]:
    where = f"{file} of {repo_id}"
    n = header_length(first, where=where, file_size=size)
    body = first
    if 8 + n > len(first):
        rest = session.get(url.file(file), what=f"header of {where}", limit=8 + n - len(first), byte_range=(len(first), 8 + n - 1))
        body = first + rest.body
        if len(body) < 8 + n:
            raise BadHeader(f"{where}: header is {n} bytes but the file ends after {len(body) - 8}")
    tensors, _ = parse_header(body[8:8 + n], file=file, where=where, file_size=size)
    return tensors


def _optional_all_headers(all_f: _Speculative, repo_id: str, listing: dict[str, int | None], commit: str | None) -> tuple[dict[str, Any], list[Tensor]] | None:
    """The all-shard-headers answer, or None to read the shards themselves.

    The endpoint is a shortcut, not the source of truth: when it is missing, fails, answers for
    another commit or answers something unusable, the shards' own headers are read, and any
    error then comes from them, naming the shard and the field. What its decoded JSON cannot
    show -- duplicate keys, the header's exact byte length and so whether the data ends exactly
    at the end of the file -- only a range read of the shard checks.
    """
    try:
        resp = all_f.future.result() if all_f.future is not None else None
        if resp is None or not _commit_ok(resp, commit):
            return None
        return _from_all_headers(resp, repo_id, listing)
    except FitcheckError:
        return None


def _from_all_headers(resp: Response, repo_id: str, listing: dict[str, int | None]) -> tuple[dict[str, Any], list[Tensor]] | None:
    where = f"shard headers of {repo_id}"
    data = _json_object(resp.body, where, BadHeader)
    headers, index = data.get("headers"), data.get("index", {})
    if not isinstance(headers, dict) or not headers or not isinstance(index, dict):
        raise BadHeader(f"{where}: answer lacks 'headers' or 'index'")
    missing = sorted(p for p in listing if is_safe_shard(p) and p not in headers)
    if missing:
        # A shard of the listing without its header would be a model counted in part.
        raise BadHeader(f"{where}: answer has no header for {ids.show(missing[0])}")
    tensors: list[Tensor] = []
    for shard, header in headers.items():
        ids.repo_path(shard, where=where)
        if not isinstance(header, dict):
            raise BadHeader(f"{where}: the header of {ids.show(shard)} is not an object")
        if shard not in listing:
            raise BadHeader(f"{where}: names shard {ids.show(shard)}, which the repo does not have")
        # Decoded headers have no length prefix: the data region's end is checked against the
        # listed size by the byte count, but the exact header length is unknown here.
        found, _ = parse_header(header, file=shard, where=f"{shard} of {repo_id}")
        size = listing[shard]
        if size is not None:
            # The decoded header has lost its byte length N, so the data's exact end cannot be
            # checked here; but N is at least the header's most compact JSON, which bounds it.
            end = max((t.offset + t.nbytes for t in found), default=0)
            least = len(json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
            if 8 + least + end > size:
                raise BadHeader(f"{shard} of {repo_id}: tensor data runs past the end of the file: byte {end} of the data "
                                f"after a header of at least {least} bytes, in a {size}-byte file (truncated?)")
        tensors.extend(found)
    return index, tensors


def _json_object(raw: bytes, where: str, error: type[FitcheckError]) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise error(f"{where}: is not valid JSON") from None
    if not isinstance(value, dict):
        raise error(f"{where}: is a JSON {type(value).__name__}, not an object")
    return value


def _commit_of(f: Future | _Speculative) -> str | None:
    fut = _future(f)
    if fut is None:
        return None
    try:
        resp = fut.result()
    except Exception:
        return None
    return resp.headers.get("x-repo-commit") if resp is not None else None


def _commit_ok(resp: Response, commit: str | None) -> bool:
    got = resp.headers.get("x-repo-commit")
    return got is None or commit is None or got == commit


def _check_unique(tensors: list[Tensor], repo_id: str) -> None:
    seen: dict[str, str] = {}
    for t in tensors:
        if t.name in seen:
            raise BadHeader(f"{repo_id}: tensor {ids.show(t.name)} appears in both {seen[t.name]} and {t.file}")
        seen[t.name] = t.file


def _drain(futures: Sequence[Future[Any] | _Speculative | None]) -> None:
    """Wait for speculative requests we will not use, swallowing their errors."""
    for f in futures:
        fut = _future(f) if f is not None else None
        if fut is None:
            continue
        try:
            fut.result()
        except Exception:
            pass


def _future(f: Future[Any] | _Speculative) -> Future[Any] | None:
    return f.future if isinstance(f, _Speculative) else f


def _replace(snap: Snapshot, **changes: Any) -> Snapshot:
    import dataclasses

    return dataclasses.replace(snap, **changes)
