"""Plans for people: tables and a bar per device. Only the CLI calls this; it returns strings."""

from __future__ import annotations

import re
from typing import Any

from planner.core.errors import printable
from planner.core.records import DeviceMemory, Hardware, Plan, Report
from planner.core.units import fmt_bytes, fmt_count
from planner.runtimes import registry
from planner.solve.solver import POLICY_KEYS, is_slow, memory_needed

BAR_WIDTH = 40
# How many alternatives and rejections a plain `fitcheck plan` lists (--json has them all).
SHOW_ALTERNATIVES = 6
SHOW_REJECTED = 6


def _safe(text: str) -> str:
    """Escape non-printable characters line by line: names and notes come from strangers' files."""
    return "\n".join(printable(line) for line in text.split("\n"))


def report(r: Report) -> str:
    return _safe(_report(r))


def _report(r: Report) -> str:
    lines = [*model_lines(r), _hardware_line(r.hardware), ""]
    if r.solution is None:
        lines.append(f"✘ Nothing fits on {r.hardware.name} at context {r.constraints.context} x batch {r.constraints.batch}.")
        lines += _rejections(r.rejected, limit=SHOW_REJECTED * 2)
        lines.append("")
        lines.append(f"Smallest bundled hardware that fits: {r.suggestion}" if r.suggestion else "No bundled hardware profile fits it either.")
        return "\n".join(lines)
    p = r.solution.chosen
    if is_slow(p):
        lines.append(f"✔ Fits, but slow: {p.label}, about {_speed(p)} (see the note below for what would be faster)")
    else:
        lines.append(f"✔ Fits: {p.label}" + (f", about {_speed(p)}" if _estimated(p) else " (speed not estimated)"))
    lines += [*memory_table(p), ""]
    lines += [f"  {d:<7} {bar(m)}" for d, m in p.memory.items() if d != "disk"]
    lines.append("          █ weights  ▓ KV cache  ▒ activations + overhead  ░ free   | margin")
    for note in p.notes:
        lines.append(f"  note: {note}")
    if not r.download_fits:
        lines.append(f"  ! the download ({fmt_bytes(r.footprint.download_bytes)}) does not fit the {fmt_bytes(r.hardware.cache_disk_free)} free where the HF cache lives")
    if r.solution.alternatives:
        key = POLICY_KEYS[r.constraints.prefer]
        if _images((p, *r.solution.alternatives)):  # the solver ranks image plans by seconds per image
            key = key.replace(IMAGE_POLICY_FROM, "seconds per image")
        lines += ["", f"Alternatives (--prefer {r.constraints.prefer}: ranked by {key})"]
        lines += alternatives_table(r.solution.alternatives[:SHOW_ALTERNATIVES])
        more = len(r.solution.alternatives) - SHOW_ALTERNATIVES
        if more > 0:
            lines.append(f"  ... {more} more (--json lists them all)")
    if r.rejected:
        lines += ["", "Rejected"]
        lines += _rejections(r.rejected, limit=SHOW_REJECTED)
    return "\n".join(lines)


def model_lines(r: Report) -> list[str]:
    """The model: what the runtime says of it (its block of the JSON report), for people."""
    d = registry.get(r.runtime).describe_model(r)
    snap = r.snapshot
    where = f"{snap.source}" + (f", commit {snap.commit[:10]}" if snap.commit else "")
    rev = f"@{snap.revision}" if snap.source != "local" else ""
    parameters, active = _int(d.get("parameters")), _int(d.get("active_parameters"))
    params = fmt_count(parameters) + (f" ({fmt_count(active)} active)" if active and active != parameters else "")
    prequantized = d.get("prequantized")
    stored = prequantized["detail"] if isinstance(prequantized, dict) and "detail" in prequantized else d.get("stored_dtype", "?")
    architectures = d.get("architectures") or [d.get("model_type", "?")]
    out = [
        f"Model    {snap.id}{rev} ({where})",
        f"         {architectures[0]}, {params} parameters, "
        f"{fmt_bytes(_int(d.get('weights_bytes')))} as stored ({stored}), download {fmt_bytes(_int(d.get('download_bytes')))}",
    ]
    if "kv_bytes_per_token" in d:
        out.append(f"         KV cache {fmt_bytes(_int(d['kv_bytes_per_token']))}/token in 16-bit; planned for context "
                   f"{r.constraints.context} x batch {r.constraints.batch} + {r.constraints.new_tokens} new tokens")
    out += [f"         note: {n}" for n in snap.notes]
    return out


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _estimated(p: Plan) -> bool:
    return p.speed.tokens_per_s is not None or p.speed.image_s is not None


def _speed(p: Plan) -> str:
    """The plan's speed for people: tokens/s, else seconds per image."""
    if p.speed.tokens_per_s is not None:
        return f"{p.speed.tokens_per_s:.1f} tokens/s"
    if p.speed.image_s is not None:
        return f"{p.speed.image_s:.1f} s per image"
    return "speed not estimated"


# The token words of POLICY_KEYS["speed"] (and of the others, which end "then as speed"): an
# image plan has no tokens; the solver's speed for it is 1 / seconds per image (Speed.score).
IMAGE_POLICY_FROM = "time to a 200-token answer, 1st tok + 200 / tok/s"


def _images(plans: tuple[Plan, ...]) -> bool:
    """Whether every plan is an image plan: seconds per image, no token rate (diffusers)."""
    return bool(plans) and all(p.speed.tokens_per_s is None and p.speed.image_s is not None for p in plans)


def _rate(p: Plan) -> float:
    """The figure of the tok/s column (0 when the runtime estimates no token rate)."""
    return p.speed.tokens_per_s if p.speed.tokens_per_s is not None else 0.0


def _column(p: Plan, images: bool) -> str:
    """The comparison's speed cell: tok/s, or seconds per image in an image table; an image plan
    among token plans says its unit."""
    if p.speed.tokens_per_s is None and p.speed.image_s is not None:
        return f"{p.speed.image_s:.1f}" if images else f"{p.speed.image_s:.1f} s/img"
    return f"{_rate(p):.1f}"


def hardware_line(hw: Hardware) -> str:
    return printable(_hardware_line(hw))


def _hardware_line(hw: Hardware) -> str:
    if hw.gpus:
        # identical GPUs in a row are shown once with their count ("8x NVIDIA H100 ...")
        runs: list[tuple[str, int]] = []
        for g in hw.gpus:
            text = f"{g.name} {fmt_bytes(g.total_bytes)} ({fmt_bytes(g.free_bytes)} free)"
            if runs and runs[-1][0] == text:
                runs[-1] = (text, runs[-1][1] + 1)
            else:
                runs.append((text, 1))
        gpus = ", ".join(text if n == 1 else f"{n}x {text}" for text, n in runs)
        if hw.nodes:
            gpus = f"{len(hw.nodes)} nodes, {gpus}"
    else:
        gpus = "no GPU"
    return f"Machine  {hw.name} [{hw.source}]: {gpus}; RAM {fmt_bytes(hw.ram_free)} free of {fmt_bytes(hw.ram_total)}; disk {fmt_bytes(hw.disk_free)} free"


# The plan table's columns, defined once (README "Reading the plan table" says the same):
COLUMNS = (
    ("weights", "weights resident on the device after the load"),
    ("KV cache", "the KV cache of the layers the device runs, at the planned context, batch and new tokens"),
    ("activ.", "transient working memory at the device's peak: prefill activations and logits, an offloaded layer "
               "being streamed in, or the load's conversion buffers when the load peaks higher"),
    ("overhead", "fixed costs: the CUDA context and allocator slack, or the Python process with torch imported"),
    ("needs", "what must fit: the four parts before it add up to it (page cache the kernel can drop is left out)"),
    ("usable", "free memory less the margin (5 % of free, at least 128 MiB; --margin)"),
    ("spare", "usable less needs: what the plan leaves unused besides the margin"),
)


def table_parts(m: DeviceMemory) -> tuple[int, int, int, int]:
    """(weights, KV cache, activations, overhead) of a device as the plan table shows them: they
    add up to ``m.required``. The parts of the run phase hold reclaimable page cache (checkpoint
    pages kept mapped, a streamed layer's pages) that ``required`` leaves out: it is taken out of
    the overhead (mapped pages) and the activations (streamed pages). When the load phase needs
    more than the run, the difference is the load's transient memory, shown as activations."""
    if m.device.rsplit(":", 1)[-1] == "disk":
        return m.required, 0, 0, 0  # what the load writes there; weights read in place need no room
    weights, kv, act, overhead = m.weights, m.kv_cache, m.activations, m.overhead - m.mapped
    excess = weights + kv + act + overhead - m.required
    if excess > 0:
        cut = min(act, excess)
        act, excess = act - cut, excess - cut
        cut = min(overhead, excess)
        overhead, excess = overhead - cut, excess - cut
        kv, weights = max(0, kv - excess), weights - max(0, excess - kv)
    elif excess < 0:
        act -= excess
    return weights, kv, act, overhead


def peak_rss(m: DeviceMemory) -> int:
    """The predicted peak resident memory: ``total``, but never more than the device has free
    (page cache beyond it is dropped as the load reads on)."""
    return min(m.total, max(m.required, m.free))


def memory_table(p: Plan) -> list[str]:
    """Per device: the parts, what must fit ("needs"), the usable capacity and what is spare
    (columns: :data:`COLUMNS`); the parts add up to "needs"."""
    head = "  " + f"{'device':<7}" + "".join(f" {name:>10}" for name, _ in COLUMNS)
    rows = [head]
    for d, m in p.memory.items():
        parts = table_parts(m)
        figures = (*parts, m.required, m.capacity, m.capacity - m.required)
        rows.append(f"  {d:<7}" + "".join(f" {fmt_bytes(x):>10}" for x in figures))
    notes = [f"  {d}: the peak RSS, {fmt_bytes(peak_rss(m))}, also holds {fmt_bytes(peak_rss(m) - m.required)} of page cache the "
             "kernel can drop" for d, m in p.memory.items() if d != "disk" and peak_rss(m) > m.required]
    disk = p.memory.get("disk")
    if disk is not None:
        notes.append(f"  disk: {fmt_bytes(disk.weights)} of weights offloaded; {fmt_bytes(disk.total)} written to the offload folder"
                     " (weights stored as loaded are read in place from the checkpoint)")
    return rows + notes


def bar(m: DeviceMemory, width: int = BAR_WIDTH) -> str:
    """A bar of the device's free memory: weights, KV, the rest, free; '|' marks where the margin starts."""
    scale = max(m.free, m.required, 1)

    def cells(n: int) -> int:
        return round(n / scale * width)

    w, k = cells(m.weights), cells(m.kv_cache)
    o = cells(max(0, m.required - m.weights - m.kv_cache))
    used = min(width, w + k + o)
    text = ("█" * w + "▓" * k + "▒" * o)[:width] + "░" * (width - used)
    edge = min(width, cells(m.capacity))
    text = text[:edge] + "|" + text[edge:]
    pct = 100 * m.required / m.free if m.free else 0
    return f"{text} {fmt_bytes(m.required)} / {fmt_bytes(m.free)} ({pct:.0f}%)"


def alternatives_table(plans: tuple[Plan, ...]) -> list[str]:
    """One row per plan with every figure a policy sorts by: tok/s and the first token's seconds
    (the load included, where estimated), precision bits, and the memory
    needed on GPUs + RAM (the sum of the plan's "needs" column), then that memory per device."""
    if _images(plans):
        return _image_table(plans)
    rows = [f"  {'#':>2}  {'plan':<34} {'tok/s':>8} {'1st tok':>8} {'bits':>4} {'needs':>10}  per device"]
    for i, p in enumerate(plans, 1):
        mem = ", ".join(f"{d} {fmt_bytes(m.required)}" for d, m in p.memory.items() if m.required)
        first = f"{p.speed.first_token_s:.1f}s" if p.speed.first_token_s is not None else "-"
        rows.append(f"  {i:>2}  {p.label:<34} {_rate(p):>8.1f} {first:>8} {p.quality:>4} {fmt_bytes(memory_needed(p)):>10}  {mem}")
    return rows


def _image_table(plans: tuple[Plan, ...]) -> list[str]:
    """The alternatives of image plans: seconds per image (every step, the decode and the offload
    mode's transfers, per image of the batch) where a token table has tok/s and the first token."""
    width = max(34, *(len(p.label) for p in plans))  # a pipeline's labels name its switches: often longer
    rows = [f"  {'#':>2}  {'plan':<{width}} {'s/image':>8} {'bits':>4} {'needs':>10}  per device"]
    for i, p in enumerate(plans, 1):
        mem = ", ".join(f"{d} {fmt_bytes(m.required)}" for d, m in p.memory.items() if m.required)
        rows.append(f"  {i:>2}  {p.label:<{width}} {p.speed.image_s or 0:>8.1f} {p.quality:>4} {fmt_bytes(memory_needed(p)):>10}  {mem}")
    return rows


_TOO_SMALL = re.compile(r"^.* on (\S+), (nothing usable: .*)$")


def _rejections(plans: tuple[Plan, ...], *, limit: int) -> list[str]:
    """One line per distinct reason: plans refused for the same reason share it, and a device too
    small for anything is said once, not once per plan."""
    by_reason: dict[str, list[str]] = {}
    for p in plans:
        for reason in p.reasons:
            small = _TOO_SMALL.match(reason)
            if small:
                by_reason.setdefault(f"{small.group(1)}: {small.group(2)}", [])
            else:
                # a reason that starts with what is loaded needs only where; others the whole label
                name = p.where if reason.startswith(p.what) else p.label
                labels = by_reason.setdefault(reason, [])
                if name not in labels:
                    labels.append(name)
    seen = [f"  {_names(labels)}: {reason}" if labels else f"  {reason}" for reason, labels in by_reason.items()]
    out = seen[:limit]
    if len(seen) > limit:
        out.append(f"  ... {len(seen) - limit} more (--json lists them all)")
    return out


def _names(labels: list[str]) -> str:
    return ", ".join(labels) if len(labels) <= 2 else f"{labels[0]}, {labels[1]} and {len(labels) - 2} more"


def comparison(results: list[Any]) -> str:
    """One row per model: the best plan of each on the same hardware, or why it could not be planned.

    ``results``: (what was asked, its Report or the FitcheckError it raised), in the order asked.
    """
    return _safe(_comparison(results))


def _comparison(results: list[Any]) -> str:
    chosen = tuple(r.solution.chosen for _, r in results if isinstance(r, Report) and r.solution is not None)
    images = _images(chosen)  # every model an image pipeline: the speed column is seconds per image
    rows = [f"{'model':<44} {'params':>8} {'fits':>5}  {'best plan':<34} {'s/image' if images else 'tok/s':>8} {'peak':>10}"]
    errors = []
    for asked, r in results:
        if not isinstance(r, Report):
            rows.append(f"{str(asked)[:44]:<44} {'-':>8} {'error':>5}  {r.message[:200]}")
            if r.hint:
                errors.append(f"  {asked}: {r.hint}")
            continue
        if r.solution is None:
            rows.append(f"{r.snapshot.id[:44]:<44} {fmt_count(r.footprint.parameters):>8} {'no':>5}  {'-':<34} {'-':>8} {'-':>10}")
            continue
        p = r.solution.chosen
        peak = max(m.required for d, m in p.memory.items() if d != "disk")
        rows.append(f"{r.snapshot.id[:44]:<44} {fmt_count(r.footprint.parameters):>8} {'yes':>5}  {p.label:<34} {_column(p, images):>8} {fmt_bytes(peak):>10}")
    notes = list(dict.fromkeys(n for _, r in results if isinstance(r, Report) for n in _run_notes(r)))
    out = rows + [f"note: {n}" for n in notes]
    if errors:
        out += ["hints:", *errors]
    return "\n".join(out)


def _run_notes(r: Report) -> tuple[str, ...]:
    """Notes on how the run read its models (the Hub could not be reached, ...), shown once per table."""
    return tuple(n for n in r.snapshot.notes if n.startswith(("the Hub could not be reached", "HF_HUB_OFFLINE is set")))


def catalog_table(rows: list[dict[str, Any]]) -> str:
    """The bundled catalog for people (``fitcheck catalog``), one model a line."""
    out = [f"{'model':<40} {'type':<12} {'parameters':>10} {'bf16 weights':>13} {'files':>5}  gated"]
    for r in rows:
        out.append(f"{r['id']:<40} {str(r['model_type']):<12} {fmt_count(r['parameters'] or 0):>10} "
                   f"{fmt_bytes(r['weights_bytes'] or 0):>13} {r['weight_files']:>5}  {'yes' if r['gated'] else 'no'}")
    return _safe("\n".join(out))


def catalog_markdown(rows: list[dict[str, Any]]) -> str:
    """The catalog as the Markdown table docs/catalog.md holds (and the README's catalog section takes)."""
    out = ["| model | type | parameters | bf16 weights | weight files | gated |", "|---|---|---:|---:|---:|---|"]
    for r in rows:
        out.append(f"| `{r['id']}` | {r['model_type']} | {fmt_count(r['parameters'] or 0)} | {fmt_bytes(r['weights_bytes'] or 0)} "
                   f"| {r['weight_files']} | {'yes' if r['gated'] else 'no'} |")
    return "\n".join(out)


def hardware_table(machines: list[Hardware]) -> str:
    return _safe(_hardware_table(machines))


def _hardware_table(machines: list[Hardware]) -> str:
    rows = [f"{'name':<24} {'GPUs':<34} {'RAM':>10} {'disk':>10}  description"]
    for hw in machines:
        gpus = " + ".join(f"{g.name} {fmt_bytes(g.total_bytes, precision=0)}" for g in hw.gpus) if hw.gpus else "none"
        if len(hw.gpus) > 1 and len({g.name for g in hw.gpus}) == 1:
            gpus = f"{len(hw.gpus)}x {hw.gpus[0].name} {fmt_bytes(hw.gpus[0].total_bytes, precision=0)}"
        rows.append(f"{hw.name:<24} {gpus[:34]:<34} {fmt_bytes(hw.ram_total, precision=0):>10} {fmt_bytes(hw.disk_free, precision=0):>10}  {hw.description}")
    return "\n".join(rows)
