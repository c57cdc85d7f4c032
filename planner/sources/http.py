"""Bounded, retried requests to the Hub over huggingface_hub's own HTTP session.

huggingface_hub supplies the client (``get_session``), the auth headers and token lookup
(``build_hf_headers``) and the file URLs (``hf_hub_url``). What it does not do, and fitcheck
needs, is done here:

- every body is read to a byte limit, so a server that answers a Range request with the whole
  file (200 instead of 206) costs at most the range's end, not the file, and the bytes asked for
  are taken from their offset in it;
- a 206 whose Content-Range disagrees with the request, or a body shorter than announced, is
  rejected rather than parsed;
- 429 (honouring Retry-After), 500/502/503/504, resets and timeouts are retried with exponential
  backoff, all within one deadline (``--timeout``); when it passes, the error names the request;
- the Hub's ``X-Error-Code`` is mapped to fitcheck's errors as ``hf_raise_for_status`` maps it to
  huggingface_hub's (that function needs a fully read body, which a bounded read is not).
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal, overload

from planner.core.errors import (
    GatedRepo,
    HubError,
    HubUnavailable,
    RepoNotFound,
    UsageError,
)
from planner.core.secrets import register

# Statuses worth asking again: rate limits and transient server faults (huggingface_hub's own
# http_backoff retries the same set, utils/_http.py _DEFAULT_RETRY_ON_STATUS_CODES).
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# First backoff and its cap, in seconds. 0.25 s keeps a single blip cheap; the cap of 4 s keeps
# a flaky network from eating a CI job's budget (huggingface_hub uses 1 s and 8 s for uploads).
BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 4.0
# Attempts for a connection that cannot even be opened (DNS failure, connection refused, no
# route): that does not heal in seconds, so after three tries (0.75 s of backoff) the Hub counts as
# unreachable and the caller falls back to the caches or the catalog, instead of spending the
# whole --timeout.
CONNECT_ATTEMPTS = 3
# How long a Hub found unreachable (CONNECT_ATTEMPTS connections refused in a row) is taken to be
# so by this process: every later request of the run (the next model of a comparison, the next
# file) fails at once and falls back to the caches or the catalog, instead of spending ~1.3 s
# more each (issue 13 item 12 measured that per model). One minute spans a run; a Hub that comes
# back is asked again after it, and any answer from it clears the memo.
UNREACHABLE_MEMO_S = 60.0
_unreachable: dict[str, tuple[float, str]] = {}  # endpoint -> (time.monotonic() when found, why)
_memo_lock = threading.Lock()
# Per-attempt socket timeout, capped by what is left of the deadline.
ATTEMPT_TIMEOUT_S = 10.0
_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


@dataclass(frozen=True, slots=True)
class Response:
    """A finished request: status, headers (lower-case keys) and a bounded body."""

    status: int
    headers: dict[str, str]
    body: bytes


class Retryable(Exception):
    """An attempt failed in a way another attempt may not."""

    unreachable = False


class Unreachable(Retryable):
    """The connection could not be opened at all."""

    unreachable = True


def client_loaded() -> None:
    """Import huggingface_hub's HTTP client now, so that a deadline started after this counts only
    requests: the import took 0.44-0.58 s here (``from huggingface_hub.utils import get_session``
    with ``hf_hub_url`` in a fresh Python 3.11, huggingface_hub 2.4.0), a fifth of a 2 s ``--timeout``."""
    import huggingface_hub  # noqa: F401
    import huggingface_hub.utils  # noqa: F401


class Session:
    """One plan's connection to the Hub: auth, deadline, and a count of what crossed the wire.

    Args:
        endpoint: the Hub's base URL (``HF_ENDPOINT``, read by the caller at call time).
        token: a token, or None to let huggingface_hub find one (HF_TOKEN, the login file).
        timeout: total seconds for every request of this session together.
        deadline: a ``time.monotonic()`` instant to stop at if it comes sooner (the caller's
            deadline, when other requests already spent part of ``timeout``).
    """

    def __init__(self, endpoint: str, token: str | bool | None, timeout: float, *, deadline: float | None = None) -> None:
        from huggingface_hub.utils import build_hf_headers, get_session

        from planner import __version__

        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            # A NaN deadline compares false with everything: requests would be retried forever.
            raise UsageError(f"timeout {timeout!r} is not a positive number of seconds")
        self.endpoint = endpoint.rstrip("/")
        self.token = token
        self.deadline = time.monotonic() + timeout
        if deadline is not None:
            self.deadline = min(self.deadline, deadline)  # a deadline the caller already started
        self.timeout = timeout
        self._client = get_session()
        self._headers = build_hf_headers(token=token, library_name="fitcheck", library_version=__version__)
        # Whatever token huggingface_hub found (HF_TOKEN, the login file, --token) is what may leak
        # back in an answer or an exception: make sure every message hides it.
        _, _, sent = self._headers.get("authorization", "").partition(" ")
        register(sent.strip() or None)
        self._lock = threading.Lock()
        self.requests = 0
        self.bytes = 0

    def left(self) -> float:
        return self.deadline - time.monotonic()

    @overload
    def get(self, url: str, *, what: str, limit: int, byte_range: tuple[int, int] | None = None,
            method: str = "GET", ok_missing: Literal[False] = False, attempts: int | None = None) -> Response: ...
    @overload
    def get(self, url: str, *, what: str, limit: int, byte_range: tuple[int, int] | None = None,
            method: str = "GET", ok_missing: bool, attempts: int | None = None) -> Response | None: ...

    def get(self, url: str, *, what: str, limit: int, byte_range: tuple[int, int] | None = None,
            method: str = "GET", ok_missing: bool = False, attempts: int | None = None) -> Response | None:
        """GET (or HEAD) ``url`` with retries; read at most ``limit`` bytes of body.

        Args:
            what: the request in words, for error messages ("header of model-00001-of-00004.safetensors").
            limit: the most body bytes to keep; more is never read.
            byte_range: inclusive (first, last) byte range to ask for.
            ok_missing: return None on 404 instead of raising.
            attempts: give up (HubUnavailable) after this many failed attempts; None: only the
                deadline ends the retries.
        """
        wait = BACKOFF_FIRST_S
        attempt = refused = 0
        last = "no attempt made"
        while True:
            attempt += 1
            known = unreachable(self.endpoint)
            if known is not None:  # found unreachable earlier in this run (by this or another thread)
                raise HubUnavailable(f"{what}: the Hub cannot be reached ({known})", hint="check the network, or HF_ENDPOINT")
            if self.left() <= 0:
                raise HubUnavailable(f"{what}: no answer within the {self.timeout:.3g} s deadline ({last})",
                                     hint="check the network or raise --timeout")
            try:
                return self._attempt(url, what=what, limit=limit, byte_range=byte_range, method=method, ok_missing=ok_missing)
            except Retryable as e:
                last = str(e)
                retry_after = getattr(e, "retry_after", None)
                refused = refused + 1 if e.unreachable else 0
            if refused >= CONNECT_ATTEMPTS:
                with _memo_lock:
                    _unreachable[self.endpoint] = (time.monotonic(), last)
                raise HubUnavailable(f"{what}: the Hub cannot be reached ({last})", hint="check the network, or HF_ENDPOINT")
            if attempts is not None and attempt >= attempts:
                raise HubUnavailable(f"{what}: failed after {attempt} attempt{'s' if attempt > 1 else ''} ({last})",
                                     hint="check the network or raise --timeout")
            pause = min(max(wait, retry_after or 0.0), self.left())
            if retry_after is not None and retry_after > self.left():
                raise HubUnavailable(f"{what}: rate limited by the Hub; it asks to wait {retry_after:g} s, past the {self.timeout:g} s deadline",
                                     hint="retry later or raise --timeout")
            if pause > 0:
                time.sleep(pause)
            wait = min(wait * 2, BACKOFF_MAX_S)

    def _attempt(self, url: str, *, what: str, limit: int, byte_range: tuple[int, int] | None, method: str, ok_missing: bool) -> Response | None:
        import httpx2

        headers = dict(self._headers)
        if byte_range is not None:
            headers["range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        per_attempt = max(0.05, min(ATTEMPT_TIMEOUT_S, self.left()))
        with self._lock:
            self.requests += 1
        try:
            with self._client.stream(method, url, headers=headers, timeout=httpx2.Timeout(per_attempt), follow_redirects=True) as r:
                status = r.status_code
                if _unreachable:
                    with _memo_lock:
                        _unreachable.pop(self.endpoint, None)  # it answers again
                # A server may ignore Range and answer 200 with the whole file (RFC 9110 section
                # 14.2): the bytes asked for then start at byte_range[0] of the body, not at 0.
                skip = byte_range[0] if byte_range is not None and status == 200 else 0
                keep = skip + limit
                body = bytearray()
                if method != "HEAD":
                    for chunk in r.iter_bytes():
                        body += chunk
                        if len(body) > keep:
                            break
                with self._lock:
                    self.bytes += len(body)
                resp_headers = {k.lower(): v for k, v in r.headers.items()}
                if status in RETRY_STATUS:
                    err = Retryable(f"HTTP {status}")
                    err.retry_after = _retry_after(resp_headers)  # type: ignore[attr-defined]
                    raise err
                if status >= 400:
                    code = resp_headers.get("x-error-code")
                    if status == 404 and ok_missing and code in (None, "EntryNotFound"):
                        return None
                    raise _http_error(status, code, what)
                if byte_range is not None and status == 206:
                    _check_range(resp_headers.get("content-range", ""), byte_range, len(body), what)
                elif method != "HEAD" and len(body) <= keep:
                    declared = resp_headers.get("content-length")
                    if declared is not None and declared.isdigit() and int(declared) != len(body) and "content-encoding" not in resp_headers:
                        raise Retryable(f"body truncated: {len(body)} of {declared} bytes")
                return Response(status=status, headers=resp_headers, body=bytes(body[skip:keep]))
        except httpx2.TimeoutException as e:
            raise Retryable(f"timed out after {per_attempt:.1f} s") from e
        except httpx2.ConnectError as e:
            raise Unreachable(f"connection failed: {type(e).__name__}") from e
        except (httpx2.TransportError, httpx2.StreamError) as e:
            raise Retryable(f"connection failed: {type(e).__name__}") from e


def unreachable(endpoint: str) -> str | None:
    """Why ``endpoint`` was found unreachable within the last :data:`UNREACHABLE_MEMO_S`, or None."""
    with _memo_lock:
        found = _unreachable.get(endpoint.rstrip("/"))
        if found is None:
            return None
        age = time.monotonic() - found[0]
        if age > UNREACHABLE_MEMO_S:
            del _unreachable[endpoint.rstrip("/")]
            return None
    return f"{found[1]}; found {age:.0f} s ago"


def _check_range(header: str, asked: tuple[int, int], got: int, what: str) -> None:
    m = _RANGE.match(header.strip())
    if not m:
        raise Retryable(f"206 without a valid Content-Range ({header[:60]!r})")
    first, last = int(m.group(1)), int(m.group(2))
    if first != asked[0] or last > asked[1] or last < first:
        raise Retryable(f"Content-Range {header[:60]!r} does not answer bytes={asked[0]}-{asked[1]}")
    if last - first + 1 != got:
        raise Retryable(f"body truncated: {got} of {last - first + 1} bytes")


def _retry_after(headers: dict[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _http_error(status: int, code: str | None, what: str) -> HubError:
    """Map the Hub's error answer to ours, the way huggingface_hub's hf_raise_for_status reads
    ``X-Error-Code`` (utils/_http.py): GatedRepo, RepoNotFound (also 401 without a code, which is
    how the Hub hides private repos), RevisionNotFound, EntryNotFound."""
    if code == "GatedRepo" or (status == 403 and code is None and "gated" in what):
        return GatedRepo(f"{what}: the repo is gated", hint=_GATED_HINT)
    if code == "RevisionNotFound":
        return RepoNotFound(f"{what}: revision not found", hint="check --revision (a branch, tag or commit sha)")
    if code == "RepoNotFound" or status == 401:
        return RepoNotFound(f"{what}: repo not found (or private and no valid token was sent)",
                            hint="check the id; for a private repo log in with `hf auth login` or set HF_TOKEN")
    if code == "EntryNotFound" or status == 404:
        return RepoNotFound(f"{what}: file not found in the repo")
    if status == 403:
        return HubError(f"{what}: access denied (HTTP 403)", hint="check that your token may read this repo")
    return HubError(f"{what}: the Hub answered HTTP {status}")


_GATED_HINT = "accept the licence on the model's Hub page, then log in with `hf auth login` or set HF_TOKEN"


def json_body(resp: Response, what: str) -> Any:
    """Decode a JSON body or raise HubError naming the request."""
    import json

    try:
        return json.loads(resp.body)
    except (ValueError, RecursionError):
        raise HubError(f"{what}: the Hub answered something that is not JSON") from None
