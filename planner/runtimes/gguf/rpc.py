"""llama.cpp RPC: one GGUF model across several hosts (plan.runtime "llama.cpp-rpc").

The head (node 0 of the cluster) runs ``llama-server --rpc host1:port,host2:port``; every other
node runs ``ggml-rpc-server``, which exposes its devices (all its GPUs, or its CPU when it has
none) to the head as more backend devices. llama.cpp then places the layers exactly as it does on
one machine (planner.runtimes.gguf.memory.gpu_of_layers), over one device list:

* the RPC devices first, in ``--rpc`` order, then the head's own GPUs (src/llama.cpp:274-278,
  llama_model_load devices: "add RPC servers at the front of the list to minimize network
  transfers"); the output layer, offloaded first, lands on the last device;
* split by each device's free memory, or by ``-ts`` in that same order (src/llama-model.cpp:1333-1363);
* each layer's KV cache and a compute buffer on the device that runs it; the head keeps the
  input embedding and the host output buffer.

So every plan is priced by the single-machine model (:func:`planner.runtimes.gguf.plans.evaluate`)
on a stand-in machine whose "GPUs" are the cluster's devices in llama.cpp's order, and then told
what RPC adds: the rpc-server process and its receive buffer on each worker host, the head's send
buffer, a CPU-only worker's RAM, and the network's cost per token.

All llama.cpp line numbers are of ggml-org/llama.cpp at 3f545becc (2026-08-22).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from planner.core.errors import UsageError
from planner.core.records import Constraints, DeviceMemory, Gpu, Hardware, Plan, Speed
from planner.core.units import fmt_bytes
from planner.runtimes.gguf import memory as mem
from planner.runtimes.gguf import plans as gp
from planner.runtimes.gguf.model import GgufModel

ENGINE = "llama.cpp-rpc"
# tools/rpc/CMakeLists.txt:1 set(TARGET ggml-rpc-server): renamed from rpc-server by #25045
# (2026-06-27, "rpc-server is probably too generic a name for /usr/bin"); older builds call it rpc-server.
PROGRAM = "ggml-rpc-server"
# tools/rpc/rpc-server.cpp:173-174 rpc_server_params: host = "127.0.0.1", port = 50052.
DEFAULT_PORT = 50052
# rpc-server binds only an IPv4 literal (ggml/src/ggml-rpc/transport.cpp:609 create_server:
# inet_addr(host) == INADDR_NONE -> "Invalid host address"); its default 127.0.0.1 accepts no other
# host, so a worker binds every interface unless it is given its own address.
ANY_ADDRESS = "0.0.0.0"
# src/llama.cpp:85-87 llama_max_devices() = 16, and common/arg.cpp:2814 refuses a -ts of that many
# entries ("got %zu input configs, but system only has %zu devices"): at most 15 devices take layers.
MAX_DEVICES = 15
# ggml/src/ggml-rpc/ggml-rpc.cpp:81 HASH_THRESHOLD = 10 MiB: tensors larger than this are probed by
# hash first (RPC_CMD_SET_TENSOR_HASH) and, with rpc-server -c, saved in its cache folder
# (ggml-rpc.cpp:1153-1162 set_tensor), so later loads send only their hashes.
HASH_THRESHOLD = 10 * 1024 * 1024
# The rpc-server process with its ggml backends loaded, before any buffer: taken as the same as a
# native llama.cpp process (memory.PROCESS_BASE, a peer figure: the same ggml backends).
SERVER_BASE = mem.PROCESS_BASE["llama.cpp"]
# Seconds each remote host adds to a decoded token: the RPC round trips of a visit (inputs set,
# graph computed, result read back: ggml-rpc.cpp graph_compute/set_tensor/get_tensor, one TCP
# exchange each). A peer measurement, not ours: two DGX Spark over their direct 200 GbE cable,
# 27B Q4_K_M, -ngl 99, decode 12.83 tok/s on one Spark and 12.42 with half the layers on the other
# through --rpc (defilantech/LLMKube issue #1423, 2026-08-12): 1/12.42 - 1/12.83 = 2.57 ms. It is
# an ESTIMATE for other networks: the round trips scale with the link's latency, which no profile gives.
VISIT_SECONDS = 0.00257
_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_IPV4 = re.compile(r"^(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)$")


@dataclass(frozen=True, slots=True)
class RpcSettings(gp.GgufSettings):
    """A GGUF plan whose devices span hosts (on top of :class:`~planner.runtimes.gguf.plans.GgufSettings`,
    whose ``gpus`` and ``tensor_split`` list every device in llama.cpp's order, RPC devices first).

    Attributes:
        hosts: the address of each worker (node 1, 2, ...), as ``--rpc`` names it.
        port: the port every rpc-server listens on.
        cache: rpc-server ``-c`` (its local tensor cache).
        servers: per worker, the devices its rpc-server exposes, in order.
    """

    hosts: tuple[str, ...] = ()
    port: int = DEFAULT_PORT
    cache: bool = True
    servers: tuple[tuple[str, ...], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = gp.GgufSettings.to_dict(self)
        d["gguf"]["rpc"] = {"hosts": list(self.hosts), "port": self.port, "cache": self.cache,
                            "devices": list(self.gpus), "servers": {h: list(s) for h, s in zip(self.hosts, self.servers, strict=True)}}
        return d


@dataclass(frozen=True, slots=True)
class _Device:
    """One device of the cluster in llama.cpp's order: its name in the plan, the node it is on, and
    the stand-in GPU the single-machine model prices it as."""

    name: str
    node: int
    cpu: bool
    gpu: Gpu


def hosts_of(hw: Hardware, c: Constraints) -> tuple[str, ...]:
    """The workers' addresses: --rpc-hosts, else the placeholders node1, node2, ...

    Raises:
        UsageError: not one address per worker node, or one that is not a host name or address.
    """
    n = len(hw.nodes) - 1
    given = c.option("rpc_hosts")
    if given is None:
        return tuple(f"node{k}" for k in range(1, n + 1))
    hosts = tuple(str(h).strip() for h in (given.split(",") if isinstance(given, str) else given))
    if len(hosts) != n:
        raise UsageError(f"--rpc-hosts names {len(hosts)} address(es); {hw.name} has {n} worker node(s) (node 0 runs llama-server)")
    for h in hosts:
        if not _HOST.match(h):
            raise UsageError(f"--rpc-hosts: {h[:60]!r} is not a host name or IPv4 address")
    return hosts


def devices(hw: Hardware) -> list[_Device]:
    """The cluster's devices in llama.cpp's order: each worker's (its GPUs, else its CPU), then the head's GPUs."""
    out: list[_Device] = []

    def add(node: int, name: str, cpu: bool, total: int, free: int, bandwidth: int | None, unified: bool = False) -> None:
        out.append(_Device(name, node, cpu, Gpu(index=len(out), name=name, backend="cuda", total_bytes=total, free_bytes=free,
                                               bandwidth=bandwidth, unified=unified)))

    for k, node in enumerate(hw.nodes[1:], start=1):
        gpus = [g for g in node.gpus if not g.unified] or list(node.gpus)
        for g in gpus:
            add(k, f"node{k}:{g.device}", False, g.total_bytes, g.free_bytes, g.bandwidth)
        if not gpus:
            # tools/rpc/rpc-server.cpp:269-285 get_devices: no accelerator -> the CPU device. The
            # single-machine model prices a "GPU" read at GPU_EFFICIENCY of its bandwidth: a CPU is
            # read at CPU_EFFICIENCY (planner.runtimes.gguf.plans), so its bandwidth is scaled.
            bw = int((node.ram_bandwidth or gp.DEFAULT_RAM_BANDWIDTH) * gp.CPU_EFFICIENCY / gp.GPU_EFFICIENCY)
            add(k, f"node{k}:cpu", True, node.ram_total, node.ram_free, bw)
    for g in hw.nodes[0].gpus:
        add(0, f"node0:{g.device}", False, g.total_bytes, g.free_bytes, g.bandwidth, g.unified)
    return out


def plans(m: GgufModel, hw: Hardware, c: Constraints) -> list[Plan]:
    """Every RPC candidate over the whole cluster (quant x cache type), each with the most layers that fit.

    Raises:
        UsageError: --engine other than llama.cpp, --mlock, a bad --quant/--kv-type/--rpc-hosts.
    """
    engine = c.option("engine", "llama.cpp")
    if engine not in ("llama.cpp", ENGINE):
        raise UsageError(f"--engine {engine}: across hosts only llama.cpp runs a GGUF model (its RPC backend, --rpc)",
                         hint="drop --engine, or plan one node")
    if c.option("mlock"):  # each rpc-server holds its share in its own buffers; their limits are not probed
        raise UsageError("--mlock is planned on one machine only, not across hosts", hint="drop --mlock, or plan one node")
    hosts = hosts_of(hw, c)
    devs = devices(hw)
    quants, choices = gp.requested(m, c)
    if c.option("quant") is None and c.prefer == "speed":  # as planner.runtimes.gguf.plans.plans: the smaller files last
        floor = gp._bits(m, m.quant)
        first = [q for q in quants if gp._bits(m, q) >= floor]
        out = _candidates(m, hw, c, first, choices, hosts, devs)
        if any(p.fits for p in out):
            return out
        return out + _candidates(m, hw, c, [q for q in quants if q not in first], choices, hosts, devs)
    return _candidates(m, hw, c, quants, choices, hosts, devs)


def _candidates(m: GgufModel, hw: Hardware, c: Constraints, quants: list[str], choices: list[tuple[str, str, bool]],
                hosts: tuple[str, ...], devs: list[_Device]) -> list[Plan]:
    out: list[Plan] = []
    forced = c.option("n_gpu_layers")
    servers = tuple(tuple(d.name for d in devs if d.node == k) for k in range(1, len(hw.nodes)))
    for q in quants:
        qm = m.scaled(q)
        for tk, tv, flash in choices:
            s = RpcSettings(repo=m.repo, quant=q, files=qm.files, engine=ENGINE, n_gpu_layers=qm.n_layer + 1, n_layer=m.n_layer,
                            n_ctx=gp.n_ctx_of(c), n_parallel=c.batch, cache_type_k=tk, cache_type_v=tv, flash_attn=flash,
                            tensor_split=split_of(devs), gpus=tuple(d.name for d in devs),
                            estimated=q != m.quant, hosts=hosts, servers=servers)
            if forced is not None:
                out.append(evaluate(qm, hw, c, replace(s, n_gpu_layers=int(forced))))
                continue
            whole = evaluate(qm, hw, c, s)
            if whole.fits or not c.offload:
                out.append(whole)
                continue
            best: Plan | None = None
            lo, hi = 1, qm.n_layer  # the largest -ngl that fits: the devices' memory grows with it
            while lo <= hi:
                mid = (lo + hi) // 2
                p = evaluate(qm, hw, c, replace(s, n_gpu_layers=mid))
                if p.fits:
                    best, lo = p, mid + 1
                else:
                    hi = mid - 1
            out.append(best or whole)
    return out


def split_of(devs: list[_Device]) -> tuple[float, ...]:
    """-ts: each device's free memory over the largest, to 3 digits as the command line carries it,
    so that the plan is priced with the split llama.cpp is given (it normalises the sum:
    src/llama-model.cpp:1355-1363)."""
    top = max((d.gpu.free_bytes for d in devs), default=0) or 1
    return tuple(float(f"{d.gpu.free_bytes / top:.3g}") for d in devs)


def evaluate(m: GgufModel, hw: Hardware, c: Constraints, s: RpcSettings) -> Plan:
    """One RPC setting priced per device of every host; why it does not fit, in numbers."""
    devs = devices(hw)
    head = hw.nodes[0]
    stand_in = replace(head, gpus=tuple(d.gpu for d in devs), nodes=(), network_bandwidth=None)
    # priced as llama.cpp on one machine (its process figures), the devices named as the stand-in's
    single = gp.evaluate(m, stand_in, c, replace(s, engine="llama.cpp", gpus=tuple(d.gpu.device for d in devs)))
    st = s.setting()
    where = mem.gpu_of_layers(m, st, list(s.tensor_split) or [1.0] * len(devs))
    # the largest tensor each device receives over RPC, bounded by its largest layer (the model
    # facts keep bytes per layer, not per tensor): the head copies it into one message
    # (ggml-rpc.cpp:502-506 ggml_backend_rpc_buffer_set_tensor: std::vector input of the tensor's
    # size) and the rpc-server receives it whole (ggml-rpc.cpp:1678-1682 RPC_CMD_SET_TENSOR: recv_msg
    # into a std::vector; with -c, ggml-rpc.cpp:1167-1185 get_cached_file reads the file whole).
    largest = [0] * len(devs)
    held = [0] * len(devs)  # bytes of layers each device holds: what -c caches, for layers of tensors over HASH_THRESHOLD
    for il, at in enumerate(where):
        if at < 0:
            continue
        size = m.layers[il].bytes if il < m.n_layer else m.output_bytes
        largest[at] = max(largest[at], size)
        held[at] += size
    memory: dict[str, DeviceMemory] = {}
    # the cache-type rules stay; the sizes are checked again below, per host
    reasons: list[str] = [r for r in single.reasons if " GPU layers needs " not in r]
    host_ram: dict[int, int] = {}  # node -> the rpc-server's own RAM on a worker with GPUs
    send = max((largest[i] for i, d in enumerate(devs) if d.node != 0), default=0)
    for i, d in enumerate(devs):
        got = single.memory[d.gpu.device]
        if d.cpu:  # a CPU-only worker: its RAM holds the layers, the process and the message
            over = SERVER_BASE + largest[i]
            comp = got.compute + (mem.cpu_work(m, st) if largest[i] else 0)
            got = replace(got, overhead=over, compute=comp)
        elif d.node != 0:
            host_ram[d.node] = max(host_ram.get(d.node, 0), largest[i])
        memory[d.name] = _total(replace(got, device=d.name), c)
    cpu = single.memory["cpu"]
    memory["node0:cpu"] = _total(replace(cpu, device="node0:cpu", overhead=cpu.overhead + send), c)
    for k, recv in sorted(host_ram.items()):
        node = hw.nodes[k]
        memory[f"node{k}:cpu"] = _total(DeviceMemory(device=f"node{k}:cpu", weights=0, kv_cache=0, activations=0,
                                                     overhead=SERVER_BASE + recv, total=0, capacity=0, free=node.ram_free,
                                                     margin=0), c)
    memory = dict(sorted(memory.items(), key=lambda kv: (kv[0].split(":", 1)[0], kv[0].endswith(":cpu"), kv[0])))
    for name, dm in memory.items():
        if dm.required > dm.capacity:
            reasons.append(f"{s.quant} with {s.n_gpu_layers} offloaded layers needs {fmt_bytes(dm.required)} on {name}, "
                           f"{fmt_bytes(dm.capacity)} usable")
    if len(devs) > MAX_DEVICES:
        reasons.append(f"{len(devs)} devices across {len(hw.nodes)} hosts; llama.cpp splits layers over at most {MAX_DEVICES} "
                       f"(-ts takes fewer than llama_max_devices() = 16 entries); expose fewer GPUs per host (ggml-rpc-server -d CUDA0,...)")
    if not devs:
        reasons.append(f"{hw.name}: no worker has a device and the head has no GPU: nothing to offload")
    net_s, visits, crossing = network(m, hw, devs, where)
    base_s = 1.0 / single.speed.tokens_per_s if single.speed.tokens_per_s else 0.0
    speed = 1.0 / (base_s + net_s) if base_s + net_s > 0 else float("inf")
    cache_bytes = sum(h for i, h in enumerate(held) if devs[i].node != 0 and largest[i] > HASH_THRESHOLD)
    notes = [n for n in single.notes]
    bw = hw.network_bandwidth or 0
    notes.append(f"network (estimate): {visits} remote host visit(s) per token x {VISIT_SECONDS * 1e3:.2f} ms of RPC round "
                 f"trips (a peer figure over 200 GbE) + {fmt_bytes(crossing)} of activations per token at "
                 f"{bw / 1e9:g} GB/s: {net_s * 1e3:.2f} ms a token, {speed:.1f} instead of "
                 f"{single.speed.tokens_per_s or 0:.1f} tok/s on one machine with these devices")
    if s.cache and cache_bytes:
        notes.append(f"{PROGRAM} -c: the workers cache {fmt_bytes(cache_bytes)} of tensors on disk "
                     f"($LLAMA_CACHE/rpc or ~/.cache/llama.cpp/rpc), so later loads send hashes instead")
    notes.append(f"workers: start {PROGRAM} first; it is insecure on an open network (tools/rpc/README.md)")
    cpu_layers = sum(1 for x in where[:m.n_layer] if x < 0)
    on_acc = not cpu_layers and all(not d.cpu for i, d in enumerate(devs) if largest[i])
    label = (f"{s.quant} KV {s.cache_type_k}{' fa' if s.flash_attn else ''} on {len(hw.nodes)} hosts "
             f"({ENGINE}, {s.n_gpu_layers}/{m.n_layer + 1} layers on {len(devs)} devices)")
    on_cpus = sum(memory[d.name].weights for d in devs if d.cpu)  # a CPU-only worker's layers are off the accelerators too
    return replace(single, runtime=ENGINE, label=label, settings=s, memory=memory, speed=Speed(tokens_per_s=speed),
                   fits=not reasons, reasons=tuple(reasons), notes=tuple(notes), on_accelerators=on_acc,
                   offloaded_bytes=single.offloaded_bytes + on_cpus)


def network(m: GgufModel, hw: Hardware, devs: list[_Device], where: list[int]) -> tuple[float, int, int]:
    """(seconds a decoded token spends on the network, remote host visits, bytes crossing it).

    A token visits each worker that holds layers once (its layers are contiguous: the device list
    is in host order). Into and out of each visit goes the hidden state, n_embd f32 (a copy between
    two workers passes through the head: ggml-rpc.cpp:525-531 cpy_tensor only copies within one
    server); the logits, n_vocab f32, come back instead when a worker holds the output layer.
    """
    nodes = [devs[d].node for d in where if d >= 0]
    visited: list[int] = []
    for n in nodes:
        if n != 0 and (not visited or visited[-1] != n):
            visited.append(n)
    visits = len(visited)
    crossing = 2 * visits * 4 * m.n_embd
    if where and where[-1] >= 0 and devs[where[-1]].node != 0:
        crossing += 4 * (m.n_vocab - m.n_embd)
    bw = hw.network_bandwidth or 0
    seconds = visits * VISIT_SECONDS + (crossing / bw if bw else 0.0)
    return seconds, visits, crossing


def _total(d: DeviceMemory, c: Constraints) -> DeviceMemory:
    total = d.weights + d.kv_cache + d.activations + d.overhead + d.compute
    margin = c.margin(d.free)
    return replace(d, total=total, required=total, margin=margin, capacity=max(0, d.free - margin))


def reprice(m: GgufModel, hw: Hardware, c: Constraints, plan: Plan) -> Plan:
    """``plan``'s settings under another request (its context)."""
    s = plan.settings
    if not isinstance(s, RpcSettings):
        raise TypeError(f"not an RPC plan: {plan.runtime}")
    return evaluate(m.scaled(s.quant), hw, c, replace(s, n_ctx=gp.n_ctx_of(c), n_parallel=c.batch))


def server_argv(s: RpcSettings, k: int) -> tuple[str, ...]:
    """Worker ``k``'s (1-based) command line (tools/rpc/rpc-server.cpp:192-246: -H, -p, -c)."""
    host = s.hosts[k - 1]
    argv = [PROGRAM, "-H", host if _IPV4.match(host) else ANY_ADDRESS, "-p", str(s.port)]
    if s.cache:
        argv.append("-c")
    return tuple(argv)


def rpc_flag(s: RpcSettings) -> tuple[str, ...]:
    """llama-server's ``--rpc host:port,...`` (common/arg.cpp:2647-2653, add_rpc_devices splits on ',')."""
    return ("--rpc", ",".join(f"{h}:{s.port}" for h in s.hosts))
