"""``--mlock`` on GGUF plans: the probe reads RLIMIT_MEMLOCK, plans that would lock more are
refused with the numbers, the commands and script ask llama.cpp to lock, and real llama-cpp-python
runs under a lowered limit lock what the plan says (or fail to, where the plan refuses)."""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import resource
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from gguf_models import write_llama

from planner import api
from planner.core.records import Constraints, Hardware
from planner.hardware import probe

GiB = 1024**3
MiB = 1024**2
PAGE = os.sysconf("SC_PAGESIZE")
HW = Hardware(name="test-cpu", source="profile", gpus=(), ram_total=16 * GiB, ram_free=8 * GiB, disk_free=100 * GiB,
              cache_disk_free=100 * GiB)
LIMIT = 8 * MiB  # the usual default soft limit (ulimit -l 8192)
CAP_IPC_LOCK = 14  # include/uapi/linux/capability.h
PR_CAPBSET_DROP = 24  # include/uapi/linux/prctl.h


def _mlock(engine: str = "llama-cpp-python") -> Constraints:
    return Constraints(context=1000, new_tokens=16, options=(("engine", engine), ("mlock", True)))


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:  # 3.6 MB of weights: under 8 MiB
    return write_llama(tmp_path_factory.mktemp("mlock") / "small-Q8_0.gguf", qtype="Q8_0", n_layer=4, n_embd=256, n_ff=512,
                       n_vocab=2000)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:  # 28.8 MB of weights: over 8 MiB
    return write_llama(tmp_path_factory.mktemp("mlock") / "big-Q8_0.gguf", qtype="Q8_0", n_layer=8, n_embd=512, n_ff=1024,
                       n_vocab=8000)


def _cap_eff() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        return next(int(line.split()[1], 16) for line in fh if line.startswith("CapEff:"))


def _limited() -> None:
    """preexec_fn: the child loses CAP_IPC_LOCK (held by root in most containers, it lifts the
    limit) and gets a soft RLIMIT_MEMLOCK of 8 MiB, so the rlimit binds as it does for a user.
    Root regains its capabilities at execve from the bounding set, so the capability leaves that
    set (prctl PR_CAPBSET_DROP) as well as the effective and permitted ones."""
    if _cap_eff() >> CAP_IPC_LOCK & 1:
        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_CAPBSET_DROP, CAP_IPC_LOCK, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
        header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words
        if libc.capget(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capget")
        data[0].effective &= ~(1 << CAP_IPC_LOCK)
        data[0].permitted &= ~(1 << CAP_IPC_LOCK)
        if libc.capset(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capset")
    _soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (LIMIT if hard == resource.RLIM_INFINITY else min(LIMIT, hard), hard))


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="capabilities and VmLck are Linux's")


@linux_only
def test_probe_reads_the_limit_that_binds() -> None:
    code = "import json; from planner.hardware import probe; print(json.dumps(probe.memlock_limit()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, preexec_fn=_limited,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    value, source = json.loads(out.stdout)
    assert value == min(LIMIT, resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]) and "RLIMIT_MEMLOCK" in source
    hw = probe.probe()
    here, why = hw.memlock_limit, hw.sources["memlock_limit"]
    if _cap_eff() >> CAP_IPC_LOCK & 1:  # this process: the capability lifts the limit
        assert here is None and "CAP_IPC_LOCK" in why


def test_a_plan_that_locks_more_than_the_limit_is_refused_with_the_numbers(small: Path, big: Path) -> None:
    hw = replace(HW, memlock_limit=LIMIT)
    r = api.plan(str(big), hardware=hw, constraints=_mlock(), runtime="gguf")
    assert r.solution is None and r.rejected
    reasons = " ".join(r.rejected[0].reasons)
    assert "mlock needs 27.5 MiB locked, RLIMIT_MEMLOCK is 8.0 MiB: raise it (ulimit -l" in reasons, reasons
    ok = api.plan(str(small), hardware=hw, constraints=_mlock(), runtime="gguf")
    assert ok.solution is not None and ok.solution.chosen.settings.mlock  # type: ignore[attr-defined]
    # without --mlock the limit does not matter, and no limit (None) refuses nothing
    assert api.plan(str(big), hardware=hw, constraints=Constraints(context=1000, new_tokens=16), runtime="gguf").solution
    assert api.plan(str(big), hardware=HW, constraints=_mlock(), runtime="gguf").solution


def test_mlock_counts_the_whole_embedding(big: Path) -> None:
    # a plan without mlock leaves the embedding rows a run never gathers out of RSS; mlock faults them in
    plain = Constraints(context=200, new_tokens=16, options=(("engine", "llama-cpp-python"),))
    cpu = api.plan(str(big), hardware=HW, constraints=plain, runtime="gguf").solution.chosen.memory["cpu"]  # type: ignore[union-attr]
    locked = api.plan(str(big), hardware=HW, constraints=plain.with_options(mlock=True), runtime="gguf")
    lcpu = locked.solution.chosen.memory["cpu"]  # type: ignore[union-attr]
    assert cpu.unread > 0 and lcpu.unread == 0 and lcpu.weights == cpu.weights + cpu.unread


def test_commands_and_script_ask_for_the_lock_and_ollama_is_refused(small: Path) -> None:
    r = api.plan(str(small), hardware=HW, constraints=_mlock("llama.cpp"), runtime="gguf")
    assert r.solution is not None
    art = api.emit(r)
    for name in ("llama_server", "llama_cli"):
        argv = list(art.commands[name])
        assert argv[argv.index("--load-mode") + 1] == "mmap+mlock"
    assert "'use_mlock': True" in art.files["run_llama.py"]
    assert json.loads(art.files["plan.json"])["load"]["mlock"] is True
    plain = api.emit(api.plan(str(small), hardware=HW, constraints=Constraints(context=1000, new_tokens=16), runtime="gguf"))
    assert "--load-mode" not in plain.commands["llama_server"] and "'use_mlock'" not in plain.files["run_llama.py"]
    o = api.plan(str(small), hardware=HW, constraints=_mlock("ollama"), runtime="gguf")
    assert o.solution is None and "Ollama has no mlock" in " ".join(o.rejected[0].reasons)


def test_cli_mlock_option(small: Path) -> None:
    from click.testing import CliRunner

    from planner.cli.main import cli

    res = CliRunner().invoke(cli, ["plan", str(small), "--runtime", "gguf", "--hardware", "cpu-laptop-8gb", "--mlock",
                                   "--context", "300", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["plan"]["gguf"]["mlock"] is True
    assert doc["plan"]["commands"]["llama_server"][-4:-2] == ["--load-mode", "mmap+mlock"]


needs_llama = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")


def _run(script: str, tmp: Path, *, limited: bool) -> dict:
    path, report = tmp / "run_llama.py", tmp / "report.json"
    path.write_text(script)
    proc = subprocess.run([sys.executable, str(path), "--fill", "--report", str(report)], capture_output=True, text=True,
                          timeout=300, check=False, preexec_fn=_limited if limited else None)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(report.read_text())


@needs_llama
@linux_only
def test_llama_cpp_locks_what_the_plan_says_and_fails_where_it_refuses(small: Path, big: Path, tmp_path: Path) -> None:
    hw = replace(HW, memlock_limit=LIMIT)
    r = api.plan(str(small), hardware=hw, constraints=_mlock(), runtime="gguf")
    assert r.solution is not None
    cpu = r.solution.chosen.memory["cpu"]
    got = _run(api.emit(r).files["run_llama.py"], tmp_path, limited=True)
    assert not got["mlock_failed"]
    # every CPU tensor's pages, from the first (the header before it is unmapped after load)
    assert cpu.weights <= got["locked"] <= cpu.weights + 2 * PAGE + 64 * 1024, (cpu.weights, got["locked"])
    assert abs(cpu.total - got["peak_rss"]) <= max(64 * MiB, got["peak_rss"] // 20)
    # the refused plan, run anyway under the same limit: llama.cpp warns and runs unlocked
    unchecked = api.plan(str(big), hardware=HW, constraints=_mlock(), runtime="gguf")
    assert unchecked.solution is not None
    got = _run(api.emit(unchecked).files["run_llama.py"], tmp_path, limited=True)
    assert got["mlock_failed"] and got["locked"] <= LIMIT
    if probe.memlock_limit()[0] is None:  # no limit here: the same plan locks it all
        bcpu = unchecked.solution.chosen.memory["cpu"]
        got = _run(api.emit(unchecked).files["run_llama.py"], tmp_path, limited=False)
        assert not got["mlock_failed"] and bcpu.weights <= got["locked"] <= bcpu.weights + 2 * PAGE + 64 * 1024
        assert abs(bcpu.total - got["peak_rss"]) <= max(64 * MiB, got["peak_rss"] // 20)


def test_mlock_across_hosts_is_one_usage_error(small: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from planner.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["plan", str(small), "--runtime", "gguf", "--nodes", "2", "--hardware", "rtx-4090", "--mlock"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--mlock is planned on one machine only" in err and len(err.strip().splitlines()) <= 2, err
