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
from collections.abc import Mapping
from typing import Any

from planner import __version__
from planner.core.codegen import literal, refuse_secrets
from planner.core.errors import VerifyError
from planner.core.records import Plan, Report
from planner.model.footprint import Footprint
from planner.runtimes.transformers import files
from planner.runtimes.transformers import quantizers as formats
from planner.runtimes.transformers.memory import kv
from planner.runtimes.transformers.placement import kv_device
from planner.runtimes.transformers.settings import TransformersSettings

DEFAULT_OFFLOAD_DIR = "fitcheck-offload"
# transformers' Auto classes fitcheck emits; nothing else can reach the import line.
_AUTO_CLASSES = frozenset({"AutoModelForCausalLM", "AutoModelForImageTextToText", "AutoModelForSeq2SeqLM"})
# The label is fitcheck's own words, but it goes into a docstring: keep only harmless characters.
_LABEL_SAFE = re.compile(r"[^A-Za-z0-9 +()._-]")
# A pip requirement with an optional version range ("kernels>=0.18.2,<0.19") and an import name.
_PACKAGE_SPEC = re.compile(r"[a-z0-9][a-z0-9._-]{0,60}(?:[<>=!]=?[0-9][0-9a-z.]*)?(?:,[<>=!]=?[0-9][0-9a-z.]*)?")
_MODULE = re.compile(r"[a-z_][a-z0-9_]{0,60}")
_TORCH_DTYPES = {"float32": "torch.float32", "bfloat16": "torch.bfloat16", "float16": "torch.float16"}


def _parts(r: Report, p: Plan) -> tuple[Footprint, TransformersSettings]:
    fp, s = r.footprint, p.settings
    if not isinstance(fp, Footprint) or not isinstance(s, TransformersSettings):
        raise TypeError(f"not a transformers plan: {p.runtime}")
    return fp, s


def model_block(r: Report) -> dict[str, Any]:
    """The transformers entries of the JSON report's ``model`` block (README's "JSON schema")."""
    fp = r.footprint
    if not isinstance(fp, Footprint):
        raise TypeError(f"not a transformers model: {type(fp).__name__}")
    arch = fp.arch
    return {
        "model_type": arch.model_type,
        "architectures": list(arch.architectures),
        "auto_class": arch.auto_class,
        "parameters": fp.parameters,
        "active_parameters": fp.active_parameters,
        "weights_bytes": fp.stored_bytes,
        "download_bytes": fp.download_bytes,
        "stored_dtype": fp.stored_dtype,
        "prequantized": _prequantized_block(fp),
        "weight_format": r.snapshot.weight_format,
        "weight_files": list(r.snapshot.weight_files),
        "unloaded_bytes": fp.unloaded_bytes,
        # vision tower, projector and language model (encoder, decoder, shared for seq2seq)
        "components": {name: {"parameters": params, "bytes": nbytes} for name, (params, nbytes) in fp.components.items()},
        "kv_bytes_per_token": kv.bytes_per_token(arch, dtype_bytes=2),
        "layers": arch.num_layers,
        "max_position_embeddings": arch.max_position_embeddings,
        "units": [
            {"name": u.name, "kind": u.kind, "layer": u.layer, "parameters": u.params, "bytes": u.stored_bytes,
             "modules": u.modules, "tied_to": u.tied_to}
            for u in fp.units
        ],
    }


def _prequantized_block(fp: Footprint) -> dict[str, Any] | None:
    """The checkpoint's quantization, with its bytes as stored: packed weights, and their scales,
    zeros and indices (which hold no parameters)."""
    if fp.prequant is None:
        return None
    roles = [s for u in fp.units for role, s in u.roles.items() if role in ("packed", "qaux")]
    packed = [s for u in fp.units for role, s in u.roles.items() if role == "packed"]
    return {**fp.prequant.to_dict(),
            "packed_parameters": sum(s.params for s in packed),
            "packed_bytes": sum(s.bytes for s in packed),
            "scale_bytes": sum(s.bytes for s in roles) - sum(s.bytes for s in packed)}


def load_settings(r: Report, p: Plan, *, offload_dir: str = DEFAULT_OFFLOAD_DIR, trust_remote_code: bool = False) -> dict[str, Any]:
    """The from_pretrained settings of a plan, as plain data (the plan file's core)."""
    fp, ps = _parts(r, p)
    device_map = ps.device_map
    uses_offload = any(v in ("cpu", "disk") for v in device_map.values()) and any(isinstance(v, int) for v in device_map.values())
    bnb: dict[str, Any] | None = None
    if ps.scheme.quantization == "int8":
        bnb = {"load_in_8bit": True}
    elif ps.scheme.quantization == "nf4":
        bnb = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
               "bnb_4bit_compute_dtype": ps.scheme.dtype}
    if bnb is not None and (uses_offload or "disk" in device_map.values()):
        bnb["llm_int8_enable_fp32_cpu_offload"] = True
    packages = ["torch", "transformers", "accelerate"]
    if bnb is not None:
        packages.append("bitsandbytes")
    main = next((f"cuda:{v}" for v in device_map.values() if isinstance(v, int)), None)
    if ps.scheme.quantization == "nf4" and main is None and "mps" not in device_map.values():
        # bnb's fast CPU 4-bit matmul comes from the Hub kernel kernels-community/quantization-
        # bitsandbytes through the `kernels` package >= 0.11.1 (bitsandbytes backends/cpu/ops.py
        # 243-255: "Please make sure you already `pip install kernels`"); without it bnb falls back
        # to its own GEMV, which the speed estimate assumes (benchmarks/speed).
        packages.append(CPU_NF4_FAST_PATH)
    prequantized = _prequantized(r, p)
    if prequantized is not None:
        packages += [pip for pip, _ in prequantized["requires"] if pip not in packages]
    tokenizer = _tokenizer(r)
    if tokenizer == [files.SENTENCEPIECE] and "sentencepiece" not in packages:
        packages.append("sentencepiece")  # transformers converts tokenizer.model with it (convert_slow_tokenizer.py:97-98)
    if main is None:
        main = "mps" if "mps" in device_map.values() else "cpu"
    return {
        "auto_class": fp.arch.auto_class,
        "model": r.snapshot.id,
        "revision": r.snapshot.revision if r.snapshot.source != "local" else None,
        "dtype": ps.scheme.dtype,
        "device_map": device_map,
        "max_memory": {_mm_key(d): m.capacity for d, m in p.memory.items() if d != "disk"},
        "offload_folder": offload_dir if "disk" in device_map.values() else None,
        "bitsandbytes": bnb,
        "prequantized": prequantized,
        "use_safetensors": True if r.snapshot.weight_format == "safetensors" else None,
        "pickled_weights": r.snapshot.weight_format == "pytorch",
        "trust_remote_code": bool(trust_remote_code),
        "exec_device": main,
        "packages": packages,
        "tokenizer": tokenizer,
    }


# The package bitsandbytes' fast CPU nf4 path needs (see load_settings).
CPU_NF4_FAST_PATH = "kernels>=0.11.1"


def _tokenizer(r: Report) -> list[str] | None:
    """The tokenizer files the script's AutoTokenizer will read; [] when the repo has none (the
    script then generates from token ids); None when the listing is not the repo's (a catalog
    entry lists only what was known of it), so the script tries and falls back."""
    found = list(files.tokenizer_files(f.path for f in r.snapshot.files))
    if not found and r.snapshot.source == "catalog":
        return None
    return found


def _prequantized(r: Report, p: Plan) -> dict[str, Any] | None:
    """How the plan loads a pre-quantized checkpoint: as stored or dequantized, the quantization
    config the script passes for that (planner.runtimes.transformers.quantizers), and the packages it needs."""
    fp, _ = _parts(r, p)
    if fp.prequant is None:
        return None
    gpus = tuple(g for g in r.hardware.gpus if g.device in p.memory)
    d = formats.for_footprint(fp, gpus)
    assert d is not None  # pre-quantized weights always get a decision
    config = formats.script_config(d, fp.prequant.config) if d.action == formats.DEQUANTIZE or d.rule.config else None
    return {
        "method": fp.prequant.method,
        "action": d.action,
        "reason": d.reason,
        "config": {"class": config[0], "kwargs": config[1]} if config else None,
        "requires": [[pkg.pip, pkg.module] for pkg in d.rule.packages],
    }


def _layer_device(device_map: dict[str, Any], unit: str) -> Any:
    """The device of a decoder layer's attention: the layer's key, or (split MoE layer) its self_attn's."""
    if unit in device_map:
        return device_map[unit]
    prefix = unit + "."
    return next((v for k, v in device_map.items() if k.startswith(prefix) and not k.endswith(".experts")), None)


def kv_after_prefill(r: Report, p: Plan, device: str) -> int:
    """KV bytes on ``device`` right after the prefill (before any new token), for verify."""
    fp, ps = _parts(r, p)
    c = r.constraints
    exec_device = load_settings(r, p)["exec_device"]
    # the devices that run layers: the accelerators of the map, or the CPU when none is in it
    executing = {f"cuda:{v}" if isinstance(v, int) else v for v in ps.device_map.values() if v not in ("cpu", "disk")} | {exec_device}
    total = 0
    for u in fp.units:
        if u.kind != "layer" or u.layer is None:
            continue
        where = _layer_device(ps.device_map, u.name)
        where = f"cuda:{where}" if isinstance(where, int) else where
        if kv_device(str(where), executing, exec_device) == device:
            total += kv.layer_bytes(fp.arch, u.layer, context=c.context, new_tokens=0, batch=c.batch, dtype_bytes=ps.scheme.dtype_bytes)
    return total


def plan_file(r: Report, p: Plan, **kw: Any) -> str:
    """The ``--config`` JSON: everything the load needs, and what fitcheck predicted for it."""
    doc = {
        "fitcheck_version": __version__,
        "runtime": p.runtime,
        "model": {"id": r.snapshot.id, "revision": r.snapshot.revision, "commit": r.snapshot.commit, "source": r.snapshot.source},
        "label": p.label,
        "load": load_settings(r, p, **kw),
        "generate": {"context": r.constraints.context, "batch": r.constraints.batch, "new_tokens": r.constraints.new_tokens},
        "predicted": {d: {**m.to_dict(), "kv_after_prefill": kv_after_prefill(r, p, d)} for d, m in p.memory.items()},
        "margin": {"fraction": r.constraints.margin_fraction, "floor_bytes": r.constraints.margin_floor},
        # what verify compares its timings with, and the devices it checks this machine has first
        "predicted_speed": p.speed.to_dict(),
        "hardware": {"name": r.hardware.name, "gpus": [{"device": g.device, "name": g.name, "backend": g.backend,
                                                         "free_bytes": g.free_bytes} for g in r.hardware.gpus if g.device in p.memory]},
    }
    return refuse_secrets(json.dumps(doc, indent=2) + "\n")


def script(r: Report, p: Plan, **kw: Any) -> str:
    """A standalone Python script that loads the model with the plan's settings and generates."""
    generate = {"context": r.constraints.context, "batch": r.constraints.batch, "new_tokens": r.constraints.new_tokens}
    fp, _ = _parts(r, p)
    return script_from_settings(load_settings(r, p, **kw), generate, label=p.label, prequant=fp.prequant.detail if fp.prequant else None)


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
    quant_lines += _prequant_lines(s.get("prequantized"))
    remote = ""
    if s["trust_remote_code"]:
        remote = ("    # --trust-remote-code was given: this runs Python code from the model repo. Review it first.\n"
                  "    kwargs[\"trust_remote_code\"] = True\n")
    pre = ""
    if prequant:
        pre = f"    # Pre-quantized checkpoint ({_LABEL_SAFE.sub('', prequant)}): transformers reads its quantization_config from config.json.\n"
    if s.get("pickled_weights"):
        pre += ("    # This repo has only pickled pytorch_model*.bin weights: loading them unpickles files that can run code.\n"
                "    # Load them only from a source you trust.\n")
    text = _TEMPLATE.format(
        label=_LABEL_SAFE.sub("", label),
        version=__version__,
        packages=", ".join(p for p in s["packages"] if _PACKAGE_SPEC.fullmatch(p)),
        imports=imports,
        model_lit=literal(s["model"]),
        revision=literal(s["revision"]),
        device_map=literal(s["device_map"]),
        max_memory=literal(s["max_memory"]),
        offload=literal(s["offload_folder"]),
        exec_device=literal(s["exec_device"]),
        has_tokenizer=literal(None if s.get("tokenizer", ()) is None else bool(s.get("tokenizer", True))),
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
    return refuse_secrets(text)


def _prequant_lines(pq: dict[str, Any] | None) -> str:
    """Lines of load_model for a pre-quantized checkpoint: check the packages the planned load
    needs (a missing one makes transformers fall back silently, e.g. MXFP4 to bf16, ~3x the
    memory), and pass the quantization config that makes the load do what was planned."""
    if not pq:
        return ""
    out = ""
    requires = [[str(pip), str(module)] for pip, module in pq.get("requires") or ()
                if _PACKAGE_SPEC.fullmatch(str(pip)) and _MODULE.fullmatch(str(module))]
    if requires:
        out += ("    # The planned load needs these packages; without them transformers loads differently than planned.\n"
                "    import importlib.util\n"
                f"    missing = [pip for pip, module in {literal(requires)} if importlib.util.find_spec(module) is None]\n"
                "    if missing:\n"
                "        sys.exit(\"this plan needs: pip install \" + \" \".join(repr(m) for m in missing))\n")
    config = pq.get("config")
    if config:
        name = config["class"]
        if name not in formats.CONFIG_CLASSES:
            raise ValueError(f"unexpected quantization config class {name!r}")
        what = "dequantized to the load dtype" if pq.get("action") == formats.DEQUANTIZE else "as planned"
        out += (f"    # Planned {what}; this config makes transformers load it that way on any machine.\n"
                f"    from transformers import {name}\n"
                f"    kwargs[\"quantization_config\"] = {name}(**{literal(config['kwargs'])})\n")
    return out


def render_check(settings: Any, generate: Any) -> str | None:
    """Why a plan file's load settings cannot render a script, or None when they can."""
    try:
        script_from_settings(settings, generate, label="check")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return f"{type(e).__name__}: {str(e)[:120]}"
    return None


def check_plan_doc(doc: Mapping[str, Any]) -> None:
    """Refuse a plan file whose load settings could not have come from fitcheck (before anything runs).

    Raises:
        VerifyError: the settings do not render a load script.
    """
    problem = render_check(doc.get("load"), doc.get("generate"))
    if problem:
        raise VerifyError(f"the plan file cannot be loaded as written: {problem}")






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
# Whether the repo has tokenizer files (fitcheck checked its listing; None: not known). Without a
# tokenizer the script generates from token ids and prints ids.
HAS_TOKENIZER = {has_tokenizer}


def load_model():
    """Load the model exactly as planned."""
    kwargs = {{"revision": REVISION, "dtype": {dtype}, "device_map": DEVICE_MAP}}
{safetensors}    if OFFLOAD_FOLDER is not None:
        kwargs["offload_folder"] = OFFLOAD_FOLDER
{quant}{remote}{prequant}    return {auto}.from_pretrained(MODEL, **kwargs)


def load_tokenizer():
    """The repo's tokenizer, or None: then main() generates from token ids."""
    if HAS_TOKENIZER is False:
        return None
    try:
        return AutoTokenizer.from_pretrained(MODEL, revision=REVISION)
    except Exception as e:  # no tokenizer files, or none transformers can build from them (ValueError, KeyError, ...)
        print("no usable tokenizer (%s: %s); generating from token ids" % (type(e).__name__, str(e)[:200]), file=sys.stderr)
        return None


def main(argv):
    prompt = argv[1] if len(argv) > 1 else "The quick brown fox"
    tokenizer = load_tokenizer()
    model = load_model()
    if tokenizer is None:
        # The prompt as token ids ("1 2 3"), else eight ids; each below the vocabulary size.
        vocab = model.get_input_embeddings().weight.shape[0]
        ids = [int(t) % vocab for t in prompt.split()] if prompt.replace(" ", "").isdigit() else [i % vocab for i in range(1, 9)]
        inputs = {{"input_ids": torch.tensor([ids] * BATCH, device=EXEC_DEVICE)}}
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    else:
        inputs = tokenizer([prompt] * BATCH, return_tensors="pt").to(EXEC_DEVICE)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    print(tokenizer.decode(out[0], skip_special_tokens=True) if tokenizer is not None else " ".join(map(str, out[0].tolist())))


if __name__ == "__main__":
    main(sys.argv)
'''
