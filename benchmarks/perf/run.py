"""fitcheck against its peers on a local fake Hub with 50 ms of latency per request.

    python benchmarks/perf/run.py            # the full benchmark (~10 minutes on 2 cores)
    python benchmarks/perf/run.py --quick    # 2 runs each, accelerate on the smallest repo only

A full run writes RESULTS.md and results.csv here; a partial one (--quick, --repos, --runs < 5,
--no-profile) writes them to out/ (git-ignored), so it never replaces the committed results.

Run it with the interpreter of fitcheck's own environment (the one with `fitcheck` installed);
the peers get theirs, benchmarks/perf/.peers, created on first use (see peers.py).

What it does:

1. serves the repos of repos.py (1, 4, 30 and 163 shards) from tests/fakehub.py in this process,
   with 50 ms of latency injected before every answer (benchhub.py);
2. runs every tool as a child process, round-robin, after one untimed warm-up each:
   - ``floor``: Python start-up plus one round trip (a raw socket GET of the model info);
   - ``fitcheck cold``: ``fitcheck plan REPO`` with empty FITCHECK_CACHE_DIR and HF cache, each run;
   - ``fitcheck cold, ranged``: the same with the all-shard-headers endpoint switched off, so
     headers are read by parallel Range requests (the path a Hub without that endpoint takes);
   - ``fitcheck warm``: ``fitcheck plan REPO`` with the metadata cache primed (within its TTL);
   - ``fitcheck warm --hardware``: the same with a hardware profile instead of the probe;
   - ``hf-mem``: ``hf-mem --model-id REPO`` (its default mode);
   - ``accelerate``: ``accelerate estimate-memory REPO --library_name transformers``;
3. records per run the wall time, the requests and bytes the fake Hub logged, and the child's
   peak RSS (GNU time's ``%M``: that child alone, not the benchmark);
4. runs ``fitcheck plan A B C`` against three sequential plans, cold and warm;
5. profiles fitcheck's cold and warm plans of the 30- and 163-shard repos (profile_plan.py);
6. measures the proposed fixes by patching planner at run time in child processes
   (experiments.py), and how each CPU stage scales with the number of tensors (scaling.py);
7. writes results.csv (every run) and RESULTS.md (medians, ratios, targets, machine, versions).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import benchhub  # noqa: E402
import peers  # noqa: E402
from repos import REPOS  # noqa: E402

FITCHECK = Path(sys.executable).parent / "fitcheck"
PYCACHE = Path(tempfile.gettempdir()) / "fitcheck-bench-pycache"
# Where RESULTS.md and results.csv go: here for a full run, out/ (git-ignored) for a partial one.
OUT = HERE
PROFILE = "h100-sxm-80gb"  # for the --hardware variant: a profile on which every repo but DeepSeek fits
MULTI = ["bench/llama-3.1-8b-1shard", "bench/llama-3.1-8b", "bench/llama-3.1-70b"]
PROFILED = ["bench/llama-3.1-70b", "bench/deepseek-v3"]

# The targets.
TARGET_VS_HFMEM = 0.5
TARGET_VS_ACCELERATE = 0.05
TARGET_WARM_S = 0.15
TARGET_163_COLD_S = 1.0
TARGET_163_RSS_MB = 200


@dataclass
class Run:
    tool: str
    repo: str
    index: int
    wall_s: float
    requests: int
    bytes: int
    maxrss_kb: int
    rc: int
    error: str = ""
    load: float = field(default_factory=lambda: os.getloadavg()[0])  # 1-min load average when recorded
    cpu_s: float = field(default_factory=lambda: CPU_OF_LAST_RUN[0])  # the child's user + system CPU


@dataclass
class Tool:
    """One way of planning a repo: how to build its command and environment."""

    name: str
    argv: callable  # (repo, hub_url) -> list[str]
    cache: str = "fresh"  # "fresh": empty caches each run; "primed": one cache, filled by the warm-up
    ranged: bool = False  # switch the all-shard-headers endpoint off
    only: tuple[str, ...] = ()  # repos this tool runs on (empty: all)
    extra_env: dict[str, str] = field(default_factory=dict)


def _floor_argv(repo: str, url: str) -> list[str]:
    host, port = url.removeprefix("http://").split(":")
    code = ("import socket,sys;s=socket.create_connection((sys.argv[1],int(sys.argv[2])));"
            "s.sendall(('GET /api/models/%s/revision/main HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n'%sys.argv[3]).encode())\n"
            "while s.recv(1<<16):pass")
    return [sys.executable, "-S", "-c", code, host, port, repo]


def tools(quick: bool) -> list[Tool]:
    fc = str(FITCHECK)
    return [
        Tool("floor", _floor_argv),
        Tool("fitcheck cold", lambda r, u: [fc, "plan", r]),
        Tool("fitcheck cold, ranged", lambda r, u: [fc, "plan", r], ranged=True,
             only=tuple(n for n, (shards, _) in REPOS.items() if shards > 1)),
        Tool("fitcheck warm", lambda r, u: [fc, "plan", r], cache="primed"),
        Tool("fitcheck warm --hardware", lambda r, u: [fc, "plan", r, "--hardware", PROFILE], cache="primed"),
        Tool("hf-mem", lambda r, u: [str(peers.PEERS / "bin" / "hf-mem"), "--model-id", r]),
        Tool("accelerate", lambda r, u: [str(peers.PEERS / "bin" / "accelerate"), "estimate-memory", r,
                                         "--library_name", "transformers"],
             only=("bench/llama-3.1-8b-1shard",) if quick else ()),
    ]


SNAPSHOT = Path(tempfile.gettempdir()) / "fitcheck-bench-snapshot"


def take_snapshot() -> str:
    """Copy planner/ and hardware_profiles/ aside; fitcheck runs from the copy (PYTHONPATH).

    Other people edit planner/ while the benchmark runs: every run must see the same code, and a
    half-saved edit must not fail a run. Returns a digest of the copied sources.
    """
    import hashlib

    shutil.rmtree(SNAPSHOT, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "planner", SNAPSHOT / "planner", ignore=ignore)
    shutil.copytree(ROOT / "hardware_profiles", SNAPSHOT / "hardware_profiles", ignore=ignore)
    digest = hashlib.sha256()
    for path in sorted(SNAPSHOT.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(SNAPSHOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def stable_snapshot(hub: benchhub.BenchHub, scratch: Path, tries: int = 15) -> str:
    """A snapshot on which a cold and a warm plan of every repo succeed (retried while planner/ is mid-edit)."""
    for attempt in range(tries):
        digest = take_snapshot()
        failures = []
        for repo in REPOS:
            folder = Path(tempfile.mkdtemp(dir=scratch))
            for _ in ("cold", "warm"):
                *_, rc, err = run_once([str(FITCHECK), "plan", repo], base_env(hub.url, folder), hub, scratch / "check.log")
                if rc != 0:
                    failures.append(f"{repo}: {err}")
        if not failures:
            return digest
        print(f"[bench] planner/ does not plan every repo yet ({failures[0]}); retrying in 20 s", flush=True)
        time.sleep(20)
    raise SystemExit("planner/ kept failing to plan the benchmark repos: " + "; ".join(failures))


def base_env(hub_url: str, scratch: Path) -> dict[str, str]:
    """The user's environment without anything Hub- or fitcheck-specific, pointed at the fake Hub."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "FITCHECK_", "TRANSFORMERS_"))}
    env.update({
        "HF_ENDPOINT": hub_url,
        "HF_HOME": str(scratch / "hf"),
        "HF_HUB_CACHE": str(scratch / "hf" / "hub"),
        "HF_TOKEN": "",  # no token: hf-mem then reads HF_HOME/token, which does not exist
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "FITCHECK_CACHE_DIR": str(scratch / "fitcheck"),
        "TOKENIZERS_PARALLELISM": "false",
        "NO_COLOR": "1",
        # Every tool runs with its bytecode compiled, as after a pip install. This machine sets
        # PYTHONDONTWRITEBYTECODE=1 and fitcheck is installed editable, so without this every
        # fitcheck run would compile planner/ from source. The prefix keeps the .pyc files out
        # of the source trees; the untimed warm-up run of each tool fills it.
        "PYTHONPYCACHEPREFIX": str(PYCACHE),
        # fitcheck's code comes from the snapshot (see take_snapshot), ahead of the editable install.
        "PYTHONPATH": str(SNAPSHOT),
    })
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


TIME = Path("/usr/bin/time")
# The last child's user + system CPU seconds (GNU time %U + %S), read by Run(): a cost that the
# neighbours' load on this shared machine moves far less than wall time.
CPU_OF_LAST_RUN = [0.0]


def run_once(argv: list[str], env: dict[str, str], hub: benchhub.BenchHub, log: Path, timeout: float = 300) -> tuple[float, int, int, int, int, str]:
    """Run one child; return (wall s, requests, bytes, peak RSS KiB, exit code, error tail).

    Peak RSS comes from GNU time (``%M``): a child forked straight from this process would report
    at least this process's own RSS, because Linux carries the parent's high-water mark across
    fork and exec into ``ru_maxrss``. GNU time is a small process, so what it reports is the
    tool's. Its own start adds about a millisecond to every wall time, for every tool alike.
    """
    hub.wait_idle()
    hub.clear_log()
    rss_file = log.with_suffix(".rss")
    rss_file.unlink(missing_ok=True)
    wrapped = [str(TIME), "-o", str(rss_file), "-f", "%M %U %S", *argv] if TIME.exists() else argv
    with open(log, "wb") as out:
        t = time.perf_counter()
        # cwd: not the repo root, where `python -c` would import the live planner/ (sys.path[0] is
        # the current folder) instead of the snapshot.
        proc = subprocess.Popen(wrapped, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=log.parent)
        # A blocking wait, with a timer to kill a hung child: Popen.wait(timeout=...) polls with
        # sleeps of up to 50 ms, which would round every wall time up by as much.
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        try:
            rc = proc.wait()
        finally:
            watchdog.cancel()
        wall = time.perf_counter() - t
    hub.wait_idle()
    reqs = hub.requests
    try:
        # GNU time writes "Command exited with non-zero status N" before the numbers on failure.
        rss_kb, user_s, sys_s = rss_file.read_text().split()[-3:]
        rss, cpu = int(rss_kb), float(user_s) + float(sys_s)
    except (OSError, ValueError, IndexError):
        rss, cpu = 0, 0.0
    error = ""
    if rc != 0:
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip().strip("^~ ")]
        error = (tail[-1] if tail else f"exit {rc}, no output")[-300:]
    CPU_OF_LAST_RUN[0] = cpu
    return wall, len(reqs), sum(r.bytes_sent for r in reqs), rss, rc, error


def measure(hub: benchhub.BenchHub, tool_list: list[Tool], repos: list[str], runs: int, scratch: Path,
            results: list[Run]) -> None:
    for repo in repos:
        active = [t for t in tool_list if not t.only or repo in t.only]
        primed: dict[str, Path] = {}
        started = time.monotonic()
        for i in range(-1, runs):  # -1: the untimed warm-up, which also primes the warm caches
            for tool in active:
                if tool.cache == "primed":
                    folder = primed.setdefault(tool.name, Path(tempfile.mkdtemp(dir=scratch)))
                else:
                    folder = Path(tempfile.mkdtemp(dir=scratch))
                env = {**base_env(hub.url, folder), **tool.extra_env}
                hub.sharded_metadata_endpoint = not tool.ranged
                try:
                    wall, n, nbytes, rss, rc, err = run_once(tool.argv(repo, hub.url), env, hub, scratch / "last.log")
                finally:
                    hub.sharded_metadata_endpoint = True
                if tool.cache != "primed":
                    shutil.rmtree(folder, ignore_errors=True)
                if i >= 0:
                    results.append(Run(tool.name, repo, i, wall, n, nbytes, rss, rc, err))
        print(f"[bench] {repo}: {len(active)} tools x {runs} runs in {time.monotonic() - started:.0f} s", flush=True)
        for tool in active:
            mine = [r for r in results if r.tool == tool.name and r.repo == repo]
            med = statistics.median(r.wall_s for r in mine)
            bad = sum(r.rc != 0 for r in mine)
            print(f"          {tool.name:26} median {med:7.3f} s  {mine[-1].requests:4d} req  "
                  f"{mine[-1].bytes / 1e6:8.2f} MB  {max(r.maxrss_kb for r in mine) / 1024:7.0f} MB RSS"
                  + (f"  FAILED {bad}/{len(mine)}: {mine[-1].error}" if bad else ""), flush=True)


def measure_multi(hub: benchhub.BenchHub, runs: int, scratch: Path, results: list[Run]) -> None:
    """`fitcheck plan A B C` against three sequential `fitcheck plan X`, cold and warm."""
    fc = str(FITCHECK)
    for warm in (False, True):
        label = "warm" if warm else "cold"
        primed = Path(tempfile.mkdtemp(dir=scratch))
        for i in range(-1, runs):
            folder = primed if warm else Path(tempfile.mkdtemp(dir=scratch))
            wall, n, nbytes, rss, rc, err = run_once([fc, "plan", *MULTI], base_env(hub.url, folder), hub, scratch / "last.log")
            if i >= 0:
                results.append(Run(f"fitcheck plan A B C, {label}", "+".join(MULTI), i, wall, n, nbytes, rss, rc, err))
            total = [0.0, 0, 0, 0, 0]
            errs = []
            cpu = 0.0
            for repo in MULTI:
                folder = primed if warm else Path(tempfile.mkdtemp(dir=scratch))
                w, n, b, r, c, e = run_once([fc, "plan", repo], base_env(hub.url, folder), hub, scratch / "last.log")
                total = [total[0] + w, total[1] + n, total[2] + b, max(total[3], r), total[4] or c]
                cpu += CPU_OF_LAST_RUN[0]
                errs.append(e)
            if i >= 0:
                results.append(Run(f"3 sequential fitcheck plan, {label}", "+".join(MULTI), i, *total, " ".join(filter(None, errs)),
                                   cpu_s=cpu))
    for label in ("cold", "warm"):
        a = statistics.median(r.wall_s for r in results if r.tool == f"fitcheck plan A B C, {label}")
        b = statistics.median(r.wall_s for r in results if r.tool == f"3 sequential fitcheck plan, {label}")
        print(f"[bench] multi-model {label}: plan A B C {a:.3f} s, three plans {b:.3f} s", flush=True)


def measure_startup(runs: int, scratch: Path, hub: benchhub.BenchHub, results: list[Run]) -> None:
    """`fitcheck --help`, `fitcheck probe`, `fitcheck profiles`: no Hub, just start-up."""
    fc = str(FITCHECK)
    for name, argv in (("fitcheck --help", [fc, "--help"]), ("fitcheck probe", [fc, "probe"]),
                       ("fitcheck profiles", [fc, "profiles"]), ("python -c pass", [sys.executable, "-c", "pass"])):
        for i in range(-1, runs):
            wall, n, nbytes, rss, rc, err = run_once(argv, base_env(hub.url, scratch), hub, scratch / "last.log")
            if i >= 0:
                results.append(Run(name, "-", i, wall, n, nbytes, rss, rc, err))


def scaling(scratch: Path) -> dict[str, list[dict]]:
    """scaling.py with the garbage collector on (as fitcheck runs) and off."""
    out = {}
    for label, extra in (("gc on", []), ("gc off", ["--gc-off"])):
        path = scratch / f"scaling-{extra and 'off' or 'on'}.json"
        proc = subprocess.run([sys.executable, str(HERE / "scaling.py"), "--json", str(path), *extra],
                              capture_output=True, text=True, env=base_env("http://127.0.0.1:9", scratch), cwd=scratch)
        if proc.returncode != 0:
            print(f"[bench] scaling ({label}) failed: {proc.stderr[-500:]}", flush=True)
            continue
        out[label] = json.loads(path.read_text())
        print(f"[bench] scaling ({label}) done", flush=True)
    return out


def experiments(hub: benchhub.BenchHub, runs: int, scratch: Path) -> list:
    import experiments as exp

    return exp.run(hub, ["bench/llama-3.1-8b", "bench/llama-3.1-70b", "bench/deepseek-v3"], runs, scratch, base_env)


def profile(hub: benchhub.BenchHub, scratch: Path) -> dict[str, dict]:
    """Phase breakdowns and cProfile text for the cold and warm plans of the big repos."""
    out = {}
    for repo in PROFILED:
        tag = repo.split("/")[1]
        for warm in (False, True):
            name = f"profile-{tag}-{'warm' if warm else 'cold'}"
            folder = Path(tempfile.mkdtemp(dir=scratch))
            argv = [sys.executable, str(HERE / "profile_plan.py"), repo, str(OUT / f"{name}.txt"), *(["--warm"] if warm else [])]
            proc = subprocess.run(argv, env=base_env(hub.url, folder), capture_output=True, text=True, cwd=scratch)
            if proc.returncode != 0:
                print(f"[bench] profiling {repo} failed: {proc.stderr[-500:]}", flush=True)
                continue
            out[name] = json.loads((OUT / f"{name}.json").read_text())
            print(f"[bench] wrote {name}.txt", flush=True)
    return out


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    info = {}
    cpuinfo = Path("/proc/cpuinfo").read_text()
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    info["cpu"] = f"{models[0] if models else platform.processor()} x {os.cpu_count()} logical CPUs"
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), "0")
    info["memory"] = f"{int(mem) / 1024 / 1024:.1f} GiB"
    info["os"] = f"{platform.system()} {platform.release()}"
    osrel = Path("/etc/os-release")
    if osrel.exists():
        pretty = next((line.split("=", 1)[1].strip('"') for line in osrel.read_text().splitlines() if line.startswith("PRETTY_NAME=")), "")
        info["os"] += f" ({pretty})"
    info["python"] = platform.python_version()
    return info


def fitcheck_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {n: md.version(n) for n in ("fitcheck-planner", "huggingface_hub", "httpx2", "click")}
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "diff", "--shortstat", "HEAD", "--", "planner", "hardware_profiles"],
                               capture_output=True, text=True).stdout.strip()
        out["git"] = head + (f" + uncommitted changes in planner/ ({dirty})" if dirty else "")
    except OSError:
        pass
    return out


def _med(results: list[Run], tool: str, repo: str) -> float | None:
    vals = [r.wall_s for r in results if r.tool == tool and r.repo == repo and r.rc == 0]
    return statistics.median(vals) if vals else None


def _fmt_s(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def write_report(results: list[Run], profiles: dict[str, dict], args: argparse.Namespace, meta: dict,
                 exps: list, scales: dict[str, list[dict]]) -> None:
    tool_names = list(dict.fromkeys(r.tool for r in results))
    repos = [r for r in REPOS if any(x.repo == r for x in results)]
    lines = [
        "# fitcheck performance against its peers",
        "",
        f"Generated by `python benchmarks/perf/run.py{' --quick' if args.quick else ''}` on {meta['date']}; "
        f"{args.runs} timed runs per cell after one untimed warm-up, tools interleaved round-robin; "
        f"medians. Total benchmark time: {meta['elapsed_s'] / 60:.1f} min.",
        "",
        "**Machine.** " + "; ".join(f"{k}: {v}" for k, v in meta["machine"].items()) + ". "
        f"Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in meta['load_before'])}; after: "
        f"{', '.join(f'{x:.2f}' for x in meta['load_after'])}; 1-min load during the timed runs: median "
        f"{statistics.median(r.load for r in results):.2f}, max {max(r.load for r in results):.2f} (per run in results.csv). "
        "The machine is shared: a load above the core count "
        "means other work competed for the CPUs, which inflates every tool's times (the min column is the least "
        "disturbed run).",
        "",
        "**Bytecode.** Every child runs with PYTHONPYCACHEPREFIX set and PYTHONDONTWRITEBYTECODE unset, so each tool "
        "runs from compiled bytecode as after a pip install (the untimed warm-up compiles it).",
        "",
        "**Versions.** fitcheck env: " + ", ".join(f"{k} {v}" for k, v in meta["fitcheck"].items())
        + " (fitcheck ran from a copy of planner/ taken at the start, whose sources hash to the snapshot digest)"
        + ". Peers env (benchmarks/perf/.peers): " + ", ".join(f"{k} {v}" for k, v in meta["peers"].items()) + ".",
        "",
        f"**Hub.** tests/fakehub.py on 127.0.0.1 in the benchmark's own process, {benchhub.LATENCY_S * 1000:.0f} ms of latency "
        "before every answer, all-shard-headers endpoint on unless stated; its answers precomputed (benchhub.py). "
        "Requests and bytes are what the fake Hub logged for one run (response bodies). Peak RSS and CPU s (user + "
        "system, median) are the child's own (GNU time `%M`, `%U + %S`); CPU s is what a busy neighbour moves least. hf-mem's hard-coded URL is redirected to HF_ENDPOINT in its installed copy (peers.py), "
        "nothing else is changed; its concurrency is its default, `min(32, cpu_count + 4)` = "
        f"{min(32, (os.cpu_count() or 1) + 4)} here.",
        "",
    ]
    lines += ["## Results", ""]
    for repo in repos:
        shards = REPOS[repo][0]
        lines += [f"### {repo} ({shards} shard{'s' if shards > 1 else ''})", "",
                  "| tool | median s | min s | max s | CPU s | requests | bytes | peak RSS MB | ok |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for tool in tool_names:
            mine = [r for r in results if r.tool == tool and r.repo == repo]
            if not mine:
                continue
            walls = [r.wall_s for r in mine]
            ok = sum(r.rc == 0 for r in mine)
            status = f"{ok}/{len(mine)}" + ("" if ok == len(mine) else f" — {mine[-1].error[:160]}")
            lines.append(f"| {tool} | {statistics.median(walls):.3f} | {min(walls):.3f} | {max(walls):.3f} | "
                         f"{statistics.median(r.cpu_s for r in mine):.2f} | {statistics.median(r.requests for r in mine):.0f} | {statistics.median(r.bytes for r in mine):,.0f} | "
                         f"{max(r.maxrss_kb for r in mine) / 1024:.0f} | {status} |")
        lines.append("")

    lines += ["## Ratios (same run, medians)", "",
              "| repo | fitcheck cold / hf-mem | fitcheck cold / accelerate | fitcheck warm / hf-mem | fitcheck cold, ranged / hf-mem |",
              "|---|---:|---:|---:|---:|"]
    for repo in repos:
        cold, warm = _med(results, "fitcheck cold", repo), _med(results, "fitcheck warm", repo)
        ranged, hfm, acc = _med(results, "fitcheck cold, ranged", repo), _med(results, "hf-mem", repo), _med(results, "accelerate", repo)

        def ratio(a, b):
            return "—" if a is None or b is None else f"{a / b:.2f}x"

        acc_fail = [r for r in results if r.tool == "accelerate" and r.repo == repo and r.rc != 0]
        acc_cell = ratio(cold, acc)
        if acc is None and acc_fail:
            t = statistics.median(r.wall_s for r in acc_fail)
            acc_cell = f"accelerate fails (after {t:.1f} s: {cold / t:.2f}x of that)" if cold else "accelerate fails"
        lines.append(f"| {repo} | {ratio(cold, hfm)} | {acc_cell} | {ratio(warm, hfm)} | {ratio(ranged, hfm)} |")
    lines.append("")

    big = "bench/deepseek-v3"
    cold163, hfm163, acc163 = _med(results, "fitcheck cold", big), _med(results, "hf-mem", big), _med(results, "accelerate", big)
    rss163 = max((r.maxrss_kb for r in results if r.tool == "fitcheck cold" and r.repo == big), default=None)
    warms = {repo: _med(results, "fitcheck warm", repo) for repo in repos}
    warms_hw = {repo: _med(results, "fitcheck warm --hardware", repo) for repo in repos}

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else ("**met**" if ok else "**missed**")

    lines += ["## Targets", "", "| target | measured | verdict |", "|---|---|---|"]
    if cold163 is not None and hfm163 is not None:
        lines.append(f"| 163-shard cold <= {TARGET_VS_HFMEM}x hf-mem | {cold163:.3f} s vs {hfm163:.3f} s = {cold163 / hfm163:.2f}x | "
                     f"{verdict(cold163 <= TARGET_VS_HFMEM * hfm163)} |")
    if cold163 is not None:
        if acc163 is not None:
            lines.append(f"| 163-shard cold <= {TARGET_VS_ACCELERATE}x accelerate | {cold163:.3f} s vs {acc163:.3f} s = "
                         f"{cold163 / acc163:.3f}x | {verdict(cold163 <= TARGET_VS_ACCELERATE * acc163)} |")
        else:
            fails = [r.wall_s for r in results if r.tool == "accelerate" and r.repo == big]
            if fails:
                t = statistics.median(fails)
                lines.append(f"| 163-shard cold <= {TARGET_VS_ACCELERATE}x accelerate | accelerate fails on this machine after "
                             f"{t:.1f} s; against that: {cold163 / t:.3f}x | {verdict(cold163 <= TARGET_VS_ACCELERATE * t)} "
                             "(against its time to fail) |")
        lines.append(f"| 163-shard cold <= {TARGET_163_COLD_S} s | {cold163:.3f} s | {verdict(cold163 <= TARGET_163_COLD_S)} |")
    if rss163 is not None:
        lines.append(f"| 163-shard cold peak RSS <= {TARGET_163_RSS_MB} MB | {rss163 / 1024:.0f} MB | "
                     f"{verdict(rss163 / 1024 <= TARGET_163_RSS_MB)} |")
    for repo in repos:
        w, wh = warms.get(repo), warms_hw.get(repo)
        if w is not None:
            lines.append(f"| warm `fitcheck plan` <= {TARGET_WARM_S} s, {repo} | {w:.3f} s (with --hardware: {_fmt_s(wh)} s) | "
                         f"{verdict(w <= TARGET_WARM_S)} |")
    lines.append("")

    multi = [t for t in tool_names if "A B C" in t or "sequential" in t]
    if multi:
        lines += ["## Several models at once", "",
                  f"`fitcheck plan {' '.join(MULTI)}` (one process, `api.plan_many`) against three `fitcheck plan` processes "
                  "run one after another.", "",
                  "| what | median s | CPU s | requests | bytes | peak RSS MB |", "|---|---:|---:|---:|---:|---:|"]
        for tool in multi:
            mine = [r for r in results if r.tool == tool]
            lines.append(f"| {tool} | {statistics.median(r.wall_s for r in mine):.3f} | {statistics.median(r.cpu_s for r in mine):.2f} | "
                         f"{statistics.median(r.requests for r in mine):.0f} | "
                         f"{statistics.median(r.bytes for r in mine):,.0f} | {max(r.maxrss_kb for r in mine) / 1024:.0f} |")
        lines.append("")

    startup = [t for t in tool_names if any(r.repo == "-" for r in results if r.tool == t)]
    if startup:
        lines += ["## Start-up (no Hub)", "", "| command | median s | peak RSS MB |", "|---|---:|---:|"]
        for tool in startup:
            mine = [r for r in results if r.tool == tool]
            lines.append(f"| `{tool}` | {statistics.median(r.wall_s for r in mine):.3f} | {max(r.maxrss_kb for r in mine) / 1024:.0f} |")
        lines.append("")

    if profiles:
        lines += ["## Where fitcheck's time goes", "",
                  "Wall-clock phases of one in-process plan with no profiler attached (profile_plan.py); the full "
                  "cProfile output of every thread is in the `profile-*.txt` files beside this one. Indented phases "
                  "are inside the one above; `Session.get` sums over concurrent requests.", ""]
        names = list(profiles)
        labels = list(dict.fromkeys(label for p in profiles.values() for label in p["phases"]))
        lines.append("| phase (ms) | " + " | ".join(n.removeprefix("profile-") for n in names) + " |")
        lines.append("|---|" + "---:|" * len(names))
        lines.append("| `import planner.cli.main` | " + " | ".join(f"{profiles[n]['import_s'] * 1000:.0f}" for n in names) + " |")
        lines.append("| `cli.main` in all | " + " | ".join(f"{profiles[n]['run_s'] * 1000:.0f}" for n in names) + " |")
        for label in labels:
            cells = []
            for n in names:
                v = profiles[n]["phases"].get(label)
                cells.append("" if v is None else f"{v[0] * 1000:.0f}")
            lines.append(f"| {label.replace(' ', '&nbsp;', len(label) - len(label.lstrip()))} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("See FINDINGS.md for what these numbers mean and what to change.")
        lines.append("")
    if exps:
        import experiments as exp

        lines += ["## What-if: the proposed fixes, measured", "",
                  "Cold (fresh caches) and warm `fitcheck plan REPO`, each variant patching planner at run time in its own "
                  "child (experiments.py; nothing under planner/ is edited). Median s (change against the unpatched run), "
                  "min s, and MB the Hub sent. On loopback bytes are nearly free; on a real link every 10 MB is ~0.8 s "
                  "at 100 Mbit/s.", ""]
        lines += exp.table(exps)
        lines.append("")
    if scales:
        import scaling as sc

        lines += ["## Scaling with the number of tensors", "",
                  "DeepSeek-V3's layout with 32 to 512 routed experts, each CPU stage in-process (scaling.py), best of 3 in CPU time.", ""]
        for label, rows in scales.items():
            lines += [f"### Garbage collector {label.removeprefix('gc ')}", ""] + sc.table(rows) + [""]
    (OUT / "RESULTS.md").write_text("\n".join(lines))


def write_csv(results: list[Run], date: str) -> None:
    with open(OUT / "results.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["date", "tool", "repo", "shards", "run", "wall_s", "cpu_s", "requests", "bytes", "maxrss_kb", "rc", "load1", "error"])
        for r in results:
            shards = "+".join(str(REPOS[x][0]) for x in r.repo.split("+")) if r.repo != "-" else ""
            w.writerow([date, r.tool, r.repo, shards, r.index, f"{r.wall_s:.4f}", f"{r.cpu_s:.2f}", r.requests, r.bytes, r.maxrss_kb, r.rc, f"{r.load:.2f}", r.error])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 runs each, accelerate on the 1-shard repo only; no profiles, experiments or scaling")
    parser.add_argument("--runs", type=int, help="timed runs per cell (default 7; --quick: 2)")
    parser.add_argument("--repos", nargs="*", choices=list(REPOS), help="repos to run (default: all)")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile runs")
    args = parser.parse_args()
    args.runs = args.runs or (2 if args.quick else 7)
    global OUT
    if args.quick or args.repos or args.runs < 5 or args.no_profile:
        # A partial run must not replace the committed results of the last full one.
        OUT = HERE / "out"
        OUT.mkdir(exist_ok=True)
    if not FITCHECK.exists():
        raise SystemExit(f"{FITCHECK} not found: run this with the Python of fitcheck's environment")
    started = time.monotonic()
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = {"date": date, "machine": machine(), "fitcheck": fitcheck_versions(), "peers": peers.ensure(),
            "load_before": os.getloadavg()}
    repos = args.repos or list(REPOS)
    print(f"[bench] starting the fake Hub with {len(REPOS)} repos", flush=True)
    hub = benchhub.start()  # every repo: the profiles, experiments and multi-model runs use several
    scratch = Path(tempfile.mkdtemp(prefix="fitcheck-bench-"))
    results: list[Run] = []
    try:
        meta["fitcheck"]["snapshot"] = stable_snapshot(hub, scratch)
        full = not args.quick
        profiles: dict[str, dict] = {}
        exps: list = []
        scales: dict[str, list[dict]] = {}

        def save() -> None:  # after every stage: a failure later loses nothing measured
            meta["elapsed_s"] = time.monotonic() - started
            meta["load_after"] = os.getloadavg()
            write_csv(results, date)
            write_report(results, profiles, args, meta, exps, scales)

        measure_startup(args.runs, scratch, hub, results)
        measure(hub, tools(args.quick), repos, args.runs, scratch, results)
        save()
        measure_multi(hub, args.runs, scratch, results)
        save()
        if full and not args.no_profile:
            profiles = profile(hub, scratch)
            save()
        if full:
            exps = experiments(hub, args.runs, scratch)
            save()
            scales = scaling(scratch)
            save()
    finally:
        hub.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"[bench] wrote {OUT / 'RESULTS.md'} and results.csv in {meta['elapsed_s'] / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
