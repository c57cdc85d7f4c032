"""The one exception tree of fitcheck.

Every error the library raises on purpose is a :class:`FitcheckError`. The CLI maps each class to
one line on stderr and an exit code; the full traceback is shown only with ``FITCHECK_DEBUG=1``.

::

    FitcheckError                      exit 2 unless noted
    ├── UsageError                     bad option value: a size, a profile name, a repo id, a revision
    ├── HubError                       the Hub could not be asked, or answered badly
    │   ├── RepoNotFound               no such repo or revision (or it is private and no token was sent)
    │   ├── GatedRepo                  the repo is gated and the licence is not accepted / no token
    │   ├── HubUnavailable             network down, retries exhausted, deadline passed
    │   └── OfflineCacheMiss           HF_HUB_OFFLINE=1 and nothing cached for the repo
    ├── FolderNotFound                 a local model path (./x, /x, ~/x) that is not a folder: no Hub involved
    ├── ModelFormatError               what was read is not a model we can size
    │   ├── NoWeights                  neither safetensors nor pytorch_model.bin files
    │   ├── BadHeader                  a safetensors header is malformed (names file and field)
    │   ├── BadConfig                  config.json missing, not JSON, missing fields, absurd values
    │   └── UnsupportedModel           a model type or format fitcheck cannot estimate
    ├── NoFeasiblePlan                 nothing fits; carries the rejections (exit 1 for `check`)
    └── VerifyError                    `fitcheck verify` could not run the load

Every error has a ``message`` (one line, what went wrong) and an optional ``hint`` (one line,
what to do). Neither ever contains a token: :func:`planner.core.secrets.redact` is applied to both.
"""

from __future__ import annotations

from typing import Any


class FitcheckError(Exception):
    """Base class: a one-line message and an optional one-line hint."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        from planner.core.secrets import redact

        self.message = redact(_one_line(message))
        self.hint = redact(_one_line(hint)) if hint else None
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "message": self.message, "hint": self.hint}


class UsageError(FitcheckError):
    """An option or argument has a value fitcheck cannot use."""


class HubError(FitcheckError):
    """The Hub could not be asked, or answered something unusable."""


class RepoNotFound(HubError):
    """No such repo, revision or file."""


class GatedRepo(HubError):
    """The repo is gated: a licence must be accepted and a token sent."""


class HubUnavailable(HubError):
    """The network failed and retries (or the deadline) ran out."""


class OfflineCacheMiss(HubError):
    """Offline mode and no cached metadata for the repo."""


class FolderNotFound(FitcheckError):
    """A model given as a local path names no folder (the Hub is not asked)."""


class ModelFormatError(FitcheckError):
    """The files read do not describe a model fitcheck can size."""


class NoWeights(ModelFormatError):
    """Neither safetensors nor pytorch_model.bin weight files."""


class BadHeader(ModelFormatError):
    """A safetensors header is malformed."""


class BadConfig(ModelFormatError):
    """config.json is missing, unreadable or has values no model can have."""


class UnsupportedModel(ModelFormatError):
    """A model type or checkpoint format fitcheck cannot estimate; it refuses rather than guesses."""


class NoFeasiblePlan(FitcheckError):
    """No candidate plan fits the hardware; ``rejections`` says why for each."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, rejections: tuple[Any, ...] = ()) -> None:
        super().__init__(message, hint)
        self.rejections = rejections


class VerifyError(FitcheckError):
    """The verification run could not be carried out."""


# A message is read by people: past this it is a dump, not a line (names in it are already cut
# to 80 characters; this bounds whatever else a hostile input manages to get in).
_MAX_MESSAGE = 1000


def _one_line(text: str) -> str:
    line = printable(" ".join(str(text).split()))
    return line if len(line) <= _MAX_MESSAGE else line[: _MAX_MESSAGE - 3] + "..."


def printable(text: str) -> str:
    """``text`` with every non-printable character written as its escape (``\\x1b``, ``\\u202e``).

    Messages and notes quote names that strangers chose (file names, tensor names, config
    values); a terminal escape sequence or a bidi override among them must reach the user's
    terminal as text, not as a command to it.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
