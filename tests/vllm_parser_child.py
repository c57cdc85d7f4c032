"""Run by a Python that has vLLM installed (tests/test_vllm_parser.py): parse each `vllm serve`
argv with vLLM's own parser and build its engine config, the checks `vllm serve` runs first.

stdin: JSON {"jobs": [[a config-only folder, argv], ...]}; stdout: JSON list of
{"ok": bool, "error": str, "tp": int, "pp": int, "max_model_len": int, "kv_cache_dtype": str,
"gpu_memory_utilization": float, "dp": int, "ep": bool}. The model id in each argv is replaced by its folder (and
``--revision`` dropped): vLLM reads config.json from it, never weights (``--load-format dummy``).
"""

from __future__ import annotations

import json
import sys


def check(argv: list[str], model_dir: str) -> dict:
    from vllm.engine.arg_utils import EngineArgs
    from vllm.entrypoints.common.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    assert argv[:2] == ["vllm", "serve"], argv
    rest = list(argv[3:])
    if "--revision" in rest:
        i = rest.index("--revision")
        del rest[i:i + 2]
    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))
    out: dict = {"ok": False, "error": ""}
    try:
        args = parser.parse_args([model_dir, *rest, "--load-format", "dummy", "--skip-tokenizer-init"])
    except SystemExit as e:  # argparse reports an unknown or malformed flag by exiting
        out["error"] = f"parser exit {e.code}"
        return out
    args.model = args.model_tag
    engine = EngineArgs.from_cli_args(args)
    out.update(tp=engine.tensor_parallel_size, pp=engine.pipeline_parallel_size, max_model_len=engine.max_model_len,
               kv_cache_dtype=engine.kv_cache_dtype, gpu_memory_utilization=engine.gpu_memory_utilization,
               dp=engine.data_parallel_size, ep=bool(engine.enable_expert_parallel))
    try:
        config = engine.create_engine_config()
    except Exception as e:  # noqa: BLE001 - every validation error is the answer
        out["error"] = f"{type(e).__name__}: {' '.join(str(e).split())[:400]}"
        return out
    out.update(ok=True, world=config.parallel_config.world_size, config_max_model_len=config.model_config.max_model_len)
    return out


def _no_cpu_fixups() -> None:
    """This runs on vLLM's CPU platform (VLLM_TARGET_DEVICE=cpu): its check_and_update_config
    rewrites a config for CPU serving (and needs triton-cpu), which a CUDA deployment never runs,
    so it is skipped; the model, parallel, cache and scheduler validation run unchanged."""
    from vllm.platforms import current_platform

    type(current_platform).check_and_update_config = classmethod(lambda cls, vllm_config: None)


def main() -> None:
    _no_cpu_fixups()
    job = json.load(sys.stdin)
    results = [check(argv, folder) for folder, argv in job["jobs"]]
    sys.stdout.write("\n@@RESULT@@" + json.dumps(results) + "\n")


if __name__ == "__main__":
    main()
