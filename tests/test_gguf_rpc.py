"""One GGUF model across several hosts with llama.cpp's RPC backend (planner.runtimes.gguf.rpc):
a Llama-3.1-70B-shaped split set read from the fake Hub, planned over simulated clusters; the split
checked against llama.cpp's placement rule recomputed here from the emitted -ts and -ngl, the
emitted commands against the flags llama.cpp's rpc-server and llama-server take.

No live test: llama-cpp-python's build ships neither rpc-server nor the RPC backend
(llama_cpp/lib holds libggml-base, libggml-cpu, libggml, libllama, libmtmd only).
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fakehub import FakeHub, SparseFile
from gguf_models import llama70b_split, write_llama

from planner import api
from planner.core.records import Constraints, Gpu, Hardware, Plan
from planner.hardware import cluster
from planner.runtimes import registry
from planner.runtimes.gguf import memory, rpc, rpc_emit
from planner.runtimes.gguf.model import GgufModel

GiB = 1024**3
TEN_GBE = 1_250_000_000  # 10 Gb/s Ethernet, bytes/s one direction


def _gpu(i: int, free: int) -> Gpu:
    return Gpu(index=i, name="test gpu", backend="cuda", total_bytes=free + GiB, free_bytes=free, bandwidth=1_000_000_000_000)


def _node(name: str, gpus: tuple[Gpu, ...], ram_free: int) -> Hardware:
    return Hardware(name=name, source="profile", gpus=gpus, ram_total=ram_free + 4 * GiB, ram_free=ram_free, disk_free=500 * GiB,
                    cache_disk_free=500 * GiB, ram_bandwidth=100_000_000_000)


def three_gpu_hosts() -> Hardware:
    """A head with one 24 GiB GPU, a worker with one, a worker with two 16 GiB GPUs; 10 GbE between them."""
    return cluster.combine((_node("head", (_gpu(0, 23 * GiB),), 60 * GiB), _node("w1", (_gpu(0, 23 * GiB),), 30 * GiB),
                            _node("w2", (_gpu(0, 15 * GiB), _gpu(1, 15 * GiB)), 30 * GiB)),
                           network_bandwidth=TEN_GBE, name="test-3-hosts")


@pytest.fixture(scope="module")
def m70(fake_hub: FakeHub) -> Iterator[GgufModel]:
    repo = "test-org/Llama-3.1-70B-Instruct-GGUF-rpc"
    fake_hub.add_repo(repo, {name: SparseFile(head, size) for name, (head, size) in llama70b_split().items()})
    try:
        snap = api.read_model(repo, runtime="gguf")
        m = registry.get("gguf").model(snap)
        assert isinstance(m, GgufModel)
        yield m
    finally:
        fake_hub.remove_repo(repo)


# an f16 cache (a q8_0 one would be chosen for speed): its bytes per layer are checked below
C = Constraints(context=4096, new_tokens=32).with_options(kv_type="f16")


def _chosen(m: GgufModel, hw: Hardware, c: Constraints = C) -> Plan:
    got = [p for p in registry.get("gguf").plans(m, hw, c) if p.fits]
    assert got, [p.reasons for p in registry.get("gguf").plans(m, hw, c)]
    return max(got, key=lambda p: p.speed.score)


def _placement(m: GgufModel, ngl: int, ts: list[float]) -> list[int]:
    """llama.cpp's rule, again (src/llama-model.cpp load_tensors): layers from n_layer + 1 - ngl on,
    device = upper_bound(cumulative normalised split, (il - start) / act); -1: the head's CPU."""
    n = m.n_layer
    start, act = max(n + 1 - ngl, 0), min(ngl, n + 1)
    total = sum(ts)
    cum = [sum(ts[:i + 1]) / total for i in range(len(ts))]
    return [-1 if il < start else min(bisect_right(cum, (il - start) / act), len(ts) - 1) for il in range(n + 1)]


def _pairs(argv: tuple[str, ...] | list[str], flags: dict[str, object]) -> dict[str, str]:
    out: dict[str, str] = {}
    i = 1
    while i < len(argv):
        flag = argv[i]
        assert flag in flags, flag
        if flags[flag] is None:  # a switch
            out[flag] = ""
            i += 1
        else:
            out[flag] = argv[i + 1]
            i += 2
    return out


# tools/rpc/rpc-server.cpp print_usage / rpc_server_params_parse: None = a switch
RPC_SERVER_FLAGS: dict[str, object] = {"-H": str, "--host": str, "-p": int, "--port": int, "-c": None, "--cache": None,
                                       "-t": int, "--threads": int, "-d": str, "--device": str, "-m": str, "--mem": str}
# tools/server/README.md and common/arg.cpp (--rpc: "comma-separated list of RPC servers (host:port)")
LLAMA_SERVER_FLAGS: dict[str, object] = {"-m": str, "--hf-repo": str, "--hf-file": str, "--rpc": str, "-c": int, "-ngl": int,
                                         "-ts": str, "-ctk": str, "-ctv": str, "-fa": str, "-np": int}


def test_a_70b_split_over_three_gpu_hosts_adds_up(m70: GgufModel) -> None:
    hw = three_gpu_hosts()
    p = _chosen(m70, hw)
    s = p.settings
    assert isinstance(s, rpc.RpcSettings) and p.runtime == "llama.cpp-rpc"
    # llama.cpp's device order: the workers' devices in --rpc order, then the head's GPUs
    assert s.gpus == ("node1:cuda:0", "node2:cuda:0", "node2:cuda:1", "node0:cuda:0")
    assert s.n_gpu_layers == 81 and p.on_accelerators
    where = _placement(m70, s.n_gpu_layers, list(s.tensor_split))
    assert where[-1] == 3  # the output layer on the last device: the head's GPU
    cells = memory.pad(s.n_ctx)
    for i, dev in enumerate(s.gpus):
        layers = [il for il in range(m70.n_layer) if where[il] == i]
        want = sum(m70.layers[il].bytes for il in layers) + (m70.output_bytes if where[-1] == i else 0)
        assert p.memory[dev].weights == want, dev
        assert p.memory[dev].kv_cache == len(layers) * cells * 2 * 8 * 128 * 2  # K and V, 8 KV heads x 128, f16
        assert p.memory[dev].overhead == memory.GPU_CONTEXT
        assert p.memory[dev].compute > 0
    # every byte of the file is on one device, but the token embedding rows no token reads
    assert sum(d.weights for d in p.memory.values()) + p.memory["node0:cpu"].unread == m70.weight_bytes
    assert p.kv_bytes == m70.n_layer * cells * 4096
    # each worker's RAM holds the rpc-server and the largest tensor it receives (bounded by its largest layer)
    for k in (1, 2):
        host = p.memory[f"node{k}:cpu"]
        largest = max(m70.layers[il].bytes for il in range(m70.n_layer) if s.gpus[where[il]].startswith(f"node{k}:"))
        assert host.weights == 0 and host.overhead == rpc.SERVER_BASE + largest
        assert host.capacity == hw.nodes[k].ram_free - C.margin(hw.nodes[k].ram_free)
    head = p.memory["node0:cpu"]
    assert head.weights == m70.input_bytes - head.unread  # only the input embedding stays on the head's CPU
    assert head.overhead == memory.PROCESS_BASE["llama.cpp"] + max(m70.layers[il].bytes for il in range(m70.n_layer) if where[il] < 3)
    print(f"70B over 3 hosts: {p.label}; " + ", ".join(f"{d} {v.required / GiB:.2f} GiB" for d, v in p.memory.items()))


def test_the_network_costs_each_visit_and_the_activations(m70: GgufModel) -> None:
    hw = three_gpu_hosts()
    p = _chosen(m70, hw)
    s = p.settings
    assert isinstance(s, rpc.RpcSettings)
    where = _placement(m70, s.n_gpu_layers, list(s.tensor_split))
    seconds, visits, crossing = rpc.network(m70, hw, rpc.devices(hw), where)
    assert visits == 2  # node1, then node2; the head's GPU last
    assert crossing == 2 * 2 * 4 * 8192  # the hidden state in and out of each visit, f32
    assert seconds == pytest.approx(2 * rpc.VISIT_SECONDS + crossing / TEN_GBE)
    # the same devices on one machine would decode faster by exactly that time per token
    one = replace(hw.nodes[0], gpus=tuple(d.gpu for d in rpc.devices(hw)))
    local = max((q for q in registry.get("gguf").plans(m70, one, C) if q.fits and q.settings.n_gpu_layers == 81  # type: ignore[attr-defined]
                 and len(q.settings.gpus) == 4), key=lambda q: q.speed.score)  # type: ignore[attr-defined]
    assert local.speed.tokens_per_s is not None and p.speed.tokens_per_s is not None
    assert 1 / p.speed.tokens_per_s == pytest.approx(1 / local.speed.tokens_per_s + seconds)
    assert any("network (estimate)" in n for n in p.notes)
    # a slower network costs more
    slow = replace(hw, network_bandwidth=TEN_GBE // 10)
    assert rpc.network(m70, slow, rpc.devices(slow), where)[0] > seconds


def test_a_cpu_only_worker_holds_its_layers_in_ram(m70: GgufModel) -> None:
    hw = cluster.combine((_node("head", (_gpu(0, 23 * GiB),), 60 * GiB), _node("big-ram", (), 100 * GiB)),
                         network_bandwidth=TEN_GBE, name="gpu+cpu")
    p = _chosen(m70, hw)
    s = p.settings
    assert isinstance(s, rpc.RpcSettings)
    assert s.gpus == ("node1:cpu", "node0:cuda:0") and s.servers == (("node1:cpu",),)
    worker = p.memory["node1:cpu"]
    where = _placement(m70, s.n_gpu_layers, list(s.tensor_split))
    on = [il for il in range(m70.n_layer) if where[il] == 0]
    assert worker.weights == sum(m70.layers[il].bytes for il in on) > 0
    assert worker.overhead == rpc.SERVER_BASE + max(m70.layers[il].bytes for il in on)  # no CUDA context on a CPU
    st = s.setting()
    assert worker.compute == memory.compute(m70, st) + memory.cpu_work(m70, st)
    assert not p.on_accelerators  # layers run on a CPU


def test_a_cluster_too_small_is_rejected_with_numbers_per_host(m70: GgufModel) -> None:
    hw = cluster.combine((_node("a", (), 6 * GiB), _node("b", (), 6 * GiB)), network_bandwidth=TEN_GBE, name="two-laptops")
    got = registry.get("gguf").plans(m70, hw, C)
    assert got and not any(p.fits for p in got)
    reasons = [r for p in got for r in p.reasons]
    assert any("on node1:cpu" in r and "usable" in r and "GiB" in r for r in reasons)


def test_too_many_devices_for_llama_cpp_are_refused(m70: GgufModel) -> None:
    node = _node("8gpu", tuple(_gpu(i, 79 * GiB) for i in range(8)), 500 * GiB)
    got = registry.get("gguf").plans(m70, cluster.replicate(node, 2), C)
    assert got and not any(p.fits for p in got)
    assert all(any("at most 15" in r for r in p.reasons) for p in got)


def test_emitted_commands_take_the_flags_llama_cpp_documents(m70: GgufModel) -> None:
    hw = three_gpu_hosts()
    c = C.with_options(rpc_hosts="10.0.0.11,gpu-box")
    r = api.plan(m70.repo, hardware=hw, constraints=c, runtime="gguf")
    assert r.solution is not None and r.solution.chosen.runtime == "llama.cpp-rpc"
    out = api.emit(r)
    s = rpc_emit.settings_of(r.solution.chosen)
    one = _pairs(out.commands["rpc_server_10.0.0.11"], RPC_SERVER_FLAGS)
    two = _pairs(out.commands["rpc_server_gpu-box"], RPC_SERVER_FLAGS)
    assert out.commands["rpc_server_10.0.0.11"][0] == "ggml-rpc-server"
    assert one == {"-H": "10.0.0.11", "-p": "50052", "-c": ""}
    assert two["-H"] == "0.0.0.0"  # rpc-server binds an IPv4 literal only (transport.cpp inet_addr)
    head = out.commands["llama_server"]
    assert head[0] == "llama-server"
    pairs = _pairs(head, LLAMA_SERVER_FLAGS)
    assert pairs["--rpc"] == "10.0.0.11:50052,gpu-box:50052"
    assert pairs["-ngl"] == str(s.n_gpu_layers)
    ts = [float(x) for x in pairs["-ts"].split(",")]
    assert len(ts) == 4 and _placement(m70, s.n_gpu_layers, ts) == _placement(m70, s.n_gpu_layers, list(s.tensor_split))
    doc = json.loads(out.files["plan.json"])
    assert doc["engine"] == "llama.cpp-rpc"
    assert doc["commands"]["rpc_server"]["gpu-box"] == list(out.commands["rpc_server_gpu-box"])
    assert doc["commands"]["llama_server"] == list(head)
    assert set(doc["predicted"]) == set(r.solution.chosen.memory)
    assert "ggml-rpc-server" in out.files["README.md"] and "10.0.0.11" in out.files["README.md"]


def test_cli_plans_a_cluster_for_gguf_and_refuses_bad_hosts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from click.testing import CliRunner

    from planner.cli.main import cli, main

    path = write_llama(tmp_path / "tiny-llama.Q8_0.gguf", qtype="Q8_0", n_layer=4, n_embd=256, n_ff=512, n_vocab=2000)
    base = ["plan", str(path.parent), "--runtime", "gguf", "--nodes", "3", "--hardware", "rtx-4090", "--context", "256"]
    res = CliRunner().invoke(cli, [*base, "--rpc-hosts", "10.1.0.2,10.1.0.3", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    plan = doc["plan"]
    assert plan["runtime"] == "llama.cpp-rpc"
    assert set(plan["commands"]["rpc_server"]) == {"10.1.0.2", "10.1.0.3"}
    assert plan["gguf"]["rpc"]["devices"] == ["node1:cuda:0", "node2:cuda:0", "node0:cuda:0"]
    assert {"node0:cpu", "node1:cpu", "node2:cpu", "node0:cuda:0"} <= set(plan["memory"])
    for hosts, message in (("10.1.0.2", "--rpc-hosts names 1 address(es); 3x rtx-4090 has 2 worker node(s)"),
                           ("a b,c", "'a b' is not a host name")):
        with pytest.raises(SystemExit) as exit_:
            main([*base, "--rpc-hosts", hosts])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()) <= 2, err
