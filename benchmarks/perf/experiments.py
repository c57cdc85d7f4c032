"""What-if measurements: the gain of each proposed change, measured without editing planner/.

Each variant runs `fitcheck plan REPO` in a child process whose prelude patches planner at run time
(monkeypatching, in that child only), so the gain of a fix can be measured before anyone writes
it. Run by run.py (``--experiments``) against the same fake Hub, or alone:

    python benchmarks/perf/experiments.py [--runs N]

Variants (see FINDINGS.md for the fixes they stand for):

- ``baseline``: fitcheck as it is.
- ``gc off``: ``gc.disable()`` before the CLI runs. Parsing 92,000 header entries allocates
  ~500,000 containers; the cyclic GC then runs hundreds of collections, each walking a heap that
  holds every module imported so far.
- ``no index``: the speculative GET of model.safetensors.index.json answers 404, as if hub.py
  asked for the index only when the all-shard-headers endpoint is missing.
- ``stdlib http``: hubhttp.Session replaced by a ~40-line http.client pool (keep-alive, one
  connection per thread, Range, byte limit) and hf_hub_url by an f-string, so the cold path
  imports neither huggingface_hub nor httpx2.
- ``all three``: the three above together.
- ``no cache write``: cache.store does nothing. It stands for writing a per-unit footprint
  instead of every tensor, or writing after the plan is printed: the per-tensor encode, JSON,
  SHA-256 and fsync leave the cold path.
- ``all four``: all of the above.
- warm variants: ``warm`` (as it is), ``warm, gc off``, and ``warm, footprint cached``: the warm
  path loads a pickled Footprint (what estimate() returns: per-unit aggregates) and a snapshot
  without tensors, instead of decoding every tensor and estimating again.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

_GC_OFF = "import gc; gc.disable()\n"

_NO_INDEX = """
import planner.sources.hub as _hub
_orig_file = _hub._Urls.file
def _file(self, path):
    if path == _hub.SAFE_INDEX:
        return f"{self.endpoint}/__no_such_file__/{path}"
    return _orig_file(self, path)
_hub._Urls.file = _file
"""

_STDLIB_HTTP = '''
import http.client, threading, time as _time
from urllib.parse import urlsplit, quote as _quote
import planner.sources.hub as _hub, planner.sources.http as _hh, planner.sources.resolve as _src
from planner import __version__ as _v

class _Session:
    """A stand-in for hubhttp.Session on http.client: keep-alive, one connection per thread."""
    def __init__(self, endpoint, token, timeout, **_ignored):  # deadline=...: this one has none
        import os
        self.endpoint = endpoint.rstrip("/")
        self.requests = 0
        self.bytes = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        tok = token if isinstance(token, str) else os.environ.get("HF_TOKEN") or None
        self._headers = {"user-agent": f"fitcheck/{_v}"}
        if tok:
            self._headers["authorization"] = f"Bearer {tok}"
        self.timeout = timeout
    def _conn(self, url):
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
        conn = pool.get(key)
        if conn is None:
            cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            conn = pool[key] = cls(parts.netloc, timeout=self.timeout)
        target = parts.path + ("?" + parts.query if parts.query else "")
        return conn, target
    def get(self, url, *, what, limit, byte_range=None, method="GET", ok_missing=False, **_ignored):
        # **_ignored: retry settings (attempts=...) of the real Session; this one never retries.
        headers = dict(self._headers)
        if byte_range is not None:
            headers["range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        for _ in range(5):  # follow redirects
            conn, target = self._conn(url)
            with self._lock:
                self.requests += 1
            conn.request(method, target, headers=headers)
            r = conn.getresponse()
            body = r.read(limit + 1) if method != "HEAD" else b""
            if len(body) > limit:
                body = body[:limit]
                conn.close()
            else:
                r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
            with self._lock:
                self.bytes += len(body)
            if r.status in (301, 302, 307, 308) and "location" in hdrs:
                url = hdrs["location"]
                continue
            if r.status >= 400:
                if r.status == 404 and ok_missing:
                    return None
                raise _hh._http_error(r.status, hdrs.get("x-error-code"), what)
            return _hh.Response(r.status, hdrs, body)
        raise _hh.HubError(f"{what}: too many redirects")

def _file(self, path):
    return f"{self.endpoint}/{self.repo_id}/resolve/{_quote(self.rev, safe='')}/{_quote(path)}"

_hub.Session = _Session
_hh.Session = _Session
_hub._Urls.file = _file
'''

_FOOTPRINT_DUMP = """
import pickle, dataclasses, os
import planner.api as _api
_orig_estimate = _api.estimate
def _estimate(snap):
    fp = _orig_estimate(snap)
    with open(os.environ["FOOTPRINT_PICKLE"], "wb") as fh:
        pickle.dump((dataclasses.replace(snap, tensors=()), fp), fh)
    return fp
_api.estimate = _estimate
"""

_FOOTPRINT_LOAD = """
import pickle, os
import planner.api as _api, planner.sources.resolve as _src
with open(os.environ["FOOTPRINT_PICKLE"], "rb") as fh:
    _snap, _fp = pickle.load(fh)
_src.read_model = lambda *a, **k: _snap
_api.estimate = lambda snap: _fp
"""

_NO_CACHE_WRITE = """
import planner.sources.cache as _cache
_cache.store = lambda *a, **k: None
"""

COLD = {
    "baseline": "",
    "gc off": _GC_OFF,
    "no index": _NO_INDEX,
    "stdlib http": _STDLIB_HTTP,
    "all three": _GC_OFF + _STDLIB_HTTP + _NO_INDEX,  # _NO_INDEX wraps the _Urls.file it finds
    "no cache write": _NO_CACHE_WRITE,
    "all four": _GC_OFF + _STDLIB_HTTP + _NO_INDEX + _NO_CACHE_WRITE,
}
WARM = {
    "warm": "",
    "warm, gc off": _GC_OFF,
    "warm, footprint cached": _FOOTPRINT_LOAD,
    "warm, footprint cached, gc off": _GC_OFF + _FOOTPRINT_LOAD,
}


def argv_for(prelude: str, args: list[str]) -> list[str]:
    code = prelude + "\nimport sys\nfrom planner.cli.main import main\nmain(sys.argv[1:])\n"
    return [sys.executable, "-c", code, *args]


def run(hub, repos: list[str], runs: int, scratch: Path, base_env) -> list[tuple[str, str, list[float], int, int]]:
    """(variant, repo, wall times, requests, bytes) for every variant and repo."""
    import run as bench

    def timed(name: str, repo: str, prelude: str, env_of) -> None:
        """One untimed warm-up and ``runs`` timed runs of a variant, each in the environment
        ``env_of()`` gives; a failed run skips the variant."""
        walls, reqs, nbytes = [], 0, 0
        for i in range(-1, runs):
            wall, reqs, nbytes, _, rc, err = bench.run_once(argv_for(prelude, ["plan", repo]), env_of(), hub, scratch / "exp.log")
            if rc != 0:
                print(f"[exp] {name} on {repo} failed, skipped: {err}", flush=True)
                break
            if i >= 0:
                walls.append(wall)
        if walls:
            out.append((name, repo, walls, reqs, nbytes))

    out: list[tuple[str, str, list[float], int, int]] = []
    for repo in repos:
        for name, prelude in COLD.items():  # every run with fresh caches
            timed(name, repo, prelude, lambda: base_env(hub.url, Path(tempfile.mkdtemp(dir=scratch))))
        folder = Path(tempfile.mkdtemp(dir=scratch))
        env = {**base_env(hub.url, folder), "FOOTPRINT_PICKLE": str(folder / "footprint.pickle")}
        bench.run_once(argv_for(_FOOTPRINT_DUMP, ["plan", repo]), env, hub, scratch / "exp.log")  # primes both caches
        for name, prelude in WARM.items():
            timed(name, repo, prelude, lambda: env)
        for name, r, walls, q, b in out:
            if r == repo:
                print(f"[exp] {repo:28} {name:32} median {statistics.median(walls):.3f} s  min {min(walls):.3f} s  "
                      f"{q} req {b / 1e6:.2f} MB", flush=True)
    return out


def table(results: list[tuple[str, str, list[float], int, int]]) -> list[str]:
    """Median s (change against baseline), min s, and MB moved, per variant and repo."""
    repos = list(dict.fromkeys(r for _, r, *_ in results))
    lines = ["| variant | " + " | ".join(repos) + " |", "|---|" + "---:|" * len(repos)]
    base = {(r, "cold"): statistics.median(w) for n, r, w, *_ in results if n == "baseline"}
    base.update({(r, "warm"): statistics.median(w) for n, r, w, *_ in results if n == "warm"})
    for name in [*COLD, *WARM]:
        cells = []
        for repo in repos:
            row = next((x for x in results if x[0] == name and x[1] == repo), None)
            if row is None:
                cells.append("")
                continue
            med = statistics.median(row[2])
            ref = base.get((repo, "warm" if name.startswith("warm") else "cold"))
            delta = "" if name in ("baseline", "warm") or ref is None else f" ({med - ref:+.3f})"
            cells.append(f"{med:.3f}{delta}, min {min(row[2]):.3f} · {row[4] / 1e6:.2f} MB")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    import benchhub
    import run as bench

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repos", nargs="*", default=["bench/llama-3.1-8b", "bench/llama-3.1-70b", "bench/deepseek-v3"])
    args = parser.parse_args()
    print(f"[exp] planner/ copied aside, digest {bench.take_snapshot()}", flush=True)
    hub = benchhub.start(args.repos)
    scratch = Path(tempfile.mkdtemp(prefix="fitcheck-exp-"))
    started = time.monotonic()
    try:
        results = run(hub, args.repos, args.runs, scratch, bench.base_env)
    finally:
        hub.stop()
    print("\n".join(table(results)))
    print(f"[exp] {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
