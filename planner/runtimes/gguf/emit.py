"""What runs a GGUF plan: the llama-server / llama-cli argv, a standalone llama-cpp-python script,
an Ollama Modelfile with its ``ollama run`` line, and the plan file ``fitcheck verify`` reads.

Everything is built from data: argv are lists (never a shell string), the script's values are
Python literals (``repr`` of plain str/int/float/bool/list), the Modelfile's values are checked
to be one line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from planner.core.errors import VerifyError
from planner.core.records import Plan, Report
from planner.runtimes.gguf.plans import GgufSettings
from planner.runtimes.gguf.rpc import RpcSettings, rpc_flag

# llama-cpp-python's GGML type constants for -ctk/-ctv (llama_cpp/llama_cpp.py GGML_TYPE_*,
# the ggml type ids of ggml/include/ggml.h:390-420 enum ggml_type, llama.cpp vendored in
# llama-cpp-python 0.3.36).
GGML_TYPE_ID = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "bf16": 30}
PACKAGES = ("llama-cpp-python>=0.3",)


def settings_of(p: Plan) -> GgufSettings:
    s = p.settings
    if not isinstance(s, GgufSettings):
        raise TypeError(f"not a GGUF plan: {p.runtime}")
    return s


def _local(r: Report) -> bool:
    return r.snapshot.source == "local"


def _model_path(r: Report, s: GgufSettings) -> str:
    """The path of shard 1 on disk, for a local model."""
    import os

    ref = os.path.abspath(os.path.expanduser(r.snapshot.id))
    base = ref if os.path.isdir(ref) else os.path.dirname(ref) or "."
    return os.path.join(base, s.files[0])


def llama_server(r: Report, p: Plan, *, program: str = "llama-server") -> tuple[str, ...]:
    """The llama-server (or llama-cli) argv (flags as tools/server/README.md and common/arg.cpp
    document them: -m/--hf-repo+--hf-file, --rpc, -c, -ngl, -ts, --n-cpu-moe, -ctk, -ctv, -fa on|off,
    --load-mode mmap+mlock, -np)."""
    s = settings_of(p)
    argv: list[str] = [program]
    if _local(r):
        argv += ["-m", _model_path(r, s)]
    else:
        argv += ["--hf-repo", s.repo, "--hf-file", s.files[0]]
    if isinstance(s, RpcSettings) and s.hosts:  # the workers' devices come first in -ts (planner.runtimes.gguf.rpc)
        argv += rpc_flag(s)
    argv += ["-c", str(s.n_ctx), "-ngl", str(s.n_gpu_layers)]
    if s.tensor_split:
        argv += ["-ts", ",".join(_ratio(x, s.tensor_split) for x in s.tensor_split)]
    if s.n_cpu_moe:
        argv += ["--n-cpu-moe", str(s.n_cpu_moe)]
    argv += ["-ctk", s.cache_type_k, "-ctv", s.cache_type_v, "-fa", "on" if s.flash_attn else "off"]
    if s.mlock:
        # common/arg.cpp:2690-2708 "-lm, --load-mode" (llama.cpp vendored in llama-cpp-python 0.3.36;
        # tools/server/README.md:75 "mmap+mlock: mmap + force system to keep model in RAM"); it has no
        # --mlock, which builds before the load-mode refactor (llama.cpp PR #20834) took instead
        argv += ["--load-mode", "mmap+mlock"]
    if program == "llama-server":
        argv += ["-np", str(s.n_parallel)]
    return tuple(argv)


def _ratio(x: float, all_: tuple[float, ...]) -> str:
    return f"{x / max(all_):.3g}"


def script(r: Report, p: Plan) -> str:
    """A standalone llama-cpp-python script: load as planned, generate a few tokens.

    ``--fill`` makes the prompt fill the context (so the reserved buffers are all touched) and
    ``--report PATH`` writes the peak RSS and the buffer sizes llama.cpp logged, as JSON.
    """
    s = settings_of(p)
    kwargs: dict[str, Any] = {"n_ctx": s.n_ctx, "n_gpu_layers": s.n_gpu_layers, "flash_attn": s.flash_attn,
                              "type_k": GGML_TYPE_ID[s.cache_type_k], "type_v": GGML_TYPE_ID[s.cache_type_v],
                              # llama.cpp's C default is a full-size sliding-window cache (src/llama-context.cpp:3788
                              # llama_context_default_params swa_full = true); the plan, like llama-server
                              # (common/common.h:574 swa_full = false), keeps only the window
                              "swa_full": False}
    if s.mlock:  # llama_cpp/llama.py:247-255: use_mmap and use_mlock -> LLAMA_LOAD_MODE_MMAP_MLOCK
        kwargs["use_mlock"] = True
    if s.tensor_split:
        kwargs["tensor_split"] = [round(x / sum(s.tensor_split), 4) for x in s.tensor_split]
    if _local(r):
        load = f"Llama(model_path={_model_path(r, s)!r}, **SETTINGS)"
    else:
        extra = f", additional_files={list(s.files[1:])!r}" if len(s.files) > 1 else ""
        load = f"Llama.from_pretrained(repo_id={s.repo!r}, filename={s.files[0]!r}{extra}, **SETTINGS)"
    new_tokens = r.constraints.new_tokens
    return f'''"""Run {s.repo} ({s.quant}) as fitcheck planned: {p.label}.

Needs llama-cpp-python ({PACKAGES[0]}). Options: --fill (a prompt that fills the context),
--report PATH (write peak RSS, locked bytes and llama.cpp's buffer sizes as JSON).
"""
import json
import os
import re
import resource
import sys
import tempfile

SETTINGS = {kwargs!r}
NEW_TOKENS = {int(new_tokens)}
BUFFERS = re.compile(r"(\\w+)\\s+(model|KV|compute|output) buffer size =\\s+([0-9.]+) MiB")


def status(key):
    """A figure of /proc/self/status in bytes (Linux), None elsewhere."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss():
    """This process's peak RSS: the kernel's VmHWM (ru_maxrss would include the parent's peak
    from before exec on Linux)."""
    hwm = status("VmHWM")
    if hwm is not None:
        return hwm
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def main(argv):
    report = argv[argv.index("--report") + 1] if "--report" in argv else None
    log_fd = saved = None
    if report:  # llama.cpp logs its buffer sizes on stderr: keep a copy
        log = tempfile.TemporaryFile(mode="w+b")
        saved, log_fd = os.dup(2), log.fileno()
        os.dup2(log_fd, 2)
    from llama_cpp import Llama

    llm = {load}
    rss_load = peak_rss()
    locked = status("VmLck")  # what mlock holds (0 without use_mlock)
    if "--fill" in argv:
        vocab = llm.n_vocab()
        prompt = [4 + i % max(1, vocab - 8) for i in range(max(1, SETTINGS["n_ctx"] - NEW_TOKENS - 8))]
    else:
        prompt = "Hello, my name is"
    out = llm(prompt, max_tokens=NEW_TOKENS, temperature=0.0)
    text = out["choices"][0]["text"]
    tokens = out["usage"]["completion_tokens"]
    peak = peak_rss()
    if report:
        os.dup2(saved, 2)
        log.seek(0)
        logged = log.read().decode("utf-8", "replace")
        buffers = {{}}
        for dev, kind, mib in BUFFERS.findall(logged):
            key = kind + ":" + dev
            buffers[key] = buffers.get(key, 0) + int(float(mib) * 1024 * 1024)
        with open(report, "w") as fh:
            json.dump({{"peak_rss": peak, "rss_after_load": rss_load, "generated_tokens": tokens, "text": text,
                       "buffers": buffers, "locked": locked, "mlock_failed": "failed to mlock" in logged}}, fh)
    else:
        print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
'''


def modelfile(r: Report, p: Plan) -> tuple[str, tuple[str, ...], dict[str, str]]:
    """(Modelfile text, the ``ollama run`` argv, the environment the plan relies on).

    Ollama reads GGUF repos from the Hub as ``hf.co/ORG/REPO:QUANT``
    (https://huggingface.co/docs/hub/ollama); num_ctx and num_gpu are Modelfile PARAMETERs
    (docs/modelfile.md); parallel sequences, flash attention and the KV cache type are server
    environment variables (OLLAMA_NUM_PARALLEL, OLLAMA_FLASH_ATTENTION, OLLAMA_KV_CACHE_TYPE: docs/faq.md).
    """
    s = settings_of(p)
    source = _model_path(r, s) if _local(r) else f"hf.co/{s.repo}:{s.quant}"
    for value in (source,):
        if "\n" in value or "\r" in value:
            raise ValueError("a Modelfile value must be one line")
    # Ollama's num_ctx is per sequence: it multiplies the context by OLLAMA_NUM_PARALLEL itself.
    per_seq = max(1, s.n_ctx // max(1, s.n_parallel))
    vram = sum(g.total_bytes for g in r.hardware.gpus if not g.unified)
    default = ollama_default_context(vram)
    text = (f"FROM {source}\nPARAMETER num_ctx {per_seq}\nPARAMETER num_gpu {s.n_gpu_layers}\n"
            f"# planned for num_ctx {per_seq}; without it Ollama takes {default} on this machine's {vram / 2**30:.0f} GiB of VRAM\n")
    # `ollama run hf.co/...` does not read this Modelfile: the server's OLLAMA_CONTEXT_LENGTH carries
    # the planned context instead of Ollama's VRAM-based default (docs/context-length.mdx).
    env = {"OLLAMA_NUM_PARALLEL": str(s.n_parallel), "OLLAMA_FLASH_ATTENTION": "1" if s.flash_attn else "0",
           "OLLAMA_CONTEXT_LENGTH": str(per_seq)}
    if s.cache_type_k != "f16":
        env["OLLAMA_KV_CACHE_TYPE"] = s.cache_type_k
    run = ("ollama", "run", source) if not _local(r) else ("ollama", "create", "fitcheck-model", "-f", "Modelfile")
    return text, run, env


def ollama_default_context(vram_bytes: int) -> int:
    """The context Ollama runs a model at when neither num_ctx nor OLLAMA_CONTEXT_LENGTH is set:
    4k under 24 GiB of VRAM, 32k from 24 to 48 GiB, 256k from 48 GiB (ollama docs/context-length.mdx,
    commit 948f69330acf: "Ollama defaults to the following context lengths based on VRAM")."""
    if vram_bytes < 24 * 2**30:
        return 4096
    if vram_bytes < 48 * 2**30:
        return 32768
    return 262144


def plan_file(r: Report, p: Plan) -> str:
    """The plan file: what verify needs (load, generate, predicted) and the emitted commands."""
    s = settings_of(p)
    doc = {
        "runtime": "gguf",
        "engine": s.engine,
        "label": p.label,
        "load": {**s.to_dict()["gguf"], "source": r.snapshot.source, "model_path": _model_path(r, s) if _local(r) else None},
        "generate": {"new_tokens": r.constraints.new_tokens, "context": r.constraints.context, "batch": r.constraints.batch},
        "predicted": {d: m.to_dict() for d, m in p.memory.items()},
        "commands": {"llama_server": list(llama_server(r, p))},
        "script": script(r, p),
    }
    return json.dumps(doc, indent=2)


def check_plan_doc(doc: Mapping[str, Any]) -> None:
    """Refuse a plan file this runtime could not have written, before anything runs."""
    load = doc.get("load")
    if doc.get("runtime") != "gguf" or not isinstance(load, dict) or not isinstance(doc.get("script"), str):
        raise VerifyError("the plan file is not a GGUF plan fitcheck wrote (needs runtime gguf, load and script)")
    for key in ("n_ctx", "n_gpu_layers"):
        if type(load.get(key)) is not int:
            raise VerifyError(f"the plan file's load.{key} is not an integer")
