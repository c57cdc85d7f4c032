"""Pre-quantized checkpoints read through the fake Hub, header only: the true parameter count and
the bytes as stored for every format, gpt-oss-20b and DeepSeek-V3 at their real widths, and what
the solver does with them on each kind of GPU.

The layouts (tests/layouts.py) reproduce each writer's tensor names, dtypes and packed shapes; the
files are sparse, so gpt-oss-20b's 13.8 GB cost a few kilobytes of headers.
"""

from __future__ import annotations

import json

import pytest

import layouts as L
from fakehub import FakeHub
from fixtures_models import sparse_repo_files
from planner import api
from planner.runtimes.transformers import quantizers as formats
from planner.model.footprint import estimate
from planner.hardware.probe import apply_overrides
from planner.hardware.profiles import load_profile
from planner.core.records import Gpu, Hardware
from planner.core.records import Constraints
from planner.api import read_model
from planner.report.schema import report_dict

DIMS = dict(layers=2, hidden=256, intermediate=512, heads=4, kv_heads=2, vocab=1024)
PLAIN_PARAMS = sum(L.numel(s) for _, s in L.decoder(L.plain(), **DIMS).values())

FORMATS = {
    "gptq": (L.gptq(), {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True}),
    "gptq-8bit": (L.gptq(bits=8), {"quant_method": "gptq", "bits": 8, "group_size": 128}),
    "awq": (L.awq(), {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}),
    "bnb-nf4-double-quant": (L.bnb4(), {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                                        "bnb_4bit_use_double_quant": True}),
    "bnb-nf4": (L.bnb4(double_quant=False), {"quant_method": "bitsandbytes", "load_in_4bit": True}),
    "bnb-int8": (L.bnb8(), {"quant_method": "bitsandbytes", "load_in_8bit": True}),
    "fp8-block": (L.fp8_block(), {"quant_method": "fp8", "weight_block_size": [128, 128], "activation_scheme": "dynamic"}),
    "fp8-per-tensor": (L.fp8_tensor(), {"quant_method": "fp8", "weight_block_size": None, "activation_scheme": "static"}),
    "compressed-tensors-w4a16": (L.ct_pack(), {"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {
        "group_0": {"targets": ["Linear"], "weights": {"num_bits": 4, "type": "int", "symmetric": True, "group_size": 128}}}}),
    "compressed-tensors-fp8": (L.ct_fp8(), {"quant_method": "compressed-tensors", "format": "float-quantized", "config_groups": {
        "group_0": {"targets": ["Linear"], "weights": {"num_bits": 8, "type": "float", "strategy": "channel"}}}}),
}


def _serve(hub: FakeHub, repo_id: str, tensors: dict, config: dict, shards: int = 1, naming="standard") -> None:
    files = sparse_repo_files(tensors, shards=shards, naming=naming)
    files["config.json"] = json.dumps(config).encode()
    hub.add_repo(repo_id, files)


def _gpu(cc: tuple[int, int], gib: int, name: str = "sim") -> Hardware:
    gpu = Gpu(index=0, name=name, backend="cuda", total_bytes=gib << 30, free_bytes=gib << 30, compute_capability=cc,
              bf16=cc >= (8, 0), bandwidth=900 * 10**9, pcie_bandwidth=25 * 10**9)
    return Hardware(name=name, source="test", gpus=(gpu,), ram_total=256 << 30, ram_free=256 << 30, disk_free=10**13,
                    cache_disk_free=10**13)


CPU = apply_overrides(Hardware(name="cpu", source="test", gpus=(), ram_total=1, ram_free=1, disk_free=1, cache_disk_free=1),
                      ram=256 << 30, disk=10**13)


@pytest.mark.parametrize("fmt", FORMATS)
def test_true_parameters_and_stored_bytes(hub: FakeHub, repo_id: str, fmt: str) -> None:
    linear, qc = FORMATS[fmt]
    tensors = L.decoder(linear, **DIMS)
    _serve(hub, repo_id, tensors, L.decoder_config(quantization_config=qc, **DIMS))
    fp = estimate(read_model(repo_id))
    assert fp.parameters == PLAIN_PARAMS  # packed weights unpacked, scales/zeros/g_idx count no parameters
    assert fp.stored_bytes == sum(L.tensor_bytes(d, s) for d, s in tensors.values())  # every scale and index counted
    assert fp.prequant is not None and fp.prequant.method == qc["quant_method"]
    assert not [r for r in hub.requests if r.method == "GET" and r.range is None and r.path.endswith(".safetensors")]


def test_gptq_llama_8b_element_count_is_not_the_parameter_count(hub: FakeHub, repo_id: str) -> None:
    """llmfit's mistake: a 4-bit GPTQ Llama-3.1-8B has ~2.2B int32 elements but 8.03B parameters."""
    dims = dict(layers=32, hidden=4096, intermediate=14336, heads=32, kv_heads=8, vocab=128256)
    tensors = L.decoder(L.gptq(), **dims)
    _serve(hub, repo_id, tensors, L.decoder_config(quantization_config=FORMATS["gptq"][1], **dims), shards=2)
    fp = estimate(read_model(repo_id))
    assert fp.parameters == 8_030_261_248
    elements = sum(L.numel(s) for _, s in tensors.values())
    assert fp.parameters / elements > 3.5
    assert 5.5e9 < fp.stored_bytes < 6.0e9  # qweight + qzeros + scales + g_idx + fp16 embeddings


@pytest.fixture
def gpt_oss_20b(hub: FakeHub, repo_id: str) -> str:
    _serve(hub, repo_id, L.gpt_oss(), L.GPT_OSS_20B_CONFIG, shards=3, naming=L.gpt_oss_20b_shard_name)
    return repo_id


def test_gpt_oss_20b_is_20_9b_parameters_in_13_8_gb(gpt_oss_20b: str, hub: FakeHub) -> None:
    snap = read_model(gpt_oss_20b)
    assert sorted(snap.weight_files) == [f"model-0000{i}-of-00002.safetensors" for i in range(3)]
    fp = estimate(snap)
    assert fp.parameters == 20_914_757_184 and 13.7e9 < fp.stored_bytes < 13.85e9
    # the Hub's count takes the U8 blocks for parameters; accelerate's estimator counts 21B bf16 (~42 GB)
    elements = sum(t.numel for t in snap.tensors)
    assert elements < 0.6 * fp.parameters
    # 4 of 32 experts per token: ~3.0B in the layers plus embeddings and head
    assert 4.1e9 < fp.active_parameters < 4.3e9
    layer = next(u for u in fp.units if u.kind == "layer")
    dense, experts = layer.parts
    assert experts.name == "model.layers.0.mlp.experts" and dense.keys == (
        "model.layers.0.input_layernorm", "model.layers.0.mlp.router", "model.layers.0.post_attention_layernorm", "model.layers.0.self_attn")


def test_gpt_oss_20b_without_mxfp4_kernels_dequantizes_to_three_times_the_memory(gpt_oss_20b: str) -> None:
    c = Constraints(context=1024)
    stored = estimate(read_model(gpt_oss_20b)).stored_bytes
    # compute capability 7.0 (V100): no MXFP4 kernels, no bf16 -> dequantized to fp16
    r = api.plan(gpt_oss_20b, hardware=_gpu((7, 0), 32, "V100"), constraints=c)
    on_gpu = [p for p in (r.solution.chosen, *r.solution.alternatives) if p.settings.placement.startswith("gpu")]
    assert on_gpu
    for p in on_gpu:
        assert p.settings.scheme.quantization == "none" and p.settings.scheme.dtype == "float16", p.label
        weights = sum(m.weights for m in p.memory.values())
        assert 2.9 < weights / stored < 3.1
        assert any("dequantized to float16" in n and "quantizer_mxfp4.py" in n for n in p.notes)
    from planner.report.schema import plan_dict

    load = plan_dict(r, on_gpu[0])["load"]
    assert load["prequantized"]["action"] == "dequantize"
    assert load["prequantized"]["config"] == {"class": "Mxfp4Config", "kwargs": {"dequantize": True}}
    # the same on a CPU-only machine, in bf16
    p = api.plan(gpt_oss_20b, hardware=CPU, constraints=c).solution.chosen
    assert p.settings.scheme.quantization == "none" and p.settings.scheme.dtype == "bfloat16"
    assert 2.9 < sum(m.weights for m in p.memory.values()) / stored < 3.1


def test_gpt_oss_20b_as_stored_on_an_l4_and_an_h100_never_offloaded(gpt_oss_20b: str) -> None:
    c = Constraints(context=1024)
    for hw in (load_profile("l4"), load_profile("h100-sxm-80gb")):
        r = api.plan(gpt_oss_20b, hardware=hw, constraints=c)
        p = r.solution.chosen
        assert p.settings.scheme.quantization == "prequantized" and p.settings.placement == "gpu", (hw.name, p.label)
        assert any("kept as stored" in n and "kernels" in n for n in p.notes)
        load = report_dict(r)["plan"]["load"]
        assert load["bitsandbytes"] is None and load["prequantized"]["config"] is None
        assert {"triton>=3.4", "kernels>=0.18.2,<0.19"} <= set(load["packages"])
    # MXFP4 experts kept as stored land on the GPU whatever the map says: no offloaded MXFP4 plan
    offloaded = [q for q in r.rejected if q.settings.scheme.quantization == "prequantized" and q.settings.placement != "gpu"]
    assert offloaded and all(any("swizzled into Triton tensors" in x for x in q.reasons) for q in offloaded)
    # a T4 (compute capability 7.5) has the kernels: as stored, never dequantized
    t4 = load_profile("t4")
    assert formats.decide("mxfp4", "", t4.gpus).action == formats.AS_STORED


def test_deepseek_v3_fp8_cannot_be_dequantized_so_it_needs_an_fp8_gpu(hub: FakeHub, repo_id: str) -> None:
    _serve(hub, repo_id, L.deepseek_v3_fp8(), L.DEEPSEEK_V3_CONFIG, shards=3, naming="six-digit")
    fp = estimate(read_model(repo_id))
    assert fp.dequantize_blockers and "kv_a_proj_with_mqa" in fp.dequantize_blockers[0] and "[5, 56]" in fp.dequantize_blockers[0]
    r = api.plan(repo_id, hardware=CPU)
    assert not r.fits
    assert all(any("cannot" in reason and "finegrained_fp8.py" in reason for reason in q.reasons) for q in r.rejected)
    r = api.plan(repo_id, hardware=_gpu((8, 0), 80, "A100"))
    assert not r.fits  # compute capability 8.0 dequantizes: impossible here
    r = api.plan(repo_id, hardware=_gpu((9, 0), 80, "H100"))
    assert r.fits and r.solution.chosen.settings.scheme.quantization == "prequantized"


def test_qwen_fp8_dequantizes_on_cpu_and_a100_runs_as_stored_on_h100(hub: FakeHub, repo_id: str) -> None:
    dims = dict(layers=4, hidden=1024, intermediate=3072, heads=16, kv_heads=8, vocab=4096)
    qc = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]}
    tensors = L.decoder(L.fp8_block(), dtype="BF16", **dims)
    _serve(hub, repo_id, tensors, L.decoder_config("qwen2", quantization_config=qc, dtype="bfloat16", **dims))
    fp = estimate(read_model(repo_id))
    assert not fp.dequantize_blockers
    for hw, action in ((CPU, "none"), (_gpu((8, 0), 40, "A100"), "none"), (_gpu((8, 9), 24, "L4"), "prequantized")):
        p = api.plan(repo_id, hardware=hw).solution.chosen
        assert p.settings.scheme.quantization == action, (hw.name, p.label)


def test_awq_on_cuda_loads_in_float16(hub: FakeHub, repo_id: str) -> None:
    _serve(hub, repo_id, L.decoder(L.awq(), **DIMS), L.decoder_config(quantization_config=FORMATS["awq"][1], **DIMS))
    r = api.plan(repo_id, hardware=_gpu((8, 6), 24, "RTX 3090"))
    assert r.solution.chosen.settings.scheme.dtype == "float16"
    assert any("transformers loads it in float16" in reason for q in r.rejected for reason in q.reasons)
    assert "gptqmodel" in report_dict(r)["plan"]["load"]["packages"]


def test_prequantized_bnb_is_never_offloaded_and_never_requantized(hub: FakeHub, repo_id: str) -> None:
    _serve(hub, repo_id, L.decoder(L.bnb4(), **DIMS), L.decoder_config(quantization_config=FORMATS["bnb-nf4-double-quant"][1], **DIMS))
    tiny_gpu = _gpu((8, 6), 1, "tiny")
    r = api.plan(repo_id, hardware=tiny_gpu, constraints=Constraints(context=256))
    plans = [r.solution.chosen, *r.solution.alternatives] if r.solution else []
    assert all(p.settings.placement in ("gpu", "cpu") for p in plans)
    offloads = [q for q in r.rejected if q.settings.placement in ("gpu+cpu", "gpu+cpu+disk", "cpu+disk")]
    assert offloads and all(any("llm_int8_enable_fp32_cpu_offload cannot be set" in x for x in q.reasons) for q in offloads)
    for p in plans:
        assert p.settings.scheme.quantization == "prequantized"  # never bnb on top of bnb
    assert report_dict(r)["plan"]["load"]["bitsandbytes"] is None


def test_gptq_and_awq_are_refused_on_apple_mps(hub: FakeHub, repo_id: str) -> None:
    _serve(hub, repo_id, L.decoder(L.gptq(), **DIMS), L.decoder_config(quantization_config=FORMATS["gptq"][1], **DIMS))
    r = api.plan(repo_id, hardware=load_profile("m3-max-64gb"))
    mps = [q for q in r.rejected if q.settings.placement == "mps"]
    assert mps and all(any("gptq on mps" in reason for reason in q.reasons) for q in mps)
    assert r.fits and r.solution.chosen.settings.placement == "cpu"  # gptqmodel's CPU kernels


def test_unknown_quant_method_is_refused(hub: FakeHub, repo_id: str) -> None:
    from planner.core.errors import UnsupportedModel

    _serve(hub, repo_id, L.decoder(L.plain(), **DIMS), L.decoder_config(quantization_config={"quant_method": "hqq"}, **DIMS))
    with pytest.raises(UnsupportedModel, match="hqq"):
        estimate(read_model(repo_id))


def test_the_rules_table_is_data_with_sources() -> None:
    for rule in formats.RULES:
        assert rule.action in (formats.AS_STORED, formats.DEQUANTIZE, formats.REFUSE)
        assert rule.source.startswith("quantizers/") and ".py:" in rule.source
        assert rule.device in ("cuda", "cpu", "mps", "*")
        if rule.config is not None:
            assert rule.config[0] in formats.CONFIG_CLASSES
    methods = {r.method for r in formats.RULES}
    assert methods == {"mxfp4", "fp8", "fbgemm_fp8", "gptq", "awq", "bitsandbytes", "compressed-tensors"}
    # every method has an answer for every device
    cc = {(7, 0): "V100", (7, 5): "T4", (8, 0): "A100", (8, 9): "L4", (9, 0): "H100"}
    for method in methods:
        for gpus in [(), (Gpu(0, "m", "mps", 1, 1, unified=True),)] + [(Gpu(0, n, "cuda", 1, 1, compute_capability=c),) for c, n in cc.items()]:
            assert formats.decide(method, "", gpus).rule.source != "-", (method, gpus)


def test_report_splits_packed_weights_from_scales(gpt_oss_20b: str) -> None:
    doc = report_dict(api.plan(gpt_oss_20b, hardware=load_profile("h100-sxm-80gb"), constraints=Constraints(context=1024)))
    pq = doc["model"]["prequantized"]
    blocks = 24 * 32 * (5760 + 2880) * 90 * 16
    assert pq["method"] == "mxfp4" and pq["packed_bytes"] == blocks and pq["packed_parameters"] == 2 * blocks
    assert pq["scale_bytes"] == blocks // 16  # one e8m0 byte per 32 values
    assert doc["model"]["weights_bytes"] > pq["packed_bytes"] + pq["scale_bytes"]  # + bf16 attention, embeddings, biases
