"""The ``fitcheck`` command: a thin click layer over :mod:`planner.api`.

Exit codes: 0 success (``check``: a plan fits); 1 ``check``: nothing fits, or the download does not
fit on the disk of the HF cache (also ``plan --config/--script`` when nothing fits); 2 any error. Errors are one line on stderr (a traceback only with
FITCHECK_DEBUG=1).
"""

from __future__ import annotations

import functools
import gc
import json
import math
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from planner import __version__
from planner.cli import options as runtime_options
from planner.core.errors import FitcheckError, NoFeasiblePlan, UsageError, printable
from planner.core.secrets import redact, register


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the click group, mapping errors to one line and an exit code.

    Under ``--json`` an error is a JSON object on stdout, ``{"error", "message", "hint"}``, with
    the same exit code, so that a script reading stdout always gets JSON.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in (args[: args.index("--")] if "--" in args else args)
    # A plan lives a second or two and builds no reference cycles worth collecting, while parsing
    # a 90,000-tensor header allocates ~500,000 containers: with the cyclic collector on, that
    # costs 0.27-0.63 s (benchmarks/perf/FINDINGS.md #3). Reference counting still frees memory.
    gc.disable()
    try:
        cli.main(args=args, prog_name="fitcheck", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.NoArgsIsHelpError as e:  # bare `fitcheck` (or a group without a command)
        click.echo(e.ctx.get_help() if e.ctx is not None else cli.get_help(click.Context(cli, info_name="fitcheck")))
        sys.exit(0)
    except click.Abort:
        _fail("fitcheck: aborted", None, 2, as_json, kind="Aborted")
    except click.ClickException as e:
        _fail(redact(printable(" ".join(e.format_message().split()))), None, 2, as_json, kind="UsageError")
    except FitcheckError as e:
        _debug_trace()
        _fail(e.message, e.hint, e.exit_code, as_json, kind=type(e).__name__)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # an internal bug: still one line, never a token
        _debug_trace()
        _fail(f"internal error: {printable(redact(type(e).__name__ + ': ' + ' '.join(str(e).split())))[:300]}",
              "run with FITCHECK_DEBUG=1 for the traceback and report it", 2, as_json, kind="InternalError")


def _fail(message: str, hint: str | None, code: int, as_json: bool, *, kind: str) -> None:
    """Report an error (one line and a hint on stderr; under --json one object on stdout) and exit."""
    if as_json:
        click.echo(json.dumps({"error": kind, "message": message, "hint": hint, "exit_code": code}, indent=2))
    elif kind == "Aborted":
        click.echo(message, err=True)
    else:
        prefix = "fitcheck: " if message.startswith("internal error: ") else "fitcheck: error: "
        click.echo(f"{prefix}{message}", err=True)
        if hint:
            click.echo(f"fitcheck: hint: {hint}", err=True)
    sys.exit(code)


def _debug_trace() -> None:
    if os.environ.get("FITCHECK_DEBUG") == "1":
        click.echo(redact(traceback.format_exc()), err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fitcheck")
def cli() -> None:
    """Will this LLM run here, and how do I load it so that it does?

    Reads only config.json and the safetensors headers from the Hugging Face Hub, never the weights.
    """


def _hardware_options(f):
    for opt in reversed([
        click.option("--hardware", "hardware", metavar="NAME", help="Plan for a bundled hardware profile (see `fitcheck profiles`) instead of this machine."),
        click.option("--gpu", "gpu", metavar="SIZE[,SIZE...]",
                     help="FREE GPU memory per device (not the card's total), e.g. 23GiB or 23GiB,23GiB; overrides the probe or profile."),
        click.option("--ram", metavar="SIZE", help="Free CPU RAM to plan with, e.g. 64GiB."),
        click.option("--disk", metavar="SIZE", help="Free disk for offload and the download, e.g. 200GB."),
    ]):
        f = opt(f)
    return f


DTYPES = ("float32", "bfloat16", "float16")
# The short names every output and model card uses (torch's own aliases: torch.half, torch.float).
DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "f16": "float16", "half": "float16", "fp32": "float32",
                 "f32": "float32", "float": "float32"}


def _dtype(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    return None if value is None else DTYPE_ALIASES.get(value.lower(), value.lower())


def _plan_options(f):
    for opt in reversed([
        click.argument("models", nargs=-1),
        click.option("--models-file", type=click.Path(dir_okay=False), help="Read model ids, one per line, and compare them."),
        click.option("--revision", help="Branch, tag or commit to read (default main)."),
        click.option("--context", type=click.IntRange(1, 10_000_000), help="Prompt tokens per sequence (default 4096, or less to stay within the model's limit)."),
        click.option("--batch", default=1, show_default=True, type=click.IntRange(1, 100_000), help="Sequences generated together."),
        click.option("--new-tokens", default=32, show_default=True, type=click.IntRange(0, 1_000_000), help="Tokens generated after the prompt."),
        click.option("--prefer", type=click.Choice(["speed", "quality", "memory"]), default="speed", show_default=True, help="What to optimise."),
        click.option("--dtype", type=click.Choice([*DTYPES, *DTYPE_ALIASES], case_sensitive=False), callback=_dtype,
                     help="Force the load dtype (bf16, fp16 and fp32 are the same as bfloat16, float16, float32)."),
        click.option("--quantization", type=click.Choice(["none", "int8", "nf4"]), help="Force bitsandbytes quantization (or none)."),
        click.option("--no-offload", is_flag=True, help="Keep every weight on the GPUs (or all in RAM): no CPU or disk offload."),
        click.option("--margin", type=click.FloatRange(0, 0.9), help="Headroom to leave on every device, as a fraction of free memory (default 0.05, at least 128 MiB)."),
        click.option("--token", help="Hub token (default: HF_TOKEN or your `hf auth login`). Never printed or written."),
        click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(0.1, 3600), help="Seconds for all Hub requests together."),
        click.option("--runtime", default="auto", show_default=True, metavar="NAME",
                     help="The runtime to plan for (transformers, ...); auto: every runtime that finds files it runs in the repo."),
        click.option("--json", "as_json", is_flag=True, help="Print JSON (schema in docs/json-schema.md)."),
    ]):
        f = opt(f)
    return _hardware_options(runtime_options.apply(f))


@cli.command()
@_plan_options
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Write the plan file (JSON) here.")
@click.option("--script", "script_path", type=click.Path(dir_okay=False), help="Write a standalone load script here.")
@click.option("--offload-dir", default="fitcheck-offload", show_default=True, help="Offload folder the plan and script use.")
@click.option("--trust-remote-code", is_flag=True, help="Let the emitted script run the repo's own model code (never run by fitcheck).")
@click.option("--max-context", is_flag=True, help="Also report the largest context that fits the chosen plan.")
@click.option("--verify", is_flag=True, help="Run the plan's load and a generate in a child process and compare memory.")
def plan(**o: Any) -> None:
    """Plan how to load MODEL(S): a Hub id (org/name), a Hub URL or a local folder.

    \b
    The plan table, per device: weights + KV cache + activ. + overhead = needs (what must fit);
    usable = free less the margin; spare = usable - needs (the margin is kept besides it).

    With several models: one row each; --config/--script write one file per model, named by the
    model (plan.json -> plan-org__name.json); a model that cannot be read gets a row with its
    error while the others go on, and the exit code is then 2.
    """
    from planner.cli import render

    reports = _run_plans(o)
    if len(reports) > 1:
        _plan_several(reports, o)
        return
    r = reports[0]
    extra: dict[str, Any] = {}
    if o["max_context"] and r.solution is not None:
        from planner import api

        extra["max_context"] = api.max_context(r)
    _write_outputs(r, o)
    verified = None
    if o["verify"] and r.solution is not None:
        verified = _verify_report(r, o)
    if o["as_json"]:
        from planner.report.schema import report_dict

        doc = report_dict(r)
        if "max_context" in extra:
            doc["max_context"] = extra["max_context"].to_dict()
        if verified is not None:
            doc["verify"] = verified.to_dict()
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(render.report(r))
        if "max_context" in extra:
            click.echo("\n" + render_max_context(extra["max_context"]))
        if verified is not None:
            from planner.report.verify import render_verification

            click.echo("\n" + render_verification(verified))
    if verified is not None and not verified.ok:
        sys.exit(1)


def _plan_several(results: list[Any], o: dict[str, Any]) -> None:
    """``plan A B ...``: a row per model (an error row for one that failed), its files, its largest context."""
    from planner import api
    from planner.cli import render
    from planner.report.schema import report_dict

    docs: list[dict[str, Any]] = []
    written: list[str] = []
    contexts: list[Any] = []
    for model, r in results:
        if isinstance(r, FitcheckError):
            docs.append({"input": model, "error": r.to_dict()})
            continue
        doc = {"input": model, **report_dict(r)}
        if o["max_context"] and r.solution is not None:
            mc = api.max_context(r)
            contexts.append(mc)
            doc["max_context"] = mc.to_dict()
        paths = _write_outputs(r, o, suffix=_file_suffix(model))
        if paths:
            doc["files"] = paths
            written += paths
        docs.append(doc)
    failed = sum(1 for _, r in results if isinstance(r, FitcheckError))
    if o["as_json"]:  # docs/json-schema.md: an array, one object per model in the order given
        click.echo(json.dumps(docs, indent=2))
    else:
        click.echo(render.comparison(results))
        for mc in contexts:
            click.echo("\n" + render_max_context(mc))
        for path in written:
            click.echo(f"wrote {path}")
    if failed:
        sys.exit(2)


def _file_suffix(model: str) -> str:
    """A file-name part naming a model: ``meta-llama/Llama-3.1-8B`` -> ``meta-llama__Llama-3.1-8B``; a
    local folder by its last part."""
    import re

    name = model.rstrip("/")
    if name.startswith((".", "/", "~")):
        name = Path(os.path.expanduser(name)).resolve().name or "model"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace("/", "__")).strip("._") or "model"


@cli.command()
@_plan_options
def check(**o: Any) -> None:
    """Pre-flight: exit 0 if a plan fits, 1 if none does (or the download won't fit on disk), 2 on error.

    With several models a model that cannot be read is reported (``error:``) and the others checked;
    the exit code is then 2.
    """
    results = _run_plans(o)
    several = len(results) > 1
    pairs = results if several else [(None, results[0])]
    reports = [r for _, r in pairs if not isinstance(r, FitcheckError)]
    failed = len(pairs) - len(reports)
    ok = all(r.fits and r.download_fits for r in reports)
    if o["as_json"]:
        if several:
            rows = [{"input": m, "error": r.to_dict()} if isinstance(r, FitcheckError) else {"input": m, **_check_dict(r)}
                    for m, r in pairs]
            click.echo(json.dumps(rows, indent=2))
        else:
            click.echo(json.dumps(_check_dict(reports[0]), indent=2))
    else:
        for m, r in pairs:
            if isinstance(r, FitcheckError):
                click.echo(f"error: {m}: {r.message}")
            elif not r.fits:
                why = r.rejected[0].reasons[0] if r.rejected and r.rejected[0].reasons else "nothing fits"
                click.echo(f"no: {r.snapshot.id} does not fit on {r.hardware.name} ({why})")
            elif not r.download_fits:
                click.echo(f"no: {r.snapshot.id} fits, but its download does not fit on the HF cache disk")
            else:
                from planner.solve.solver import is_slow

                p = r.solution.chosen
                slow = f", but slowly (about {p.speed.tokens_per_s:.2g} tokens/s; `fitcheck plan` says what would be faster)" \
                    if is_slow(p) else ""
                click.echo(f"yes: {r.snapshot.id} fits on {r.hardware.name} as {p.label}{slow}")
    sys.exit(2 if failed else 0 if ok else 1)


def _check_dict(r: Any) -> dict[str, Any]:
    from planner.solve.solver import is_slow

    return {"model": r.snapshot.id, "fits": r.fits, "download_fits": r.download_fits,
            "plan": r.solution.chosen.label if r.solution else None, "suggestion": r.suggestion,
            "slow": bool(r.solution and is_slow(r.solution.chosen))}


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--offload-dir", default=".", help="Folder whose disk to report as the offload disk.")
def probe(as_json: bool, offload_dir: str) -> None:
    """Show this machine: RAM, GPUs (through NVML, no CUDA context), disk."""
    from planner.cli import render
    from planner.hardware.probe import probe as do_probe

    hw = do_probe(offload_dir=offload_dir)
    click.echo(json.dumps(hw.to_dict(), indent=2) if as_json else render.hardware_line(hw))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def profiles(as_json: bool) -> None:
    """List the bundled hardware profiles (use one with --hardware NAME)."""
    from planner.cli import render
    from planner.hardware.profiles import list_profiles

    machines = list(list_profiles())
    click.echo(json.dumps([m.to_dict() for m in machines], indent=2) if as_json else render.hardware_table(machines))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def catalog(as_json: bool) -> None:
    """List the models fitcheck plans with no network (its bundled catalog; ids match in any case)."""
    from planner.cli import render
    from planner.sources import catalog as bundled

    rows = bundled.entries()
    click.echo(json.dumps(rows, indent=2) if as_json else render.catalog_table(rows))


@cli.command()
@click.argument("plan_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--timeout", default=1800.0, show_default=True, type=click.FloatRange(1, 86400), help="Seconds the load and generate may take.")
@click.option("--trust-remote-code", is_flag=True, help="Allow a plan that runs the model repo's own code.")
@click.option("--allow-pickle", is_flag=True, help="Allow a plan that unpickles pytorch_model*.bin weights.")
def verify(plan_file: str, as_json: bool, timeout: float, trust_remote_code: bool, allow_pickle: bool) -> None:
    """Run a plan file's load and a generate; compare measured memory with the prediction."""
    from planner.report.verify import render_verification, verify_plan_file

    result = verify_plan_file(Path(plan_file), timeout=timeout, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
                              progress=_progress(as_json))
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else render_verification(result))
    sys.exit(0 if result.ok else 1)


def _run_plans(o: dict[str, Any]) -> list[Any]:
    from planner import api
    from planner.core.records import DEFAULT_CONTEXT, Constraints
    from planner.core.units import parse_size, parse_size_list

    models = list(o["models"])
    if o.get("models_file"):
        models += _read_models_file(o["models_file"])
    if not models:
        raise UsageError("no model given", hint="fitcheck plan org/name (or a local folder)")
    if o.get("token"):
        register(o["token"])
    # click's FloatRange lets NaN through (every comparison with it is false): a NaN deadline
    # would retry forever and a NaN margin breaks the arithmetic.
    for name in ("timeout", "margin"):
        if o.get(name) is not None and not math.isfinite(o[name]):
            raise UsageError(f"--{name} {o[name]!r} is not a number")
    # An empty value is a mistake, not a request for the default (`--hardware ""` must not probe).
    for name in ("hardware", "gpu", "ram", "disk"):
        if o.get(name) is not None and not o[name].strip():
            raise UsageError(f"--{name} is empty", hint="give a value, or leave the option out")
    sizes: dict[str, Any] = dict(
        gpus=parse_size_list(o["gpu"], what="--gpu") if o["gpu"] is not None else None,
        ram=parse_size(o["ram"], what="--ram") if o["ram"] is not None else None,
        disk=parse_size(o["disk"], what="--disk") if o["disk"] is not None else None,
        nodes=o.get("nodes"),  # --nodes (planner/cli/options/cluster.py): that many copies of the machine
    )
    from planner.hardware.profiles import override_warnings

    for warning in override_warnings(sizes["gpus"] or ()):
        click.echo(f"fitcheck: warning: {warning}", err=True)
    if o["hardware"] is not None:
        hw: Any = api.resolve_hardware(hardware=o["hardware"], **sizes)
    else:
        # probe this machine while the Hub is being read (FINDINGS.md #9)
        hw = functools.partial(api.resolve_hardware, offload_dir=o.get("offload_dir"), **sizes)
    kw: dict[str, Any] = {}
    if o.get("margin") is not None:
        kw["margin_fraction"] = o["margin"]
    extra, implied = runtime_options.collect(o)
    runtime = o.get("runtime") or "auto"
    if implied is not None:
        if runtime not in ("auto", implied):
            raise UsageError(f"--runtime {runtime} does not take the options of the {implied} runtime")
        runtime = implied
    c = Constraints(context=o["context"] or DEFAULT_CONTEXT, context_is_default=o["context"] is None, batch=o["batch"],
                    new_tokens=o["new_tokens"], prefer=o["prefer"], dtype=o["dtype"], quantization=o["quantization"],
                    offload=not o["no_offload"], options=tuple(sorted(extra.items())), **kw)
    common = dict(hardware=hw, constraints=c, revision=o["revision"], token=o.get("token"), timeout=o["timeout"],
                  runtime=runtime)
    if len(models) == 1:
        return [api.plan(models[0], **common)]
    if o.get("verify"):
        raise UsageError("--verify takes one model", hint="plan the models together, then verify the one you pick")
    for name in ("config_path", "script_path"):
        if o.get(name) and len({_file_suffix(m) for m in models}) < len(models):
            raise UsageError("two of the models would write the same file name", hint="plan them one at a time")
    return list(zip(models, api.plan_each(models, **common), strict=True))


def _read_models_file(path: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--models-file {path!r} cannot be read ({type(e).__name__})") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _write_outputs(r: Any, o: dict[str, Any], *, suffix: str | None = None) -> list[str]:
    """Write the plan file and script the options ask for; with ``suffix`` (several models) each
    name gets the model's: ``plan.json`` -> ``plan-<suffix>.json``. Returns the paths written."""
    from planner import api

    if r.solution is None:
        if (o.get("config_path") or o.get("script_path")) and suffix is None:
            raise NoFeasiblePlan("nothing fits, so no plan file or script was written", rejections=r.rejected)
        return []
    if not (o.get("config_path") or o.get("script_path")):
        return []

    def named(path: str) -> Path:
        p = Path(path)
        return p if suffix is None else p.with_name(f"{p.stem}-{suffix}{p.suffix}")

    out = api.emit(r, offload_dir=o["offload_dir"], trust_remote_code=o["trust_remote_code"])
    written = []
    if o.get("config_path"):
        _atomic_write(named(o["config_path"]), out.files["plan.json"])
        written.append(str(named(o["config_path"])))
    if o.get("script_path"):
        if not out.main:
            raise UsageError(f"the {r.runtime} runtime emits no script", hint="use --config for its plan file")
        _atomic_write(named(o["script_path"]), out.files[out.main])
        written.append(str(named(o["script_path"])))
    return written


def _atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a failure never leaves half a file (nor the
    temporary one); the file gets the mode a plain ``open`` would give it (0666 less the umask)."""
    import tempfile

    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise UsageError(f"cannot write {str(path)!r}: {e.strerror or type(e).__name__}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _verify_report(r: Any, o: dict[str, Any]) -> Any:
    from planner import api

    text = api.emit(r, offload_dir=o["offload_dir"], trust_remote_code=o["trust_remote_code"]).files["plan.json"]
    return api.verify_plan_text(text, trust_remote_code=o["trust_remote_code"], progress=_progress(o["as_json"]))


def _progress(as_json: bool) -> Any:
    """Where verify's progress goes: stderr, when it is a terminal (a verify can take minutes)."""
    if as_json or not sys.stderr.isatty():
        return None
    return lambda line: click.echo(f"fitcheck verify: {line}", err=True)


def render_max_context(mc: Any) -> str:
    from planner.solve.context import render_table

    return render_table(mc)


if __name__ == "__main__":
    main()
