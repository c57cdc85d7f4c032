"""The fake Hub of tests/fakehub.py, set up for timing: latency per request, answers precomputed,
a listen backlog that does not drop connections.

tests/fakehub.py recomputes the all-shard-headers answer (``/api/models/{id}/safetensors-metadata/
...``) on every request, parsing every shard header: for DeepSeek-V3 that is ~0.5 s of server CPU
per request on this machine, which the real Hub does not spend (it serves the answer from its own
cache). The benchmark caches that answer per repo and commit, and primes the model-info summary
once, so what is measured is the client, plus the injected latency.
"""

from __future__ import annotations

import threading
import urllib.request
from typing import Any

from repos import REPOS, build

import fakehub
from fakehub import FakeHub, Repo

LATENCY_S = 0.050
# socketserver's default listen backlog is 5. With more concurrent connects than that (three
# plans at once, 64 ranged reads of a 163-shard repo) the kernel drops the extra SYNs and the
# clients retransmit them a second later: a 1 s stall that the real Hub's CDN never causes. The
# benchmark's server listens with the kernel's maximum instead (net.core.somaxconn caps it).
BACKLOG = 4096


class BenchHub(FakeHub):
    """A FakeHub whose all-shard-headers answers are computed once per (repo, commit, file)."""

    def __init__(self) -> None:
        super().__init__()
        self._answers: dict[tuple[str, str, str], Any] = {}
        self._answers_lock = threading.Lock()

    def _sharded_metadata(self, handler: Any, repo_id: str, filename: str) -> Any:
        repo = self._access(handler, repo_id, content=True)
        if not isinstance(repo, Repo):
            return repo  # the error reply
        rev = repo.revisions.get("main")
        key = (repo_id, rev.commit if rev else "", filename)
        with self._answers_lock:
            if key not in self._answers:
                self._answers[key] = super()._sharded_metadata(handler, repo_id, filename)
            return self._answers[key]


def start(names: list[str] | None = None, *, latency: float = LATENCY_S) -> BenchHub:
    """Start a hub serving the named benchmark repos (all by default), primed, with ``latency``."""
    fakehub._Server.request_queue_size = BACKLOG  # read by the server's listen() in FakeHub.__init__
    hub = BenchHub().start()
    for name in names or list(REPOS):
        hub.add_repo(name, build(name))
        # Prime the cached answers: model info (its safetensors summary) and all-shard headers.
        for path in (f"/api/models/{name}/revision/main?blobs=true",
                     f"/api/models/{name}/safetensors-metadata/model.safetensors.index.json"):
            try:
                urllib.request.urlopen(hub.url + path, timeout=60).read()
            except OSError:
                pass  # a one-file repo has no index: 404
    hub.wait_idle()
    hub.clear_log()
    hub.latency = latency
    return hub
