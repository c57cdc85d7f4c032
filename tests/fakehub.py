"""A fake Hugging Face Hub: a real HTTP server on 127.0.0.1 for tests.

The server speaks the subset of the Hub API that huggingface_hub 2.4 and transformers 5.x use to
inspect and download a model, closely enough that the real client takes its real code paths:

    GET  /api/models/{repo_id}[/revision/{rev}]          model info (?blobs=true, ?expand=...)
    GET  /api/models/{repo_id}/tree/{rev}[/{path}]        file listing (?recursive=true), paginated
    GET  /api/models/{repo_id}/safetensors-metadata/{f}   every shard header in one answer (main only)
    GET  /api/models?filter=TAG[&filter=TAG...]           search: public repos carrying every tag, by downloads
    HEAD/GET /{repo_id}/resolve/{rev}/{path}              file bytes, with Range support

Errors carry the Hub's ``X-Error-Code`` / ``X-Error-Message`` headers, which is what
``huggingface_hub.utils.hf_raise_for_status`` turns into typed errors:

    unknown or private repo     401 (no token) / 404 (token)  X-Error-Code: RepoNotFound
    unknown revision            404                           X-Error-Code: RevisionNotFound
    missing file or folder      404                           X-Error-Code: EntryNotFound
    gated repo, no access       401 (no token) / 403 (token)  X-Error-Code: GatedRepo
    token the Hub never issued  401, no code, "Invalid credentials in Authorization header"

The RepoNotFound code matters: huggingface_hub only maps a bare 401 to RepositoryNotFoundError
when the URL starts with ``https://`` (``REPO_API_REGEX``), and this server is plain http.

No xet headers are ever sent (``X-Xet-Hash``, ``Link: <...>; rel="xet-auth"``), so the client
always falls back to plain HTTP downloads. By default files are served directly (200/206). With
``hub.lfs_redirect = True`` LFS files answer like the real Hub instead: a 302 carrying
``X-Linked-Size``/``X-Linked-Etag`` to a "CDN" URL on ``localhost`` (another origin for the
client, so its HEAD stops at the 302 and reads the metadata there, as it does on huggingface.co).

Everything a test needs to observe or perturb is on :class:`FakeHub`: the request log
(``requests``, ``bytes_sent``), ``latency``, ``inject()`` for faults, and ``server_errors``
(exceptions raised inside the server itself, which a test should treat as a bug here).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import struct
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = [
    "FakeHub",
    "Fault",
    "FileContent",
    "Repo",
    "RequestRecord",
    "SparseFile",
    "faults",
    "parse_safetensors_header",
]

# Files the Hub stores in LFS in practice: extensions from the .gitattributes a new model repo
# starts with (a subset, plus .gguf), and anything over 10 MiB (the Hub refuses larger git files).
_LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx",
                 ".model", ".npz", ".npy", ".pkl", ".zip", ".tar", ".gz")
_LFS_MIN_SIZE = 10 * 1024 * 1024
_DEFAULT_DATE = "2024-05-01T12:00:00.000Z"
_CHUNK = 1 << 20
_HEX40 = re.compile(r"[0-9a-f]{40}")
_API_SUBPATHS = {"revision", "tree", "safetensors-metadata"}


# --------------------------------------------------------------------------------------------
# Content
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SparseFile:
    """File content that is ``prefix`` followed by zeros up to ``size`` bytes.

    Nothing beyond the prefix is ever allocated, so a 140 GB checkpoint whose only real bytes
    are its safetensors headers costs a few kilobytes. Its sha256 (the LFS oid and ETag) is
    synthetic: derived from ``prefix`` and ``size``, not computed over the content.
    """

    prefix: bytes
    size: int

    def __post_init__(self) -> None:
        if self.size < len(self.prefix):
            raise ValueError(f"size {self.size} is smaller than the prefix ({len(self.prefix)} bytes)")


FileContent = bytes | Path | SparseFile


class _Blob:
    """One stored file: uniform random access plus the identifiers the Hub derives from it."""

    def __init__(self, content: FileContent, path: str) -> None:
        if isinstance(content, (bytes, bytearray)):
            self._bytes: bytes | None = bytes(content)
            self.size = len(self._bytes)
        elif isinstance(content, Path):
            self._bytes = None
            self.size = content.stat().st_size
        elif isinstance(content, SparseFile):
            self._bytes = None
            self.size = content.size
        else:
            raise TypeError(f"{path}: unsupported file content {type(content).__name__}")
        self._content = content
        self.lfs = path.endswith(_LFS_SUFFIXES) or self.size >= _LFS_MIN_SIZE
        if isinstance(content, SparseFile):
            # Hashing gigabytes of zeros would defeat the point of SparseFile: the id is derived
            # from what defines the content instead. It is stable and unique, not a real sha256.
            self.sha256 = hashlib.sha256(b"fakehub-sparse\0%d\0" % content.size + content.prefix).hexdigest()
        else:
            digest = hashlib.sha256()
            for chunk in self.chunks(0, self.size):
                digest.update(chunk)
            self.sha256 = digest.hexdigest()
        if self.lfs:
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n"
            self.pointer_size = len(pointer)
            self.blob_id = _git_blob_sha1(pointer.encode())
            self.etag = self.sha256  # the Hub's ETag (X-Linked-Etag) for LFS files
        else:
            self.pointer_size = 0
            self.blob_id = _git_blob_sha1(self.read(0, self.size))
            self.etag = self.blob_id  # the Hub's ETag for regular git files

    def chunks(self, start: int, length: int) -> Iterator[bytes]:
        """Yield ``length`` bytes from ``start`` in chunks of at most 1 MiB."""
        end = start + length
        if self._bytes is not None:
            for pos in range(start, end, _CHUNK):
                yield self._bytes[pos : min(end, pos + _CHUNK)]
        elif isinstance(self._content, Path):
            with self._content.open("rb") as fh:
                fh.seek(start)
                remaining = length
                while remaining > 0:
                    chunk = fh.read(min(remaining, _CHUNK))
                    if not chunk:
                        raise OSError(f"{self._content} shrank while being served")
                    remaining -= len(chunk)
                    yield chunk
        else:
            prefix = self._content.prefix
            for pos in range(start, end, _CHUNK):
                stop = min(end, pos + _CHUNK)
                head = prefix[pos:stop] if pos < len(prefix) else b""
                yield head + bytes(stop - pos - len(head))

    def read(self, start: int, length: int) -> bytes:
        return b"".join(self.chunks(start, max(0, min(length, self.size - start))))


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def parse_safetensors_header(blob_or_bytes: Any) -> dict[str, Any]:
    """Parse the JSON header of a safetensors file (a :class:`_Blob` or the file's bytes)."""
    read = blob_or_bytes.read if isinstance(blob_or_bytes, _Blob) else (lambda s, n: blob_or_bytes[s : s + n])
    prefix = read(0, 8)
    if len(prefix) < 8:
        raise ValueError("file too small to be safetensors")
    (length,) = struct.unpack("<Q", prefix)
    if length > 100_000_000:
        raise ValueError(f"header length {length} is implausible")
    header = json.loads(read(8, length))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return header


# --------------------------------------------------------------------------------------------
# Repositories
# --------------------------------------------------------------------------------------------


@dataclass
class _Revision:
    name: str
    commit: str
    files: dict[str, _Blob]
    last_modified: str = _DEFAULT_DATE
    _safetensors: dict[str, Any] | None = field(default=None, repr=False)
    _safetensors_done: bool = field(default=False, repr=False)

    def safetensors_summary(self) -> dict[str, Any] | None:
        """The model-info ``safetensors`` block: element counts per dtype over the weight files."""
        if not self._safetensors_done:
            self._safetensors = _summarise_safetensors(self.files)
            self._safetensors_done = True
        return self._safetensors


def _summarise_safetensors(files: Mapping[str, _Blob]) -> dict[str, Any] | None:
    if "model.safetensors.index.json" in files:
        try:
            index = json.loads(files["model.safetensors.index.json"].read(0, 1 << 30))
            shards = sorted(set(index["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
    elif "model.safetensors" in files:
        shards = ["model.safetensors"]
    else:
        return None
    parameters: dict[str, int] = {}
    for shard in shards:
        if shard not in files:
            return None
        try:
            header = parse_safetensors_header(files[shard])
            for name, info in header.items():
                if name != "__metadata__":
                    numel = 1
                    for dim in info["shape"]:
                        numel *= dim
                    parameters[info["dtype"]] = parameters.get(info["dtype"], 0) + numel
        except (ValueError, KeyError, TypeError):
            return None  # the real Hub shows no safetensors block for files it cannot parse
    return {"parameters": parameters, "total": sum(parameters.values())}


@dataclass
class Repo:
    """A model repository registered on a :class:`FakeHub`. Settings may be changed in place."""

    repo_id: str
    gated: Literal[False, "auto", "manual"] = False
    private: bool = False
    tokens: frozenset[str] = frozenset()
    revisions: dict[str, _Revision] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    downloads: int = 0

    def resolve(self, revision: str) -> _Revision | None:
        """Find a revision by branch name or by full commit sha."""
        if revision in self.revisions:
            return self.revisions[revision]
        if _HEX40.fullmatch(revision):
            return next((r for r in self.revisions.values() if r.commit == revision), None)
        return None


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fault:
    """One misbehaviour, applied to the next request(s) matching an :meth:`FakeHub.inject` call."""

    kind: str
    arg: Any = None


class faults:  # noqa: N801 - a namespace, read as ``faults.status(503)``
    """The faults :meth:`FakeHub.inject` understands."""

    @staticmethod
    def status(code: int) -> Fault:
        """Answer ``code`` (500, 502, 503...) with a JSON error body, before any routing."""
        return Fault("status", code)

    @staticmethod
    def rate_limited(retry_after_seconds: int) -> Fault:
        """Answer 429 with ``Retry-After`` and the Hub's ``RateLimit`` headers."""
        return Fault("rate_limited", retry_after_seconds)

    @staticmethod
    def hang(seconds: float) -> Fault:
        """Wait ``seconds`` before answering normally (to trigger client timeouts)."""
        return Fault("hang", seconds)

    @staticmethod
    def body(data: bytes) -> Fault:
        """Serve ``data`` as the file's content (Range still applies) or as the API answer."""
        return Fault("body", bytes(data))

    @staticmethod
    def wrong_content_range(shift: int = 1) -> Fault:
        """Answer a Range request with 206 for the range moved by ``shift`` bytes.

        The Content-Range header and the bytes agree with each other but not with the request,
        so only a client that checks Content-Range against what it asked for notices.
        """
        return Fault("wrong_content_range", shift)

    reset = Fault("reset")
    """Close the connection with a TCP RST before sending anything."""
    truncated = Fault("truncated")
    """Send the headers with the full Content-Length, then half of the body, then close."""
    ignore_range = Fault("ignore_range")
    """Answer 200 with the whole file where a Range request expected 206."""


@dataclass
class _Plan:
    """How the current request will be answered; faults adjust it before routing."""

    delay: float = 0.0
    abort: bool = False
    replace: tuple[int, dict[str, str]] | None = None  # status and extra headers, skips routing
    content: bytes | None = None
    honour_range: bool = True
    range_shift: int = 0
    truncate: bool = False


def _rate_limited(plan: _Plan, seconds: int) -> None:
    plan.replace = (429, {"Retry-After": str(seconds),
                          "RateLimit": f'"api";r=0;t={seconds}',
                          "RateLimit-Policy": '"fixed window";"api";q=500;w=300'})


# Each fault kind is one small edit of the plan; the request pipeline below acts on the plan.
_FAULT_EFFECTS: dict[str, Callable[[_Plan, Any], None]] = {
    "status": lambda plan, code: setattr(plan, "replace", (int(code), {})),
    "rate_limited": _rate_limited,
    "reset": lambda plan, _: setattr(plan, "abort", True),
    "hang": lambda plan, seconds: setattr(plan, "delay", plan.delay + float(seconds)),
    "truncated": lambda plan, _: setattr(plan, "truncate", True),
    "ignore_range": lambda plan, _: setattr(plan, "honour_range", False),
    "wrong_content_range": lambda plan, shift: setattr(plan, "range_shift", int(shift)),
    "body": lambda plan, data: setattr(plan, "content", data),
}


@dataclass
class _QueuedFault:
    fault: Fault
    path_contains: str | None
    method: str | None
    remaining: int | None  # None: every matching request until cleared


# --------------------------------------------------------------------------------------------
# Request log
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class RequestRecord:
    """One request as the server saw it. The token value itself is never stored."""

    method: str
    path: str  # percent-decoded, without the query string
    query: dict[str, list[str]]
    range: str | None
    has_auth: bool
    status: int = 0  # 0: no response was sent (connection reset)
    bytes_sent: int = 0  # response body bytes actually written
    fault: str | None = None


# --------------------------------------------------------------------------------------------
# Replies
# --------------------------------------------------------------------------------------------


@dataclass
class _Reply:
    status: int
    headers: dict[str, str]
    body: _Blob | bytes = b""
    start: int = 0  # first byte of ``body`` to send
    length: int | None = None  # bytes to send; None: all of ``body``

    @property
    def body_length(self) -> int:
        if self.length is not None:
            return self.length
        return self.body.size if isinstance(self.body, _Blob) else len(self.body)


def _json_reply(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> _Reply:
    return _Reply(status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})},
                  json.dumps(payload).encode())


def _error(status: int, message: str, code: str | None = None, **headers: str) -> _Reply:
    extra = {"X-Error-Message": message, **headers}
    if code is not None:
        extra["X-Error-Code"] = code
    return _json_reply({"error": message}, status, extra)


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _byte_range(header: str | None, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """Parse a single-range ``Range`` header into (start, end inclusive).

    Returns None where RFC 9110 lets a server ignore the header (absent, malformed, several
    ranges): the whole file is then served with 200.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if match is None or (not match[1] and not match[2]):
        return None
    if not match[1]:  # suffix range: the last N bytes
        suffix = int(match[2])
        if suffix == 0:
            return "unsatisfiable"
        return max(0, size - suffix), size - 1
    start = int(match[1])
    end = int(match[2]) if match[2] else size - 1
    if match[2] and end < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


def _file_reply(blob: _Blob, range_header: str | None, plan: _Plan, headers: dict[str, str]) -> _Reply:
    """A 200/206/416 answer for one file, honouring the plan's range faults."""
    if plan.content is not None:
        blob = _Blob(plan.content, "fault.bin")
    headers = {**headers, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
    wanted = _byte_range(range_header, blob.size) if plan.honour_range else None
    if wanted is None:
        return _Reply(200, headers, blob)
    if wanted == "unsatisfiable":
        return _Reply(416, {**headers, "Content-Range": f"bytes */{blob.size}"})
    start, end = wanted
    if plan.range_shift:
        start = min(max(0, start + plan.range_shift), blob.size - 1)
        end = min(max(start, end + plan.range_shift), blob.size - 1)
    return _Reply(206, {**headers, "Content-Range": f"bytes {start}-{end}/{blob.size}"}, blob, start, end - start + 1)


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


class FakeHub:
    """A fake Hugging Face Hub served from a daemon thread on 127.0.0.1.

    Example:
        >>> with FakeHub() as hub:
        ...     hub.add_repo("org/model", {"config.json": b"{}"})
        ...     HfApi(endpoint=hub.url).model_info("org/model")

    Attributes:
        latency: Seconds to wait before answering each request.
        sharded_metadata_endpoint: Serve ``/api/models/{repo}/safetensors-metadata/...``; when
            False it answers a bare 404, as a Hub mirror without that endpoint would.
        lfs_redirect: Answer ``resolve`` for LFS files with a 302 to a CDN URL, like the real Hub.
        tree_page_size: Entries per page of the tree listing (the Hub uses 1000).
        server_errors: Tracebacks of unexpected exceptions inside the server.
    """

    def __init__(self) -> None:
        self.latency = 0.0
        self.sharded_metadata_endpoint = True
        self.lfs_redirect = False
        self.tree_page_size = 1000
        self.server_errors: list[str] = []
        self._repos: dict[str, Repo] = {}
        self._cdn: dict[str, _Blob] = {}
        self._extra_tokens: set[str] = set()
        self._log: list[RequestRecord] = []
        self._faults: list[_QueuedFault] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._inflight = 0
        self._idle = threading.Condition(self._lock)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hub = self
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeHub:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name=f"fakehub-{self.port}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake sleeping handlers and close open connections."""
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- repositories --------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, FileContent],
        *,
        revision: str = "main",
        commit: str | None = None,
        gated: bool | Literal["auto", "manual"] = False,
        private: bool = False,
        tokens: tuple[str, ...] | list[str] | frozenset[str] = (),
        last_modified: str = _DEFAULT_DATE,
        tags: tuple[str, ...] = (),
        downloads: int = 0,
    ) -> Repo:
        """Register (or replace) one revision of a model repo.

        Args:
            repo_id: ``"namespace/name"`` (or a legacy one-part id such as ``"gpt2"``).
            files: Repo path -> ``bytes``, a ``Path`` on disk, or a :class:`SparseFile`.
            revision: Branch name. The revision can then be requested by this name or by commit.
            commit: 40-hex commit sha; by default derived from the repo id, branch and content.
            gated: ``False``, ``"auto"`` or ``"manual"`` (``True`` means ``"auto"``). Repo-wide.
            private: Visible only to ``tokens``. Repo-wide.
            tokens: Bearer tokens allowed into a private or gated repo. Repo-wide.
            last_modified: The revision's ``lastModified`` in model info.
            tags, downloads: what the model search (``GET /api/models?filter=``) matches and sorts by. Repo-wide.

        Repo-wide settings are replaced by each call; the returned :class:`Repo` can be edited.
        """
        blobs = {path.lstrip("/"): _Blob(content, path) for path, content in files.items()}
        if commit is None:
            digest = hashlib.sha1(f"{repo_id}\0{revision}".encode())
            for path in sorted(blobs):
                digest.update(f"\0{path}\0{blobs[path].sha256}".encode())
            commit = digest.hexdigest()
        if not _HEX40.fullmatch(commit):
            raise ValueError(f"commit must be 40 lowercase hex digits, got {commit!r}")
        with self._lock:
            repo = self._repos.setdefault(repo_id, Repo(repo_id))
            repo.gated = "auto" if gated is True else gated
            repo.private = private
            repo.tokens = frozenset(tokens)
            repo.tags, repo.downloads = tuple(tags), downloads
            repo.revisions[revision] = _Revision(revision, commit, blobs, last_modified)
            for blob in blobs.values():
                if blob.lfs:
                    self._cdn[blob.sha256] = blob
        return repo

    def add_local_model(self, repo_id: str, folder: str | Path, **kwargs: Any) -> Repo:
        """Register every file under ``folder`` (hidden folders skipped); kwargs as :meth:`add_repo`."""
        folder = Path(folder)
        files: dict[str, FileContent] = {
            p.relative_to(folder).as_posix(): p
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts[:-1])
        }
        return self.add_repo(repo_id, files, **kwargs)

    def remove_repo(self, repo_id: str) -> None:
        with self._lock:
            self._repos.pop(repo_id, None)

    @property
    def repo_ids(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._repos)

    def repo(self, repo_id: str) -> Repo:
        return self._repos[repo_id]

    def add_token(self, token: str) -> None:
        """Make ``token`` valid without giving it access to anything private or gated."""
        with self._lock:
            self._extra_tokens.add(token)

    # -- request log ---------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, oldest first."""
        with self._lock:
            return list(self._log)

    @property
    def bytes_sent(self) -> int:
        """Response body bytes written since the last :meth:`clear_log`."""
        with self._lock:
            return sum(r.bytes_sent for r in self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def find(self, method: str | None = None, path_contains: str | None = None) -> list[RequestRecord]:
        """Log records filtered by method and by a substring of the decoded path."""
        return [r for r in self.requests
                if (method is None or r.method == method) and (path_contains is None or path_contains in r.path)]

    # -- faults --------------------------------------------------------------------------------

    def inject(
        self,
        fault: Fault | str,
        *,
        path_contains: str | None = None,
        method: str | None = None,
        times: int | None = 1,
    ) -> None:
        """Apply ``fault`` to the next ``times`` requests whose path contains ``path_contains``.

        ``method`` ("GET", "HEAD") narrows the match: ``hf_hub_download`` sends a HEAD before
        its GET, and a body fault spent on the HEAD would do nothing.

        ``fault`` is a :class:`Fault` (see :class:`faults`) or the name of an argument-less one
        (``"reset"``, ``"truncated"``, ``"ignore_range"``, ``"wrong_content_range"``).
        ``times=None`` applies it until :meth:`clear_faults`. Faults queue in injection order;
        a request consumes the first one that matches.
        """
        if isinstance(fault, str):
            fault = getattr(faults, fault)
            if callable(fault):
                fault = fault()
        if fault.kind not in _FAULT_EFFECTS:
            raise ValueError(f"unknown fault {fault.kind!r}")
        with self._lock:
            self._faults.append(_QueuedFault(fault, path_contains, method, times))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> list[Fault]:
        with self._lock:
            return [q.fault for q in self._faults]

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for queued in self._faults:
                if (queued.path_contains is None or queued.path_contains in path) and queued.method in (None, method):
                    if queued.remaining is not None:
                        queued.remaining -= 1
                        if queued.remaining <= 0:
                            self._faults.remove(queued)
                    return queued.fault
        return None

    # -- request pipeline ----------------------------------------------------------------------

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is being answered (e.g. one held by ``hang``); True if idle."""
        with self._idle:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout)

    def _serve(self, handler: _Handler) -> None:
        with self._lock:
            self._inflight += 1
        try:
            self._serve_one(handler)
        finally:
            with self._idle:
                self._inflight -= 1
                self._idle.notify_all()

    def _serve_one(self, handler: _Handler) -> None:
        split = urlsplit(handler.path)
        path = unquote(split.path)
        record = RequestRecord(
            method=handler.command,
            path=path,
            query=parse_qs(split.query, keep_blank_values=True),
            range=handler.headers.get("Range"),
            has_auth=handler.headers.get("Authorization") is not None,
        )
        plan = _Plan()
        fault = self._take_fault(handler.command, path)
        if fault is not None:
            record.fault = fault.kind
            _FAULT_EFFECTS[fault.kind](plan, fault.arg)
        if self.latency + plan.delay > 0:
            self._stopping.wait(self.latency + plan.delay)
        if plan.abort:
            with self._lock:
                self._log.append(record)
            handler.reset_connection()
            return
        if plan.replace is not None:
            status, extra = plan.replace
            reply = _error(status, f"Injected fault: HTTP {status}", **extra)
        else:
            try:
                reply = self._route(handler, split.path, split.query, plan)
            except Exception:  # a bug in this file: answer 500 and let the test see it
                self.server_errors.append(traceback.format_exc())
                reply = _error(500, "fakehub internal error")
        if plan.content is not None and reply.status < 300 and not isinstance(reply.body, _Blob):
            reply = _Reply(200, {"Content-Type": "application/json; charset=utf-8"}, plan.content)
        self._send(handler, reply, record, plan.truncate)

    def _send(self, handler: _Handler, reply: _Reply, record: RequestRecord, truncate: bool) -> None:
        length = reply.body_length
        to_send = 0 if handler.command == "HEAD" else (length // 2 if truncate else length)
        record.status = reply.status
        record.bytes_sent = to_send
        # Logged before the body goes out: a client that has read the whole answer is sure to
        # find its request in the log. bytes_sent is corrected below if the write fails.
        with self._lock:
            self._log.append(record)
        handler.send_response(reply.status)
        for name, value in {**reply.headers, "Content-Length": str(length)}.items():
            handler.send_header(name, value)
        if truncate:
            handler.send_header("Connection", "close")
            handler.close_connection = True
        handler.end_headers()
        written = 0
        try:
            if to_send:
                body = reply.body
                chunks = (body.chunks(reply.start, to_send) if isinstance(body, _Blob)
                          else iter([body[reply.start : reply.start + to_send]]))
                for chunk in chunks:
                    handler.wfile.write(chunk)
                    written += len(chunk)
        except OSError:  # the client went away: its business, not a server error
            handler.close_connection = True
        finally:
            if written != to_send:
                with self._lock:
                    record.bytes_sent = written

    def _route(self, handler: _Handler, raw_path: str, query: str, plan: _Plan) -> _Reply:
        segments = [unquote(s) for s in raw_path.strip("/").split("/")]
        if handler.command not in ("GET", "HEAD"):
            return _error(405, "Method not allowed")
        if segments == ["api", "models"]:
            return self._search(parse_qs(query, keep_blank_values=True))
        if segments[:2] == ["api", "models"] and len(segments) >= 3:
            return self._api(handler, segments[2:], parse_qs(query, keep_blank_values=True), raw_path)
        if segments[:1] == ["__cdn"] and len(segments) >= 2:
            blob = self._cdn.get(segments[1])
            if blob is None:
                return _error(404, "Not Found")
            return _file_reply(blob, handler.headers.get("Range"), plan, {"ETag": f'"{blob.etag}"'})
        for at in (2, 1):  # /{namespace}/{name}/resolve/... or legacy /{name}/resolve/...
            if len(segments) >= at + 3 and segments[at] == "resolve":
                return self._resolve(handler, "/".join(segments[:at]), segments[at + 1],
                                     "/".join(segments[at + 2 :]), plan)
        return _error(404, "Not Found")

    def _access(self, handler: _Handler, repo_id: str, *, content: bool) -> Repo | _Reply:
        """The repo if this request may see it (and its files when ``content``), else the error."""
        token = _bearer(handler.headers.get("Authorization"))
        with self._lock:
            repo = self._repos.get(repo_id)
            known = self._extra_tokens.union(*(r.tokens for r in self._repos.values()))
        if token is not None and token not in known:
            return _error(401, "Invalid credentials in Authorization header")
        if repo is None or (repo.private and token not in repo.tokens):
            # Without a token the Hub cannot tell "missing" from "private": it answers 401.
            status = 404 if token is not None else 401
            return _error(status, "Repository not found" if token else "Invalid username or password.",
                          "RepoNotFound")
        if content and repo.gated and token not in repo.tokens:
            if token is None:
                message = (f"Access to model {repo_id} is restricted. You must have access to it and be "
                           "authenticated to access it. Please log in.")
                return _error(401, message, "GatedRepo")
            message = (f"Access to model {repo_id} is restricted and you are not in the authorized list. "
                       f"Visit {self.url}/{repo_id} to ask for access.")
            return _error(403, message, "GatedRepo")
        return repo

    def _revision(self, repo: Repo, revision: str) -> _Revision | _Reply:
        found = repo.resolve(revision)
        return found if found is not None else _error(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _resolve(self, handler: _Handler, repo_id: str, revision: str, path: str, plan: _Plan) -> _Reply:
        repo = self._access(handler, repo_id, content=True)
        if isinstance(repo, _Reply):
            return repo
        rev = self._revision(repo, revision)
        if isinstance(rev, _Reply):
            return rev
        blob = rev.files.get(path)
        if blob is None:
            return _error(404, "Entry not found", "EntryNotFound", **{"X-Repo-Commit": rev.commit})
        headers = {"X-Repo-Commit": rev.commit, "ETag": f'"{blob.etag}"'}
        if self.lfs_redirect and blob.lfs and plan.content is None:
            # "localhost" is another origin than "127.0.0.1" for the client: like a real CDN, its
            # HEAD stops here and reads X-Linked-*, and its GET follows without the token.
            location = f"http://localhost:{self.port}/__cdn/{blob.sha256}/{quote(path)}"
            return _Reply(302, {**headers, "Location": location, "X-Linked-Size": str(blob.size),
                                "X-Linked-Etag": f'"{blob.etag}"', "Content-Type": "text/plain; charset=utf-8"},
                          f"Found. Redirecting to {location}".encode())
        return _file_reply(blob, handler.headers.get("Range"), plan, headers)

    def _search(self, query: dict[str, list[str]]) -> _Reply:
        """The Hub's model search as fitcheck uses it: every ``filter`` is a tag the repo must carry
        (huggingface.co/docs/hub/api: GET /api/models?filter=...), most downloaded first."""
        wanted = set(query.get("filter", []))
        limit = int(query.get("limit", ["1000"])[0])
        with self._lock:
            found = [r for r in self._repos.values() if not r.private and wanted <= set(r.tags)]
        found.sort(key=lambda r: -r.downloads)
        body = [{"_id": hashlib.sha1(r.repo_id.encode()).hexdigest()[:24], "id": r.repo_id, "modelId": r.repo_id,
                 "tags": list(r.tags), "downloads": r.downloads} for r in found[:limit]]
        return _json_reply(body)

    def _api(self, handler: _Handler, segments: list[str], query: dict[str, list[str]], raw_path: str) -> _Reply:
        if len(segments) >= 2 and segments[1] not in _API_SUBPATHS:
            repo_id, rest = "/".join(segments[:2]), segments[2:]
        else:
            repo_id, rest = segments[0], segments[1:]
        if rest[:1] == ["safetensors-metadata"]:
            if not self.sharded_metadata_endpoint:
                return _error(404, "Not Found")
            return self._sharded_metadata(handler, repo_id, "/".join(rest[1:]))
        repo = self._access(handler, repo_id, content=False)
        if isinstance(repo, _Reply):
            return repo
        if not rest or (rest[0] == "revision" and len(rest) == 2):
            rev = self._revision(repo, rest[1] if rest else "main")
            return rev if isinstance(rev, _Reply) else _json_reply(self._model_info(repo, rev, query))
        if rest[0] == "tree" and len(rest) >= 2:
            rev = self._revision(repo, rest[1])
            return rev if isinstance(rev, _Reply) else self._tree(rev, "/".join(rest[2:]), query, raw_path)
        return _error(404, "Not Found")

    def _model_info(self, repo: Repo, rev: _Revision, query: dict[str, list[str]]) -> dict[str, Any]:
        blobs = _truthy(query.get("blobs"))
        siblings = []
        for path in sorted(rev.files):
            blob = rev.files[path]
            entry: dict[str, Any] = {"rfilename": path}
            if blobs:
                entry.update(size=blob.size, blobId=blob.blob_id)
                if blob.lfs:
                    entry["lfs"] = {"sha256": blob.sha256, "size": blob.size, "pointerSize": blob.pointer_size}
            siblings.append(entry)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
            "sha": rev.commit,
            "lastModified": rev.last_modified,
            "createdAt": _DEFAULT_DATE,
            "private": repo.private,
            "gated": repo.gated,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": list(repo.tags),
            "library_name": "transformers" if "config.json" in rev.files else None,
            "siblings": siblings,
            "usedStorage": sum(b.size for b in rev.files.values()),
        }
        config = _config_summary(rev)
        if config is not None:
            info["config"] = config
        safetensors = rev.safetensors_summary()
        if safetensors is not None:
            info["safetensors"] = safetensors
        expand = query.get("expand")
        if expand:  # the Hub then answers only the requested properties (plus the ids)
            info = {k: v for k, v in info.items() if k in ("_id", "id") or k in expand}
        return info

    def _tree(self, rev: _Revision, folder: str, query: dict[str, list[str]], raw_path: str) -> _Reply:
        folder = folder.strip("/")
        prefix = f"{folder}/" if folder else ""
        recursive = _truthy(query.get("recursive"))
        entries: dict[str, dict[str, Any]] = {}
        for path in sorted(rev.files):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):  # the folders on the way to the file
                if depth > 1 and not recursive:
                    break
                sub = prefix + "/".join(parts[:depth])
                entries.setdefault(sub, {"type": "directory", "oid": hashlib.sha1(sub.encode()).hexdigest(),
                                         "size": 0, "path": sub})
            if len(parts) == 1 or recursive:
                blob = rev.files[path]
                entry: dict[str, Any] = {"type": "file", "oid": blob.blob_id, "size": blob.size, "path": path}
                if blob.lfs:
                    entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": blob.pointer_size}
                entries[path] = entry
        if folder and not entries:
            return _error(404, f'"{folder}" does not exist on "{rev.name}"', "EntryNotFound")
        listing = list(entries.values())
        start = int((query.get("cursor") or ["0"])[0])
        page = listing[start : start + self.tree_page_size]
        headers = {}
        if start + self.tree_page_size < len(listing):
            params = [f"{k}={quote(v)}" for k, vs in query.items() if k != "cursor" for v in vs]
            params.append(f"cursor={start + self.tree_page_size}")
            headers["Link"] = f'<{self.url}{raw_path}?{"&".join(params)}>; rel="next"'
        return _json_reply(page, headers=headers)

    def _sharded_metadata(self, handler: _Handler, repo_id: str, filename: str) -> _Reply:
        repo = self._access(handler, repo_id, content=True)
        if isinstance(repo, _Reply):
            return repo
        rev = repo.revisions.get("main")  # the Hub serves this endpoint for main only
        if rev is None:
            return _error(404, "Invalid rev id: main", "RevisionNotFound")
        index_blob = rev.files.get(filename)
        if index_blob is None:
            return _error(404, "Entry not found", "EntryNotFound")
        try:
            index = json.loads(index_blob.read(0, index_blob.size))
            shards = sorted(set(index["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            return _error(400, f"{filename} is not a safetensors index")
        headers = {}
        for shard in shards:
            blob = rev.files.get(shard)
            if blob is None:
                return _error(404, f"Entry not found: {shard}", "EntryNotFound")
            try:
                headers[shard] = parse_safetensors_header(blob)
            except (ValueError, UnicodeDecodeError):
                return _error(400, f"{shard} is not a valid safetensors file")
        # The Hub leaves the weight_map out: the shard headers already name every tensor.
        return _json_reply({"index": {k: v for k, v in index.items() if k != "weight_map"}, "headers": headers})


def _bearer(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else authorization


def _truthy(values: list[str] | None) -> bool:
    return bool(values) and values[-1].lower() in ("1", "true")


def _config_summary(rev: _Revision) -> dict[str, Any] | None:
    blob = rev.files.get("config.json")
    if blob is None or blob.size > 1 << 20:
        return None
    try:
        config = json.loads(blob.read(0, blob.size))
    except ValueError:
        return None
    if not isinstance(config, dict):
        return None
    return {k: config[k] for k in ("architectures", "model_type") if k in config}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops SYNs when more clients connect at once (several
    # fitcheck processes, 64 ranged reads): the client then resends after 1 s.
    request_queue_size = 128
    hub: FakeHub

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up (timeouts, resets) are expected; anything else is a bug here.
        if not isinstance(sys.exc_info()[1], OSError):
            self.hub.server_errors.append(traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real client expects
    disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid 40 ms stalls
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.hub._lock:
            self.server.hub._connections.add(self.connection)

    def finish(self) -> None:
        with self.server.hub._lock:
            self.server.hub._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.hub._serve(self)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr logging
        pass

    def reset_connection(self) -> None:
        """Drop the connection with a TCP RST (SO_LINGER 0), sending nothing."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # releases the makefile() reference so close() really closes
        self.connection.close()
