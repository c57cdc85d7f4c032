"""The GGUF runtime end to end: quant groups from a listing, headers read from the fake Hub with
Range requests (and from local files), llama.cpp's placement and cache rules, the emitted
commands checked against the flags llama.cpp and Ollama document."""

from __future__ import annotations

import ast
import json
from dataclasses import replace
from pathlib import Path

import pytest
from fakehub import FakeHub
from gguf_models import write_llama, write_split

from planner import api
from planner.core.errors import BadHeader, UsageError
from planner.core.records import Constraints, Gpu, Hardware, RepoFile
from planner.runtimes import registry
from planner.runtimes.gguf import files, memory
from planner.runtimes.gguf.plans import GgufSettings

GiB = 1024**3
CPU_ONLY = Hardware(name="test-cpu", source="profile", gpus=(), ram_total=16 * GiB, ram_free=8 * GiB, disk_free=100 * GiB,
                    cache_disk_free=100 * GiB, ram_bandwidth=50_000_000_000)


def _gpu(i: int, free: int) -> Gpu:
    return Gpu(index=i, name="test gpu", backend="cuda", total_bytes=free, free_bytes=free, bandwidth=1_000_000_000_000)


@pytest.fixture(scope="module")
def quants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("gguf")
    return {q: write_llama(d / f"tiny-llama.{q}.gguf", qtype=q, n_layer=4, n_embd=256, n_ff=512, n_vocab=2000) for q in ("F16", "Q8_0", "Q4_0")}


# ---- quant groups ---------------------------------------------------------------------------

def test_groups_by_quant_with_split_sets_and_no_projector() -> None:
    listing = [RepoFile("llama-2-7b.Q2_K.gguf", 2), RepoFile("llama-2-7b.Q4_K_M.gguf", 4), RepoFile("llama-2-7b.Q8_0.gguf", 7),
               RepoFile("Q6_K/Model-Q6_K-00002-of-00002.gguf", 3), RepoFile("Q6_K/Model-Q6_K-00001-of-00002.gguf", 3),
               RepoFile("mmproj-model-f16.gguf", 1), RepoFile("README.md", 1), RepoFile("Model-UD-IQ2_XXS.gguf", 1)]
    sels = files.select(listing)
    by = {s.group: s for s in sels}
    assert sels[0].group == "Q4_K_M"  # the usual default is read first
    assert set(by) == {"Q2_K", "Q4_K_M", "Q8_0", "Q6_K", "IQ2_XXS"}
    assert by["Q6_K"].files == ("Q6_K/Model-Q6_K-00001-of-00002.gguf", "Q6_K/Model-Q6_K-00002-of-00002.gguf")
    assert all(s.format == "gguf" for s in sels)
    assert "mmproj" in sels[0].notes[0]
    assert files.quant_of("Meta-Llama-3.1-70B-Instruct-Q4_K_M-00001-of-00002.gguf") == "Q4_K_M"
    assert files.quant_of("model-f16.gguf") == "F16"


def test_auto_still_prefers_transformers_where_safetensors_exist() -> None:
    listing = [RepoFile("model.safetensors", 10), RepoFile("config.json", 1), RepoFile("model-Q4_K_M.gguf", 5)]
    found = registry.select(listing, {"model_type": "llama"})
    assert found[0][0].name == "transformers" and any(rt.name == "gguf" for rt, _ in found)


# ---- llama.cpp's rules ----------------------------------------------------------------------

def _model(quants: dict[str, Path], q: str = "Q8_0"):  # type: ignore[no-untyped-def]
    snap = api.read_model(str(quants[q]), runtime="gguf")
    return registry.get("gguf").model(snap)


def test_layer_placement_offloads_the_output_layer_first(quants: dict[str, Path]) -> None:
    m = _model(quants)
    assert m.n_layer == 4
    s = memory.Setting(n_ctx=512, n_gpu_layers=1)
    assert memory.gpu_of_layers(m, s, [1.0]) == [-1, -1, -1, -1, 0]  # -ngl 1: only the output layer
    assert memory.gpu_of_layers(m, replace(s, n_gpu_layers=5), [1.0]) == [0, 0, 0, 0, 0]
    assert memory.gpu_of_layers(m, replace(s, n_gpu_layers=99), [1.0, 1.0]) == [0, 0, 0, 1, 1]
    assert memory.gpu_of_layers(m, replace(s, n_gpu_layers=3), [1.0]) == [-1, -1, 0, 0, 0]
    assert memory.gpu_of_layers(m, s, []) == [-1] * 5


def test_kv_cache_is_padded_and_typed(quants: dict[str, Path]) -> None:
    m = _model(quants)
    # n_ctx 1000 -> 1024 cells; 4 layers x (K + V) x 2 KV heads x 64 dims x 2 bytes = 2 MiB (llama.cpp logs 2.00 MiB)
    f16 = sum(memory.kv_layer(m, i, memory.Setting(n_ctx=1000, n_gpu_layers=0)) for i in range(4))
    assert f16 == 2 * 1024**2
    q8 = sum(memory.kv_layer(m, i, memory.Setting(n_ctx=1000, n_gpu_layers=0, type_k="q8_0", type_v="q8_0", flash_attn=True)) for i in range(4))
    assert q8 == f16 * 34 // 64  # 34 bytes per 32 elements against 64 (llama.cpp logs 1.06 MiB)


def test_refused_cache_types_say_why(quants: dict[str, Path]) -> None:
    m = _model(quants)
    assert "needs flash attention" in (memory.kv_type_problem(m, memory.Setting(n_ctx=512, n_gpu_layers=0, type_v="q8_0")) or "")
    odd = replace(m, head_dim_k=48)
    assert "do not divide the head dim 48" in (memory.kv_type_problem(odd, memory.Setting(n_ctx=512, n_gpu_layers=0, type_k="q8_0",
                                                                                           flash_attn=True)) or "")


def test_plans_choose_the_most_layers_that_fit(quants: dict[str, Path]) -> None:
    m = _model(quants)
    weights = m.weight_bytes
    # a GPU that holds the CUDA context, the compute buffer and about half the layers
    free = memory.GPU_CONTEXT + memory.compute(m, memory.Setting(n_ctx=528, n_gpu_layers=0)) + weights // 2
    hw = replace(CPU_ONLY, gpus=(_gpu(0, free),))
    c = Constraints(context=512, new_tokens=16, margin_fraction=0.0, margin_floor=0,
                    options=(("flash_attn", False), ("kv_type", "f16"), ("quant", "Q8_0")))
    ps = registry.get("gguf").plans(m, hw, c)
    gpu_plans = [p for p in ps if isinstance(p.settings, GgufSettings) and p.settings.gpus]
    fit = [p for p in gpu_plans if p.fits]
    assert fit, [p.reasons for p in gpu_plans]
    for p in fit:
        ngl = p.settings.n_gpu_layers  # type: ignore[attr-defined]
        assert 0 < ngl < m.n_layer + 1
        assert p.memory["cuda:0"].required <= p.memory["cuda:0"].capacity
        # one more layer would not fit
        more = registry.get("gguf").plans(m, hw, c.with_options(n_gpu_layers=ngl + 1))
        same = [x for x in more if x.settings.gpus and x.settings.cache_type_k == p.settings.cache_type_k  # type: ignore[attr-defined]
                and x.settings.flash_attn == p.settings.flash_attn]  # type: ignore[attr-defined]
        assert same and not same[0].fits
    assert any(not p.settings.gpus for p in ps if p.fits)  # the all-CPU plan is always there  # type: ignore[attr-defined]


def test_forced_quant_that_does_not_exist_is_a_usage_error(quants: dict[str, Path]) -> None:
    m = _model(quants)
    with pytest.raises(UsageError, match="Q4_K_M"):
        registry.get("gguf").plans(m, CPU_ONLY, Constraints(options=(("quant", "Q4_K_M"),)))


# ---- reading ----------------------------------------------------------------------------------

def test_hub_repo_reads_only_the_chosen_header_with_range_requests(hub: FakeHub, repo_id: str, quants: dict[str, Path]) -> None:
    hub.add_repo(repo_id, {f"tiny-llama.{q}.gguf": p for q, p in quants.items()} | {"README.md": b"hi"})
    r = api.plan(repo_id, hardware=CPU_ONLY, constraints=Constraints(context=256, new_tokens=8), runtime="gguf")
    assert r.fits and r.runtime == "gguf"
    gguf_gets = [q for q in hub.requests if q.path.endswith(".gguf")]
    assert gguf_gets and all(q.range for q in gguf_gets)
    read = {q.path.rsplit("/", 1)[-1] for q in gguf_gets}
    assert read == {"tiny-llama.Q4_0.gguf"}  # no Q4_K_M here: Q4_0 is the next preferred (files.PREFERRED)
    assert sum(q.bytes_sent for q in gguf_gets) < quants["Q4_0"].stat().st_size
    assert r.snapshot.fetch.requests >= len(gguf_gets)
    labels = {p.settings.quant for p in (r.solution.chosen, *r.solution.alternatives)}  # type: ignore[union-attr]
    assert labels == {"F16", "Q8_0", "Q4_0"}
    # the default --runtime auto finds the GGUF files of a repo without config.json or safetensors
    auto = api.plan(repo_id, hardware=CPU_ONLY, constraints=Constraints(context=256, new_tokens=8))
    assert auto.runtime == "gguf" and auto.fits
    # --quant reads that file's own header
    hub.clear_log()
    r2 = api.plan(repo_id, hardware=CPU_ONLY, constraints=Constraints(context=256, new_tokens=8, options=(("quant", "F16"),)),
                  runtime="gguf")
    assert {q.path.rsplit("/", 1)[-1] for q in hub.requests if q.path.endswith(".gguf")} == {"tiny-llama.F16.gguf"}
    assert r2.solution is not None and r2.solution.chosen.settings.quant == "F16"  # type: ignore[attr-defined]
    assert not r2.solution.chosen.settings.estimated  # type: ignore[attr-defined]
    # a warm plan reads the cached facts: no header is read again
    hub.clear_log()
    r3 = api.plan(repo_id, hardware=CPU_ONLY, constraints=Constraints(context=256, new_tokens=8, options=(("quant", "F16"),)),
                  runtime="gguf")
    assert not [q for q in hub.requests if q.path.endswith(".gguf")]
    assert r3.footprint == r2.footprint


def test_split_set_from_the_hub_takes_tensors_from_every_shard(hub: FakeHub, repo_id: str, tmp_path: Path) -> None:
    paths = write_split(tmp_path, "tiny-Q8_0", 3, n_layer=4, n_embd=256, n_ff=512, n_vocab=2000)
    hub.add_repo(repo_id, {p.name: p for p in paths})
    snap = api.read_model(repo_id, runtime="gguf")
    assert snap.weight_files == tuple(p.name for p in paths)
    assert {t.file for t in snap.tensors} == {p.name for p in paths}
    m = registry.get("gguf").model(snap)
    assert m.n_layer == 4 and m.weight_bytes == sum(t.nbytes for t in snap.tensors)


def test_a_missing_shard_is_one_clear_error(hub: FakeHub, repo_id: str, tmp_path: Path) -> None:
    paths = write_split(tmp_path, "tiny-Q8_0", 3)
    hub.add_repo(repo_id, {p.name: p for p in paths[:2]})
    with pytest.raises(BadHeader, match="incomplete"):
        api.read_model(repo_id, runtime="gguf")


def test_local_folder_and_single_file(quants: dict[str, Path]) -> None:
    folder = quants["Q8_0"].parent
    r = api.plan(str(folder), hardware=CPU_ONLY, constraints=Constraints(context=256, new_tokens=8), runtime="gguf")
    assert r.fits and r.snapshot.source == "local"
    one = api.plan(str(quants["Q4_0"]), hardware=CPU_ONLY, constraints=Constraints(context=256, new_tokens=8))
    assert one.runtime == "gguf" and one.solution is not None
    assert {p.settings.quant for p in (one.solution.chosen, *one.solution.alternatives)} == {"Q4_0"}  # type: ignore[attr-defined]


# ---- emit -------------------------------------------------------------------------------------

# Flags as llama.cpp documents them (tools/server/README.md, common/arg.cpp) and the values they take.
LLAMA_FLAGS = {"-m": str, "--hf-repo": str, "--hf-file": str, "-c": int, "-ngl": int, "-ts": str, "--n-cpu-moe": int,
               "-ctk": ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"),
               "-ctv": ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"), "-fa": ("on", "off", "auto"),
               "-np": int}


def _check_argv(argv: list[str]) -> dict[str, str]:
    assert argv[0] in ("llama-server", "llama-cli")
    pairs = dict(zip(argv[1::2], argv[2::2], strict=True))
    for flag, value in pairs.items():
        kind = LLAMA_FLAGS[flag]
        if kind is int:
            int(value)
        elif isinstance(kind, tuple):
            assert value in kind, (flag, value)
    return pairs


def test_emitted_commands_script_and_modelfile(hub: FakeHub, repo_id: str, quants: dict[str, Path]) -> None:
    hub.add_repo(repo_id, {f"tiny-llama.{q}.gguf": p for q, p in quants.items()})
    hw = replace(CPU_ONLY, gpus=(_gpu(0, 8 * GiB),))
    r = api.plan(repo_id, hardware=hw, constraints=Constraints(context=256, new_tokens=8, batch=2), runtime="gguf")
    assert r.solution is not None
    p = r.solution.chosen
    out = api.emit(r)
    pairs = _check_argv(list(out.commands["llama_server"]))
    assert pairs["--hf-repo"] == repo_id and pairs["--hf-file"].endswith(".gguf")
    assert pairs["-c"] == str((256 + 8) * 2) and pairs["-np"] == "2"
    assert pairs["-ngl"] == str(p.settings.n_gpu_layers)  # type: ignore[attr-defined]
    _check_argv(list(out.commands["llama_cli"]))
    ast.parse(out.files["run_llama.py"])
    assert "Llama.from_pretrained(repo_id=" in out.files["run_llama.py"]
    modelfile = out.files["Modelfile"].splitlines()
    assert modelfile[0] == f"FROM hf.co/{repo_id}:{p.settings.quant}"  # type: ignore[attr-defined]
    assert modelfile[1] == "PARAMETER num_ctx 264" and modelfile[2].startswith("PARAMETER num_gpu ")
    assert out.commands["ollama_run"] == ("ollama", "run", f"hf.co/{repo_id}:{p.settings.quant}")  # type: ignore[attr-defined]
    assert out.environment["OLLAMA_NUM_PARALLEL"] == "2"
    doc = json.loads(out.files["plan.json"])
    assert doc["runtime"] == "gguf" and doc["predicted"]["cuda:0"]["total"] == p.memory["cuda:0"].total


def test_plan_json_holds_the_gguf_block(quants: dict[str, Path]) -> None:
    from planner.report.schema import report_dict

    r = api.plan(str(quants["Q8_0"]), hardware=CPU_ONLY, constraints=Constraints(context=256, new_tokens=8), runtime="gguf")
    doc = report_dict(r)
    g = doc["plan"]["gguf"]
    for key in ("repo", "file", "files", "quant", "n_gpu_layers", "n_ctx", "cache_type_k", "cache_type_v", "flash_attn",
                "tensor_overrides"):
        assert key in g
    assert doc["plan"]["runtime"] in ("llama.cpp", "llama-cpp-python", "ollama")
    assert doc["plan"]["commands"]["llama_server"][0] == "llama-server"
    for part in ("weights", "kv_cache", "compute", "overhead", "total", "required", "capacity"):
        assert part in doc["plan"]["memory"]["cpu"]
    assert doc["model"]["weights_bytes"] == quants["Q8_0"].stat().st_size - _data_offset(quants["Q8_0"])


def _data_offset(p: Path) -> int:
    from planner.sources.formats import gguf

    read, fh = gguf.file_reader(p)
    with fh:
        return gguf.parse(read, file=p.name, where=p.name, file_size=p.stat().st_size).data_offset


def test_cli_plan_gguf_json(quants: dict[str, Path], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from planner.cli.main import cli

    script = tmp_path / "run.py"
    res = CliRunner().invoke(cli, ["plan", str(quants["Q4_0"].parent), "--runtime", "gguf", "--hardware", "cpu-laptop-8gb",
                                   "--quant", "Q4_0", "--kv-type", "q8_0", "--context", "300", "--json", "--script", str(script)])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["plan"]["gguf"]["quant"] == "Q4_0" and doc["plan"]["gguf"]["cache_type_v"] == "q8_0"
    assert doc["plan"]["gguf"]["flash_attn"] is True
    ast.parse(script.read_text())


def test_sliding_window_layers_keep_a_window_of_cells(quants: dict[str, Path]) -> None:
    m = _model(quants)
    swa = replace(m, n_swa=128, layers=tuple(replace(la, swa=i % 2 == 0) for i, la in enumerate(m.layers)))
    s = memory.Setting(n_ctx=4096, n_gpu_layers=0)
    assert memory.cells(swa, s, True) == 768  # pad256(min(4096, 128 x 1 + 512))
    assert memory.cells(swa, replace(s, swa_full=True), True) == 4096
    assert memory.cells(swa, s, False) == 4096
    assert memory.kv_layer(swa, 0, s) * 4096 == memory.kv_layer(swa, 1, s) * 768


def test_moe_experts_stay_on_the_cpu_when_the_gpu_is_small(tmp_path: Path) -> None:
    path = write_llama(tmp_path / "moe-Q8_0.gguf", qtype="Q8_0", n_layer=4, n_embd=256, n_ff=512, n_vocab=1000, n_expert=8,
                       n_expert_used=2)
    m = registry.get("gguf").model(api.read_model(str(path), runtime="gguf"))
    assert m.n_expert == 8 and all(la.experts for la in m.layers)
    experts = sum(la.experts for la in m.layers)
    dense = m.weight_bytes - experts
    c = Constraints(context=512, new_tokens=16, margin_fraction=0.0, margin_floor=0,
                    options=(("flash_attn", True), ("kv_type", "f16")))
    free = memory.GPU_CONTEXT + memory.compute(m, memory.Setting(n_ctx=528, n_gpu_layers=0, flash_attn=True)) + dense + experts // 2
    hw = replace(CPU_ONLY, gpus=(_gpu(0, free),))
    ps = [p for p in registry.get("gguf").plans(m, hw, c) if p.fits]
    moe = [p for p in ps if p.settings.n_cpu_moe]  # type: ignore[attr-defined]
    assert moe, [p.label for p in ps]
    s = moe[0].settings
    assert s.n_gpu_layers == m.n_layer + 1 and 0 < s.n_cpu_moe < m.n_layer  # type: ignore[attr-defined]
    # the pattern llama.cpp's --n-cpu-moe builds (common/common.h LLM_FFN_EXPS_REGEX)
    assert s.tensor_overrides[0] == "blk\\.0\\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU"  # type: ignore[attr-defined]
    r = api.plan(str(path), hardware=hw, constraints=c, runtime="gguf")
    argv = list(api.emit(r, moe[0]).commands["llama_server"])
    assert argv[argv.index("--n-cpu-moe") + 1] == str(s.n_cpu_moe)  # type: ignore[attr-defined]


def test_hostile_gguf_on_the_cli_is_one_line_and_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "bad-Q4_0.gguf"
    bad.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (2**63).to_bytes(8, "little") + bytes(8))
    proc = subprocess.run([sys.executable, "-m", "planner.cli", "plan", str(bad), "--hardware", "cpu-laptop-8gb"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("fitcheck: error:") and "tensor count" in lines[0] and "Traceback" not in proc.stderr


def test_smaller_quants_only_when_the_default_one_does_not_fit(quants: dict[str, Path]) -> None:
    from planner.runtimes.gguf.model import Group

    m = _model(quants, "Q4_0")
    size = m.weight_bytes
    m = replace(m, groups=(Group("Q2_K", ("x.Q2_K.gguf",), size // 2), Group("Q4_0", m.files, size), Group("Q8_0", ("x.Q8_0.gguf",), size * 2)))
    rt = registry.get("gguf")
    c = Constraints(context=256, new_tokens=8)
    assert {p.settings.quant for p in rt.plans(m, CPU_ONLY, c)} == {"Q4_0", "Q8_0"}  # type: ignore[attr-defined]
    # a machine where only the smallest file fits: it is planned after all
    plan_q4 = min((p for p in rt.plans(m, CPU_ONLY, c) if p.settings.quant == "Q4_0"), key=lambda p: p.memory["cpu"].total)  # type: ignore[attr-defined]
    tiny = replace(CPU_ONLY, ram_free=plan_q4.memory["cpu"].total - size // 4 + c.margin_floor)
    got = rt.plans(m, tiny, c)
    assert any(p.fits and p.settings.quant == "Q2_K" for p in got)  # type: ignore[attr-defined]
    assert {p.settings.quant for p in rt.plans(m, CPU_ONLY, replace(c, prefer="memory"))} == {"Q2_K", "Q4_0", "Q8_0"}  # type: ignore[attr-defined]


def test_a_70b_split_set_costs_a_few_requests(hub: FakeHub, repo_id: str) -> None:
    from fakehub import SparseFile
    from gguf_models import llama70b_split

    shards = llama70b_split()
    hub.add_repo(repo_id, {name: SparseFile(head, size) for name, (head, size) in shards.items()})
    r = api.plan(repo_id, hardware=replace(CPU_ONLY, gpus=(_gpu(0, 24 * GiB),), ram_free=64 * GiB), runtime="gguf",
                 constraints=Constraints(context=4096))
    gets = [q for q in hub.requests if q.path.endswith(".gguf")]
    header_bytes = sum(len(h) for h, _ in shards.values())
    got = sum(q.bytes_sent for q in gets)
    # shard 1: ~5.4 MB of tokenizer before the tensor infos, read in doubling chunks; shard 2: one request
    assert len(gets) <= 8 and header_bytes <= got <= 2 * header_bytes + 1024**2, (len(gets), got, header_bytes)
    m = r.footprint
    assert m.n_layer == 80 and m.n_vocab == 128_256  # type: ignore[attr-defined]
    assert m.weight_bytes == sum(size - len(head) for head, size in shards.values())  # type: ignore[attr-defined]
    assert r.solution is not None
    s = r.solution.chosen.settings
    assert 0 < s.n_gpu_layers < 81 and r.solution.chosen.fits  # type: ignore[attr-defined]
    print(f"70B split GGUF: {len(gets)} GGUF requests, {got} bytes ({header_bytes} header bytes), "
          f"fetch total {r.snapshot.fetch.requests} requests / {r.snapshot.fetch.bytes} bytes; "
          f"chosen {r.solution.chosen.label}")


def test_a_large_vocabulary_embedding_is_resident_only_for_the_rows_read(quants: dict[str, Path]) -> None:
    m = _model(quants)
    big = replace(m, n_vocab=262_144, embd_bytes=262_144 * 4096, input_bytes=m.input_bytes - m.embd_bytes + 262_144 * 4096)
    p = next(x for x in registry.get("gguf").plans(big, CPU_ONLY, Constraints(context=1000, new_tokens=24)) if not x.settings.gpus)  # type: ignore[attr-defined]
    cpu = p.memory["cpu"]
    assert cpu.unread == big.embd_bytes - 1024 * (4096 + 4096)  # 1024 cells: at most 1024 distinct rows, each with its pages
    assert cpu.weights == big.weight_bytes - m.embd_bytes + 262_144 * 4096 - cpu.unread


def test_ollama_plans_carry_their_context_past_ollamas_vram_based_default(hub: FakeHub, repo_id: str,
                                                                         quants: dict[str, Path]) -> None:
    from planner.runtimes.gguf.emit import ollama_default_context

    # ollama docs/context-length.mdx: < 24 GiB -> 4k, 24-48 GiB -> 32k, >= 48 GiB -> 256k
    assert [ollama_default_context(g * GiB) for g in (8, 24, 47, 48, 80)] == [4096, 32768, 32768, 262144, 262144]
    hub.add_repo(repo_id, {f"tiny-llama.{q}.gguf": p for q, p in quants.items()})
    hw = replace(CPU_ONLY, gpus=(_gpu(0, 80 * GiB),))
    r = api.plan(repo_id, hardware=hw, constraints=Constraints(context=256, new_tokens=8).with_options(engine="ollama"),
                 runtime="gguf")
    out = api.emit(r)
    # `ollama run hf.co/...` reads no Modelfile: the server must be told the planned context
    assert out.environment["OLLAMA_CONTEXT_LENGTH"] == "264"
    assert "without it Ollama takes 262144" in out.files["Modelfile"]


@pytest.mark.parametrize(("arch", "expected"), [
    ("gpt-oss", [True, False, True, False, True, False]),  # src/models/openai-moe.cpp load_swa_pattern(ml, 2)
    ("olmo2", [True, True, True, False, True, True]),  # load_swa_pattern(ml, 4)
    ("cohere2moe", [False, True, True, True, False, True]),  # load_swa_pattern(ml, 4, dense_first)
    ("qwen2", [False] * 6),  # never reads the key: a full cache
])
def test_sliding_window_layers_follow_llama_cpp_per_arch(tmp_path: Path, arch: str, expected: list[bool]) -> None:
    path = write_llama(tmp_path / f"tiny-{arch}-Q8_0.gguf", n_layer=6, arch=arch, swa=128)
    m = registry.get("gguf").model(api.read_model(str(path), runtime="gguf"))
    assert [la.swa for la in m.layers] == expected  # type: ignore[attr-defined]
    assert m.n_swa == (128 if any(expected) else 0)  # type: ignore[attr-defined]
