"""Stopping cleanly when a job scheduler preempts the run (SIGTERM) or a person presses Ctrl-C.

From the start of a run, the first SIGTERM or SIGINT only sets a flag: the runner
finishes the current step (the first, when the signal came during set-up), writes a
checkpoint, marks the run ``preempted`` in ``meta.json`` and exits
with :data:`PREEMPTED_EXIT_CODE`; ``--resume`` continues it. A second signal exits at
once, as the signal would without rlm. Under torchrun, the same signal again within
:data:`FORWARDED_WITHIN_S` seconds is the launcher forwarding the one it got itself (a
scheduler signals the whole job, launcher and processes): it is not a second signal.

Example:
    >>> with PreemptionSignals() as signals:
    ...     pass  # train; look at signals.received after each step
    >>> signals.received is None
    True
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType, TracebackType
from typing import Any

from rlm.processes import launched_by_torchelastic

PREEMPTED_EXIT_CODE = 75
"""The exit status of a preempted run: EX_TEMPFAIL, "try again later" (resume it)."""

SIGNALS = (signal.SIGTERM, signal.SIGINT)

FORWARDED_WITHIN_S = 2.0
"""Under torchrun, a repeat of the first signal this soon after it is the launcher's copy."""


class Preempted(SystemExit):
    """Raised after a preempted run saved its checkpoint: exits with
    :data:`PREEMPTED_EXIT_CODE`."""

    def __init__(self, step: int, folder: os.PathLike[str] | str) -> None:
        super().__init__(PREEMPTED_EXIT_CODE)
        self.step = step
        self.folder = folder


@contextlib.contextmanager
def _signals_handled_by(handler: Any) -> Iterator[None]:
    """SIGTERM and SIGINT go to ``handler`` inside the block (main thread only: elsewhere
    Python cannot set handlers, and the signals keep theirs); the old ones come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def signals_ignored() -> contextlib.AbstractContextManager[None]:
    """Ignore SIGTERM and SIGINT inside the block (main thread only): for a failing process
    to finish marking its run failed while the launcher is already stopping it."""
    return _signals_handled_by(signal.SIG_IGN)


class PreemptionSignals:
    """Catch SIGTERM and SIGINT for the duration of a ``with`` block (main thread only;
    elsewhere the signals keep their handlers)."""

    def __init__(self) -> None:
        self.received: str | None = None
        """The first signal's name ("SIGTERM", "SIGINT"), or None."""
        self._received_at = 0.0
        self._handled = contextlib.ExitStack()

    def __enter__(self) -> PreemptionSignals:
        self._handled.enter_context(_signals_handled_by(self._handle))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._handled.close()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if (
            self.received == name
            and launched_by_torchelastic()
            and (time.monotonic() - self._received_at < FORWARDED_WITHIN_S)
        ):
            return  # torchrun passing on the signal the whole job got
        if self.received is not None:  # the second: die as the signal would
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received, self._received_at = name, time.monotonic()
        # os.write, not print: the handler may interrupt a print (tqdm's, to stderr).
        os.write(2, f"\n{name}: finishing this step, then saving a checkpoint "
                    f"(send {name} again to exit at once)\n".encode())  # fmt: skip


STOP_WITH_PARENT = "RLM_STOP_WITH_PARENT"
"""Environment variable: the pid of a process (a sweep) whose death should preempt this run."""


def stop_with_parent() -> None:
    """Ask Linux to preempt this run (one SIGTERM) when the parent named by
    :data:`STOP_WITH_PARENT` dies.

    A sweep sets the variable for its trials: when the sweep is killed, even by SIGKILL,
    each trial's run checkpoints and stops as if preempted, and the next sweep resumes it.
    The kernel's parent-death signal (``PR_SET_PDEATHSIG``) can come twice to a child of a
    thread (when the thread ends, and when the process does), and a second SIGTERM means
    "exit at once": so it is SIGUSR1, turned into one SIGTERM. Does nothing without the
    variable, or on other systems.
    """
    parent = os.environ.pop(STOP_WITH_PARENT, None)
    if parent is None or os.uname().sysname != "Linux":
        return
    import ctypes

    fired = threading.Event()

    def parent_died(signum: int, frame: FrameType | None) -> None:
        if not fired.is_set():
            fired.set()
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGUSR1, parent_died)
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGUSR1)
    if os.getppid() != int(parent):  # it died before the request: stop now
        parent_died(signal.SIGUSR1, None)
