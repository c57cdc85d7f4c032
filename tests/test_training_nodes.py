"""Training across nodes (``--train ... --nodes M``, cluster profiles): the data-parallel world is
every node's GPUs, ZeRO and FSDP shard over all of it (HYBRID_SHARD over one node), each rank is
held to its own GPU, and each node gets its own accelerate config and launch line, which
accelerate's own parser reads. Llama-3.1-70B and Qwen2.5-14B come from the bundled catalog (offline)."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from planner.api import emit, plan, resolve_hardware
from planner.cli import options as cli_options
from planner.cli.options import cluster as cluster_options
from planner.core.errors import UsageError
from planner.core.records import Constraints, Hardware
from planner.core.units import GiB
from planner.hardware import cluster
from planner.runtimes import registry
from planner.runtimes.training import distributed
from planner.sources import catalog

LLAMA_70B = "meta-llama/Llama-3.1-70B"
QWEN_14B = "Qwen/Qwen2.5-14B"
H100 = "8x-h100-sxm-80gb"


def _plan(hw: Hardware, method: str = "full", model: str = LLAMA_70B, **options):
    c = Constraints(batch=1, options=tuple(sorted({"train": method, "seq": 2048, **options}.items())))
    return plan(model, hardware=hw, constraints=c, snapshot=catalog.lookup(model), runtime="training")


def _every(report):
    return [*((report.solution.chosen,) + report.solution.alternatives if report.solution else ()), *report.rejected]


def _pick(report, strategy: str, ckpt: bool = True):
    return next(p for p in _every(report) if p.settings.strategy == strategy and p.settings.gradient_checkpointing == ckpt
                and p.settings.precision == "bf16-mixed")


def _nodes(n: int) -> Hardware:
    return resolve_hardware(hardware=H100, nodes=n) if n > 1 else resolve_hardware(hardware=H100)


def _states(m) -> int:
    return m.weights + m.gradients + m.optimizer


# --- the option ----------------------------------------------------------------------------------

def _collect(**given):
    return cli_options.collect({"runtime": None, **given})


def test_nodes_is_a_hardware_option_the_multi_node_runtimes_share():
    assert set(cluster_options.MULTI_NODE) == {n for n in registry.names() if getattr(registry.get(n), "multi_node", False)}
    assert _collect(nodes=2) == ({}, "vllm")  # alone: serving, as before
    assert _collect(nodes=2, train="full") == ({"train": "full"}, "training")
    assert _collect(nodes=2, rpc_hosts="a,b")[1] == "gguf"
    assert _collect(nodes=2, tp=8)[1] == "vllm"
    assert _collect(nodes=2, runtime="gguf") == ({}, None)  # --runtime decides; api refuses a one-machine runtime
    with pytest.raises(UsageError, match="--nodes cannot be combined with the options of the diffusers runtime"):
        _collect(nodes=2, resolution="512x512")


def test_cli_plans_70b_full_fine_tuning_on_two_nodes(tmp_path: Path):
    # the command of the issue, which used to fail with "options for the vllm and the training
    # runtimes cannot be combined"
    r = subprocess.run([sys.executable, "-m", "planner.cli.main", "plan", LLAMA_70B, "--train", "full", "--hardware", H100,
                        "--nodes", "2", "--seq", "2048", "--json"], capture_output=True, text=True, timeout=300, check=False,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    chosen = doc["plan"]
    assert chosen["runtime"] == "training" and chosen["training"]["nodes"] == 2 and chosen["training"]["world_size"] == 16
    ranks = sorted(f"node{n}:cuda:{i}" for n in range(2) for i in range(8))
    # each node's host RAM is checked too: its ranks load the model there first
    assert sorted(chosen["memory"]) == sorted([*ranks, "node0:cpu", "node1:cpu"])
    assert sorted(chosen["commands"]) == ["train_node0", "train_node1"]


# --- per-rank memory ------------------------------------------------------------------------------

@pytest.mark.parametrize("nodes", [1, 2, 4])
def test_zero3_model_states_per_rank_are_deepspeeds_at_the_world_size(nodes: int):
    r = _plan(_nodes(nodes), optimizer="adamw")
    p = _pick(r, "zero3")
    fp = r.footprint
    world = 8 * nodes
    # DeepSpeed's ZeRO-3 count (stage3.py estimate_zero3_model_states_mem_needs): 4 B per parameter
    # of the largest module (the untied embedding, vocab x hidden) + 18 B per parameter over the world
    largest = fp.arch.vocab_size * fp.arch.hidden_size
    expected = 4 * largest + 18 * fp.parameters // world
    ranks = [d for d in p.memory if "cuda" in d]
    assert len(ranks) == world and len({p.memory[d].total for d in ranks}) == 1
    assert abs(_states(p.memory[ranks[0]]) - expected) <= 64, (nodes, _states(p.memory[ranks[0]]), expected)
    gpu, _ = distributed.deepspeed_estimate(3, params=fp.parameters, largest_module=largest, gpus=world, gpus_per_node=8, offload=False)
    assert abs(_states(p.memory[ranks[0]]) - gpu) <= 64


def test_two_nodes_price_each_rank_as_one_machine_of_sixteen_gpus():
    two = _nodes(2)
    node = two.nodes[0]
    # the same 16 GPUs in one machine (no such profile: built here): every per-rank part must agree
    sixteen = dataclasses.replace(node, name="16x-h100", gpus=tuple(dataclasses.replace(g, index=i) for i, g in
                                                                    enumerate(node.gpus + node.gpus)))
    a, b = _plan(two, optimizer="adamw"), _plan(sixteen, optimizer="adamw")
    for strategy in ("zero2", "zero3", "fsdp", "zero3-offload"):
        pa, pb = _pick(a, strategy), _pick(b, strategy)
        assert pa.memory["node1:cuda:7"].to_dict() | {"device": ""} == pb.memory["cuda:15"].to_dict() | {"device": ""}, strategy


def test_70b_full_adamw_fits_zero3_from_four_nodes_and_the_rejections_say_by_how_much():
    totals = {}
    for nodes in (1, 2, 4):
        p = _pick(_plan(_nodes(nodes), optimizer="adamw"), "zero3")
        totals[nodes] = p.memory["cuda:0" if nodes == 1 else "node0:cuda:0"].total
        if nodes < 4:
            assert not p.fits
            (reason,) = p.reasons[:1]
            where = "cuda:0" if nodes == 1 else "node0:cuda:0"
            assert f"needs {totals[nodes] / GiB:.1f} GiB on {where}; 75.2 GiB usable" in reason, reason
        else:
            assert p.fits
    # with checkpointing, seq 2048, batch 1: docs/training.md's table
    assert {n: round(t / GiB, 1) for n, t in totals.items()} == {1: 195.4, 2: 100.1, 4: 52.5}
    off = _pick(_plan(_nodes(2), optimizer="adamw"), "zero3-offload")
    assert off.fits and round(off.memory["node0:cuda:0"].total / GiB, 1) == 11.8
    # 18 P / 2 nodes x 1.5 = 887 GiB of states, and 8 processes of 375 MiB (CPU_FIXED) on the node
    assert round(off.memory["node1:cpu"].total / GiB) == 890


def test_offloaded_host_memory_is_per_node_and_shrinks_with_the_nodes():
    fp = _plan(_nodes(1), optimizer="adamw").footprint
    for nodes in (1, 2):
        p = _pick(_plan(_nodes(nodes), optimizer="adamw"), "zero3-offload")
        hosts = [d for d in p.memory if d.endswith("cpu")]
        assert hosts == (["cpu"] if nodes == 1 else ["node0:cpu", "node1:cpu"])
        # DeepSpeed: CPU 18 P / num_nodes x 1.5 (stage3.py, gpus_factor = 1 / num_nodes) on each node
        assert p.memory[hosts[-1]].optimizer == pytest.approx(18 * fp.parameters / nodes * 1.5, rel=0.01)
        assert all(p.memory[h].capacity < 2.1e12 for h in hosts)  # each node's own RAM, not the cluster's sum


def test_hybrid_shard_is_fsdp_over_one_node_and_chosen_where_it_fits():
    two = _plan(_nodes(2), optimizer="adamw")
    one = _plan(_nodes(1), optimizer="adamw")
    assert not any(p.settings.strategy == "fsdp-hybrid" for p in _every(one))  # nothing to replicate across
    hybrid, fsdp8 = _pick(two, "fsdp-hybrid"), _pick(one, "fsdp")
    assert _states(hybrid.memory["node1:cuda:0"]) == _states(fsdp8.memory["cuda:0"])
    # Qwen2.5-14B: ZeRO-2 (4P + 16P/16) does not fit an 80 GB GPU, HYBRID_SHARD (about 18P/8) does,
    # and it comes before FULL_SHARD: its all-gathers stay inside a node
    q = _plan(_nodes(2), model=QWEN_14B, optimizer="adamw")
    assert q.solution is not None and q.solution.chosen.settings.strategy == "fsdp-hybrid"
    assert not _pick(q, "zero2", ckpt=False).fits


def test_lora_70b_shards_its_frozen_base_with_zero3_across_nodes():
    r = _plan(_nodes(2), method="lora")
    s = r.solution.chosen.settings
    assert (s.strategy, s.nodes, s.gpus) == ("zero3", 2, 8)
    ddp = _pick(r, "ddp")
    assert not ddp.fits and "node0:cuda:0" in ddp.reasons[0]  # a 141 GB bf16 base per rank
    fp = r.footprint
    m = r.solution.chosen.memory["node0:cuda:0"]
    assert round(m.total / GiB, 1) == 20.5  # docs/training.md
    # the bf16 base over the 16 ranks is most of each rank's weights
    assert m.weights > 2 * fp.parameters // 16


def test_mixed_cluster_each_rank_is_held_to_its_own_gpu():
    big = resolve_hardware(hardware=H100)
    small = resolve_hardware(hardware="8x-a100-80gb", gpus=[40 * GiB] * 8)
    mixed = cluster.combine((big, big, big, small), name="3x-h100+1x-a100-40g")
    r = _plan(mixed, optimizer="adamw")
    p = _pick(r, "zero3")
    ranks = [d for d in p.memory if "cuda" in d]
    assert len(ranks) == 32 and len({p.memory[d].total for d in ranks}) == 1  # equal shards
    assert p.memory["node3:cuda:0"].capacity < p.memory["node0:cuda:0"].capacity
    # 52.5 GiB fits the H100s (75.2 usable) but not the 40 GiB A100s: only node 3's ranks are named
    assert not p.fits and p.reasons and all("node3:" in why for why in p.reasons)
    assert len(p.reasons) == 8
    assert _pick(_plan(_nodes(4), optimizer="adamw"), "zero3").fits


def test_the_bundled_mixed_cluster_profile_trains():
    r = _plan(resolve_hardware(hardware="mixed-h100-a100"), optimizer="adamw")
    p = _pick(r, "zero3")
    assert sorted({d.split(":")[0] for d in p.memory}) == ["node0", "node1", "node2"] and p.settings.world_size == 24


def test_gpus_on_a_cluster_count_per_node():
    r = _plan(_nodes(2), gpus=4, optimizer="adamw")
    p = _pick(r, "zero3")
    assert p.settings.world_size == 8 and sorted(d for d in p.memory if "cuda" in d)[:2] == ["node0:cuda:0", "node0:cuda:1"]
    assert len([d for d in p.memory if "cuda" in d]) == 8
    with pytest.raises(UsageError, match="smallest node has 8 CUDA GPU"):
        _plan(_nodes(2), gpus=9)
    with pytest.raises(UsageError, match="CPU training is planned on one machine"):
        _plan(_nodes(2), gpus=0)


# --- what it emits --------------------------------------------------------------------------------

def test_each_node_gets_an_accelerate_config_that_accelerate_reads(tmp_path: Path):
    from accelerate.commands.config.config_args import ClusterConfig

    r = _plan(_nodes(2), optimizer="adamw")
    p = _pick(r, "zero3-offload")
    art = emit(r, p)
    assert {"accelerate_config_node0.yaml", "accelerate_config_node1.yaml", "ds_config.json"} <= set(art.files)
    assert "accelerate_config.yaml" not in art.files
    for rank in range(2):
        path = tmp_path / f"accelerate_config_node{rank}.yaml"
        path.write_text(art.files[path.name])
        cfg = ClusterConfig.from_yaml_file(str(path))
        assert (cfg.num_machines, cfg.machine_rank, cfg.num_processes) == (2, rank, 16)
        assert (cfg.main_process_ip, cfg.main_process_port) == ("HEAD_IP", 29500)
        assert cfg.deepspeed_config["deepspeed_multinode_launcher"] == "standard"
        assert art.commands[f"train_node{rank}"] == ("accelerate", "launch", "--config_file", path.name, "train.py")
    # the DeepSpeed JSON does not depend on the nodes: the same as one machine's
    single = _plan(_nodes(1), optimizer="adamw")
    assert art.files["ds_config.json"] == emit(single, _pick(single, "zero3-offload")).files["ds_config.json"]
    doc = json.loads(art.files["plan.json"])
    assert doc["train"]["nodes"] == 2 and doc["train"]["gpus"] == 8 and "node1:cuda:7" in doc["predicted"]
    assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in ast.parse(art.files["train.py"]).body)


def test_accelerate_launch_starts_eight_ranks_per_node_with_hybrid_shard(tmp_path: Path):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    r = _plan(_nodes(2), model=QWEN_14B, optimizer="adamw")
    art = emit(r, r.solution.chosen)
    for name, text in art.files.items():
        (tmp_path / name).write_text(text)
    args = launch_command_parser().parse_args(["--config_file", str(tmp_path / "accelerate_config_node1.yaml"),
                                               str(tmp_path / "train.py")])
    args, _, _ = _validate_launch_command(args)
    assert args.use_fsdp and (args.num_processes, args.num_machines, args.machine_rank) == (16, 2, 1)
    env = prepare_multi_gpu_env(args)
    # torchrun's arguments on node 1: 8 local ranks, 2 nodes, rendezvous at the head
    assert (args.nproc_per_node, args.nnodes, args.node_rank, args.rdzv_endpoint) == ("8", "2", 1, "HEAD_IP:29500")
    assert env["FSDP_SHARDING_STRATEGY"] == "HYBRID_SHARD"
    assert json.loads(art.files["plan.json"])["training"]["fsdp"] == "HYBRID_SHARD"


def test_a_cluster_with_a_cpu_only_node_is_refused_in_one_line():
    gpu_node = resolve_hardware(hardware=H100)
    cpu_node = resolve_hardware(hardware="cpu-laptop-16gb")
    with pytest.raises(UsageError, match="node 1 has no CUDA GPU"):
        _plan(cluster.combine((gpu_node, cpu_node), name="h100+laptop"))
