"""The ``fitcheck`` command: a thin click layer over :mod:`planner.api`.

Exit codes: 0 success (``check``: a plan fits); 1 ``check``: nothing fits, or the download does not
fit on the disk of the HF cache; 2 any error. Errors are one line on stderr (a traceback only with
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
from planner.core.errors import FitcheckError, UsageError, printable
from planner.core.secrets import redact, register


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the click group, mapping errors to one line and an exit code."""
    # A plan lives a second or two and builds no reference cycles worth collecting, while parsing
    # a 90,000-tensor header allocates ~500,000 containers: with the cyclic collector on, that
    # costs 0.27-0.63 s (benchmarks/perf/FINDINGS.md #3). Reference counting still frees memory.
    gc.disable()
    try:
        cli.main(args=argv, prog_name="fitcheck", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("fitcheck: aborted", err=True)
        sys.exit(2)
    except click.ClickException as e:
        click.echo(f"fitcheck: error: {redact(printable(' '.join(e.format_message().split())))}", err=True)
        sys.exit(2)
    except FitcheckError as e:
        _debug_trace()
        click.echo(f"fitcheck: error: {e.message}", err=True)
        if e.hint:
            click.echo(f"fitcheck: hint: {e.hint}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # an internal bug: still one line, never a token
        _debug_trace()
        click.echo(f"fitcheck: internal error: {printable(redact(type(e).__name__ + ': ' + ' '.join(str(e).split())))[:300]}", err=True)
        click.echo("fitcheck: hint: run with FITCHECK_DEBUG=1 for the traceback and report it", err=True)
        sys.exit(2)


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
        click.option("--gpu", "gpu", metavar="SIZE[,SIZE...]", help="GPU memory per device, e.g. 24GiB or 24GiB,24GiB; overrides the probe or profile."),
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
        click.option("--context", default=4096, show_default=True, type=click.IntRange(1, 10_000_000), help="Prompt tokens per sequence."),
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
        click.option("--json", "as_json", is_flag=True, help="Print JSON (schema in README)."),
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
    """Plan how to load MODEL(S): a Hub id (org/name) or a local folder."""
    from planner.cli import render

    reports = _run_plans(o)
    if len(reports) > 1:
        from planner.report.schema import report_dict

        click.echo(json.dumps([report_dict(r) for r in reports], indent=2) if o["as_json"] else render.comparison(reports))
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


@cli.command()
@_plan_options
def check(**o: Any) -> None:
    """Pre-flight: exit 0 if a plan fits, 1 if none does (or the download won't fit on disk), 2 on error."""
    reports = _run_plans(o)
    ok = all(r.fits and r.download_fits for r in reports)
    if o["as_json"]:
        click.echo(json.dumps([_check_dict(r) for r in reports] if len(reports) > 1 else _check_dict(reports[0]), indent=2))
    else:
        for r in reports:
            if not r.fits:
                why = r.rejected[0].reasons[0] if r.rejected and r.rejected[0].reasons else "nothing fits"
                click.echo(f"no: {r.snapshot.id} does not fit on {r.hardware.name} ({why})")
            elif not r.download_fits:
                click.echo(f"no: {r.snapshot.id} fits, but its download does not fit on the HF cache disk")
            else:
                click.echo(f"yes: {r.snapshot.id} fits on {r.hardware.name} as {r.solution.chosen.label}")
    sys.exit(0 if ok else 1)


def _check_dict(r: Any) -> dict[str, Any]:
    return {"model": r.snapshot.id, "fits": r.fits, "download_fits": r.download_fits,
            "plan": r.solution.chosen.label if r.solution else None, "suggestion": r.suggestion}


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
@click.argument("plan_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--timeout", default=1800.0, show_default=True, type=click.FloatRange(1, 86400), help="Seconds the load and generate may take.")
@click.option("--trust-remote-code", is_flag=True, help="Allow a plan that runs the model repo's own code.")
@click.option("--allow-pickle", is_flag=True, help="Allow a plan that unpickles pytorch_model*.bin weights.")
def verify(plan_file: str, as_json: bool, timeout: float, trust_remote_code: bool, allow_pickle: bool) -> None:
    """Run a plan file's load and a generate; compare measured memory with the prediction."""
    from planner.report.verify import render_verification, verify_plan_file

    result = verify_plan_file(Path(plan_file), timeout=timeout, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else render_verification(result))
    sys.exit(0 if result.ok else 1)


def _run_plans(o: dict[str, Any]) -> list[Any]:
    from planner import api
    from planner.core.records import Constraints
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
    sizes = dict(
        gpus=parse_size_list(o["gpu"], what="--gpu") if o["gpu"] is not None else None,
        ram=parse_size(o["ram"], what="--ram") if o["ram"] is not None else None,
        disk=parse_size(o["disk"], what="--disk") if o["disk"] is not None else None,
    )
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
    c = Constraints(context=o["context"], batch=o["batch"], new_tokens=o["new_tokens"], prefer=o["prefer"], dtype=o["dtype"],
                    quantization=o["quantization"], offload=not o["no_offload"], options=tuple(sorted(extra.items())), **kw)
    common = dict(hardware=hw, constraints=c, revision=o["revision"], token=o.get("token"), timeout=o["timeout"],
                  runtime=runtime)
    if len(models) == 1:
        return [api.plan(models[0], **common)]
    return api.plan_many(models, **common)


def _read_models_file(path: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--models-file {path!r} cannot be read ({type(e).__name__})") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _write_outputs(r: Any, o: dict[str, Any]) -> None:
    from planner import api

    if r.solution is None:
        if o.get("config_path") or o.get("script_path"):
            raise UsageError("nothing fits, so no plan file or script was written")
        return
    if not (o.get("config_path") or o.get("script_path")):
        return
    out = api.emit(r, offload_dir=o["offload_dir"], trust_remote_code=o["trust_remote_code"])
    if o.get("config_path"):
        _atomic_write(Path(o["config_path"]), out.files["plan.json"])
    if o.get("script_path"):
        if not out.main:
            raise UsageError(f"the {r.runtime} runtime emits no script", hint="use --config for its plan file")
        _atomic_write(Path(o["script_path"]), out.files[out.main])


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
    return api.verify_plan_text(text, trust_remote_code=o["trust_remote_code"])


def render_max_context(mc: Any) -> str:
    from planner.solve.context import render_table

    return render_table(mc)


if __name__ == "__main__":
    main()
