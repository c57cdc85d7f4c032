"""The GGUF runtime's search space and pricing: quant file x n_gpu_layers x KV cache type x
flash attention (x MoE experts kept on the CPU), each priced per device the way llama.cpp
places it (planner.runtimes.gguf.memory), with a bandwidth-based decode speed.

For each (quant, cache type, flash attention) and set of GPUs: the largest ``n_gpu_layers`` that
fits (llama.cpp's meaning: the output layer counts, and is offloaded first), for an MoE model
that does not fit whole also the fewest layers whose experts stay on the CPU (``--n-cpu-moe``)
with every layer on the GPU; and always the all-CPU plan.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from planner.core.errors import UsageError
from planner.core.records import (
    Constraints,
    DeviceMemory,
    Gpu,
    Hardware,
    Plan,
    Settings,
    Speed,
)
from planner.core.units import fmt_bytes
from planner.runtimes.gguf import memory as mem
from planner.runtimes.gguf.model import GgufModel

ENGINES = ("llama.cpp", "llama-cpp-python", "ollama")
# (type_k, type_v, flash_attn): the cache settings tried when no --kv-type is given. A quantized
# V cache needs flash attention (memory.kv_type_problem).
KV_CHOICES = (("f16", "f16", False), ("f16", "f16", True), ("q8_0", "q8_0", True))
# Fraction of peak memory bandwidth a decode step reaches per byte of weights read: leads, not
# measured here (no GPU lent; the CPU figure is for ranking only). llama.cpp's CUDA decode of
# quantized 7B models reaches ~70 % of an RTX 4090's 1008 GB/s (llama.cpp discussion #4167
# "Performance of llama.cpp with CUDA" tables: ~130-150 tok/s for a 3.9 GB Q4_0); CPU decode is
# memory-bound at ~60 % of the measured STREAM bandwidth (same discussion, CPU section).
GPU_EFFICIENCY = 0.7
CPU_EFFICIENCY = 0.6
DEFAULT_RAM_BANDWIDTH = 51_200_000_000  # dual-channel DDR4-3200, as the transformers runtime assumes
DEFAULT_GPU_BANDWIDTH = 500_000_000_000
PAGE = 4096  # the kernel's page: a mapped row is resident by whole pages


@dataclass(frozen=True, slots=True)
class GgufSettings(Settings):
    """One llama.cpp context over one quant file (or split set).

    Attributes:
        repo: the repo id or local path.
        quant: the quant group ("Q4_K_M").
        files: its files, shard 1 first.
        engine: "llama.cpp", "llama-cpp-python" or "ollama".
        n_gpu_layers: llama.cpp's -ngl (the output layer counts).
        n_layer: the model's repeating layers.
        n_ctx: -c (total cells, all sequences).
        n_parallel: -np sequences.
        cache_type_k, cache_type_v: -ctk / -ctv.
        flash_attn: -fa on/off.
        tensor_split: -ts proportions per GPU (empty: one GPU or none).
        gpus: the GPU devices used, in order.
        n_cpu_moe: --n-cpu-moe (experts of the first N layers on the CPU).
        mlock: lock the CPU weights in RAM (llama.cpp ``--load-mode mmap+mlock``, llama-cpp-python
            ``use_mlock=True``).
        estimated: the file's headers were not read: its bytes are scaled from another quant's.
    """

    repo: str
    quant: str
    files: tuple[str, ...]
    engine: str
    n_gpu_layers: int
    n_layer: int
    n_ctx: int
    n_parallel: int
    cache_type_k: str
    cache_type_v: str
    flash_attn: bool
    tensor_split: tuple[float, ...] = ()
    gpus: tuple[str, ...] = ()
    n_cpu_moe: int = 0
    estimated: bool = False
    mlock: bool = False

    @property
    def tensor_overrides(self) -> tuple[str, ...]:
        """The -ot entries --n-cpu-moe stands for (llama.cpp vendored in llama-cpp-python 0.3.36:
        common/arg.cpp:2773 llm_add_n_cpu_ffn_overrides, common/common.h:1198-1218: pattern
        "blk\\.%d" + LLM_FFN_EXPS_REGEX, buffer type ggml_backend_cpu_buffer_type())."""
        return tuple(f"blk\\.{i}\\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU" for i in range(self.n_cpu_moe))

    def setting(self) -> mem.Setting:
        return mem.Setting(n_ctx=self.n_ctx, n_gpu_layers=self.n_gpu_layers, type_k=self.cache_type_k, type_v=self.cache_type_v,
                           flash_attn=self.flash_attn, n_seq=self.n_parallel, n_cpu_moe=self.n_cpu_moe)

    def to_dict(self) -> dict[str, Any]:
        return {"gguf": {"repo": self.repo, "file": self.files[0] if self.files else "", "files": list(self.files),
                         "quant": self.quant, "n_gpu_layers": self.n_gpu_layers, "n_ctx": self.n_ctx, "n_parallel": self.n_parallel,
                         "cache_type_k": self.cache_type_k, "cache_type_v": self.cache_type_v, "flash_attn": self.flash_attn,
                         "tensor_split": list(self.tensor_split), "tensor_overrides": list(self.tensor_overrides),
                         "n_cpu_moe": self.n_cpu_moe, "estimated": self.estimated, "mlock": self.mlock}}


def n_ctx_of(c: Constraints) -> int:
    """-c for the request: every sequence's prompt and answer (llama.cpp splits n_ctx among the
    -np sequences: llama.cpp vendored in llama-cpp-python 0.3.36, src/llama-context.cpp:295
    n_ctx_seq = n_ctx / n_seq_max)."""
    return (c.context + c.new_tokens) * c.batch


def sequences(engine: str, c: Constraints) -> tuple[int, int]:
    """(n_ctx, sequences) the engine runs the request with. llama-server and Ollama decode the
    batch's sequences side by side (-np, OLLAMA_NUM_PARALLEL). llama-cpp-python's ``Llama()``
    leaves n_seq_max at llama.cpp's default of 1 (src/llama-context.cpp:3759 of the vendored tree,
    llama_context_default_params ``/*.n_seq_max =*/ 1``; llama_cpp/llama.py 0.3.36 sets it only
    for ``embedding=True``, lines 407-412, and takes no argument for it; measured: it logs
    "n_seq_max = 1" whatever the batch): one sequence at a time, so the batch runs one request
    after another in one request's context."""
    if engine == "llama-cpp-python":
        return c.context + c.new_tokens, 1
    return n_ctx_of(c), c.batch


def requested(m: GgufModel, c: Constraints) -> tuple[list[str], list[tuple[str, str, bool]]]:
    """The quant groups and (type_k, type_v, flash_attn) cache settings the request allows
    (--quant, --kv-type, --flash-attn); shared with the RPC plans (planner.runtimes.gguf.rpc).

    Raises:
        UsageError: --quant names a quant the repo does not have; a bad --kv-type.
    """
    quant = c.option("quant")
    quants = [g.quant for g in m.groups]
    if quant is not None:
        match = [q for q in quants if q.upper() == str(quant).upper()]
        if not match:
            raise UsageError(f"--quant {quant!r}: {m.repo} has {', '.join(quants[:12]) or 'no GGUF files'}")
        quants = match
    kv = c.option("kv_type")
    if kv is not None:
        if kv not in mem.KV_TYPES:
            raise UsageError(f"--kv-type {kv!r} is not one of {', '.join(mem.KV_TYPES)}")
        choices = [(kv, kv, True)] if kv != "f16" else [("f16", "f16", False), ("f16", "f16", True)]
    else:
        choices = list(KV_CHOICES)
    fa = c.option("flash_attn")
    if fa is not None:
        choices = [ch for ch in choices if ch[2] == bool(fa)] or [(ch[0], ch[1], bool(fa)) for ch in choices[:1]]
    return quants, choices


def plans(m: GgufModel, hw: Hardware, c: Constraints) -> list[Plan]:
    """Every candidate, priced; those that do not fit carry their reasons.

    Raises:
        UsageError: --quant names a quant the repo does not have; a bad --kv-type or --engine.
    """
    engine = c.option("engine", "llama.cpp")
    if engine not in ENGINES:
        raise UsageError(f"--engine {engine!r} is not one of {', '.join(ENGINES)}")
    quants, choices = requested(m, c)
    quant = c.option("quant")
    forced_ngl = c.option("n_gpu_layers")
    gpu_sets: list[tuple[Gpu, ...]] = []
    if hw.gpus:
        gpu_sets.append(hw.gpus[:1])
        if len(hw.gpus) > 1 and not hw.gpus[0].unified:
            gpu_sets.append(hw.gpus)
    n_ctx, _ = sequences(engine, c)
    if quant is None and c.prefer == "speed":
        # By default the quant read first (Q4_K_M where there is one: the usual recommendation)
        # and the more precise ones are planned; the smaller ones only when none of those fits,
        # since "speed" would otherwise pick the lowest-bit file whenever it runs partly on the CPU.
        floor = _bits(m, m.quant)
        first = [q for q in quants if _bits(m, q) >= floor]
        out = _plans(m, hw, c, first, choices, gpu_sets, engine, forced_ngl, n_ctx)
        if any(p.fits for p in out):
            return out
        return out + _plans(m, hw, c, [q for q in quants if q not in first], choices, gpu_sets, engine, forced_ngl, n_ctx)
    return _plans(m, hw, c, quants, choices, gpu_sets, engine, forced_ngl, n_ctx)


def _bits(m: GgufModel, quant: str) -> float:
    g = m.group(quant)
    return (g.size if g and g.size else m.weight_bytes) * 8 / max(1, m.params)


def _plans(m: GgufModel, hw: Hardware, c: Constraints, quants: list[str], choices: list[tuple[str, str, bool]],
           gpu_sets: list[tuple[Gpu, ...]], engine: str, forced_ngl: Any, n_ctx: int) -> list[Plan]:
    out: list[Plan] = []
    for q in quants:
        qm = m.scaled(q)
        for tk, tv, flash in choices:
            base = GgufSettings(repo=m.repo, quant=q, files=qm.files, engine=engine, n_gpu_layers=0, n_layer=m.n_layer, n_ctx=n_ctx,
                                n_parallel=sequences(engine, c)[1], cache_type_k=tk, cache_type_v=tv, flash_attn=flash,
                                estimated=q != m.quant, mlock=bool(c.option("mlock", False)))
            out.append(evaluate(qm, hw, c, base))
            for gpus in gpu_sets:
                split = tuple(float(g.free_bytes) for g in gpus) if len(gpus) > 1 else ()
                on = replace(base, gpus=tuple(g.device for g in gpus), tensor_split=split)
                if forced_ngl is not None:
                    out.append(evaluate(qm, hw, c, replace(on, n_gpu_layers=int(forced_ngl))))
                    continue
                out += _best_offload(qm, hw, c, on)
    return out


def _best_offload(m: GgufModel, hw: Hardware, c: Constraints, s: GgufSettings) -> list[Plan]:
    """The largest n_gpu_layers that fits (or, when none does, the one-layer plan with its
    reasons); for an MoE model that does not fit whole, also the fewest --n-cpu-moe that does."""
    full = m.n_layer + 1
    whole = evaluate(m, hw, c, replace(s, n_gpu_layers=full))
    if whole.fits or not c.offload:  # --no-offload: every layer on the GPUs, or the all-CPU plan
        return [whole]
    found: list[Plan] = []
    lo, hi = 1, full - 1  # the largest ngl that fits: memory on the GPUs grows with ngl
    best: Plan | None = None
    while lo <= hi:
        mid = (lo + hi) // 2
        p = evaluate(m, hw, c, replace(s, n_gpu_layers=mid))
        if p.fits:
            best, lo = p, mid + 1
        else:
            hi = mid - 1
    found.append(best or whole)
    if m.n_expert:
        lo, hi = 1, m.n_layer
        moe: Plan | None = None
        while lo <= hi:
            mid = (lo + hi) // 2
            p = evaluate(m, hw, c, replace(s, n_gpu_layers=full, n_cpu_moe=mid))
            if p.fits:
                moe, hi = p, mid - 1
            else:
                lo = mid + 1
        if moe is not None:
            found.append(moe)
    return found


def evaluate(m: GgufModel, hw: Hardware, c: Constraints, s: GgufSettings) -> Plan:
    """Price one setting per device; say why it does not fit."""
    st = s.setting()
    reasons: list[str] = []
    problem = mem.kv_type_problem(m, st)
    if problem:
        reasons.append(problem)
    if s.n_cpu_moe and s.engine != "llama.cpp":
        reasons.append(f"{s.engine} cannot keep experts on the CPU (no tensor overrides); llama.cpp can (--n-cpu-moe)")
    gpus = [g for g in hw.gpus if g.device in s.gpus]
    where = mem.gpu_of_layers(m, st, list(s.tensor_split) or [1.0] * len(gpus))
    names = ["cpu"] + [g.device for g in gpus]
    w = {d: 0 for d in names}
    kv = {d: 0 for d in names}
    read = {d: 0 for d in names}  # bytes read per decoded token
    runs = {d: False for d in names}
    w["cpu"] += m.input_bytes
    active = m.n_expert_used / m.n_expert if m.n_expert else 1.0
    for il, la in enumerate(m.layers):
        dev = names[where[il] + 1]
        runs[dev] = True
        experts_cpu = il < s.n_cpu_moe
        dense = la.bytes - la.experts
        w[dev] += dense
        w["cpu" if experts_cpu else dev] += la.experts
        # the CPU backend's repacked copy (model.REPACKED) of the matrices kept on the CPU. Experts
        # --n-cpu-moe overrides to the CPU are repacked too, on a GPU layer as on a CPU one: an
        # override to ggml_backend_cpu_buffer_type() picks from the CPU list with its extra buffer
        # types (llama.cpp vendored in llama-cpp-python 0.3.36, src/llama-model-loader.cpp:1240-1242;
        # that list is make_cpu_buft_list's, CPU_REPACK before CPU: src/llama-model.cpp:1110-1132,
        # passed at :1966). Measured (tests/test_gguf_real.py, 4-layer MoE, Q4_0, 8 experts, CPU):
        # "CPU_REPACK model buffer size" 29.24 MiB and peak RSS 125.3 MiB without overrides, 29.24
        # and 125.0-125.1 MiB with the experts of 1, 2 or 4 layers overridden to CPU (logged
        # "overridden to CPU_REPACK"), 96.2 MiB with the extra buffer types off.
        if dev == "cpu":
            w["cpu"] += la.repack - la.experts_repack
        if dev == "cpu" or experts_cpu:
            w["cpu"] += la.experts_repack
        read[dev] += dense
        read["cpu" if experts_cpu else dev] += int(la.experts * active)
        kv[dev] += mem.kv_layer(m, il, st)
        read[dev] += mem.kv_layer(m, il, st)
    out_dev = names[where[m.n_layer] + 1]
    # tied output: on a GPU, llama.cpp loads token_embd again there (TENSOR_DUPLICATED:
    # src/models/llama.cpp:45, placed as the output layer by src/llama-model-loader.cpp:1166); on the
    # CPU it is the same mapped bytes as the input embedding.
    out_bytes = m.output_bytes - (m.embd_bytes if m.tied and out_dev == "cpu" else 0)
    # mlock faults in every page it locks, the embedding's unread rows included
    unread = 0 if (m.tied and out_dev == "cpu") or s.mlock else _unread_embedding(m, st)
    w["cpu"] -= unread
    w[out_dev] += out_bytes + (m.output_repack if out_dev == "cpu" else 0)
    read[out_dev] += m.output_bytes
    runs[out_dev] = True
    memory: dict[str, DeviceMemory] = {}
    engine_base = mem.PROCESS_BASE[s.engine]
    for d in names:
        if d == "cpu":
            free = max(0, hw.ram_free - sum(g.free_bytes for g in gpus if g.unified))
            # with every layer on GPUs the CPU still embeds the tokens and receives the logits (peer estimate)
            comp = mem.compute(m, st) + mem.cpu_work(m, st) if runs["cpu"] else 4 * st.n_ubatch * m.n_embd + m.n_vocab * 4
            acts = mem.output_buffer(m, st)
            over = engine_base
        else:
            g = next(x for x in gpus if x.device == d)
            free = g.free_bytes
            comp = mem.compute(m, st) if runs[d] else 0
            acts = 0
            over = mem.GPU_CONTEXT
        total = w[d] + kv[d] + comp + acts + over
        margin = c.margin(free)
        memory[d] = DeviceMemory(device=d, weights=w[d], kv_cache=kv[d], activations=acts, overhead=over, total=total,
                                 capacity=max(0, free - margin), free=free, margin=margin, required=total, compute=comp,
                                 unread=unread if d == "cpu" else 0)
        if total > free - margin:
            reasons.append(f"{s.quant} with {s.n_gpu_layers} GPU layers needs {fmt_bytes(total)} on {d}, "
                           f"{fmt_bytes(max(0, free - margin))} usable")
    if s.mlock:
        reasons += _mlock_problems(s, hw, w["cpu"])
    on_gpu = bool(gpus) and all(x >= 0 for x in where) and s.n_cpu_moe == 0
    speed = _tokens_per_s(read, hw, gpus)
    notes = []
    if s.estimated:
        notes.append(f"{s.quant} sized from its listed file size, scaled from the quant whose header was read: "
                     f"--quant {s.quant} reads its own")
    if s.engine == "llama-cpp-python" and c.batch > 1:
        notes.append(f"llama-cpp-python decodes one sequence at a time (n_seq_max 1): the batch of {c.batch} runs "
                     "one request after another; llama-server -np decodes them together (--engine llama.cpp)")
    if gpus:
        notes.append("GPU figures (CUDA context, compute buffer) are peer figures until a GPU run measures them")
    bits = round(m.weight_bytes * 8 / max(1, m.params), 2)
    label_where = "cpu" if not gpus else (f"{'+'.join(s.gpus)}" if on_gpu else f"{'+'.join(s.gpus)}+cpu")
    layers = f", {s.n_gpu_layers}/{m.n_layer + 1} layers on GPU" if gpus else ""
    moe = f", experts of {s.n_cpu_moe} layers on cpu" if s.n_cpu_moe else ""
    label = f"{s.quant} KV {s.cache_type_k}{' fa' if s.flash_attn else ''} on {label_where} ({s.engine}{layers}{moe})"
    return Plan(runtime=s.engine, label=label, settings=s, memory=memory, speed=Speed(tokens_per_s=speed),
                quality=max(1, round(bits)), fits=not reasons, reasons=tuple(reasons), notes=tuple(notes),
                on_accelerators=on_gpu, offloaded_bytes=w["cpu"] - m.input_bytes if gpus else 0,
                kv_bytes=sum(kv.values()), kv_bytes_per_token=mem.kv_per_token(m, st))


def _mlock_problems(s: GgufSettings, hw: Hardware, cpu_weights: int) -> list[str]:
    """Why ``--mlock`` would not hold for this plan.

    Lines of the llama.cpp vendored in llama-cpp-python 0.3.36 (commit 0c1e5709). llama.cpp locks
    the model's host buffers (src/llama-model.cpp:1888 load_tensors: ``if (use_mlock &&
    ggml_backend_buffer_is_host(buf))``, the CPU_REPACK copy among them) and, in the mapped
    file, each CPU tensor's pages (src/llama-model-loader.cpp:1661-1663 load_all_data:
    ``lmlock->grow_to(weight->offs + n_size)``); KV, compute and output buffers are not locked.
    Past RLIMIT_MEMLOCK, mlock fails with ENOMEM, and llama.cpp only warns ("warning: failed to
    mlock %zu-byte buffer (after previously locking %zu bytes)", src/llama-mmap.cpp:689-721
    raw_lock; grow_to then stops locking, failed_already) and runs unlocked: the plan is refused
    instead. The figure is a floor: the mapped lock
    grows from the file's start, so GPU tensors stored before the last CPU tensor are locked too.
    """
    if s.engine == "ollama":
        # ollama parser/parser.go deprecatedParameters: "use_mlock" ("warning: parameter use_mlock
        # is deprecated", then dropped); its runner has no other way to lock the model
        return ["Ollama has no mlock (its use_mlock parameter is deprecated and ignored): "
                "--engine llama.cpp or llama-cpp-python can lock the weights"]
    limit = hw.memlock_limit
    if limit is not None and cpu_weights > limit:
        return [f"mlock needs {fmt_bytes(cpu_weights, up=True)} locked, RLIMIT_MEMLOCK is {fmt_bytes(limit)}: raise it "
                f"(ulimit -l unlimited; memlock in /etc/security/limits.conf, LimitMEMLOCK= for a systemd "
                f"service, --ulimit memlock=-1 for docker) or drop --mlock"]
    return []


def _unread_embedding(m: GgufModel, st: mem.Setting) -> int:
    """Bytes of the mapped token embedding a run never reads in: llama.cpp only gathers the rows
    of the tokens it sees (get_rows on the mapped file), at most n_ctx distinct ones, each row
    touching its pages (a 4 KiB page more than the row, for rows that straddle pages). A tied
    output on the CPU reads it all."""
    if not m.n_vocab or not m.embd_bytes:
        return 0
    row = m.embd_bytes // m.n_vocab
    read = min(m.embd_bytes, min(m.n_vocab, st.n_ctx) * (row + PAGE))
    return m.embd_bytes - read


def _tokens_per_s(read: dict[str, int], hw: Hardware, gpus: list[Gpu]) -> float:
    seconds = read["cpu"] / ((hw.ram_bandwidth or DEFAULT_RAM_BANDWIDTH) * CPU_EFFICIENCY)
    for g in gpus:
        seconds += read[g.device] / ((g.bandwidth or DEFAULT_GPU_BANDWIDTH) * GPU_EFFICIENCY)
    return 1.0 / seconds if seconds > 0 else float("inf")


def reprice(m: GgufModel, hw: Hardware, c: Constraints, plan: Plan) -> Plan:
    """``plan``'s quant, offload and cache settings under another request (its context)."""
    s = plan.settings
    if not isinstance(s, GgufSettings):
        raise TypeError(f"not a GGUF plan: {plan.runtime}")
    n_ctx, n_seq = sequences(s.engine, c)
    return evaluate(m.scaled(s.quant), hw, c, replace(s, n_ctx=n_ctx, n_parallel=n_seq))


def min_bytes(m: GgufModel) -> int:
    """The smallest quant's weights."""
    sizes = [g.size for g in m.groups if g.size] or [m.weight_bytes]
    return min(sizes)
