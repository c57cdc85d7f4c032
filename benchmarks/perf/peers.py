"""The peers' own virtual environment: hf-mem and accelerate (with transformers and torch).

They live in ``benchmarks/perf/.peers`` (git-ignored), never in fitcheck's environment: accelerate
pulls torch and transformers, whose import cost is what the benchmark measures, and fitcheck must
not be able to see them.

hf-mem hard-codes ``https://huggingface.co`` in its URLs (hf_mem/run.py, hf_mem/gguf/fetch.py) and
ignores HF_ENDPOINT. For measurement only, :func:`patch_hf_mem` rewrites the installed copy so
that every such URL starts with ``os.environ.get("HF_ENDPOINT", "https://huggingface.co")``
instead, read once at import. Nothing else in hf-mem changes: its requests, concurrency and
parsing are its own. The patch is idempotent and checked: it fails loudly if a URL it expects is
missing (a new hf-mem release would need a look).

accelerate and transformers honour HF_ENDPOINT through huggingface_hub already.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = HERE / ".peers"
PY = PEERS / "bin" / "python"
# Pinned so that runs are comparable. torch must be pinned exactly: 2.13.0 is the CPU build this
# machine's wheel cache holds; any looser spec pulls a multi-GB CUDA build.
REQUIREMENTS = ["hf-mem==0.5.6", "accelerate==1.15.0", "transformers==5.24.0", "torch==2.13.0"]
_MARK = "# fitcheck-benchmark: endpoint patched"
_HUB = "https://huggingface.co"


def ensure() -> dict[str, str]:
    """Create the environment if needed, patch hf-mem, and return the installed versions."""
    stamp = PEERS / "requirements.json"
    if not PY.exists() or not stamp.exists() or json.loads(stamp.read_text()) != REQUIREMENTS:
        print(f"[peers] creating {PEERS} with {' '.join(REQUIREMENTS)} (a few minutes, once)", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(PEERS)
        subprocess.run([str(PY), "-m", "pip", "install", "--quiet", *REQUIREMENTS], check=True)
        stamp.write_text(json.dumps(REQUIREMENTS))
    patch_hf_mem()
    return versions()


def site_packages() -> Path:
    out = subprocess.run([str(PY), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def patch_hf_mem() -> list[Path]:
    """Point hf-mem's hard-coded Hub URL at HF_ENDPOINT (see the module docstring)."""
    root = site_packages() / "hf_mem"
    patched = []
    for rel in ("run.py", "gguf/fetch.py"):
        path = root / rel
        text = path.read_text()
        if _MARK in text:
            patched.append(path)
            continue
        # Only URLs inside f-strings are rewritten (a comment or docstring may name the Hub too).
        count = len(re.findall(r'f"https://huggingface\.co/', text))
        if count == 0 or text.count(_HUB + "/") != count:
            raise RuntimeError(f"hf-mem {rel}: the URL layout changed ({count} f-string URLs, "
                               f"{text.count(_HUB + '/')} in all); update benchmarks/perf/peers.py")
        text = text.replace('f"https://huggingface.co/', 'f"{_FITCHECK_BENCH_ENDPOINT}/')
        header = (f"{_MARK}\nimport os as _fitcheck_os\n"
                  f"_FITCHECK_BENCH_ENDPOINT = _fitcheck_os.environ.get('HF_ENDPOINT', '{_HUB}').rstrip('/')\n")
        # After the module docstring and __future__ imports would be safest; these files have
        # neither, so the header goes first.
        if text.lstrip().startswith(('"""', "from __future__")):
            raise RuntimeError(f"hf-mem {rel}: starts with a docstring or __future__ import; patch by hand")
        path.write_text(header + text)
        patched.append(path)
    # The .pyc files pip wrote are stale now; recompile, so hf-mem does not pay for compiling
    # run.py on every start where PYTHONDONTWRITEBYTECODE is set.
    subprocess.run([str(PY), "-m", "py_compile", *map(str, patched)], check=True)
    return patched


def versions() -> dict[str, str]:
    code = ("import importlib.metadata as m, json, sys; "
            "print(json.dumps({n: m.version(n) for n in ('hf-mem', 'accelerate', 'transformers', 'torch', "
            "'huggingface_hub', 'httpx2')} | {'python': sys.version.split()[0]}))")
    out = subprocess.run([str(PY), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


if __name__ == "__main__":
    print(json.dumps(ensure(), indent=2))
    sys.exit(0)
