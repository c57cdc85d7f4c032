"""What transformers 5.24 does with a pre-quantized checkpoint on each kind of device, as data.

Whether a GPTQ, AWQ, FP8, MXFP4, bitsandbytes or compressed-tensors checkpoint runs *as stored*,
is *dequantized* to the load dtype while loading (several times the memory), or is refused, is
decided by each quantizer's ``validate_environment`` from the device it finds (CUDA compute
capability, CPU, Apple mps) and the packages installed. fitcheck plans for the same outcome:
:data:`RULES` is that decision written as a table, one row per (method, device condition), each
row citing the transformers 5.24 source it mirrors (paths under ``transformers/``). The first row
that matches wins. The solver asks :func:`decide` for each candidate placement, and the emitted
script passes the row's ``config`` (e.g. ``Mxfp4Config(dequantize=True)``) so that the model loads
exactly as planned, whatever the machine it runs on would have chosen by itself.

Rows marked ``verified`` were checked by a real load on CPU (tests/test_formats.py); the others
come from reading the source.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from planner.core.records import Gpu, _ToDict
from planner.core.units import fmt_bytes
from planner.runtimes.transformers.settings import Scheme

if TYPE_CHECKING:
    from planner.model.footprint import Footprint

AS_STORED = "as stored"
DEQUANTIZE = "dequantize"
REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class Package(_ToDict):
    """An extra pip package a load needs: the pip requirement and the module it installs."""

    pip: str
    module: str


@dataclass(frozen=True, slots=True)
class Rule(_ToDict):
    """One row of the table.

    Attributes:
        method: quant_method ("gptq", "awq", "bitsandbytes", "fp8", "fbgemm_fp8", "mxfp4",
            "compressed-tensors").
        device: "cuda", "cpu", "mps", or "*" for any.
        action: AS_STORED, DEQUANTIZE (to the load dtype) or REFUSE.
        why: one line for people: what transformers does there and why.
        source: the transformers 5.24 code it mirrors (file:lines).
        cc_below: CUDA only: the row applies when the compute capability is below this.
        cc_min: CUDA only: the row applies when the compute capability is at least this.
        variant: the row applies only to this :attr:`PreQuant.variant` (e.g. "fp8").
        packages: extra packages the action needs.
        dtype: the load dtype transformers forces (AWQ on CUDA: float16), if any.
        offload: modules may be put on "cpu" or "disk" (False: all on the GPUs, or all on the CPU).
        no_offload_why: why not, when ``offload`` is False.
        config: (class name, keyword arguments) of the quantization config the script passes to
            make the load follow the plan; None when the checkpoint's own config is what loads.
        keep: keys of the checkpoint's quantization_config to pass along with ``config`` (the
            class's loading attributes would otherwise overwrite them).
        verified: checked by a real load on CPU in fitcheck's tests.
    """

    method: str
    device: str
    action: str
    why: str
    source: str
    cc_below: tuple[int, int] | None = None
    cc_min: tuple[int, int] | None = None
    variant: str | None = None
    packages: tuple[Package, ...] = ()
    dtype: str | None = None
    offload: bool = True
    no_offload_why: str = ""
    config: tuple[str, dict[str, Any]] | None = None
    keep: tuple[str, ...] = ()
    verified: bool = False


# Package requirements (pip name, import name). Versions are what transformers 5.24 checks.
KERNELS = Package("kernels>=0.18.2,<0.19", "kernels")  # utils/import_utils.py:177-178 KERNELS_MIN/MAX_VERSION
TRITON_34 = Package("triton>=3.4", "triton")  # quantizer_mxfp4.py:83
GPTQMODEL = Package("gptqmodel>=1.4.3", "gptqmodel")  # quantizer_gptq.py:35
GPTQMODEL_AWQ = Package("gptqmodel", "gptqmodel")  # quantizer_awq.py:46-49 (no version checked)
OPTIMUM = Package("optimum>=1.24", "optimum")  # quantizer_gptq.py:36
BITSANDBYTES = Package("bitsandbytes", "bitsandbytes")
FBGEMM = Package("fbgemm-gpu", "fbgemm_gpu")  # quantizer_fbgemm_fp8.py:59-63
COMPRESSED_TENSORS = Package("compressed-tensors>=0.15", "compressed_tensors")  # quantizer_compressed_tensors.py:68-72

_MXFP4_DQ = ("Mxfp4Config", {"dequantize": True})
_FP8_DQ = ("FineGrainedFP8Config", {"dequantize": True})
_BNB_NO_OFFLOAD = ("a pre-quantized bitsandbytes checkpoint cannot be split over cpu/disk: transformers keeps the "
                   "checkpoint's own quantization_config, so llm_int8_enable_fp32_cpu_offload cannot be set, and "
                   "its dispatch check refuses the map (quantizers/quantizer_bnb_4bit.py:70-81, verified on CPU)")

RULES: tuple[Rule, ...] = (
    # --- MXFP4 (gpt-oss) ------------------------------------------------------------------------
    Rule("mxfp4", "cuda", DEQUANTIZE, cc_below=(7, 5),
         why="MXFP4 kernels need compute capability 7.5 or newer; below it transformers dequantizes the experts to the load dtype",
         source="quantizers/quantizer_mxfp4.py:80-102", config=_MXFP4_DQ),
    Rule("mxfp4", "cuda", AS_STORED,
         why="runs as stored through triton >= 3.4 and the kernels package; without either transformers silently "
             "dequantizes (about 3x the memory), so the script checks for them",
         source="quantizers/quantizer_mxfp4.py:80-121", packages=(TRITON_34, KERNELS), offload=False,
         no_offload_why="MXFP4 experts kept as stored are swizzled into Triton tensors on the GPU even when the "
                        "device_map says cpu or disk, and are no longer parameters accelerate could stream "
                        "(transformers/integrations/mxfp4.py:463-493)"),
    Rule("mxfp4", "cpu", DEQUANTIZE,
         why="on CPU transformers dequantizes MXFP4 unless use_kernels=True with triton >= 3.5 and kernels",
         source="quantizers/quantizer_mxfp4.py:85-88,179-184", config=_MXFP4_DQ, verified=True),
    Rule("mxfp4", "mps", DEQUANTIZE, why="MXFP4 runs on cuda, xpu or cpu; on mps transformers dequantizes",
         source="quantizers/quantizer_mxfp4.py:63-70", config=_MXFP4_DQ),
    # --- FP8 with block or per-tensor scales (DeepSeek-V3, Qwen FP8) --------------------------------
    Rule("fp8", "cuda", DEQUANTIZE, cc_below=(8, 9),
         why="FP8 matmuls need compute capability 8.9 or newer; below it transformers dequantizes to the load dtype",
         source="quantizers/quantizer_finegrained_fp8.py:48-58", config=_FP8_DQ, keep=("modules_to_not_convert",)),
    Rule("fp8", "cuda", AS_STORED, why="runs as stored through the finegrained-fp8 hub kernel (kernels package)",
         source="quantizers/quantizer_finegrained_fp8.py:31-58, integrations/finegrained_fp8.py:106-113", packages=(KERNELS,)),
    Rule("fp8", "*", DEQUANTIZE, why="without a CUDA or XPU GPU transformers dequantizes FP8 to the load dtype",
         source="quantizers/quantizer_finegrained_fp8.py:38-44", config=_FP8_DQ, keep=("modules_to_not_convert",),
         verified=True),
    # --- fbgemm FP8 (per-channel) -----------------------------------------------------------------
    Rule("fbgemm_fp8", "cuda", REFUSE, cc_below=(9, 0),
         why="fbgemm FP8 needs compute capability 9.0 or newer; transformers refuses to load it below that",
         source="quantizers/quantizer_fbgemm_fp8.py:68-74"),
    Rule("fbgemm_fp8", "cuda", AS_STORED, why="runs as stored through fbgemm-gpu; transformers loads it in bfloat16",
         source="quantizers/quantizer_fbgemm_fp8.py:54-96", packages=(FBGEMM,), dtype="bfloat16"),
    Rule("fbgemm_fp8", "*", REFUSE, why="fbgemm FP8 needs a CUDA or XPU GPU; transformers refuses to load it elsewhere",
         source="quantizers/quantizer_fbgemm_fp8.py:55-56"),
    # --- GPTQ ----------------------------------------------------------------------------------
    Rule("gptq", "cuda", AS_STORED, why="runs as stored through gptqmodel (with optimum)",
         source="quantizers/quantizer_gptq.py:58-73", packages=(GPTQMODEL, OPTIMUM)),
    Rule("gptq", "cpu", AS_STORED, why="runs as stored on CPU through gptqmodel's CPU kernels (with optimum)",
         source="quantizers/quantizer_gptq.py:62-66", packages=(GPTQMODEL, OPTIMUM)),
    Rule("gptq", "mps", REFUSE,
         why="transformers' GPTQ path checks only for CUDA or gptqmodel's CPU support; fitcheck does not plan GPTQ on Apple mps",
         source="quantizers/quantizer_gptq.py:58-66"),
    # --- AWQ -----------------------------------------------------------------------------------
    Rule("awq", "cuda", AS_STORED, why="runs as stored through gptqmodel; AWQ's CUDA kernels have no bfloat16, so transformers loads float16",
         source="quantizers/quantizer_awq.py:45-62", packages=(GPTQMODEL_AWQ,), dtype="float16"),
    Rule("awq", "cpu", AS_STORED, why="runs as stored on CPU through gptqmodel",
         source="quantizers/quantizer_awq.py:45-62", packages=(GPTQMODEL_AWQ,)),
    Rule("awq", "mps", REFUSE, why="fitcheck does not plan AWQ on Apple mps: transformers' AWQ path goes through gptqmodel's CUDA/XPU/CPU kernels",
         source="quantizers/quantizer_awq.py:45-62"),
    # --- bitsandbytes, serialized 4-bit and 8-bit --------------------------------------------------
    Rule("bitsandbytes", "*", AS_STORED, why="runs as stored through bitsandbytes (0.50 has cuda, cpu and mps backends)",
         source="quantizers/quantizer_bnb_4bit.py:56-81, bitsandbytes/__init__.py supported_torch_devices",
         packages=(BITSANDBYTES,), offload=False, no_offload_why=_BNB_NO_OFFLOAD, verified=True),
    # --- compressed-tensors --------------------------------------------------------------------------
    Rule("compressed-tensors", "cuda", AS_STORED, cc_min=(8, 9), variant="fp8",
         why="FP8 compressed-tensors runs as stored through torch's scaled_mm kernels (use_optimized_inference)",
         source="quantizers/quantizer_compressed_tensors.py:67-89", packages=(COMPRESSED_TENSORS,),
         config=("CompressedTensorsConfig", {"use_optimized_inference": True})),
    Rule("compressed-tensors", "*", DEQUANTIZE,
         why="transformers decompresses compressed-tensors weights to the load dtype (at load with dequantize=True, "
             "otherwise on the first forward), so fitcheck plans the decompressed size and loads it that way",
         source="quantizers/quantizer_compressed_tensors.py:43-49,91-94", packages=(COMPRESSED_TENSORS,),
         config=("CompressedTensorsConfig", {"dequantize": True})),
)


@dataclass(frozen=True, slots=True)
class Decision(_ToDict):
    """What a load of a pre-quantized checkpoint does on the devices a plan runs on.

    Attributes:
        action: AS_STORED, DEQUANTIZE or REFUSE.
        rule: the row that decided it.
        device: "cuda", "cpu" or "mps".
        reason: one line with the method, the device and the source, for notes and rejections.
        assumed: a caveat when the decision rests on an assumption (unknown compute capability).
    """

    action: str
    rule: Rule
    device: str
    reason: str
    assumed: str | None = None
    blockers: tuple[str, ...] = field(default=())


def device_of(gpus: Iterable[Gpu]) -> tuple[str, tuple[int, int] | None, bool]:
    """(device kind, lowest compute capability, whether it is known) of the GPUs that run a plan.

    transformers asks ``torch.cuda.get_device_capability()`` of the current device only; with
    several GPUs the lowest one decides here, so that every GPU can run what is planned.
    """
    gpus = tuple(gpus)
    if not gpus:
        return "cpu", None, True
    if gpus[0].backend == "mps":
        return "mps", None, True
    ccs = [g.compute_capability for g in gpus if g.compute_capability is not None]
    return "cuda", (min(ccs) if ccs else None), len(ccs) == len(gpus)


def decide(method: str, variant: str, gpus: Iterable[Gpu], *, blockers: tuple[str, ...] = ()) -> Decision:
    """The row of :data:`RULES` that applies to ``method`` on the devices ``gpus`` (none: the CPU).

    Args:
        method, variant: from :class:`planner.model.prequant.PreQuant`.
        gpus: the GPUs the plan runs on; empty for a CPU plan.
        blockers: tensors that transformers cannot dequantize (see
            :func:`planner.model.prequant.dequantize_blockers`): a DEQUANTIZE row becomes a refusal.
    """
    kind, cc, known = device_of(gpus)
    for rule in RULES:
        if rule.method != method or rule.device not in (kind, "*"):
            continue
        if rule.variant is not None and rule.variant != variant:
            continue
        if kind == "cuda" and cc is not None:
            if rule.cc_below is not None and not cc < rule.cc_below:
                continue
            if rule.cc_min is not None and not cc >= rule.cc_min:
                continue
        elif rule.cc_below is not None:
            continue  # unknown compute capability: planned as a current GPU (see ``assumed``)
        where = kind if cc is None else f"cuda (compute capability {cc[0]}.{cc[1]})"
        reason = f"{method} on {where}: {rule.why} (transformers/{rule.source})"
        assumed = None
        if kind == "cuda" and not known:
            assumed = (f"compute capability unknown (a --gpu override): planned {method} as on a current GPU; "
                       "older GPUs may dequantize or refuse it")
        if rule.action == DEQUANTIZE and blockers:
            return Decision(REFUSE, rule, kind, f"{method} on {where}: transformers would dequantize, but cannot: "
                            f"{blockers[0]} (transformers/integrations/finegrained_fp8.py:1149-1152)", assumed, blockers)
        return Decision(rule.action, rule, kind, reason, assumed, blockers)
    return Decision(REFUSE, Rule(method, kind, REFUSE, "no rule", "-"), kind,
                    f"{method} on {kind}: fitcheck has no rule for this combination")


def script_config(decision: Decision, checkpoint_config: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(class name, keyword arguments) of the quantization config the emitted script passes, if any."""
    if decision.rule.config is None:
        return None
    name, kwargs = decision.rule.config
    out = dict(kwargs)
    for key in decision.rule.keep:
        value: Any = checkpoint_config.get(key)  # checked below
        if value is None and key == "modules_to_not_convert":
            value = checkpoint_config.get("ignored_layers")  # FineGrainedFP8Config's alias
        # a list of module names, as transformers expects; anything else is not passed along
        ok = isinstance(value, list) and len(value) <= 10_000 and all(isinstance(v, str) and len(v) <= 500 for v in value)
        out[key] = list(value) if ok else None
    return name, out


# Config classes the script may name; nothing else reaches its import line.
CONFIG_CLASSES = frozenset({"Mxfp4Config", "FineGrainedFP8Config", "CompressedTensorsConfig"})


# --- What the solver asks, per candidate ---------------------------------------------------------


def for_footprint(fp: Footprint, gpus: Iterable[Gpu]) -> Decision | None:
    """The decision for ``fp``'s pre-quantized weights on ``gpus`` (none: the CPU); None when not pre-quantized."""
    q = fp.prequant
    return decide(q.method, q.variant, gpus, blockers=fp.dequantize_blockers) if q is not None else None


def runtime_quantization(fp: Footprint, gpus: Iterable[Gpu], quantization: str) -> str:
    """The scheme's quantization as loaded: "prequantized" becomes "none" where the load dequantizes."""
    d = for_footprint(fp, gpus)
    if d is None or quantization != "prequantized" or d.action != DEQUANTIZE:
        return quantization
    return "none"


def rejections(fp: Footprint, scheme: Scheme, placement: str, gpus: Iterable[Gpu]) -> list[str]:
    """Why a candidate cannot load ``fp`` as planned: a refusal, a forced dtype, a forbidden offload."""
    d = for_footprint(fp, gpus)
    if d is None:
        return []
    if d.action == REFUSE:
        return [d.reason]
    out = []
    if d.rule.dtype is not None and scheme.dtype != d.rule.dtype:
        out.append(f"{d.rule.method} on {d.device}: transformers loads it in {d.rule.dtype}, not {scheme.dtype} "
                   f"(transformers/{d.rule.source})")
    if not d.rule.offload and placement not in ("gpu", "cpu", "mps"):
        out.append(f"{placement}: {d.rule.no_offload_why}")
    return out


def notes(fp: Footprint, scheme: Scheme, gpus: Iterable[Gpu]) -> list[str]:
    """Plan notes: whether the weights load as stored or dequantized, why, and what that needs."""
    d = for_footprint(fp, gpus)
    if d is None or d.action == REFUSE:
        return []
    assert fp.prequant is not None  # a decision exists only for pre-quantized weights
    if d.action == DEQUANTIZE:
        packed = sum(u.packed_params for u in fp.units)
        out = [f"{fp.prequant.detail} weights are dequantized to {scheme.dtype} at load "
               f"({fmt_bytes(packed * scheme.dtype_bytes)} for the quantized tensors): {d.reason}"]
    else:
        extra = ", ".join(p.pip for p in d.rule.packages)
        out = [f"{fp.prequant.detail} kept as stored: {d.reason}" + (f"; needs pip install {extra}" if extra else "")]
    if d.assumed:
        out.append(d.assumed)
    return out
