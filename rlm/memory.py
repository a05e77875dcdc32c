"""This process's peak memory: resident in RAM, and on the GPU when there is one.

Example:
    >>> peak_resident_gib() > 0
    True
"""

from __future__ import annotations

from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")


def _status_gib(field: str) -> float | None:
    """A memory field of Linux's ``/proc/self/status`` (``VmHWM``, ``VmRSS``) in GiB;
    None elsewhere."""
    if _STATUS.is_file():
        for line in _STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 2**20  # kB
    return None


def resident_gib() -> float:
    """The RAM this process holds now, in GiB (Linux's VmRSS)."""
    current = _status_gib("VmRSS")
    if current is None:
        raise OSError("the current resident memory is read from /proc/self/status (Linux)")
    return current


def peak_resident_gib() -> float:
    """The most RAM this process has held, in GiB: Linux's VmHWM, its own memory map's
    high-water mark (``ru_maxrss`` would carry a parent's peak over an exec); elsewhere
    ``ru_maxrss``."""
    peak_gib = _status_gib("VmHWM")
    if peak_gib is not None:
        return peak_gib
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, else kB
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20


def peak_gpu_gib() -> float | None:
    """The most GPU memory torch has allocated in this process, in GiB (None without CUDA)."""
    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**30


def memory_metrics() -> dict[str, float]:
    """``perf/memory_peak_gib`` and, with CUDA, ``perf/gpu_memory_peak_gib``."""
    metrics = {"perf/memory_peak_gib": peak_resident_gib()}
    gpu = peak_gpu_gib()
    if gpu is not None:
        metrics["perf/gpu_memory_peak_gib"] = gpu
    return metrics
