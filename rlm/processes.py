"""What the processes of one run (``torchrun``, ``accelerate launch``) share: sums over all
of them, and stopping together, with the reason, when one of them fails.

A process that fails writes its error to ``failures/process-<rank>.txt`` in the run
folder, and to the launcher's error file (``TORCHELASTIC_ERROR_FILE``: torchrun prints it
in its summary as the root cause). The others notice at their next collective operation,
which loses its connection to the dead process, and stop with :class:`PeerFailed`,
naming the process that failed and its error. A process that is not in a collective
when that happens is stopped by the launcher: torchrun sends the survivors SIGTERM and,
after ``--shutdown_timeout`` seconds (30 by default), SIGKILL. So every process exits
within a bounded time of the first failure.

Example:
    >>> from accelerate import PartialState
    >>> all_processes_sum(3, PartialState(cpu=True))  # one process: itself
    3
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import PartialState

from rlm.errors import PeerFailed
from rlm.files import write_text

FAILURES = "failures"
"""The run folder's folder of the errors of processes that failed."""

# What gloo and NCCL raise when the process at the other end of a collective is gone.
_LOST_PEER = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "NCCL communicator was aborted",
    "remote process exited",
)


def all_processes_sum(value: int, state: PartialState) -> int:
    """``value`` summed over every process (itself when there is one)."""
    if state.num_processes > 1 and dist.is_available() and dist.is_initialized():
        total = torch.tensor([value], dtype=torch.long, device=state.device)  # NCCL: on GPU
        dist.all_reduce(total)
        return int(total.item())
    return value


def launched_by_torchelastic() -> bool:
    """Whether torchrun (or ``accelerate launch``, which runs torchrun's agent) started
    this process: it forwards the signals it gets to its processes."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def clear_failures(run_folder: Path, state: PartialState) -> None:
    """Forget the failures of an earlier attempt at this run (main process)."""
    if state.is_main_process:
        shutil.rmtree(run_folder / FAILURES, ignore_errors=True)


def lost_another_process(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective operation that lost the process at its other end."""
    if isinstance(exc, dist.DistNetworkError):
        return True
    return isinstance(exc, RuntimeError) and any(s in str(exc) for s in _LOST_PEER)


def record_failure(exc: BaseException, state: PartialState, run_folder: Path | None) -> None:
    """Leave this process's error where the other processes and the launcher find it.

    Call from the ``except`` block that caught ``exc`` (the launcher's error file holds
    its traceback). Does nothing in a run of one process.
    """
    if state.num_processes <= 1:
        return
    if run_folder is not None and run_folder.is_dir():
        (run_folder / FAILURES).mkdir(exist_ok=True)
        error = f"{type(exc).__name__}: {exc}"
        write_text(run_folder / FAILURES / f"process-{state.process_index}.txt", error)
    if os.environ.get("TORCHELASTIC_ERROR_FILE"):
        from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

        ErrorHandler().record_exception(exc)


def peer_failed(state: PartialState, run_folder: Path | None, wait_s: float = 0.5) -> PeerFailed:
    """The error to stop this process with after :func:`lost_another_process`: the failed
    process's own error when it left one in the run folder (waiting up to ``wait_s``)."""
    me = state.process_index
    deadline = time.monotonic() + wait_s
    while True:
        found = []
        if run_folder is not None and (run_folder / FAILURES).is_dir():
            found = [
                path
                for path in sorted((run_folder / FAILURES).glob("process-*.txt"))
                if path.stem != f"process-{me}"
            ]
        if found or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    stops = f"process {me} of {state.num_processes} stops"
    if not found:
        return PeerFailed(
            f"{stops}: another process of this run died without an error message (a signal, "
            "the out-of-memory killer, or an error before the run folder existed: see its "
            "output and the launcher's summary)"
        )
    rank = found[0].stem.removeprefix("process-")
    return PeerFailed(f"{stops}: process {rank} failed: {found[0].read_text()}")
