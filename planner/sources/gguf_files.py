"""Reading the GGUF headers a runtime selected, from the Hub (HTTP Range requests through the
session of :mod:`planner.sources.http`: huggingface_hub's client, auth, deadline, counted in
``Fetch``) or from local files. Tensor data is never read.

A selection's ``files`` are one GGUF file or one split set (``*-00001-of-0000N.gguf``, shard 1
first). Metadata comes from shard 1; tensors from every shard. Shards are read in parallel; each
header is read from its start in growing chunks (256 KiB, doubling up to 4 MiB), so a small file
costs one request and a 128k-vocabulary tokenizer (~9 MB before the tensor infos) 6 requests
(tests/test_gguf_runtime.py, the 70B-shaped split set: 7 requests, 12.6 MB).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from planner.core import ids
from planner.core.errors import BadHeader, HubError, NoWeights
from planner.core.records import FileSelection, Tensor
from planner.sources.formats import gguf

# First read of a header: the tensor infos of a shard 2..N and a tiny test file fit in it; a
# 32k-vocabulary llama header (~0.7 MB) takes 3 reads (0.25+0.5+1 MiB), a 128k one (~9 MB) 6.
FIRST_READ = 256 * 1024
MAX_READ = 4 * 1024 * 1024  # past this, chunks stop growing: the overshoot past the header stays under 4 MiB


class _Growing:
    """``read(offset, n)`` callers get chunks that double in size from FIRST_READ."""

    def __init__(self, fetch: Callable[[int, int], bytes]) -> None:
        self.fetch, self.next = fetch, FIRST_READ

    def __call__(self, offset: int, n: int) -> bytes:
        want = max(n, self.next)
        self.next = min(self.next * 2, MAX_READ)
        return self.fetch(offset, want)


def _order(ws: FileSelection, where: str) -> list[list[str]]:
    """The selection's files as split sets (each in shard order); a lone file is a set of one."""
    sets: dict[str, list[tuple[int, int, str]]] = {}
    for path in ws.files:
        info = gguf.split_info(path.rsplit("/", 1)[-1])
        key = (path.rsplit("/", 1)[0] + "/" if "/" in path else "") + info[0] if info else path
        sets.setdefault(key, []).append((info[1], info[2], path) if info else (1, 1, path))
    out = []
    for key, members in sets.items():
        members.sort()
        counts = {n for _, n, _ in members}
        if len(counts) != 1 or [i for i, _, _ in members] != list(range(1, len(members) + 1)) or len(members) != counts.pop():
            raise BadHeader(f"{where}: split set {ids.show(key)} is incomplete or inconsistent "
                            f"({', '.join(p for _, _, p in members[:4])})")
        out.append([p for _, _, p in members])
    return out


def _combine(headers: list[gguf.GgufHeader], sets: list[list[str]], where: str) -> tuple[list[Tensor], dict[str, Any]]:
    by_file = {h.file: h for h in headers}
    tensors: list[Tensor] = []
    summaries = []
    for files in sets:
        hs = [by_file[f] for f in files]
        if len(hs) > 1 or gguf.KEY_SPLIT_COUNT in hs[0].metadata:
            gguf.check_split(hs, where=f"{files[0]} of {where}")
        for h in hs:
            tensors.extend(h.tensors)
            summaries.append(h.summary())
    seen: dict[str, str] = {}
    for t in tensors:
        if t.name in seen:
            raise BadHeader(f"{where}: tensor {ids.show(t.name)} appears in both {seen[t.name]} and {t.file}")
        seen[t.name] = t.file
    return tensors, {"headers": summaries, "reads": sum(h.reads for h in headers), "bytes": sum(h.bytes_read for h in headers)}


def read_hub(session: Any, file_url: Callable[[str], str], repo_id: str, ws: FileSelection, listing: Mapping[str, int | None],
             pool: ThreadPoolExecutor) -> tuple[list[Tensor], dict[str, Any]]:
    """(tensors of every selected file, the GGUF summary for ``Snapshot.gguf``) read with Range requests."""
    sets = _order(ws, repo_id)
    for files in sets:
        for f in files:
            if f not in listing:
                raise BadHeader(f"{repo_id}: selected {ids.show(f)}, which the repo does not have")

    def one(path: str) -> gguf.GgufHeader:
        size = listing.get(path)
        where = f"{path} of {repo_id}"
        if size is not None and size < 24:
            raise BadHeader(f"{where}: file is {size} bytes, too short for a GGUF header")

        def fetch(offset: int, n: int) -> bytes:
            last = offset + n - 1 if size is None else min(offset + n, size) - 1
            if last < offset:
                return b""
            resp = session.get(file_url(path), what=f"header of {where}", limit=last - offset + 1, byte_range=(offset, last))
            if resp is None:
                raise HubError(f"{where}: listed but not served")
            return bytes(resp.body)

        return gguf.parse(_Growing(fetch), file=path, where=where, file_size=size, chunk=1)

    jobs = [pool.submit(one, f) for files in sets for f in files]
    headers = [j.result() for j in jobs]
    return _combine(headers, sets, repo_id)


def read_local(folder: Path, model_id: str, ws: FileSelection) -> tuple[list[Tensor], dict[str, Any]]:
    """The same from files in ``folder``."""
    import stat

    sets = _order(ws, model_id)
    headers = []
    for files in sets:
        for f in files:
            path = folder / f
            where = f"{f} of {model_id}"
            try:
                st = path.stat()
                if not stat.S_ISREG(st.st_mode):
                    raise NoWeights(f"{where}: is not a regular file")
                with open(path, "rb") as fh:
                    def read(offset: int, n: int, fh: Any = fh) -> bytes:
                        fh.seek(offset)
                        return bytes(fh.read(n))

                    headers.append(gguf.parse(read, file=f, where=where, file_size=st.st_size))
            except OSError as e:
                raise NoWeights(f"{where}: cannot be read ({e.strerror or type(e).__name__})") from None
    return _combine(headers, sets, model_id)
