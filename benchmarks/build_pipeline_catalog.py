"""Write the bundled catalog entries of diffusers pipelines (planner/sources/catalog/pipelines/).

For each folder of /work/shared/catalog-configs/pipelines/ (model_index.json and each
component's config.json, the sharded components' index files): every component with weights is
built from its config on torch's meta device (diffusers ``from_config``, transformers
``Model(config)``), and its parameters and persistent buffers (shared ones once, as
save_pretrained writes them) become the tensor list. A sharded component's tensors are placed in
the shards its real index names (its names must match the built model's, or the build stops);
its ``metadata.total_size`` must equal the built bytes. File sizes are the tensors' bytes plus an
estimated header (100 B per tensor); JSON files are their copies' sizes.

Stored dtypes (the Hub's files, not read here): SD 1.5 and SDXL keep fp32 default files and an
fp16 variant (both listed; the entry holds the fp16 variant's tensors, as fitcheck reads it);
Flux and SD3.5 hold 2-byte files only (bf16 by the model cards; total_size / parameters = 2).

Usage: python benchmarks/build_pipeline_catalog.py [--check]
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

SRC = Path("/work/shared/catalog-configs/pipelines")
OUT = Path(__file__).resolve().parents[1] / "planner" / "sources" / "catalog" / "pipelines"
# repo -> (stored dtype of the files the entry lists, whether an fp16 variant sits beside fp32 defaults)
STORED = {
    "runwayml/stable-diffusion-v1-5": ("F16", True),
    "stabilityai/stable-diffusion-xl-base-1.0": ("F16", True),
    "stabilityai/stable-diffusion-3.5-large": ("BF16", False),
    "black-forest-labs/FLUX.1-dev": ("BF16", False),
    "black-forest-labs/FLUX.1-schnell": ("BF16", False),
}
HEADER_PER_TENSOR = 100


def build_component(library: str, cls: str, config: dict):
    import torch

    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    with torch.device("meta"):
        if library == "diffusers":
            import diffusers

            return getattr(diffusers, cls).from_config(cfg)
        if library == "stable_diffusion":
            from diffusers.pipelines.stable_diffusion.safety_checker import (
                StableDiffusionSafetyChecker,
            )
            from transformers import CLIPConfig

            return StableDiffusionSafetyChecker(CLIPConfig.from_dict(cfg))
        import transformers

        model_cls = getattr(transformers, cls)
        return model_cls(model_cls.config_class.from_dict(cfg))


def tensors_of(model) -> list[tuple[str, tuple[int, ...]]]:
    out = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    persistent = {n for n, _ in model.named_buffers()}
    for mod_name, mod in model.named_modules():
        for b in getattr(mod, "_non_persistent_buffers_set", ()):
            persistent.discard(f"{mod_name}.{b}" if mod_name else b)
    out += [(n, tuple(b.shape)) for n, b in model.named_buffers() if n in persistent]
    return out


def entry(folder: Path) -> dict:
    from planner.core.records import RepoFile, Snapshot, Tensor
    from planner.core.units import tensor_nbytes
    from planner.sources.cache import encode

    repo = folder.name.replace("__", "/")
    dtype, has_variant = STORED[repo]
    index = json.loads((folder / "model_index.json").read_text())
    config: dict = {"model_index.json": index}
    files: dict[str, int] = {"model_index.json": (folder / "model_index.json").stat().st_size}
    tensors: list = []
    params: dict[str, int] = {}
    for p in sorted(folder.rglob("*.json")):
        rel = p.relative_to(folder).as_posix()
        files[rel] = p.stat().st_size
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list) or spec[0] is None or not (folder / name / "config.json").exists():
            continue
        library, cls = spec
        cfg = json.loads((folder / name / "config.json").read_text())
        config[f"{name}/config.json"] = cfg
        model = build_component(library, cls, cfg)
        found = tensors_of(model)
        params[name] = sum(_numel(s) for _, s in found)
        stem = "diffusion_pytorch_model" if library == "diffusers" else "model"
        index_path = folder / name / f"{stem}.safetensors.index.json"
        variant = ".fp16" if has_variant else ""
        if index_path.exists():
            idx = json.loads(index_path.read_text())
            config[f"{name}/{index_path.name}"] = idx
            wm = idx["weight_map"]
            names = {n for n, _ in found}
            if set(wm) != names:
                missing, extra = sorted(set(wm) - names)[:3], sorted(names - set(wm))[:3]
                # tied aliases saved once: keep the index's names where the built model has extras
                found = [(n, s) for n, s in found if n in wm]
                if set(wm) != {n for n, _ in found}:
                    raise SystemExit(f"{repo} {name}: index names differ from the built model: {missing} / {extra}")
            total = sum(tensor_nbytes(dtype, _numel(s)) for _, s in found)
            if total != idx["metadata"]["total_size"]:
                raise SystemExit(f"{repo} {name}: built {total} bytes, index says {idx['metadata']['total_size']}")
            by_file: dict[str, list] = {}
            for n, s in found:
                by_file.setdefault(f"{name}/{wm[n]}", []).append((n, s))
        else:
            by_file = {f"{name}/{stem}{variant}.safetensors": found}
            if has_variant:  # the fp32 default files beside the variant
                files[f"{name}/{stem}.safetensors"] = sum(tensor_nbytes("F32", _numel(s)) for _, s in found) + 8 + HEADER_PER_TENSOR * len(found)
        for path, group in by_file.items():
            offset = 0
            for n, s in group:
                nb = tensor_nbytes(dtype, _numel(s))
                tensors.append(Tensor(n, dtype, s, nb, path, offset))
                offset += nb
            files[path] = offset + 8 + HEADER_PER_TENSOR * len(group)
    weight_files = tuple(sorted({t.file for t in tensors}))
    snap = Snapshot(id=repo, revision="main", commit=None, source="catalog", config=config,
                    files=tuple(RepoFile(p, s) for p, s in sorted(files.items())), weight_format="pipeline",
                    weight_files=weight_files, tensors=tuple(tensors))
    out = encode(snap)
    import diffusers
    import torch
    import transformers

    out["provenance"] = {
        "configs": {p: hashlib.sha256((folder / p).read_bytes()).hexdigest() for p in sorted(files) if (folder / p).exists()},
        "source": f"/work/shared/catalog-configs/pipelines/{folder.name} (copies of the Hub repo's small JSON files)",
        "tensors": "each component built from its config on torch.device('meta') (diffusers from_config, transformers "
                   "Model(config)); parameters and persistent buffers, shared ones once; sharded components placed in the "
                   "shards their real index names, whose total_size the built bytes match",
        "stored_dtype": f"{dtype}" + (" (fp16 variant; fp32 default files listed beside it)" if has_variant else ""),
        "file_sizes": "weights: tensor bytes + 8 + an estimated 100 B header per tensor; JSON: the copies' sizes; "
                      "tokenizer vocabularies and merges are not listed",
        "computed_parameters": params,
        "versions": {"diffusers": diffusers.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
    }
    return out


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for folder in sorted(SRC.iterdir()):
        data = entry(folder)
        path = OUT / f"{folder.name}.json"
        text = json.dumps(data, separators=(",", ":"), sort_keys=False) + "\n"
        if "--check" in sys.argv:
            if path.read_text() != text:
                raise SystemExit(f"{path} is out of date")
            continue
        path.write_text(text)
        print(path.name, {k: f"{v / 1e9:.3f}B" for k, v in data["provenance"]["computed_parameters"].items()})


if __name__ == "__main__":
    main()
