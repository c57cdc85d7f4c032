"""Fixed per-device costs and allocator slack.

PROVISIONAL values, to be replaced by measurements.
"""

from __future__ import annotations

from planner.units import MiB

CUDA_CONTEXT_BYTES = 600 * MiB
CPU_PROCESS_BYTES = 600 * MiB
GPU_SLACK_FRACTION = 0.05


def gpu_fixed() -> int:
    return CUDA_CONTEXT_BYTES


def cpu_fixed() -> int:
    return CPU_PROCESS_BYTES


def gpu_slack(allocated: int) -> int:
    return int(allocated * GPU_SLACK_FRACTION)
