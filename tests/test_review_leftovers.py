"""Review findings of issue 11, item 4, each checked against real parts: .bin-only checkpoints get
their family's module names (or a clear refusal), a missing local folder is not a Hub error, and
api.plan probes a callable hardware also when given a snapshot."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

import layouts as L
from fakehub import FakeHub, SparseFile
from hostile import check_one_line, run_inprocess
from planner import api
from planner.core.errors import FolderNotFound, HubError, UnsupportedModel
from planner.core.records import Constraints
from planner.model import synth
from planner.runtimes.transformers import emit

C = Constraints(context=32, new_tokens=4)


def _gpt2_bin(folder: Path):
    """A real GPT-2 saved the pre-safetensors way: pytorch_model.bin only (the tied head left out, as save_pretrained does)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    # big enough (117 MB fp32) that some RAM size plans cpu+disk rather than cpu or nothing
    cfg = AutoConfig.for_model("gpt2", n_embd=512, n_layer=8, n_head=8, vocab_size=8000, n_positions=256, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    model.save_pretrained(folder)
    os.remove(folder / "model.safetensors")  # transformers 5 no longer writes .bin: write it as transformers 4 did
    torch.save({k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}, folder / "pytorch_model.bin")
    return model


def test_bin_only_gpt2_plans_cpu_disk_with_gpt2_names_and_loads(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "gpt2-bin"
    source = _gpt2_bin(folder)
    snap = api.read_model(str(folder))
    assert snap.weight_format == "pytorch"
    r = api.plan(str(folder), hardware=L.cpu_hardware(L.ram_forcing_disk(snap, C)), constraints=C, snapshot=snap)
    p = r.solution.chosen
    assert p.settings.placement == "cpu+disk" and "disk" in p.settings.device_map.values()
    assert {k.split(".")[0] for k in p.settings.device_map} == {"transformer", "lm_head"}
    assert abs(r.footprint.parameters - source.num_parameters()) < 0.01 * source.num_parameters()
    load = emit.load_settings(r, p, offload_dir=str(tmp_path / "offload"))
    model = AutoModelForCausalLM.from_pretrained(folder, device_map=load["device_map"], offload_folder=load["offload_folder"],
                                                 dtype=getattr(torch, load["dtype"]))
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, source(ids).logits, atol=1e-4)


@pytest.mark.parametrize("model_type", ["phi", "bloom", "opt"])
def test_bin_only_checkpoint_of_an_unknown_family_is_refused(tmp_path: Path, model_type: str) -> None:
    cfg = L.decoder_config(layers=2, hidden=256, intermediate=512, heads=4, kv_heads=4, vocab=1000, dtype="float16")
    cfg.update(model_type=model_type, architectures=["SomethingForCausalLM"])
    folder = tmp_path / model_type
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    with open(folder / "pytorch_model.bin", "wb") as f:
        f.write(SparseFile(b"not a pickle", 4_000_000).prefix)
        f.truncate(4_000_000)
    with pytest.raises(UnsupportedModel, match=rf"pytorch_model\*\.bin.*{model_type} models only from safetensors"):
        api.plan(str(folder), hardware=L.cpu_hardware())


@pytest.mark.parametrize("model_type", sorted(synth.LLAMA_NAMED))
def test_llama_named_families_have_exactly_llamas_top_level_modules(model_type: str) -> None:
    """What LLAMA_NAMED claims, on transformers' own (meta-device) model of each family."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(model_type, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2, vocab_size=256, head_dim=16)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    tops = {re.sub(r"^model\.layers\.\d+(\..*)?$", "model.layers.N", n.rsplit(".", 1)[0]) for n, _ in model.named_parameters()}
    assert {"model.embed_tokens", "model.layers.N", "model.norm"} <= tops <= {"model.embed_tokens", "model.layers.N", "model.norm", "lm_head"}


def test_plan_with_a_snapshot_runs_a_callable_hardware() -> None:
    from planner.hardware.profiles import load_profile
    from planner.sources import catalog

    repo = "meta-llama/Llama-3.2-1B"
    probed = []

    def probe():
        probed.append(1)
        return load_profile("rtx-4090")

    r = api.plan(repo, hardware=probe, constraints=C, snapshot=catalog.lookup(repo))
    assert probed == [1] and r.hardware.name == load_profile("rtx-4090").name and r.solution.chosen.fits


def test_a_missing_local_folder_is_no_such_folder_not_a_hub_error(tmp_path: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FolderNotFound, match=r"^\./nope: no such folder$") as e:
        api.plan("./nope", hardware=L.cpu_hardware())
    assert not isinstance(e.value, HubError) and e.value.hint
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(FolderNotFound, match="is a file, not a model folder"):
        api.plan(str(tmp_path / "weights.bin"), hardware=L.cpu_hardware())
    r = run_inprocess(capsys, "plan", "./nope", "--hardware", "rtx-4090")
    check_one_line(r.code, r.stderr, "./nope: no such folder")
    assert hub.requests == []


def test_nothing_fits_is_no_feasible_plan_not_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from planner.core.errors import NoFeasiblePlan
    from planner.sources import catalog

    repo = "meta-llama/Llama-3.2-1B"
    r = api.plan(repo, hardware=L.cpu_hardware(256 << 20, disk=1 << 30), constraints=C, snapshot=catalog.lookup(repo))
    assert r.solution is None
    with pytest.raises(NoFeasiblePlan, match="nothing to emit") as e:
        api.emit(r)
    assert e.value.exit_code == 1 and e.value.rejections
    with pytest.raises(NoFeasiblePlan):
        api.max_context(r)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the bundled catalog answers
    out = tmp_path / "plan.json"
    run = run_inprocess(capsys, "plan", repo, "--hardware", "rtx-4090", "--gpu", "1GiB", "--ram", "1GiB", "--no-offload", "--config", str(out))
    check_one_line(run.code, run.stderr, "nothing fits, so no plan file or script was written", code=1)
    assert not out.exists()


@pytest.mark.parametrize("gpu_gib", [2.5, 24])
def test_kv_per_device_is_the_same_in_the_budget_and_the_plan_file(gpu_gib: float) -> None:
    """One rule for where KV lives (placement.kv_device): with no new tokens, the plan file's
    kv_after_prefill is the budget's kv_cache on every device, offloaded layers' KV on the main GPU."""
    from planner.hardware.probe import apply_overrides
    from planner.hardware.profiles import load_profile
    from planner.sources import catalog

    repo = "meta-llama/Llama-3.2-1B"
    hw = apply_overrides(load_profile("rtx-4090"), gpus=(int(gpu_gib * (1 << 30)),))
    c = Constraints(context=2048, new_tokens=0, dtype="bfloat16", quantization="none")
    r = api.plan(repo, hardware=hw, constraints=c, snapshot=catalog.lookup(repo))
    p = r.solution.chosen
    assert p.settings.placement == ("gpu+cpu" if gpu_gib < 4 else "gpu")
    got = {d: emit.kv_after_prefill(r, p, d) for d in p.memory}
    assert got == {d: m.kv_cache for d, m in p.memory.items()}
    assert got["cuda:0"] == p.kv_bytes > 0
