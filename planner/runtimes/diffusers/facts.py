"""A diffusers pipeline's model facts: its components, their sizes, and the shapes that set memory.

Built from a ``"pipeline"`` snapshot (planner.sources.pipeline): ``config`` is ``{path: JSON}``
and every tensor names its file, so its component is the file's folder. Everything the memory
model needs is here, as plain numbers, so that the facts cache (``to_dict``/``from_dict``) holds
them without the tensor list.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from planner.core.errors import BadConfig, NoWeights, UnsupportedModel
from planner.core.records import Snapshot, Tensor, _ToDict, from_plain
from planner.runtimes.diffusers import files as pfiles

FACTS_VERSION = "diffusers-1"
_NUMBERED = re.compile(r"^([^.]+)\.(\d+)\.")
# bnb replaces nn.Linear modules only (diffusers quantizers/bitsandbytes/utils.py
# replace_with_bnb_linear): a 2-D ".weight" is counted as a Linear unless it is an nn.Embedding's
# (token and position tables of the text encoders). Norm and conv weights are 1-D and 4-D.
_EMBEDDINGS = ("embed_tokens.weight", "shared.weight", "token_embedding.weight", "position_embedding.weight",
               "embedding.weight")


@dataclass(frozen=True, slots=True)
class Component(_ToDict):
    """One model component of a pipeline (a folder with weights).

    Attributes:
        name: its key in model_index.json ("unet", "text_encoder_2", "vae").
        library: "diffusers", "transformers", or a pipeline module ("stable_diffusion").
        cls: its class ("UNet2DConditionModel", "T5EncoderModel").
        role: "denoiser", "vae", "text_encoder" or "other" (safety checker, image encoder).
        parameters: elements of every tensor.
        stored_bytes: bytes of its weight files' tensors as stored.
        dtype: the stored dtype of most of its parameters ("F32", "F16", "BF16").
        variant: the weight variant read ("" for the default files).
        linear_parameters: parameters of 2-D Linear weights (what bnb quantizes).
        largest_leaf: parameters of its largest leaf module (sequential offload moves one at a time).
        largest_group: parameters of its largest group under block-level group offload (one
            element of a top-level ModuleList: diffusers hooks/group_offloading.py:751-775).
        ungrouped: parameters outside any such group, onloaded together (hooks/group_offloading.py:776-791).
        config: the component's config.json.
    """

    name: str
    library: str
    cls: str
    role: str
    parameters: int
    stored_bytes: int
    dtype: str
    variant: str = ""
    linear_parameters: int = 0
    largest_leaf: int = 0
    largest_group: int = 0
    ungrouped: int = 0
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PipelineFacts(_ToDict):
    """What fitcheck knows about a diffusers pipeline.

    Attributes:
        pipeline: the pipeline class ("StableDiffusionXLPipeline", "FluxPipeline").
        components: the model components, in model_index order.
        variant: the variant read ("fp16") or "".
        downloads: variant ("" = default) -> bytes a download under it fetches.
        other_components: model_index entries without weights (scheduler, tokenizers), name -> class.
        missing: model_index components with no folder of safetensors (e.g. a null safety checker).
        complete: the variants ("" = default) under which every component has its own files.
    """

    pipeline: str
    components: tuple[Component, ...]
    variant: str
    downloads: dict[str, int]
    other_components: dict[str, str] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    complete: tuple[str, ...] = ()

    @property
    def parameters(self) -> int:
        return sum(c.parameters for c in self.components)

    @property
    def download_bytes(self) -> int:
        return self.downloads.get(self.variant, 0)

    def component(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)

    def by_role(self, role: str) -> tuple[Component, ...]:
        return tuple(c for c in self.components if c.role == role)

    @property
    def denoiser(self) -> Component:
        found = self.by_role("denoiser")
        if not found:
            raise UnsupportedModel(f"{self.pipeline}: has no UNet or transformer component")
        return found[0]

    @property
    def vae(self) -> Component | None:
        found = self.by_role("vae")
        return found[0] if found else None


def role_of(name: str, cls: str) -> str:
    if name in ("unet", "transformer", "prior"):
        return "denoiser"
    if name == "vae" or cls.startswith("Autoencoder"):
        return "vae"
    if name.startswith("text_encoder"):
        return "text_encoder"
    return "other"


def _structure(tensors: list[Tensor]) -> tuple[int, int, int, int]:
    """(linear, largest leaf, largest group, ungrouped) parameters of one component's tensors."""
    leaves: dict[str, int] = {}
    groups: dict[str, int] = {}
    linear = ungrouped = 0
    for t in tensors:
        n = t.numel
        leaves[t.name.rpartition(".")[0]] = leaves.get(t.name.rpartition(".")[0], 0) + n
        m = _NUMBERED.match(t.name)
        if m:
            key = f"{m.group(1)}.{m.group(2)}"
            groups[key] = groups.get(key, 0) + n
        else:
            ungrouped += n
        if len(t.shape) == 2 and t.name.endswith(".weight") and not t.name.endswith(_EMBEDDINGS):
            linear += n
    return linear, max(leaves.values(), default=0), max(groups.values(), default=0), ungrouped


def build(snapshot: Snapshot) -> PipelineFacts:
    """The facts of a pipeline snapshot.

    Raises:
        BadConfig: no model_index.json, or a component without its config.
        NoWeights: no component has weights.
    """
    configs = snapshot.config
    index = configs.get(pfiles.MODEL_INDEX)
    if not isinstance(index, dict):
        raise BadConfig(f"{snapshot.id}: has no {pfiles.MODEL_INDEX}")
    by_folder: dict[str, list[Tensor]] = {}
    for t in snapshot.tensors:
        by_folder.setdefault(t.file.partition("/")[0], []).append(t)
    components: list[Component] = []
    others: dict[str, str] = {}
    missing: list[str] = []
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or len(entry) != 2:
            continue
        library, cls = (str(entry[0]) if entry[0] is not None else ""), (str(entry[1]) if entry[1] is not None else "")
        if not cls:
            continue  # a component set to null (e.g. no safety checker)
        tensors = by_folder.get(name)
        if not tensors:
            if f"{name}/{pfiles.COMPONENT_CONFIG}" in configs:
                missing.append(name)
            else:
                others[name] = cls
            continue
        config = configs.get(f"{name}/{pfiles.COMPONENT_CONFIG}")
        if not isinstance(config, dict):
            raise BadConfig(f"{snapshot.id}: component {name!r} has weights but no readable {pfiles.COMPONENT_CONFIG}")
        counts: dict[str, int] = {}
        for t in tensors:
            counts[t.dtype] = counts.get(t.dtype, 0) + t.numel
        linear, leaf, group, ungrouped = _structure(tensors)
        variant = next((v for v in (snapshot_variant(t.file) for t in tensors) if v), "")
        components.append(Component(
            name=name, library=library, cls=cls, role=role_of(name, cls), parameters=sum(t.numel for t in tensors),
            stored_bytes=sum(t.nbytes for t in tensors), dtype=max(counts, key=lambda d: counts[d]), variant=variant,
            linear_parameters=linear, largest_leaf=leaf, largest_group=group, ungrouped=ungrouped, config=config))
    if not components:
        raise NoWeights(f"{snapshot.id}: no pipeline component has safetensors weights")
    sizes = {f.path: f.size for f in snapshot.files}
    names = [c.name for c in components]
    downloads = {v: pfiles.download_bytes(sizes, names, v) for v in ("", *pfiles.variants(sizes))}
    variant = next((c.variant for c in components if c.variant), "")
    complete = tuple(v for v in downloads
                     if all(c.name in (chosen := pfiles.choose(sizes, v)) and chosen[c.name].variant == v for c in components))
    return PipelineFacts(pipeline=str(index.get("_class_name", "")), components=tuple(components), variant=variant,
                         downloads=downloads, other_components=others, missing=tuple(missing), complete=complete)


def snapshot_variant(path: str) -> str:
    """The variant a weight file's name carries ("fp16"), or ""."""
    m = pfiles.VARIANT_RE.match(path.rpartition("/")[2])
    return (m.group(1) or m.group(2) or "") if m else ""


def from_dict(data: Mapping[str, Any]) -> PipelineFacts:
    """Rebuild facts from :meth:`PipelineFacts.to_dict` (the facts cache)."""
    facts: PipelineFacts = from_plain(PipelineFacts, dict(data))
    return facts
