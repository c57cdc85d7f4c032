"""``plan``/``check`` options of the diffusers runtime: image size, guidance, steps, attention slicing.

Any of them implies ``--runtime diffusers``. ``--batch`` (images per call) is the common option.
"""

from __future__ import annotations

import re
from typing import Any

import click

from planner.core.errors import UsageError

_SIZE = re.compile(r"^(\d{2,5})[xX*](\d{2,5})$")


def parse_resolution(text: str) -> tuple[int, int]:
    """``"1024x768"`` -> (1024, 768) (width, height); each a multiple of 8, 16 to 16384.

    Raises:
        UsageError: another form.
    """
    m = _SIZE.match(text.strip())
    if not m:
        raise UsageError(f"--resolution {text!r} is not WIDTHxHEIGHT", hint="write it like 1024x1024")
    w, h = int(m.group(1)), int(m.group(2))
    if not (16 <= w <= 16384 and 16 <= h <= 16384) or w % 8 or h % 8:
        raise UsageError(f"--resolution {text!r}: width and height must be multiples of 8 between 16 and 16384")
    return w, h


OPTIONS = [
    click.option("--resolution", metavar="WxH", help="Image size for diffusers pipelines (default: the pipeline's own)."),
    click.option("--guidance/--no-guidance", "guidance", default=None,
                 help="Classifier-free guidance on or off (default: the pipeline's; off for Flux)."),
    click.option("--steps", type=click.IntRange(1, 1000), help="Denoising steps (speed estimate; default: the pipeline's)."),
    click.option("--attention-slicing", "attention_slicing", type=click.Choice(["auto", "on", "off"]), default=None,
                 help="UNet attention slicing: auto (planned only where it lowers the peak; the default), "
                      "on (every plan slices, one head at a time), off (never)."),
]


def collect(o: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if o.get("resolution"):
        out["resolution"] = parse_resolution(o["resolution"])
    if o.get("guidance") is not None:
        out["guidance"] = bool(o["guidance"])
    if o.get("steps"):
        out["steps"] = int(o["steps"])
    if o.get("attention_slicing") is not None:
        out["attention_slicing"] = str(o["attention_slicing"])
    if out:
        out["runtime"] = "diffusers"
    return out
