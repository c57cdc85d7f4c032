"""Reading a ``"pipeline"`` file selection: a diffusers pipeline's JSON files and weight headers.

A pipeline repo has no root ``config.json``: its ``model_index.json`` names the components, and
each component folder holds its own config and weights. The runtime's ``select`` names the files
(JSON files whose contents are read, safetensors files whose headers are read); the Hub and local
readers (:mod:`planner.sources.hub`, :mod:`planner.sources.local`) supply how one JSON file and
one header are read, and this module assembles what they return:

* the snapshot's ``config`` is ``{path: parsed JSON}`` for every JSON file read
  (``"model_index.json"``, ``"unet/config.json"``, ``"transformer/diffusion_pytorch_model.safetensors.index.json"``);
* its ``tensors`` are those of every weight file, each naming its file (and so its component).

Every shard a component's index names must be among the files read, and every file named must
be in the listing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from planner.core import ids
from planner.core.errors import BadConfig, BadHeader, NoWeights
from planner.core.records import FileSelection, Tensor

PIPELINE = "pipeline"
MODEL_INDEX = "model_index.json"


def read(ws: FileSelection, sizes: Mapping[str, int | None], *, where: str, read_json: Callable[[str], dict[str, Any]],
         read_header: Callable[[str], list[Tensor]], pool: ThreadPoolExecutor | None = None) -> tuple[dict[str, Any], list[Tensor]]:
    """(``{path: JSON}``, tensors) of the files ``ws`` names, read with the callables given.

    Raises:
        BadConfig: no model_index.json, or one that is not a pipeline's.
        BadHeader: an index that names a shard not read, or a file not in the listing.
        NoWeights: a named file the listing does not have.
    """
    for path in ws.files:
        ids.repo_path(path, where=where)
        if path not in sizes:
            raise NoWeights(f"{where}: {ids.show(path)} is selected but not in the listing")
    if MODEL_INDEX not in ws.files:
        raise BadConfig(f"{where}: has no {MODEL_INDEX}")
    json_paths = [p for p in ws.files if p.endswith(".json")]
    weights = [p for p in ws.files if p.endswith(".safetensors")]
    run = pool.map if pool is not None else map
    config = dict(zip(json_paths, run(read_json, json_paths), strict=True))
    index = config[MODEL_INDEX]
    if not isinstance(index.get("_class_name"), str):
        raise BadConfig(f"{MODEL_INDEX} of {where}: field '_class_name' is missing or not a string")
    tensors = [t for found in run(read_header, weights) for t in found]
    read_set = set(weights)
    for path, doc in config.items():
        if ".safetensors.index." not in path:
            continue
        wm = doc.get("weight_map")
        if not isinstance(wm, dict) or not wm:
            raise BadHeader(f"{path} of {where}: field 'weight_map' is missing or empty")
        folder = path.rpartition("/")[0]
        for shard in set(wm.values()):
            if not isinstance(shard, str) or f"{folder}/{shard}" not in read_set:
                raise BadHeader(f"{path} of {where}: names shard {ids.show(str(shard))}, which the repo does not have")
    seen: dict[str, str] = {}
    for t in tensors:
        key = f"{t.file.rpartition('/')[0]}/{t.name}"
        if key in seen:
            raise BadHeader(f"{where}: tensor {ids.show(t.name)} appears in both {seen[key]} and {t.file}")
        seen[key] = t.file
    return config, tensors
