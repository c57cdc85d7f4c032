"""A CPU run reads a memory-mapped token embedding one row per token: the rest stays unread.

Measured on Qwen2.5-7B's layers in nf4 (benchmarks/accuracy, qwen7bhalf-nf4-c512): its 1,039 MiB
untied embedding stayed mapped and its file-backed RSS was 930 MiB under a count of the whole.
Plans here come from the bundled catalog (real layouts): Mistral-7B-v0.1 has an untied 250 MiB
embedding, Llama-3.2-1B ties its embedding to the head, which reads all of it.
"""

from __future__ import annotations

from machines import cpu_only
from planner import api
from planner.sources import catalog
from planner.model.footprint import estimate, input_embedding
from planner.runtimes.transformers.memory.weights import FAULT_AROUND_BYTES
from planner.core.records import Constraints
from planner.core.units import GiB

CPU_ONLY = cpu_only(20 * GiB)


def _plan(repo: str, **constraints):
    snap = catalog.lookup(repo)
    assert snap is not None
    report = api.plan(repo, hardware=CPU_ONLY, constraints=Constraints(**constraints), snapshot=snap)
    return estimate(snap), report.solution.chosen


def test_an_untied_mapped_embedding_counts_only_the_rows_a_run_reads() -> None:
    fp, plan = _plan("mistralai/Mistral-7B-v0.1", context=512, batch=2, dtype="bfloat16", quantization="none")
    embed = input_embedding(fp.units)
    tokens = 2 * (512 + 32)
    row = embed.stored_bytes // fp.arch.vocab_size
    cpu = plan.memory["cpu"]
    assert cpu.unread == embed.stored_bytes - tokens * (row + FAULT_AROUND_BYTES) > 0
    # the weights the plan holds plus the unread rows are the model's weights, as stored
    assert cpu.weights + cpu.unread == sum(u.stored_bytes for u in fp.units)


def test_a_longer_run_reads_more_rows() -> None:
    short = _plan("mistralai/Mistral-7B-v0.1", context=256, dtype="bfloat16", quantization="none")[1].memory["cpu"]
    long = _plan("mistralai/Mistral-7B-v0.1", context=2048, dtype="bfloat16", quantization="none")[1].memory["cpu"]
    assert long.unread < short.unread and long.weights > short.weights


def test_a_tied_or_converted_embedding_is_read_whole() -> None:
    assert _plan("meta-llama/Llama-3.2-1B", context=512, dtype="bfloat16", quantization="none")[1].memory["cpu"].unread == 0
    # a cast converts the embedding into memory
    assert _plan("mistralai/Mistral-7B-v0.1", context=512, dtype="float32", quantization="none")[1].memory["cpu"].unread == 0
