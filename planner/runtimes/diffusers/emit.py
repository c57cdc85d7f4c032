"""Plan -> the report blocks, a plan file (``--config``) and a standalone generation script.

The script depends on torch, diffusers, transformers and accelerate (and bitsandbytes for
quantized components), never on fitcheck. It is built line by line from fixed templates: one
line per switch the plan turns on, and nothing else; every value from outside (repo id,
revision, paths) enters only through :func:`literal`, which writes ``repr()`` of plain data.
The ``pipe.vae.enable_slicing()`` / ``enable_tiling()`` calls are the VAE's own: the pipeline-level
``enable_vae_slicing`` / ``enable_vae_tiling`` went away in the diffusers 0.40 cycle.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from planner import __version__
from planner.core.codegen import literal, refuse_secrets
from planner.core.errors import VerifyError
from planner.core.records import Plan, Report
from planner.runtimes.diffusers import memory, plans
from planner.runtimes.diffusers.facts import PipelineFacts
from planner.runtimes.diffusers.settings import OFFLOADS, QUANTS, DiffusersSettings

DEFAULT_OFFLOAD_DIR = "fitcheck-offload"
# The diffusers release the emitted calls were checked against (the venv's 0.42.1).
DIFFUSERS_PIN = "diffusers>=0.42,<0.43"
_TORCH_DTYPES = {"float32": "torch.float32", "bfloat16": "torch.bfloat16", "float16": "torch.float16"}
_LABEL_SAFE = re.compile(r"[^A-Za-z0-9 +(),._-]")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,40}")
PROMPT = "a photograph of an astronaut riding a horse"


def _settings(p: Plan) -> DiffusersSettings:
    if not isinstance(p.settings, DiffusersSettings):
        raise TypeError(f"not a diffusers plan: {p.runtime}")
    return p.settings


def model_block(fx: PipelineFacts) -> dict[str, Any]:
    """The JSON report's ``model`` entries: kind, pipeline class, components."""
    return {
        "kind": "diffusers-pipeline",
        "pipeline": fx.pipeline,
        "architectures": [fx.pipeline],  # the report's model line reads these three
        "weights_bytes": sum(c.stored_bytes for c in fx.components),
        "stored_dtype": "/".join(sorted({c.dtype for c in fx.components})),
        "parameters": fx.parameters,
        "download_bytes": fx.download_bytes,
        "variant": fx.variant,
        "downloads": dict(fx.downloads),
        "components": {c.name: {"class": c.cls, "library": c.library, "role": c.role, "parameters": c.parameters,
                                "bytes": c.stored_bytes, "dtype": c.dtype, "variant": c.variant} for c in fx.components},
        "other_components": dict(fx.other_components),
    }


def plan_block(fx: PipelineFacts, p: Plan) -> dict[str, Any]:
    """``plan.diffusers``: the switches, and the memory of each phase per device."""
    s = _settings(p)
    phases: dict[str, dict[str, Any]] = {}
    sizes: dict[str, int] = {}
    for ph in memory.phases(fx, s):
        weights = plans.resident(fx, s, ph)
        phases[ph.name] = {"components": list(ph.components), "weights": weights, "activations": ph.activations}
        sizes[ph.name] = weights + ph.activations
    peak = max(sizes, key=lambda n: sizes[n])
    return {
        "offload": s.offload,
        "group_stream": s.group_stream,
        "group_disk": s.group_disk,
        "vae_slicing": s.vae_slicing,
        "vae_tiling": s.vae_tiling,
        "attention_slicing": s.attention_slicing or None,
        "quantized_components": {c: q for c, q in s.quantized},
        "dropped_components": list(s.dropped),
        "dtype": s.dtype,
        "variant": s.variant or None,
        "resolution": list(s.resolution),
        "batch": s.batch,
        "guidance": s.guidance,
        "steps": s.steps,
        "peak_phase": peak,
        "phases": phases,
    }


def settings_doc(r: Report, fx: PipelineFacts, p: Plan, *, offload_dir: str) -> dict[str, Any]:
    """The plan file's ``pipeline`` block: everything :func:`script_from_doc` needs."""
    s = _settings(p)
    return {
        "model": r.snapshot.id,
        "revision": r.snapshot.commit or r.snapshot.revision if r.snapshot.source != "local" else None,
        "pipeline": fx.pipeline,
        "device": s.device,
        "dtype": s.dtype,
        "variant": s.variant or None,
        "offload": s.offload,
        "group_stream": s.group_stream,
        "offload_dir": offload_dir if s.group_disk else None,
        "vae_slicing": s.vae_slicing,
        "vae_tiling": s.vae_tiling,
        "attention_slicing": s.attention_slicing or None,
        "quantized": {c: q for c, q in s.quantized},
        "dropped": list(s.dropped),
        "width": s.resolution[0],
        "height": s.resolution[1],
        "batch": s.batch,
        "guidance": s.guidance,
        "default_guidance": memory.default_guidance(fx),
        "steps": s.steps,
    }


def plan_file(r: Report, fx: PipelineFacts, p: Plan, *, offload_dir: str) -> str:
    """The ``--config`` JSON: the switches, and what fitcheck predicted per device and phase."""
    doc = {
        "fitcheck_version": __version__,
        "runtime": "diffusers",
        "model": {"id": r.snapshot.id, "revision": r.snapshot.revision, "commit": r.snapshot.commit, "source": r.snapshot.source},
        "label": p.label,
        "pipeline": settings_doc(r, fx, p, offload_dir=offload_dir),
        # what `fitcheck verify` reads of every plan file: the load (the same block) and the call
        "load": settings_doc(r, fx, p, offload_dir=offload_dir),
        "generate": {"batch": r.constraints.batch, "steps": _settings(p).steps, "resolution": list(_settings(p).resolution)},
        "plan": plan_block(fx, p),
        "predicted": {d: m.to_dict() for d, m in p.memory.items()},
        "margin": {"fraction": r.constraints.margin_fraction, "floor_bytes": r.constraints.margin_floor},
    }
    return refuse_secrets(json.dumps(doc, indent=2) + "\n")


def script(r: Report, fx: PipelineFacts, p: Plan, *, offload_dir: str) -> str:
    return script_from_doc(settings_doc(r, fx, p, offload_dir=offload_dir), label=p.label)


def packages(p: Plan) -> tuple[str, ...]:
    s = _settings(p)
    out = ["torch", DIFFUSERS_PIN, "transformers", "accelerate", "safetensors"]
    if s.quantized:
        out.append("bitsandbytes")
    return tuple(out)


def render_check(doc: Any) -> str | None:
    """Why ``doc`` (a plan file's ``pipeline`` block) cannot be rendered, or None."""
    if not isinstance(doc, Mapping):
        return "no 'pipeline' block"
    try:
        script_from_doc(doc, label="check")
    except (KeyError, TypeError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def check_plan_doc(doc: Mapping[str, Any]) -> None:
    """Refuse a plan file whose settings could not have come from fitcheck.

    Raises:
        VerifyError: the settings do not render a script.
    """
    problem = render_check(doc.get("pipeline"))
    if problem:
        raise VerifyError(f"the plan file cannot be run as written: {problem}")


def script_from_doc(d: Mapping[str, Any], *, label: str) -> str:
    """The generation script from a plan file's ``pipeline`` block (``fitcheck verify`` renders it the same way).

    Raises:
        ValueError, KeyError, TypeError: a block fitcheck could not have written.
    """
    dtype = _TORCH_DTYPES[d["dtype"]]
    offload = d["offload"]
    if offload not in OFFLOADS:
        raise ValueError(f"unknown offload {offload!r}")
    device = d["device"]
    if device not in ("cpu", "mps") and not re.fullmatch(r"cuda:\d{1,2}", str(device)):
        raise ValueError(f"unknown device {device!r}")
    for name, q in dict(d.get("quantized") or {}).items():
        if not _NAME.fullmatch(str(name)) or q not in QUANTS:
            raise ValueError(f"bad quantized component {name!r}: {q!r}")
    for name in d.get("dropped") or []:
        if not _NAME.fullmatch(str(name)):
            raise ValueError(f"bad dropped component {name!r}")
    if d.get("attention_slicing") not in (None, "auto", "max"):
        raise ValueError("attention_slicing must be auto, max or null")
    width, height, batch, steps = (int(d[k]) for k in ("width", "height", "batch", "steps"))
    lines = [
        '"""Generated by fitcheck ' + literal(__version__)[1:-1] + ": " + _LABEL_SAFE.sub("", label)[:200] + ".",
        "",
        "Runs one generation with exactly the switches fitcheck planned; needs " + DIFFUSERS_PIN + ".",
        '"""',
        "",
        "import torch",
        "from diffusers import DiffusionPipeline",
    ]
    quantized = dict(d.get("quantized") or {})
    if quantized:
        lines.append("from diffusers import BitsAndBytesConfig as DiffusersBnb, PipelineQuantizationConfig")
        if any(n.startswith("text_encoder") for n in quantized):
            lines.append("from transformers import BitsAndBytesConfig as TransformersBnb")
    lines += [
        "",
        f"MODEL = {literal(d['model'])}",
        f"REVISION = {literal(d.get('revision'))}",
        f"PROMPT = {literal(PROMPT)}",
        f"WIDTH, HEIGHT, BATCH, STEPS = {width}, {height}, {batch}, {steps}",
        "",
        "",
        "def load():",
    ]
    kwargs = ["revision=REVISION", f"torch_dtype={dtype}"]
    if d.get("variant"):
        kwargs.append(f"variant={literal(str(d['variant']))}")
    if quantized:
        mapping = {}
        for name, q in sorted(quantized.items()):
            mapping[name] = q
        lines.append("    # bitsandbytes for the planned components (diffusers quantizers/pipe_quant_config.py)")
        lines.append("    quant = PipelineQuantizationConfig(quant_mapping={")
        for name, q in sorted(mapping.items()):
            lines.append(f"        {literal(name)}: {_bnb(name, q, dtype)},")
        lines.append("    })")
        kwargs.append("quantization_config=quant")
    for name in d.get("dropped") or []:
        kwargs.append(f"{name}=None")
        if name.startswith("text_encoder"):
            kwargs.append(f"tokenizer{name[len('text_encoder'):]}=None")
    if offload == "none" and device != "cpu":
        kwargs.append(f"device_map={literal(device.split(':')[0])}")
    lines.append("    pipe = DiffusionPipeline.from_pretrained(MODEL, " + ", ".join(kwargs) + ")")
    if offload == "model":
        lines.append("    pipe.enable_model_cpu_offload()")
    elif offload == "sequential":
        lines.append("    pipe.enable_sequential_cpu_offload()")
    elif offload == "group":
        args = [f"onload_device=torch.device({literal(device)})", "offload_device=torch.device('cpu')",
                "offload_type='block_level'", "num_blocks_per_group=1"]
        if d.get("group_stream"):
            args.append("use_stream=True")
        if d.get("offload_dir"):
            args.append(f"offload_to_disk_path={literal(str(d['offload_dir']))}")
        lines.append("    pipe.enable_group_offload(" + ", ".join(args) + ")")
    if d.get("vae_slicing"):
        lines.append("    pipe.vae.enable_slicing()")
    if d.get("vae_tiling"):
        lines.append("    pipe.vae.enable_tiling()")
    if d.get("attention_slicing"):
        lines.append(f"    pipe.enable_attention_slicing({literal(d['attention_slicing'])})")
    lines += ["    return pipe", "", "", "def generate(pipe, steps=STEPS):"]
    call = ["PROMPT", "width=WIDTH", "height=HEIGHT", "num_images_per_prompt=BATCH", "num_inference_steps=steps"]
    guidance, default = bool(d["guidance"]), bool(d.get("default_guidance", True))
    if str(d.get("pipeline", "")).startswith("Flux"):
        if guidance:  # true classifier-free guidance: a negative prompt and true_cfg_scale > 1 (pipeline_flux.py)
            call += ["negative_prompt=''", "true_cfg_scale=4.0"]
    elif not guidance and default:
        call.append("guidance_scale=1.0")  # guidance_scale <= 1 turns classifier-free guidance off
    lines += [
        "    generator = torch.Generator('cpu').manual_seed(0)",
        "    return pipe(" + ", ".join(call) + ", generator=generator).images",
        "",
        "",
        'if __name__ == "__main__":',
        "    images = generate(load())",
        "    for i, image in enumerate(images):",
        "        image.save(f'fitcheck-{i}.png')",
        "",
    ]
    return refuse_secrets("\n".join(lines))


def _bnb(component: str, q: str, dtype: str) -> str:
    """The BitsAndBytesConfig of one component: diffusers' for its own models, transformers' for text encoders."""
    cls = "TransformersBnb" if component.startswith("text_encoder") else "DiffusersBnb"
    if q == "nf4":
        return f"{cls}(load_in_4bit=True, bnb_4bit_quant_type='nf4', bnb_4bit_compute_dtype={dtype})"
    return f"{cls}(load_in_8bit=True)"
