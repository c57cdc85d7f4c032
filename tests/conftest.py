"""Shared fixtures: an isolated Hugging Face environment, a fake Hub, tiny real models.

Isolation happens at import, before any test module imports huggingface_hub, because
huggingface_hub reads HF_ENDPOINT, HF_HOME, HF_HUB_CACHE and the token once, at import time.
HF_ENDPOINT points at a FakeHub started here, so even code that relies on huggingface_hub's
import-time endpoint (its module-level functions, transformers) talks to the fake and never to
huggingface.co; code that builds ``HfApi(endpoint=...)`` can use ``fake_hub.url`` as well.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_ROOT = Path(tempfile.mkdtemp(prefix="fitcheck-tests-"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)

# Variables that would let the user's machine leak into a test: tokens, offline switches,
# timeouts, alternative caches and endpoints. FITCHECK_* of the user goes too.
_UNSET = (
    "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_OIDC_RESOURCE", "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE", "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT", "HF_HUB_USER_AGENT_ORIGIN",
    "HF_DEBUG", "HF_HUB_ENABLE_HF_TRANSFER", "HF_XET_HIGH_PERFORMANCE", "HF_HUB_DISABLE_IMPLICIT_TOKEN",
    "TRANSFORMERS_CACHE", "HF_MODULES_CACHE",
)
for _name in [*_UNSET, *(n for n in os.environ if n.startswith("FITCHECK_"))]:
    os.environ.pop(_name, None)
os.environ.update({
    "HF_HOME": str(_ROOT / "hf_home"),
    "HF_HUB_CACHE": str(_ROOT / "hf_home" / "hub"),
    "HF_XET_CACHE": str(_ROOT / "hf_home" / "xet"),
    "HF_TOKEN": "",  # huggingface_hub treats an empty token as no token
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    # Honoured by huggingface_hub 2.x (`is_xet_available()`); the fake Hub sends no xet headers anyway.
    "HF_HUB_DISABLE_XET": "1",
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    "FITCHECK_CACHE_DIR": str(_ROOT / "fitcheck-cache"),
})

from fakehub import FakeHub  # noqa: E402 - imports nothing from huggingface_hub

_SESSION_HUB = FakeHub().start()
os.environ["HF_ENDPOINT"] = _SESSION_HUB.url

import pytest  # noqa: E402

from fixtures_models import TINY_ARCHS, make_tiny_model  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Give each test its own FITCHECK_CACHE_DIR and undo any environment change it makes.

    monkeypatch undoes its own edits; the snapshot also catches code under test writing to
    ``os.environ`` directly.
    """
    monkeypatch.setenv("FITCHECK_CACHE_DIR", str(tmp_path / "fitcheck-cache"))
    snapshot = dict(os.environ)
    yield
    if os.environ != snapshot:
        os.environ.clear()
        os.environ.update(snapshot)


@pytest.fixture(autouse=True)
def _forget_registered_tokens() -> Iterator[None]:
    """Tokens a test registers (planner.core.secrets redacts them from every message) must not be
    redacted from the rest of the session's output."""
    from planner.core import secrets

    known = set(secrets._known)
    yield
    secrets._known.clear()
    secrets._known.update(known)


@pytest.fixture(scope="session")
def fake_hub() -> Iterator[FakeHub]:
    """The session's FakeHub; HF_ENDPOINT already points at it."""
    yield _SESSION_HUB
    _SESSION_HUB.stop()


@pytest.fixture
def hub(fake_hub: FakeHub) -> Iterator[FakeHub]:
    """The session FakeHub, reset for one test: empty log, no faults, default switches.

    Repos the test registers are removed afterwards; repos registered earlier (by session
    fixtures) stay. A test fails if the server itself raised while serving it.
    """
    before = fake_hub.repo_ids
    fake_hub.wait_idle()
    fake_hub.clear_log()
    fake_hub.clear_faults()
    fake_hub.latency = 0.0
    fake_hub.sharded_metadata_endpoint = True
    fake_hub.lfs_redirect = False
    fake_hub.tree_page_size = 1000
    fake_hub.server_errors.clear()
    yield fake_hub
    fake_hub.clear_faults()
    fake_hub.latency = 0.0
    fake_hub.wait_idle()  # a request held by a fault must not log into the next test
    for repo_id in fake_hub.repo_ids - before:
        fake_hub.remove_repo(repo_id)
    if fake_hub.server_errors:
        pytest.fail("fake Hub raised while serving:\n" + "\n".join(fake_hub.server_errors), pytrace=False)


@pytest.fixture
def repo_id(request: pytest.FixtureRequest) -> str:
    """A valid repo id unique to the test, e.g. ``tests/test_file_exists-3f9a2c``."""
    name = re.sub(r"[^A-Za-z0-9_]+", "-", request.node.name)[:70].strip("-")  # cut, then strip: no "--" before the hash
    return f"tests/{name}-{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6]}"


class TinyModels:
    """Tiny real models built on first use and kept for the session: ``tiny_models["llama"]``."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._built: dict[tuple, Path] = {}

    def __getitem__(self, arch: str) -> Path:
        return self.build(arch)

    def __iter__(self) -> Iterator[str]:
        return iter(TINY_ARCHS)

    def build(self, arch: str, dtype: str = "bfloat16", **options: object) -> Path:
        """The folder of ``make_tiny_model(arch, dtype, **options)``, built once per session."""
        key = (arch, dtype, tuple(sorted(options.items())))
        if key not in self._built:
            self._built[key] = make_tiny_model(self._root, arch, dtype, **options)
        return self._built[key]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """Arch -> folder of a tiny saved model (see ``fixtures_models.TINY_ARCHS``), built lazily."""
    return TinyModels(tmp_path_factory.mktemp("tiny-models"))
