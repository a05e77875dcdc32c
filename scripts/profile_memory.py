"""Where a PPO step's memory goes: the process's resident memory, phase by phase (Linux).

    python scripts/profile_memory.py                          # the default configuration
    MALLOC_MMAP_THRESHOLD_=131072 python scripts/profile_memory.py   # glibc's, fixed
    python scripts/profile_memory.py --model <folder> --batch-size 2 --max-new-tokens 4

It builds rlm's default PPO configuration in this process (LoRA, a value head on the
policy's trunk, the default task, 16 episodes of at most 32 tokens, one thread) and runs
a few steps. Around each phase the learner calls (sampling, the environments' step with
its reward, the scoring passes without gradients, the advantages, the update) it resets
Linux's high-water mark of resident memory (``/proc/self/clear_refs``) and reads it
after: the table has, per step and phase, the resident memory the phase started with,
its peak, and the difference, then each step's time. The first line is the process with
the model loaded and its weights read once (a forward pass), before any step.

``MALLOC_MMAP_THRESHOLD_`` is glibc's own setting: the size above which an allocation
gets a memory map of its own (returned to the system when freed) rather than a piece of
the heap. Unset, glibc raises the threshold as large blocks are freed, and keeps them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tyro

import envs  # noqa: F401  (registers the environments)
from rlm.memory import peak_resident_gib, resident_gib
from rlm.phase_probes import ProfiledWork, default_ppo_run, probed_phases


@dataclass
class Config(ProfiledWork):
    steps: int = 2
    """PPO steps profiled."""


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


class PhaseMemory:
    """Each phase's resident memory at its start, and its peak."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float]] = []
        self.step = 0

    def probe(self, phase: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def measured(*args: Any, **kwargs: Any) -> Any:
            reset_peak()
            start = resident_gib()
            try:
                return call(*args, **kwargs)
            finally:
                self.rows.append((f"{self.step} | {phase}", start, peak_resident_gib()))

        return measured


def main(config: Config) -> str:
    run = default_ppo_run(config, steps=config.steps)
    loaded = resident_gib()
    memory = PhaseMemory()
    seconds = []
    with probed_phases(run, memory.probe):
        for iteration in range(config.steps):
            memory.step = iteration + 1
            started = time.perf_counter()
            run.learner.step(run.envs, iteration)
            seconds.append(time.perf_counter() - started)
    threshold = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    lines = [
        f"rlm's default PPO configuration, {config.steps} steps of {config.batch_size} "
        f"episodes x {config.max_new_tokens} tokens, {config.threads} thread(s); glibc's mmap "
        f"threshold {'adaptive (its default)' if threshold is None else f'{threshold} bytes'}",
        "",
        "| step | phase | resident at its start (GiB) | its peak (GiB) | peak - start (GiB) |",
        "| --- | --- | --- | --- | --- |",
        f"| 0 | model loaded, weights read | {loaded:.2f} | {loaded:.2f} | - |",
    ]
    for label, start, peak in memory.rows:
        lines.append(f"| {label} | {start:.2f} | {peak:.2f} | {peak - start:+.2f} |")
    times = ", ".join(f"{s:.1f}" for s in seconds)
    lines += ["", f"Step times (s), the profile's own resets and reads included: {times}"]
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main(tyro.cli(Config))
