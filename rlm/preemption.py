"""Stopping cleanly when a job scheduler preempts the run (SIGTERM) or a person presses Ctrl-C.

While training, the first SIGTERM or SIGINT only sets a flag: the runner finishes the
current step, writes a checkpoint, marks the run ``preempted`` in ``meta.json`` and exits
with :data:`PREEMPTED_EXIT_CODE`; ``--resume`` continues it. A second signal exits at
once, as the signal would without rlm.

Example:
    >>> with PreemptionSignals() as signals:
    ...     pass  # train; look at signals.received after each step
    >>> signals.received is None
    True
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType, TracebackType

PREEMPTED_EXIT_CODE = 75
"""The exit status of a preempted run: EX_TEMPFAIL, "try again later" (resume it)."""

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(SystemExit):
    """Raised after a preempted run saved its checkpoint: exits with
    :data:`PREEMPTED_EXIT_CODE`."""

    def __init__(self, step: int, folder: os.PathLike[str] | str) -> None:
        super().__init__(PREEMPTED_EXIT_CODE)
        self.step = step
        self.folder = folder


class PreemptionSignals:
    """Catch SIGTERM and SIGINT for the duration of a ``with`` block (main thread only;
    elsewhere the signals keep their handlers)."""

    def __init__(self) -> None:
        self.received: str | None = None
        """The first signal's name ("SIGTERM", "SIGINT"), or None."""
        self._previous: dict[int, object] = {}

    def __enter__(self) -> PreemptionSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:  # the second: die as the signal would
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = name
        # os.write, not print: the handler may interrupt a print (tqdm's, to stderr).
        os.write(2, f"\n{name}: finishing this step, then saving a checkpoint "
                    f"(send {name} again to exit at once)\n".encode())  # fmt: skip
