"""What the tests share: scripts run as a user runs them, the tiny budget, run folders read back.

Scripts run as a subprocess from the project root, offline and on one thread
(:func:`run_python`), or in-process through the experiment's own ``cli``/``main``
(:func:`load_experiment`): the same code path without a second start-up.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from rlm.files import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
ALGORITHMS = ("ppo", "grpo", "rloo", "sft")
"""The sequence-level experiments (every reliability test runs each)."""
EXPERIMENTS = (*ALGORITHMS, "sb3")
"""Every experiment script: the sequence-level ones and the token-level one."""

# The smallest budget that exercises everything: 4 steps of 4 episodes, evaluations and
# checkpoints every 2 steps, a rank-4 adapter.
TINY = [
    "--steps", "4", "--batch-size", "4", "--max-new-tokens", "6", "--eval-prompts", "4",
    "--eval-batch-size", "4", "--eval-every", "2", "--checkpoint-every", "2", "--lora-r", "4",
    "--threads", "1",
]  # fmt: skip
TINY_ALGORITHM = {
    "ppo": ["--minibatches", "2"],
    "grpo": ["--num-generations", "2"],
    "rloo": ["--num-generations", "2"],
    "sft": ["--max-examples", "16", "--max-length", "24", "--lr", "1e-2"],
    "sb3": ["--n-steps", "8", "--minibatch-size", "16"],
}


def script_env() -> dict[str, str]:
    """The environment of a script run: this checkout importable, no hub, no W&B account."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "WANDB_SILENT": "true",
    }
    env.pop("WANDB_API_KEY", None)
    return env


def two_processes() -> list[str]:
    """The launcher of a two-process run on this machine (torchrun, as a user runs it)."""
    return [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2"]


def run_python(
    script: Path,
    args: list[str],
    *,
    launcher: list[str] | None = None,
    timeout: int = 300,
) -> subprocess.CompletedProcess:
    """``python script args`` (or ``launcher script args``, e.g. torchrun), output captured."""
    command = (launcher or [sys.executable]) + [str(script), *args]
    return subprocess.run(
        command, env=script_env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def tiny_flags(algorithm: str, model: Path, output_dir: Path, wandb: str = "disabled") -> list[str]:
    """An experiment's flags for the tiny model and the tiny budget, into ``output_dir``."""
    common = ["--model", str(model), "--output-dir", str(output_dir), "--wandb", wandb]
    return [*common, *TINY, *TINY_ALGORITHM[algorithm]]


def run_experiment(
    algorithm: str, args: list[str], *, launcher: list[str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """``experiments/<algorithm>.py args`` in its own process, output captured.

    A fork of the test worker's fork server (:class:`ForkedRuns`: the same process a user
    starts, minus ~7 s of imports), or, under a ``launcher`` (torchrun), a new process.
    """
    script = ROOT / "experiments" / f"{algorithm}.py"
    if launcher is not None:
        return run_python(script, args, launcher=launcher, timeout=timeout)
    return _shared_runs().run_captured(algorithm, args, timeout=timeout)


_SHARED_RUNS: list[ForkedRuns] = []


def _shared_runs() -> ForkedRuns:
    """This test process's fork server, started on first use, closed at exit."""
    if not _SHARED_RUNS:
        _SHARED_RUNS.append(ForkedRuns())
        atexit.register(_SHARED_RUNS[0].__exit__)
    return _SHARED_RUNS[0]


def run_tiny(
    algorithm: str, model: Path, output_dir: Path, *flags: str, wandb: str = "disabled",
    **kwargs: Any,
) -> subprocess.CompletedProcess:  # fmt: skip
    """The experiment on the tiny model with the tiny budget, plus ``flags``."""
    return run_experiment(algorithm, [*tiny_flags(algorithm, model, output_dir, wandb), *flags],
                          **kwargs)  # fmt: skip


def assert_diagnostics_logged(run: Path) -> None:
    """Every evaluation logged the over-optimisation diagnostics, and ``summary.json``
    holds those of the first and the last."""
    from rlm.diagnostics import DIAGNOSTICS

    evaluations = [row for row in metrics_of(run) if "eval/reward_mean" in row]
    assert len(evaluations) >= 2
    expected = DIAGNOSTICS.keys() - {"eval/heldout_gap"}  # (only with a held-out reward)
    for row in evaluations:
        assert expected <= set(row), expected - set(row)
    summary = read_json(run / "summary.json")
    for name, row in (
        ("diagnostics_before", evaluations[0]),
        ("diagnostics_after", evaluations[-1]),
    ):
        assert summary[name] == {k: row[k] for k in DIAGNOSTICS if k in row}
    assert summary["alerts"] == [alert["text"] for alert in alerts_of(run)]


def wandb_offline_run(run: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The run's offline W&B records and summary, read by wandb's own reader
    (``wandb leet inspect --json``), as ``wandb sync`` would upload them."""
    (folder,) = (run / "wandb").glob("offline-run-*")
    wandb_cli = str(Path(sys.executable).parent / "wandb")
    records = subprocess.run([wandb_cli, "leet", "inspect", "--json", str(folder)],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    summary = subprocess.run([wandb_cli, "leet", "inspect", "--summary", "--json", str(folder)],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    return [json.loads(line) for line in records.splitlines() if line], json.loads(summary)


def alerts_of(run: Path) -> list[dict[str, Any]]:
    """The run's ``alerts.jsonl`` rows (none when the file does not exist)."""
    return read_jsonl(run / "alerts.jsonl")


def tiny_run(algorithm: str, model: Path, output_dir: Path, *flags: str) -> Path:
    """The folder of :func:`run_tiny`'s run, which must have succeeded."""
    result = run_tiny(algorithm, model, output_dir, *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    return only_run(output_dir)


def load_experiment(name: str) -> ModuleType:
    """``experiments/<name>.py`` imported as a module (its ``Config``, ``main``, ``cli``)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` imported as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def only_run(output_dir: Path) -> Path:
    """The one run folder in ``output_dir``."""
    runs = [p for p in output_dir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def metrics_of(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def samples_of(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


# Metrics that measure time, not what was computed: they differ between any two runs.
# (And the memory peaks: they differ between runs of the same numbers.)
TIMING_KEYS = (
    "time", "perf/tokens_per_second", "train/step_time", "perf/memory_peak_gib",
    "perf/gpu_memory_peak_gib",
)  # fmt: skip


def computed_metrics(run: Path, ignore: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Each metrics line without its timings (and without ``ignore``), NaN as a string so
    that lines compare equal."""
    rows = []
    for row in metrics_of(run):
        kept = {
            k: ("nan" if v != v else v)
            for k, v in row.items()
            if k not in (*TIMING_KEYS, *ignore) and not k.startswith("perf/time")
        }
        rows.append(kept)
    return rows


class ForkedRuns:
    """Experiment runs as forks of one server that imported everything once
    (``tests/fork_server.py``): a run starts in well under a second instead of ~7 s.

    Example:
        >>> with ForkedRuns() as runs:  # doctest: +SKIP
        ...     pid = runs.start("ppo", flags)
        ...     status = runs.wait()  # or os.kill(pid, signal.SIGKILL) first
    """

    def __init__(self) -> None:
        self._server = subprocess.Popen(
            [sys.executable, "-m", "tests.fork_server"], env=script_env(), cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
        )  # fmt: skip
        self._buffer = b""
        self._exit: int | None = None

    def _message(self, timeout: float | None) -> dict[str, int] | None:
        """The server's next line, waiting up to ``timeout`` seconds (None: for ever)."""
        assert self._server.stdout is not None
        while b"\n" not in self._buffer:
            if not select.select([self._server.stdout], [], [], timeout)[0]:
                return None
            chunk = os.read(self._server.stdout.fileno(), 4096)
            assert chunk, "the fork server died"
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def start(self, algorithm: str, args: list[str], **options: Any) -> int:
        """Start ``experiments/<algorithm>.py args``; its pid. ``options``: the server's
        ``stdout``, ``stderr`` and ``env`` (tests/fork_server.py)."""
        assert self._server.stdin is not None
        self._exit = None
        self._server.stdin.write(
            (json.dumps({"algorithm": algorithm, "args": args, **options}) + "\n").encode()
        )
        message = self._message(None)
        assert message is not None
        return message["pid"]

    def poll(self) -> int | None:
        """The exit status of the run started last (-9: SIGKILL), or None while it runs."""
        if self._exit is None:
            message = self._message(0)
            self._exit = None if message is None else message["exit"]
        return self._exit

    def wait(self) -> int:
        """The exit status of the run started last, once it has ended."""
        if self._exit is None:
            message = self._message(None)
            assert message is not None
            self._exit = message["exit"]
        return self._exit

    def run(self, algorithm: str, args: list[str]) -> int:
        """Start a run and wait for it; its exit status."""
        self.start(algorithm, args)
        return self.wait()

    def run_captured(
        self, algorithm: str, args: list[str], *, timeout: float
    ) -> subprocess.CompletedProcess:
        """A run with the environment of :func:`script_env` now, its output captured, as
        ``subprocess.run`` gives it (``TimeoutExpired`` after ``timeout`` s, the run killed)."""
        with tempfile.TemporaryDirectory() as folder:
            out, err = Path(folder) / "stdout", Path(folder) / "stderr"
            pid = self.start(algorithm, args, stdout=str(out), stderr=str(err), env=script_env())
            message = self._message(timeout)
            if message is None:
                os.kill(pid, signal.SIGKILL)
                self.wait()
                raise subprocess.TimeoutExpired([algorithm, *args], timeout)
            self._exit = message["exit"]
            command = [sys.executable, str(ROOT / "experiments" / f"{algorithm}.py"), *args]
            return subprocess.CompletedProcess(
                command,
                self._exit,
                out.read_text(errors="replace"),
                err.read_text(errors="replace"),
            )

    def __enter__(self) -> ForkedRuns:
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._server.stdin is not None
        self._server.stdin.close()
        self._server.wait(timeout=60)
