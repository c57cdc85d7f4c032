"""Issue 13 item 8: a size without a unit is refused with a hint; --help says --gpu is FREE
memory; an override equal to a card's nominal total draws a warning."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from planner.core.errors import UsageError
from planner.core.units import GiB, parse_size
from planner.hardware.profiles import override_warnings

FITCHECK = [sys.executable, "-m", "planner.cli.main"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*FITCHECK, *args], capture_output=True, text=True, env=dict(os.environ), timeout=120)


@pytest.mark.parametrize("text", ["12", "1024", "12.5", " 7 "])
def test_a_bare_number_is_refused_with_a_unit_hint(text: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_size(text, what="--gpu")
    assert "no unit" in e.value.message
    assert e.value.hint and f"{text.strip()}GiB" in e.value.hint


def test_explicit_bytes_and_units_still_parse() -> None:
    assert parse_size("1024B") == 1024
    assert parse_size("12GiB") == 12 * GiB
    assert parse_size("12GB") == 12 * 10**9


def test_cli_refuses_gpu_12_in_one_line() -> None:
    r = run("plan", "org/m", "--gpu", "12")
    assert r.returncode == 2
    assert "no unit" in r.stderr and "give a unit, e.g. 12GiB" in r.stderr


def test_help_says_gpu_is_free_memory() -> None:
    r = run("plan", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "FREE" in text and "--gpu" in text


@pytest.mark.parametrize("size", [24 * GiB, 24 * 10**9, 25_757_220_864, 16 * GiB])
def test_an_override_equal_to_a_nominal_total_is_warned(size: int) -> None:
    (warning,) = override_warnings((size,))
    assert "total" in warning and "free" in warning


def test_a_free_figure_is_not_warned() -> None:
    assert override_warnings((23 * GiB + 512 * 1024**2,)) == []
    assert override_warnings((13 * GiB,)) == []


def test_cli_prints_the_warning(tmp_path) -> None:
    r = run("plan", "tests/does-not-exist", "--gpu", "24GiB")
    assert "warning" in r.stderr and "24.0 GiB" in r.stderr
