"""Rewards that misbehave on purpose, for the fault-injection tests (tests/test_reliability.py).

Each scores like :func:`length`, a deterministic reward, so that a run with one of them
and no fault is the reference its faulty twin must end as. Runs name them as
``--reward tests.fault_rewards:<name>`` from the project root.
"""

from __future__ import annotations

import os
import signal
import time

import psutil

_calls = 0


def length(prompts: list[str], completions: list[str], **info: object) -> list[float]:
    """The completion's length in characters, up to 20, over 20."""
    return [min(len(c), 20) / 20 for c in completions]


def signal_at_call(prompts: list[str], completions: list[str], **info: object) -> list[float]:
    """:func:`length`; sends this process SIGTERM at each call whose number is in
    ``RLM_TEST_SIGNAL_AT`` (comma-separated, counted from 1 in this process)."""
    global _calls
    _calls += 1
    due = {int(n) for n in os.environ.get("RLM_TEST_SIGNAL_AT", "").split(",") if n}
    if _calls in due:
        os.kill(os.getpid(), signal.SIGTERM)
    return length(prompts, completions)


def hang(prompts: list[str], completions: list[str], **info: object) -> list[float]:
    """Never answers, as a reward-model server that stopped responding."""
    time.sleep(3600)
    return length(prompts, completions)


def _divide(total: float, count: int) -> float:
    return total / count


def broken(prompts: list[str], completions: list[str], **info: object) -> list[float]:
    """Raises ZeroDivisionError from inside the user's code."""
    return [_divide(len(c), 0) for c in completions]


def fault_at_call(prompts: list[str], completions: list[str], **info: object) -> list[float]:
    """:func:`length`, except on the process whose ``RANK`` is ``RLM_TEST_FAULT_RANK``
    (default 0): at its call number ``RLM_TEST_FAULT_AT`` (counted from 1 in each process)
    it does ``RLM_TEST_FAULT``:

    - ``raise``: raises RuntimeError, as a reward whose server went away;
    - ``kill``: dies at once (SIGKILL, as the out-of-memory killer does);
    - ``sigterm-job``: sends SIGTERM to the launcher (torchrun) and to every process it
      started, as a job scheduler that preempts a job by signalling all its processes does
      (Slurm's ``scancel``).
    """
    global _calls
    _calls += 1
    if os.environ.get("RANK", "0") != os.environ.get("RLM_TEST_FAULT_RANK", "0"):
        return length(prompts, completions)
    if _calls != int(os.environ.get("RLM_TEST_FAULT_AT", "0")):
        return length(prompts, completions)
    fault = os.environ.get("RLM_TEST_FAULT")
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "sigterm-job":
        if "TORCHELASTIC_RUN_ID" not in os.environ:
            raise RuntimeError("sigterm-job: run under torchrun")
        launcher = psutil.Process(os.getppid())
        for process in [launcher, *launcher.children()]:
            process.send_signal(signal.SIGTERM)
        return length(prompts, completions)
    if fault == "raise":
        raise RuntimeError(f"reward server lost at call {_calls}")
    return length(prompts, completions)
