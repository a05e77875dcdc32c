"""Hyper-parameter sweeps with Optuna: every trial is a normal run, and a killed sweep resumes.

    python -m rlm sweep configs/sweeps/ppo_lr_kl.yaml
    optuna-dashboard sqlite:///runs/sweeps/ppo_lr_kl/study.db    # browse the study

A sweep file names a base config (which names its algorithm), a search space over its
settings, an objective and a budget::

    name: ppo_lr_kl
    base: configs/demo.yaml
    trials: 12
    workers: 2                  # trials at once (give each one --threads: settings.threads)
    sampler: tpe                # tpe (default) or random
    pruner: median              # median (default), none, or threshold (with pruner_lower)
    objective:
      metric: eval/reward_mean  # any metric of the evaluations
      at: final                 # final (the last evaluation) or best (over evaluations)
      kl_penalty: 0.0           # objective = metric - kl_penalty * eval/kl there
      direction: maximize
    space:
      lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
      ppo.kl_coef: {type: float, low: 0.01, high: 0.3, log: true}
      lora_r: {type: categorical, choices: [4, 8, 16]}
    settings:                   # the same for every trial: shorter runs than the base's
      steps: 10

The study lives in ``<output_dir>/<name>/study.db`` (SQLite); trial ``n`` is the run folder
``<output_dir>/<name>/trials/trial-<n>`` (its config file beside it), a run of
``experiments/<algorithm>.py`` in the W&B group ``<name>`` with job type ``trial``. After
each evaluation the trial reports the objective there, and the pruner may stop it (the
run checkpoints and stops, as if preempted). Started again after a kill, the sweep resumes
the trials that were running from their newest checkpoints, then samples the rest.
``results.md`` beside the study holds every trial and the best settings.

One sweep process per study: trials still marked running when a sweep starts are taken
to be its own, interrupted.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rlm.config_files import read_settings_file
from rlm.errors import ConfigError
from rlm.files import read_jsonl, user_path
from rlm.preemption import PREEMPTED_EXIT_CODE, STOP_WITH_PARENT

PROJECT_DIR = Path(__file__).resolve().parents[1]
_POLL_S = 0.5


@dataclass
class Objective:
    """What a trial is scored by."""

    metric: str = "eval/reward_mean"
    at: Literal["final", "best"] = "final"
    kl_penalty: float = 0.0
    direction: Literal["maximize", "minimize"] = "maximize"

    def of(self, row: Mapping[str, Any]) -> float | None:
        """The objective at one evaluation's metrics (None when the metric is missing)."""
        value = row.get(self.metric)
        if value is None:
            return None
        return float(value) - self.kl_penalty * float(row.get("eval/kl", 0.0))

    def of_run(self, evaluations: list[dict[str, Any]]) -> tuple[float, int] | None:
        """The objective of a run's evaluations after training, and its step."""
        scored = [(v, int(r["step"])) for r in evaluations if r["step"] > 0
                  if (v := self.of(r)) is not None]  # fmt: skip
        if not scored:
            return None
        if self.at == "final":
            return scored[-1]
        better = max if self.direction == "maximize" else min
        return better(scored, key=lambda pair: pair[0])


@dataclass
class SweepSpec:
    """A sweep file, parsed and checked."""

    name: str
    base: Path
    space: dict[str, dict[str, Any]]
    trials: int = 12
    workers: int = 1
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "none", "threshold"] = "median"
    pruner_lower: float | None = None
    """With ``pruner: threshold``: stop a trial whose objective falls below this."""
    pruner_startup_trials: int = 3
    """With ``pruner: median``: trials completed before any is pruned."""
    seed: int = 0
    """The sampler's seed."""
    objective: Objective = field(default_factory=Objective)
    settings: dict[str, Any] = field(default_factory=dict)
    output_dir: Path = Path("runs/sweeps")

    @classmethod
    def read(cls, path: Path) -> SweepSpec:
        """Read and check a sweep file (:class:`ConfigError` naming what is wrong)."""
        values = read_settings_file(path)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown sweep key(s) {unknown}; known: {sorted(known)}")
        for key in ("name", "base", "space"):
            if key not in values:
                raise ConfigError(f"{path}: a sweep needs '{key}'")
        objective = values.pop("objective", {}) or {}
        bad = sorted(set(objective) - set(Objective.__dataclass_fields__))
        if bad:
            raise ConfigError(f"{path}: unknown objective key(s) {bad}")
        spec = cls(**{**values, "objective": Objective(**objective)})
        spec.base = user_path(spec.base)
        spec.output_dir = user_path(spec.output_dir)
        spec.check(path)
        return spec

    def check(self, source: Path) -> None:
        if not self.base.is_file():
            raise ConfigError(f"{source}: base config {self.base} does not exist")
        if "algorithm" not in read_settings_file(self.base):
            raise ConfigError(f"{source}: the base config {self.base} must name its algorithm")
        if self.trials < 1 or self.workers < 1:
            raise ConfigError(f"{source}: trials and workers must be at least 1")
        if self.objective.at not in ("final", "best"):
            raise ConfigError(f"{source}: objective.at is 'final' or 'best'")
        if self.pruner == "threshold" and self.pruner_lower is None:
            raise ConfigError(f"{source}: pruner 'threshold' needs pruner_lower")
        if not self.space:
            raise ConfigError(f"{source}: the search space is empty")
        distributions(self.space, source)  # raises on a bad entry

    @property
    def folder(self) -> Path:
        return self.output_dir / self.name

    @property
    def storage(self) -> str:
        return f"sqlite:///{self.folder / 'study.db'}"

    @property
    def algorithm(self) -> str:
        return str(read_settings_file(self.base)["algorithm"])


def distributions(space: Mapping[str, Mapping[str, Any]], source: Path | str = "sweep") -> dict:
    """The search space as Optuna distributions, by setting name."""
    import optuna.distributions as d

    made: dict[str, Any] = {}
    for name, entry in space.items():
        kind = entry.get("type")
        try:
            if kind == "float":
                made[name] = d.FloatDistribution(float(entry["low"]), float(entry["high"]),
                                                 log=bool(entry.get("log", False)))  # fmt: skip
            elif kind == "int":
                made[name] = d.IntDistribution(int(entry["low"]), int(entry["high"]),
                                               log=bool(entry.get("log", False)))  # fmt: skip
            elif kind == "categorical":
                made[name] = d.CategoricalDistribution(list(entry["choices"]))
            else:
                raise ConfigError(
                    f"{source}: space.{name}: type is float, int or categorical, got {kind!r}"
                )
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"{source}: space.{name}: {exc}") from None
    return made


def trial_config(spec: SweepSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """The base config with the sweep's fixed settings, then the trial's ``params``
    (``ppo.kl_coef`` sets ``kl_coef`` in the ``ppo`` section)."""
    config = copy.deepcopy(read_settings_file(spec.base))
    for key, value in [*spec.settings.items(), *params.items()]:
        *sections, leaf = key.split(".")
        target = config
        for section in sections:
            target = target.setdefault(section, {})
        _merge(target, leaf, copy.deepcopy(value))
    return config


def _merge(target: dict[str, Any], key: str, value: Any) -> None:
    """``target[key] = value``, merging a section into the one already there."""
    if isinstance(value, dict) and isinstance(target.get(key), dict):
        for inner, item in value.items():
            _merge(target[key], inner, item)
    else:
        target[key] = value


@dataclass
class TrialRun:
    """One trial's run folder and the process training it."""

    folder: Path
    command: list[str] | None
    """None when the run had finished before the sweep was interrupted."""
    log: Path
    last_step: int | None = None
    """The run's ``steps``: its evaluation there is the final one, told, never pruned."""

    def evaluations(self) -> list[dict[str, Any]]:
        """The evaluations the run has logged so far (a line being written is left out)."""
        return [r for r in read_jsonl(self.folder / "metrics.jsonl") if "eval/reward_mean" in r]


Outcome = Literal["complete", "pruned", "failed", "refused", "interrupted"]


def run_trial(
    trial: Any,
    run: TrialRun,
    objective: Objective,
    stop: threading.Event,
    reported: set[int] | None = None,
) -> tuple[Outcome, float | None, str]:
    """Run (or resume) ``run`` for ``trial``: report each evaluation's objective (but the
    steps in ``reported``, which an interrupted sweep reported), stop the run when the
    pruner says so or ``stop`` is set. Returns the outcome, the objective and a line for
    the log."""
    if run.command is None:
        return _scored(run, objective)
    # The run stops (checkpointed) if the sweep dies, even by SIGKILL: rlm.preemption.
    env = {**os.environ, STOP_WITH_PARENT: str(os.getpid())}
    with run.log.open("a", encoding="utf-8") as log:
        process = subprocess.Popen(
            run.command, cwd=PROJECT_DIR, stdout=log, stderr=subprocess.STDOUT, env=env
        )
        reported = set(reported or ())
        pruned_at: int | None = None
        while process.poll() is None:
            time.sleep(_POLL_S)
            if stop.is_set():
                process.send_signal(signal.SIGTERM)  # checkpoint and stop: resumable
                process.wait()
                return "interrupted", None, "stopped with the sweep; resumed by the next one"
            for row in run.evaluations() if pruned_at is None else []:
                step = int(row["step"])
                value = objective.of(row)
                if step == 0 or step in reported or value is None:
                    continue
                reported.add(step)
                trial.report(value, step)
                final = run.last_step is not None and step >= run.last_step
                if not final and trial.should_prune():
                    pruned_at = step
                    process.send_signal(signal.SIGTERM)  # checkpoint and stop
                    break
    status = process.returncode
    if pruned_at is not None:
        return "pruned", None, f"pruned after step {pruned_at}"
    for row in run.evaluations():  # those the run wrote after the last look: for the record
        step, value = int(row["step"]), objective.of(row)
        if step > 0 and step not in reported and value is not None:
            reported.add(step)
            trial.report(value, step)
    if status == PREEMPTED_EXIT_CODE:
        return "interrupted", None, "the run was preempted; resumed by the next sweep"
    if status != 0:
        lines = run.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        last = lines[-1] if lines else ""
        # 2: the experiment refused its settings (rlm.scripting.run_cli), before training.
        outcome: Outcome = "refused" if status == 2 else "failed"
        return outcome, None, f"exit status {status} ({last}); see {run.log}"
    return _scored(run, objective)


def _scored(run: TrialRun, objective: Objective) -> tuple[Outcome, float | None, str]:
    scored = objective.of_run(run.evaluations())
    if scored is None:
        return "failed", None, f"no {objective.metric} in the evaluations"
    return "complete", scored[0], f"objective {scored[0]:+.4f} at step {scored[1]}"


class Sweep:
    """A sweep's study and trials (see the module's docstring)."""

    def __init__(self, spec: SweepSpec, python: str = sys.executable) -> None:
        import optuna

        self.spec = spec
        self.python = python
        spec.folder.mkdir(parents=True, exist_ok=True)
        (spec.folder / "trials").mkdir(exist_ok=True)
        pruner: Any = {
            "median": lambda: optuna.pruners.MedianPruner(
                n_startup_trials=spec.pruner_startup_trials
            ),
            "none": optuna.pruners.NopPruner,
            "threshold": lambda: optuna.pruners.ThresholdPruner(lower=spec.pruner_lower),
        }[spec.pruner]()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(
            storage=spec.storage, study_name=spec.name, load_if_exists=True,
            pruner=pruner, direction=spec.objective.direction,
        )  # fmt: skip
        # Seeded by the trials so far: a resumed sweep must not draw its first points again.
        seed = spec.seed + len(self.study.trials)
        self.study.sampler = (
            optuna.samplers.TPESampler(seed=seed)
            if spec.sampler == "tpe"
            else optuna.samplers.RandomSampler(seed=seed)
        )
        self.distributions = distributions(spec.space)
        self._lock = threading.Lock()
        self.stop = threading.Event()
        self._reported: dict[int, set[int]] = {}
        self.error: str | None = None
        """Why the sweep stopped early, when a trial's settings were refused."""

    def trial_run(self, number: int, params: Mapping[str, Any]) -> TrialRun:
        """Trial ``number``'s run: a fresh one, or a resumed one when its folder exists."""
        name = f"trial-{number:03d}"
        trials = self.spec.folder / "trials"
        folder = trials / name
        script = PROJECT_DIR / "experiments" / f"{self.spec.algorithm}.py"
        command: list[str] | None
        if (folder / "summary.json").is_file():
            command = None  # finished before the sweep that ran it was interrupted
        elif (folder / "config.json").is_file():
            command = [self.python, str(script), "--resume", str(folder)]
        else:
            config_path = trials / f"{name}.yaml"
            config_path.write_text(yaml.safe_dump(trial_config(self.spec, params)))
            command = [
                self.python, str(script), "--config", str(config_path),
                "--output-dir", str(trials), "--run-name", name,
                "--wandb-group", self.spec.name, "--wandb-job-type", "trial",
            ]  # fmt: skip
        config = trial_config(self.spec, params)
        last_step = config.get("steps", config.get("run", {}).get("steps"))
        return TrialRun(folder, command, trials / f"{name}.log", last_step)

    def _work(self, queue: list[Any], say: Callable[[str], None]) -> None:
        from optuna.trial import TrialState

        while not self.stop.is_set():
            with self._lock:
                if not queue:
                    return
                trial = queue.pop(0)
                if trial is None:
                    trial = self.study.ask(self.distributions)
            run = self.trial_run(trial.number, trial.params)
            params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in trial.params.items())  # fmt: skip
            say(f"trial {trial.number}: {params}")
            outcome, value, line = run_trial(
                trial, run, self.spec.objective, self.stop, self._reported.get(trial.number)
            )
            say(f"trial {trial.number}: {outcome}, {line}")
            if outcome == "interrupted":
                self.stop.set()  # the others stop too; the next sweep resumes them all
                return
            if outcome == "refused":
                self.error = f"trial {trial.number} was refused: {line}"
                self.stop.set()  # bad settings: every trial would fail the same way
            state = {"pruned": TrialState.PRUNED, "failed": TrialState.FAIL,
                     "refused": TrialState.FAIL}.get(outcome)  # fmt: skip
            with self._lock:
                if state is None:
                    self.study.tell(trial, value)
                else:
                    self.study.tell(trial, state=state)
                write_results(self)

    def run(self, say: Callable[[str], None] = print) -> None:
        """Resume the trials left running, then sample until ``trials`` have ended."""
        from optuna.trial import Trial, TrialState

        ended = self.study.get_trials(deepcopy=False, states=(
            TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))  # fmt: skip
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        # (A FrozenTrial's id has no public name; Trial(study, id) continues that trial.)
        queue: list[Any] = [Trial(self.study, t._trial_id) for t in running]
        self._reported = {t.number: set(t.intermediate_values) for t in running}
        if running:
            say(f"resuming trial(s) {', '.join(str(t.number) for t in running)}")
        queue += [None] * max(self.spec.trials - len(ended) - len(running), 0)
        workers = [
            threading.Thread(target=self._work, args=(queue, say), daemon=True)
            for _ in range(min(self.spec.workers, max(len(queue), 1)))
        ]
        previous = signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        try:
            for worker in workers:
                worker.start()
            while any(w.is_alive() for w in workers):
                for worker in workers:
                    worker.join(timeout=0.2)
        except KeyboardInterrupt:
            self.stop.set()
            for worker in workers:
                worker.join()
        finally:
            signal.signal(signal.SIGTERM, previous)
        write_results(self)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def results_markdown(sweep: Sweep) -> str:
    """Every trial (state, settings, objective, final reward and KL, wall time, folder),
    the best trial's settings and the dashboard command. A pruned trial's objective is
    its last reported one, at the step given."""
    from optuna.trial import TrialState

    spec = sweep.spec
    names = list(spec.space)
    header = ["trial", "state", *names, "objective", "reward (final)", "KL (final)",
              "wall time s", "run"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for trial in sweep.study.get_trials(deepcopy=False):
        folder = spec.folder / "trials" / f"trial-{trial.number:03d}"
        summary_path = folder / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        objective_cell = _fmt(trial.value)
        if trial.state == TrialState.PRUNED and trial.intermediate_values:
            objective_cell += f" (step {max(trial.intermediate_values)})"  # where it stopped
        cells = [str(trial.number), trial.state.name.lower(),
                 *(_fmt(trial.params.get(n)) for n in names), objective_cell,
                 _fmt(summary.get("eval_reward_after")), _fmt(summary.get("eval_kl_after")),
                 _fmt(summary.get("wall_time_s")), f"`{folder.name}`"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    objective = spec.objective
    what = f"{objective.metric} at the {objective.at} evaluation"
    if objective.kl_penalty:
        what += f" - {objective.kl_penalty:g} x eval/kl"
    parts = [f"# Sweep {spec.name}", "",
             f"Objective ({objective.direction}): {what}. Sampler {spec.sampler} (seed "
             f"{spec.seed}), pruner {spec.pruner}; base config `{spec.base}`, fixed settings "
             f"{json.dumps(spec.settings)}.", "", *lines, ""]  # fmt: skip
    complete = sweep.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete:
        best = sweep.study.best_trial
        settings = ", ".join(f"`{k}: {_fmt(v)}`" for k, v in best.params.items())
        parts += [f"Best: trial {best.number}, objective {best.value:+.4f}, with {settings}.", ""]
    parts += ["Browse the study: `optuna-dashboard " + spec.storage + "`", ""]
    return "\n".join(parts)


def write_results(sweep: Sweep) -> Path:
    """Write :func:`results_markdown` to ``results.md`` beside the study."""
    path = sweep.spec.folder / "results.md"
    path.write_text(results_markdown(sweep), encoding="utf-8")
    return path
