"""Where one `fitcheck plan` spends its time: phases by wall clock, imports, and cProfile of every thread.

Run by run.py (the fake Hub stays in run.py's process, so none of its work is profiled here), with
HF_ENDPOINT set:

    python profile_plan.py REPO OUT.txt [--warm] [fitcheck plan options...]

Cold: every child gets an empty FITCHECK_CACHE_DIR. Warm: the cache is primed by one plan first.
The report has three parts, each from its own child process running the CLI's ``main``:

1. phases: wall time of each stage, measured by wrapping the library functions the CLI calls
   (hardware, read_model -> read_hub / parse / cache, estimate, solve, render), with no profiler
   attached, so the numbers are the real ones;
2. the heaviest imports, from ``python -X importtime``;
3. cProfile of the main thread and, merged, of every worker thread (cProfile by itself sees only
   the thread that enabled it, and hub.py reads shards in a thread pool). Its times are inflated
   by the profiler; read them for proportions.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from contextlib import redirect_stdout
from functools import wraps

# Children run here, not in the repo root, where `python -c` / `-m` would import the live planner/
# (sys.path[0] is the current folder) ahead of PYTHONPATH.
_CWD = tempfile.gettempdir()
# Phase-timing runs per report: the per-phase median is reported.
PHASE_RUNS = 5
_phases: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
_lock = threading.Lock()
_thread_profiles: list[cProfile.Profile] = []


def _timed(module: object, attr: str, label: str) -> None:
    fn = getattr(module, attr)

    @wraps(fn)
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            dt = time.perf_counter() - t
            with _lock:
                _phases[label][0] += dt
                _phases[label][1] += 1

    setattr(module, attr, wrapper)


def _profile_new_threads(frame, event, arg):  # threading.setprofile hook: one profiler per thread
    sys.setprofile(None)
    prof = cProfile.Profile()
    with _lock:
        _thread_profiles.append(prof)
    prof.enable()


def _instrument() -> None:
    import planner.api as api
    import planner.sources.cache as cache
    import planner.cli.main as cli
    import planner.model.footprint as estimate
    import planner.sources.formats.safetensors as headers
    import planner.sources.hub as hub
    import planner.sources.http as hubhttp
    import planner.cli.render as render
    import planner.report.schema as report
    import planner.sources.resolve as sources

    _timed(api, "resolve_hardware", "hardware (profile or probe)")
    _timed(sources, "read_model", "read_model (all of reading)")
    _timed(hub, "read_hub", "  read_hub (network + parse)")
    _timed(hubhttp.Session, "get", "    Session.get, summed over threads")
    _timed(hub, "_from_all_headers", "    all-headers answer: decode + validate")
    _timed(hub, "parse_header", "    parse_header (hub.py), summed over threads")
    _timed(hub, "_json_object", "    json.loads of config/index/all-headers")
    _timed(hub, "_check_unique", "    duplicate-name check")
    _timed(cache, "load", "  cache.load (warm: decode entry)")
    _timed(cache, "store", "  cache.store (cold: encode + write)")
    _timed(sources, "_from_metadata_cache", "  metadata-cache lookup")
    _timed(sources, "_from_hf_cache", "  HF-cache lookup")
    _timed(api, "estimate", "estimate (tensors -> footprint)")
    _timed(api, "solve", "solve")
    _timed(api, "smallest_fit", "smallest_fit (when nothing fits)")
    _timed(report, "report_dict", "report_dict (--json)")
    _timed(render, "report", "render.report (text)")
    del cli, headers, estimate


def main() -> None:
    """Orchestrate: a phase-timing run, a cProfile run, an importtime run; write the report."""
    import json

    repo, out_path, *rest = sys.argv[1:]
    warm = "--warm" in rest
    rest = [a for a in rest if a != "--warm"]
    argv = ["plan", repo, *rest]

    def fresh_env() -> dict[str, str]:
        env = dict(os.environ)
        if not warm:
            env["FITCHECK_CACHE_DIR"] = tempfile.mkdtemp(prefix="fitcheck-profile-")
        return env

    if warm:  # prime the cache the warm runs read
        subprocess.run([sys.executable, "-m", "planner.cli.main", *argv], capture_output=True, env=fresh_env(), check=True, cwd=_CWD)
    runs = []
    for mode in ["phases"] * PHASE_RUNS + ["cprofile"]:
        proc = subprocess.run([sys.executable, __file__, "--child", mode, *argv], capture_output=True, text=True, env=fresh_env(),
                              cwd=_CWD)
        if proc.returncode != 0:
            raise SystemExit(f"profile child failed: {proc.stderr[-2000:]}")
        runs.append(json.loads(proc.stdout.splitlines()[-1]))
    *phase_runs, prof = runs
    phases = _median_phases(phase_runs)

    lines = [f"# fitcheck {' '.join(argv)} ({'warm: cache primed' if warm else 'cold: empty cache'})", ""]
    lines.append(f"## Phases (wall clock, no profiler attached; per phase the median of {PHASE_RUNS} runs)")
    lines.append("")
    lines.append(f"`import planner.cli.main`: {phases['import_s'] * 1000:.0f} ms; cli.main: {phases['run_s'] * 1000:.0f} ms "
                 f"(lazy imports inside the commands included); exit {phases['rc']}. Python's own start-up is not "
                 "included: see `python -c pass` in RESULTS.md.")
    lines.append("")
    lines.append(f"{'phase':58} {'ms':>9} {'calls':>7}")
    for label, (secs, calls) in phases["phases"].items():
        lines.append(f"{label:58} {secs * 1000:9.1f} {calls:7d}")
    lines.append("")
    lines.append("Indented phases run inside the one above. Session.get and parse_header run in the thread pool")
    lines.append("when shards are read by range: their sums then exceed the wall time they take together.")
    lines.append("")
    lines += ["## Heaviest imports (-X importtime of the same command; cumulative us, self us)", ""]
    lines += _importtime(argv, warm=warm, env=fresh_env())
    lines.append("")
    lines.append(prof["text"])
    with open(out_path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with open(os.path.splitext(out_path)[0] + ".json", "w") as fh:
        json.dump(phases, fh, indent=1)


def _median_phases(runs: list[dict]) -> dict:
    """Per-field medians over runs (the machine is shared: one run can be slowed by a neighbour)."""
    import statistics

    labels = list(dict.fromkeys(label for r in runs for label in r["phases"]))
    return {
        "import_s": statistics.median(r["import_s"] for r in runs),
        "run_s": statistics.median(r["run_s"] for r in runs),
        "rc": max(r["rc"] for r in runs),
        "runs": len(runs),
        "phases": {label: [statistics.median(r["phases"].get(label, [0.0, 0])[0] for r in runs),
                           max(r["phases"].get(label, [0.0, 0])[1] for r in runs)] for label in labels},
    }


def child(mode: str, argv: list[str]) -> None:
    """One in-process run of the CLI; prints a JSON line with what it measured."""
    import json

    main_prof = cProfile.Profile() if mode == "cprofile" else None
    if main_prof:
        main_prof.enable()
    t_imp = time.perf_counter()
    import planner.cli.main as cli  # noqa: E402  (timed: this is the CLI's import cost)

    import_s = time.perf_counter() - t_imp
    if main_prof:
        main_prof.disable()
    _instrument()
    if main_prof:
        threading.setprofile(_profile_new_threads)
        main_prof.enable()
    t_run = time.perf_counter()
    sink = io.StringIO()
    rc = 0
    try:
        with redirect_stdout(sink):
            cli.main(argv)
    except SystemExit as e:
        rc = e.code or 0
    run_s = time.perf_counter() - t_run
    if not main_prof:
        print(json.dumps({"import_s": import_s, "run_s": run_s, "rc": rc, "phases": dict(_phases)}))
        return
    main_prof.disable()
    threading.setprofile(None)
    lines = []
    for title, profs in (("main thread", [main_prof]), (f"{len(_thread_profiles)} worker threads, merged", _thread_profiles)):
        if not profs:
            continue
        for key in ("cumulative", "tottime"):
            buf = io.StringIO()
            stats = pstats.Stats(profs[0], stream=buf)
            for p in profs[1:]:
                stats.add(p)
            stats.strip_dirs().sort_stats(key).print_stats(30)
            lines += [f"## cProfile (times inflated by the profiler), {title}, by {key}", "", buf.getvalue().strip(), ""]
    print(json.dumps({"text": "\n".join(lines)}))


def _importtime(argv: list[str], *, warm: bool, env: dict[str, str]) -> list[str]:
    """Top imports of the same command in a fresh interpreter. For a cold profile it gets an
    empty cache folder of its own (the profiled run has filled the first one)."""
    code = "import sys; from planner.cli.main import main; main(sys.argv[1:])"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *argv], capture_output=True, text=True, env=env, cwd=_CWD)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        head, cum_us, name = line.split("|", 2)
        rows.append((int(cum_us), int(head.split(":", 1)[1]), name[1:]))
    top_level = [r for r in rows if not r[2].startswith(" ")]
    total = sum(r[0] for r in top_level)
    out = [f"total of top-level imports: {total / 1000:.0f} ms", ""]
    for cum, self_us, name in sorted(top_level, reverse=True)[:15]:
        out.append(f"{cum:9d} {self_us:9d}  {name}")
    heavy = {m for m in ("torch", "transformers", "accelerate", "bitsandbytes", "huggingface_hub.hf_api", "huggingface_hub.file_download")
             if any(r[2].strip() == m for r in rows)}
    out.append("")
    out.append(f"heavy modules imported: {', '.join(sorted(heavy)) or 'none'}")
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3:])
    else:
        main()
