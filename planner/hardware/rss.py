"""This process's memory as Linux reports it: what the verify children measure.

``/proc/self/status`` gives the resident set (VmRSS), its peak since the last reset (VmHWM) and its
split (RssAnon, RssFile, RssShmem); writing 5 to ``/proc/self/clear_refs`` resets VmHWM to the
current RSS (proc(5)), so each phase of a load can be measured on its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")


def status(fields: Iterable[str] = FIELDS) -> dict[str, int]:
    """``fields`` of /proc/self/status in bytes (0 for a field the kernel does not report)."""
    text = Path("/proc/self/status").read_text()
    out = {}
    for name in fields:
        m = re.search(rf"^{name}:\s+(\d+) kB", text, re.M)
        out[name] = int(m.group(1)) * 1024 if m else 0
    return out


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
