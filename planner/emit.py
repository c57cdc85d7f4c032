"""Plan -> the load settings, a plan file (``--config``) and a standalone load script (``--script``).

The script depends on torch, transformers and accelerate (and bitsandbytes for bnb plans), never
on fitcheck. It is built from a fixed template; every value that came from outside (repo id,
revision, module names, paths) enters it only through :func:`literal`, which accepts plain data
(str, int, float, bool, None, lists and dicts of them) and writes ``repr()`` of it -- a Python
literal that cannot be anything else. Tokens never enter: the script relies on the user's login
or HF_TOKEN.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from planner import __version__
from planner.records import Plan
from planner.secrets import redact

if TYPE_CHECKING:
    from planner.api import Report

DEFAULT_OFFLOAD_DIR = "fitcheck-offload"
# transformers' Auto classes fitcheck emits; nothing else can reach the import line.
_AUTO_CLASSES = frozenset({"AutoModelForCausalLM", "AutoModelForImageTextToText", "AutoModelForSeq2SeqLM"})
# The label is fitcheck's own words, but it goes into a docstring: keep only harmless characters.
_LABEL_SAFE = re.compile(r"[^A-Za-z0-9 +()._-]")
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9._-]{0,60}")
_TORCH_DTYPES = {"float32": "torch.float32", "bfloat16": "torch.bfloat16", "float16": "torch.float16"}


def load_settings(r: Report, p: Plan, *, offload_dir: str = DEFAULT_OFFLOAD_DIR, trust_remote_code: bool = False) -> dict[str, Any]:
    """The from_pretrained settings of a plan, as plain data (the plan file's core)."""
    fp = r.footprint
    uses_offload = any(v in ("cpu", "disk") for v in p.device_map.values()) and any(isinstance(v, int) for v in p.device_map.values())
    bnb = None
    if p.scheme.quantization == "int8":
        bnb = {"load_in_8bit": True}
    elif p.scheme.quantization == "nf4":
        bnb = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
               "bnb_4bit_compute_dtype": p.scheme.dtype}
    if bnb is not None and (uses_offload or "disk" in p.device_map.values()):
        bnb["llm_int8_enable_fp32_cpu_offload"] = True
    packages = ["torch", "transformers", "accelerate"]
    if bnb is not None:
        packages.append("bitsandbytes")
    if fp.prequant is not None and fp.prequant.package and fp.prequant.package not in packages:
        packages.append(fp.prequant.package)
    main = next((f"cuda:{v}" for v in p.device_map.values() if isinstance(v, int)), None)
    if main is None:
        main = "mps" if "mps" in p.device_map.values() else "cpu"
    return {
        "auto_class": fp.arch.auto_class,
        "model": r.snapshot.id,
        "revision": r.snapshot.revision if r.snapshot.source != "local" else None,
        "dtype": p.scheme.dtype,
        "device_map": p.device_map,
        "max_memory": {_mm_key(d): m.capacity for d, m in p.memory.items() if d != "disk"},
        "offload_folder": offload_dir if "disk" in p.device_map.values() else None,
        "bitsandbytes": bnb,
        "use_safetensors": True if r.snapshot.weight_format == "safetensors" else None,
        "trust_remote_code": bool(trust_remote_code),
        "exec_device": main,
        "packages": packages,
    }


def kv_after_prefill(r: Report, p: Plan, device: str) -> int:
    """KV bytes on ``device`` right after the prefill (before any new token), for verify."""
    from planner.memory import kv

    fp, c = r.footprint, r.constraints
    exec_device = load_settings(r, p)["exec_device"]
    total = 0
    for u in fp.units:
        if u.kind != "layer" or u.layer is None:
            continue
        where = p.device_map.get(u.name)
        where = f"cuda:{where}" if isinstance(where, int) else where
        holder = where if where in ("cpu", "mps") or str(where).startswith("cuda") else exec_device
        if holder == device:
            total += kv.layer_bytes(fp.arch, u.layer, context=c.context, new_tokens=0, batch=c.batch, dtype_bytes=p.scheme.dtype_bytes)
    return total


def plan_file(r: Report, p: Plan, **kw: Any) -> str:
    """The ``--config`` JSON: everything the load needs, and what fitcheck predicted for it."""
    doc = {
        "fitcheck_version": __version__,
        "model": {"id": r.snapshot.id, "revision": r.snapshot.revision, "commit": r.snapshot.commit, "source": r.snapshot.source},
        "label": p.label,
        "load": load_settings(r, p, **kw),
        "generate": {"context": r.constraints.context, "batch": r.constraints.batch, "new_tokens": r.constraints.new_tokens},
        "predicted": {d: {**m.to_dict(), "kv_after_prefill": kv_after_prefill(r, p, d)} for d, m in p.memory.items()},
        "margin": {"fraction": r.constraints.margin_fraction, "floor_bytes": r.constraints.margin_floor},
    }
    return redact(json.dumps(doc, indent=2)) + "\n"


def script(r: Report, p: Plan, **kw: Any) -> str:
    """A standalone Python script that loads the model with the plan's settings and generates."""
    generate = {"context": r.constraints.context, "batch": r.constraints.batch, "new_tokens": r.constraints.new_tokens}
    return script_from_settings(load_settings(r, p, **kw), generate, label=p.label, prequant=r.footprint.prequant.detail if r.footprint.prequant else None)


def script_from_settings(s: dict[str, Any], generate: dict[str, Any], *, label: str, prequant: str | None = None) -> str:
    """Render the load script from a plan file's ``load`` and ``generate`` blocks.

    ``fitcheck verify`` renders the script the same way, so it runs exactly what the user runs.
    """
    auto = s["auto_class"]
    if auto not in _AUTO_CLASSES:
        raise ValueError(f"unexpected auto class {auto!r}")
    dtype = _TORCH_DTYPES[s["dtype"]]
    bnb = s["bitsandbytes"]
    imports = f"from transformers import AutoTokenizer, {auto}" + (", BitsAndBytesConfig" if bnb else "")
    quant_lines = ""
    if bnb:
        items = {k: v for k, v in bnb.items() if k != "bnb_4bit_compute_dtype"}
        quant_lines = f"    kwargs[\"quantization_config\"] = BitsAndBytesConfig(**{literal(items)}"
        quant_lines += f", bnb_4bit_compute_dtype={_TORCH_DTYPES[bnb['bnb_4bit_compute_dtype']]})\n" if "bnb_4bit_compute_dtype" in bnb else ")\n"
    remote = ""
    if s["trust_remote_code"]:
        remote = ("    # --trust-remote-code was given: this runs Python code from the model repo. Review it first.\n"
                  "    kwargs[\"trust_remote_code\"] = True\n")
    pre = ""
    if prequant:
        pre = f"    # Pre-quantized checkpoint ({_LABEL_SAFE.sub('', prequant)}): transformers reads its quantization_config from config.json.\n"
    text = _TEMPLATE.format(
        label=_LABEL_SAFE.sub("", label),
        version=__version__,
        packages=", ".join(p for p in s["packages"] if _PACKAGE.fullmatch(p)),
        imports=imports,
        model_lit=literal(s["model"]),
        revision=literal(s["revision"]),
        device_map=literal(s["device_map"]),
        max_memory=literal(s["max_memory"]),
        offload=literal(s["offload_folder"]),
        exec_device=literal(s["exec_device"]),
        context=literal(int(generate["context"])),
        batch=literal(int(generate["batch"])),
        new_tokens=literal(int(generate["new_tokens"])),
        auto=auto,
        dtype=dtype,
        safetensors="    kwargs[\"use_safetensors\"] = True\n" if s["use_safetensors"] else "",
        quant=quant_lines,
        remote=remote,
        prequant=pre,
    )
    return redact(text)


def literal(value: Any) -> str:
    """``repr`` of plain data only: the one way outside values enter generated code."""
    _check_plain(value)
    return repr(value)


def _check_plain(value: Any, depth: int = 0) -> None:
    if depth > 8:
        raise ValueError("value nested too deeply for a literal")
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            _check_plain(v, depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise ValueError(f"dict key {k!r} is not a str or int")
            _check_plain(v, depth + 1)
        return
    raise ValueError(f"{type(value).__name__} is not plain data")


def _mm_key(device: str) -> int | str:
    return int(device.split(":")[1]) if device.startswith("cuda:") else device


_TEMPLATE = '''#!/usr/bin/env python3
"""Load MODEL as fitcheck planned it ({label}).

Generated by fitcheck {version}. Needs: {packages}.
Run it as ``python load.py [prompt]``. Log in (``hf auth login``) or set HF_TOKEN for gated repos.
"""

import sys

import torch
{imports}

MODEL = {model_lit}
REVISION = {revision}
# Module -> device, computed by fitcheck for the memory each device has (integers are CUDA indices).
DEVICE_MAP = {device_map}
# The capacity per device the map was computed for. The explicit DEVICE_MAP above is what loads;
# MAX_MEMORY is what to pass instead if you switch to device_map="auto".
MAX_MEMORY = {max_memory}
OFFLOAD_FOLDER = {offload}
# Inputs go where the first layers run.
EXEC_DEVICE = {exec_device}
CONTEXT = {context}
BATCH = {batch}
NEW_TOKENS = {new_tokens}


def load_model():
    """Load the model exactly as planned."""
    kwargs = {{"revision": REVISION, "dtype": {dtype}, "device_map": DEVICE_MAP}}
{safetensors}    if OFFLOAD_FOLDER is not None:
        kwargs["offload_folder"] = OFFLOAD_FOLDER
{quant}{remote}{prequant}    return {auto}.from_pretrained(MODEL, **kwargs)


def main(argv):
    prompt = argv[1] if len(argv) > 1 else "The quick brown fox"
    tokenizer = AutoTokenizer.from_pretrained(MODEL, revision=REVISION)
    model = load_model()
    inputs = tokenizer([prompt] * BATCH, return_tensors="pt").to(EXEC_DEVICE)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    print(tokenizer.decode(out[0], skip_special_tokens=True))


if __name__ == "__main__":
    main(sys.argv)
'''
