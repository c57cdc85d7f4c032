"""The benchmark's scenarios: which model, scheme, context, batch and placement each one runs.

Costs on the 2-vCPU machine that ran it (see RESULTS.md): a child process imports torch and
transformers in ~4 s, loads in 1-10 s, and the prefill runs twice (once measured alone, once
inside ``generate``). An 8k prefill of these models takes 20-40 s in bf16 and three times that in
fp32, so the long contexts go to bf16 and the 4-bit schemes, and fp32 stays at 2k or below.
"""

from __future__ import annotations

from dataclasses import dataclass, replace



@dataclass(frozen=True)
class Scenario:
    """One run: plan ``model`` for these constraints, load it as planned and generate.

    Attributes:
        id: unique name, used for the measurement cache and the table.
        model: a key of ``models.MODELS``.
        dtype, quant: the scheme forced on the solver.
        context, batch: the prompt per sequence and the sequences.
        ram: plan for this much free RAM instead of the machine's (sets the boundary of a
            max-context scenario). Disk scenarios leave it None: run.py finds the RAM at which
            ``disk_share`` of the weights go to disk.
        offload: let the solver use disk offload (the scenario must then plan "cpu+disk").
        disk_share: for disk scenarios, the share of the weights to put on disk.
        kind: "fit" (a plan that fits, run and compared), "maxctx" (run at the largest context
            fitcheck says fits in ``ram``), "over" (run past it, where fitcheck says it does not fit).
        quick: part of ``--quick``.
        repeat: runs of the same plan. glibc's heap makes peak RSS vary from run to run (most
            with bnb), so each scenario runs more than once and the target must hold for all.
    """

    id: str
    model: str
    dtype: str
    quant: str
    context: int
    batch: int = 1
    ram: int | None = None
    offload: bool = False
    kind: str = "fit"
    quick: bool = False
    repeat: int = 2
    disk_share: float = 0.5


def _grid() -> list[Scenario]:
    out: list[Scenario] = []
    add = out.append
    # llama GQA: every scheme, contexts 128-8192, batch 1 and 4.
    add(Scenario("llama-bf16-c128", "llama-gqa", "bfloat16", "none", 128, quick=True))
    add(Scenario("llama-bf16-c8192", "llama-gqa", "bfloat16", "none", 8192))
    add(Scenario("llama-bf16-c2048-b4", "llama-gqa", "bfloat16", "none", 2048, 4))
    add(Scenario("llama-fp32-c1024", "llama-gqa", "float32", "none", 1024, quick=True))
    add(Scenario("llama-int8-c2048", "llama-gqa", "bfloat16", "int8", 2048, quick=True))
    add(Scenario("llama-int8-c512-b4", "llama-gqa", "bfloat16", "int8", 512, 4))
    add(Scenario("llama-nf4-c4096", "llama-gqa", "bfloat16", "nf4", 4096, quick=True))
    add(Scenario("llama-nf4-c128-b4", "llama-gqa", "bfloat16", "nf4", 128, 4))
    # gemma3 (tied, 5:1 sliding): below and above the 512 window.
    add(Scenario("gemma3-bf16-c4096", "gemma3-tied", "bfloat16", "none", 4096, quick=True))
    add(Scenario("gemma3-bf16-c256-b4", "gemma3-tied", "bfloat16", "none", 256, 4))
    add(Scenario("gemma3-fp32-c2048", "gemma3-tied", "float32", "none", 2048))
    add(Scenario("gemma3-int8-c1024", "gemma3-tied", "bfloat16", "int8", 1024))
    add(Scenario("gemma3-nf4-c8192", "gemma3-tied", "bfloat16", "nf4", 8192))
    # mistral (every layer slides, window 1024): the mask path beyond the window.
    add(Scenario("mistral-bf16-c8192", "mistral-swa", "bfloat16", "none", 8192))
    add(Scenario("mistral-bf16-c1024-b4", "mistral-swa", "bfloat16", "none", 1024, 4))
    add(Scenario("mistral-fp32-c512", "mistral-swa", "float32", "none", 512))
    add(Scenario("mistral-int8-c4096", "mistral-swa", "bfloat16", "int8", 4096))
    add(Scenario("mistral-nf4-c2048-b4", "mistral-swa", "bfloat16", "nf4", 2048, 4, quick=True))
    # mixtral (MoE, experts fused at load and left unquantized by bnb).
    add(Scenario("mixtral-bf16-c2048", "mixtral-moe", "bfloat16", "none", 2048, quick=True))
    add(Scenario("mixtral-bf16-c512-b4", "mixtral-moe", "bfloat16", "none", 512, 4))
    add(Scenario("mixtral-fp32-c256", "mixtral-moe", "float32", "none", 256))
    add(Scenario("mixtral-int8-c1024", "mixtral-moe", "bfloat16", "int8", 1024))
    add(Scenario("mixtral-nf4-c4096", "mixtral-moe", "bfloat16", "nf4", 4096))
    # Disk offload: RAM below what the weights need, so the solver puts about half the weights on
    # "disk" (run.py finds that RAM from the plan, so it follows the memory model). bnb is
    # not in this group: on a CPU-only machine a cpu/disk map makes transformers skip quantizing
    # every module (llm_int8_enable_fp32_cpu_offload), so the solver rejects bnb + disk there.
    add(Scenario("llama-bf16-disk-c1024", "llama-gqa", "bfloat16", "none", 1024, offload=True, quick=True))
    add(Scenario("llama-fp32-disk-c512-b4", "llama-gqa", "float32", "none", 512, 4, offload=True))
    add(Scenario("gemma3-bf16-disk-c2048", "gemma3-tied", "bfloat16", "none", 2048, offload=True))
    add(Scenario("mistral-bf16-disk-c4096", "mistral-swa", "bfloat16", "none", 4096, offload=True))
    add(Scenario("mixtral-bf16-disk-c1024", "mixtral-moe", "bfloat16", "none", 1024, offload=True))
    add(Scenario("mixtral-fp32-disk-c128", "mixtral-moe", "float32", "none", 128, offload=True))
    # bnb runs are cheap and the noisiest (bimodal heap retention after quantizing): one more run.
    out = [replace(s, repeat=3) if s.quant != "none" else s for s in out]
    # Full size (Llama-3.2-1B): nothing here was fitted on it. Short contexts: a 1B prefill of
    # 1k tokens takes tens of seconds on two cores, and bnb's CPU int8 matmul is far slower.
    out.append(Scenario("llama1b-bf16-c1024", "llama-3.2-1b", "bfloat16", "none", 1024))
    out.append(Scenario("llama1b-bf16-c512-b4", "llama-3.2-1b", "bfloat16", "none", 512, 4))
    out.append(Scenario("llama1b-nf4-c1024", "llama-3.2-1b", "bfloat16", "nf4", 1024))
    out.append(Scenario("llama1b-int8-c256", "llama-3.2-1b", "bfloat16", "int8", 256))
    # Held out (run after the constants above were fitted, to check them): more of the 1B, and a 7B.
    out.append(Scenario("llama1b-nf4-c256-b4", "llama-3.2-1b", "bfloat16", "nf4", 256, 4))
    out.append(Scenario("llama1b-fp32-c256", "llama-3.2-1b", "float32", "none", 256))
    out.append(Scenario("llama1b-bf16-disk-c512", "llama-3.2-1b", "bfloat16", "none", 512, offload=True))
    out.append(Scenario("mistral7b-bf16-c256", "mistral-7b", "bfloat16", "none", 256))
    out.append(Scenario("mistral7b-nf4-c512", "mistral-7b", "bfloat16", "nf4", 512))
    out.append(Scenario("qwen7bhalf-nf4-c512", "qwen2.5-7b-half", "bfloat16", "nf4", 512))
    return out


SCENARIOS: list[Scenario] = _grid()
