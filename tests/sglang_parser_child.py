"""Run by a Python that has SGLang installed (tests/test_sglang_parser.py): parse each
``python -m sglang.launch_server`` argv with SGLang's own parser (``ServerArgs.add_cli_args``, as
``prepare_server_args`` builds it, srt/server_args.py:668-696) and build ``ServerArgs`` from it.

stdin: JSON {"jobs": [[a config-only folder, argv], ...]}; stdout after "@@RESULT@@": a JSON list
of {"ok": bool, "error": str, "tp_size", "context_length", "mem_fraction_static", "kv_cache_dtype",
"quantization", "nnodes", "node_rank", "dist_init_addr", "max_running_requests"}. The model id in
each argv is replaced by its folder (and ``--revision`` dropped): nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import sys

FIELDS = ("tp_size", "context_length", "mem_fraction_static", "kv_cache_dtype", "quantization", "nnodes", "node_rank",
          "dist_init_addr", "max_running_requests")


def check(argv: list[str], model_dir: str) -> dict:
    from sglang.srt.server_args import ServerArgs

    assert argv[:3] == ["python", "-m", "sglang.launch_server"], argv
    rest = list(argv[3:])
    rest[rest.index("--model-path") + 1] = model_dir
    if "--revision" in rest:
        i = rest.index("--revision")
        del rest[i:i + 2]
    parser = argparse.ArgumentParser(prog="sglang serve")
    ServerArgs.add_cli_args(parser)
    out: dict = {"ok": False, "error": ""}
    try:
        args = parser.parse_args(rest)
    except SystemExit as e:  # argparse reports an unknown or malformed flag by exiting
        out["error"] = f"parser exit {e.code}"
        return out
    try:
        server = ServerArgs.from_cli_args(args)
    except Exception as e:  # noqa: BLE001 - every validation error is the answer
        out["error"] = f"{type(e).__name__}: {' '.join(str(e).split())[:400]}"
        return out
    out.update(ok=True, **{f: getattr(server, f) for f in FIELDS})
    return out


def main() -> None:
    job = json.load(sys.stdin)
    results = [check(argv, folder) for folder, argv in job["jobs"]]
    sys.stdout.write("\n@@RESULT@@" + json.dumps(results) + "\n")


if __name__ == "__main__":
    main()
