"""Diagnostics and alarms recomputed from a run folder's saved samples and metrics.

A run logs its diagnostics as it evaluates (:mod:`rlm.evaluation`); this module computes
them again afterwards from ``samples.jsonl`` (every evaluation's completions) and
``metrics.jsonl``, with any alarm thresholds: to check old runs, or runs made with other
thresholds (``python -m rlm diagnose RUN ... --alarm repetition=0.1``).

The text diagnostics need only the completions; for multi-turn tasks the saved sample
joins the turns with the environment's replies (lines starting ``[env] ``), which are left
out here. Perplexity, KL and the cut share come from the metrics the run logged (a run
made before they were logged has none of them).

Example:
    >>> rows = diagnose_run(RunFolder.open(Path("runs/compare/grpo/rlm_...")))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from rlm.alarms import ALARMS, AlarmSettings, AlarmWatch, Trip
from rlm.config_files import apply_settings
from rlm.diagnostics import DIAGNOSTICS, REPEAT_N, text_diagnostics
from rlm.errors import ConfigError
from rlm.run_folders import RunFolder

# What the samples cannot give again: taken from the run's logged evaluations.
_LOGGED = ["eval/reward_mean", *(k for k in DIAGNOSTICS if k not in text_diagnostics([]))]


def policy_text(completion: str) -> str:
    """A saved sample's completion without the environment's replies (``[env] `` lines)."""
    return "\n".join(line for line in completion.split("\n") if not line.startswith("[env] "))


def run_alarm_settings(
    run: RunFolder, overrides: dict[str, float | None] | None = None
) -> AlarmSettings:
    """The alarm thresholds the run was made with (the defaults, for a run made before
    alarms existed), with ``overrides`` (alarm name -> threshold) applied."""
    saved = run.settings.get("alarms", {})
    settings = apply_settings(AlarmSettings(), saved, source=str(run.path / "config.json"))
    names = set(ALARMS)
    for name, value in (overrides or {}).items():
        if name not in names:
            raise ConfigError(f"unknown alarm {name!r}; the alarms are {', '.join(sorted(names))}")
        setattr(settings, f"alarm_{name}", value)
    settings.validate()
    return settings


@dataclass(frozen=True)
class Diagnosis:
    """A run's diagnostics at each evaluation, and the alarms they trip."""

    run: RunFolder
    evaluations: dict[int, dict[str, float]]
    """By step: the text diagnostics recomputed from the samples, and the logged rest."""
    trips: list[Trip]
    """Alarms as they tripped, evaluation by evaluation (each reported once, until it clears)."""

    @property
    def last(self) -> dict[str, float]:
        return self.evaluations[max(self.evaluations)] if self.evaluations else {}


def diagnose_run(run: RunFolder, settings: AlarmSettings | None = None) -> Diagnosis:
    """Recompute ``run``'s diagnostics at every evaluation with saved samples, and sound
    the alarms of ``settings`` (the run's own thresholds when None) against the first."""
    settings = settings or run_alarm_settings(run)
    texts: dict[int, list[str]] = defaultdict(list)
    for row in run.samples:
        if row.get("key", "eval/samples") == "eval/samples":
            texts[int(row["step"])].append(policy_text(str(row.get("completion", ""))))
    logged = {int(row["step"]): row for row in run.evaluations}
    evaluations: dict[int, dict[str, float]] = {}
    for step in sorted(texts):
        values: dict[str, float] = {
            k: logged[step][k] for k in _LOGGED if k in logged.get(step, {})
        }
        if (
            "eval/kl_per_token" not in values
            and {"eval/kl", "eval/completion_length"} <= values.keys()
        ):
            values["eval/kl_per_token"] = values["eval/kl"] / max(
                values["eval/completion_length"], 1
            )
        values.update(text_diagnostics(texts[step]))
        evaluations[step] = values
    trips: list[Trip] = []
    if evaluations:
        first = min(evaluations)
        watch = AlarmWatch(settings)
        for step, values in evaluations.items():
            if step != first:
                trips += watch.update(values, evaluations[first], step=step)
    return Diagnosis(run, evaluations, trips)


COLUMNS = {
    "eval/reward_mean": "reward",
    "eval/distinct_1": "distinct-1",
    "eval/distinct_2": "distinct-2",
    f"eval/repeated_{REPEAT_N}gram_share": f"repeated {REPEAT_N}-grams",
    "eval/completion_length": "length",
    "eval/ref_perplexity": "ref. perplexity",
    "eval/kl_per_token": "KL/token",
}


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3g}"


def format_diagnoses(diagnoses: list[Diagnosis]) -> str:
    """A markdown table of each run's first and last evaluation, then every alarm."""
    header = ["run", "step", *COLUMNS.values(), "alarms tripped"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for diagnosis in diagnoses:
        if not diagnosis.evaluations:
            lines.append(f"| {diagnosis.run.name} | no saved samples |" + " |" * (len(header) - 2))
            continue
        steps = sorted(diagnosis.evaluations)
        tripped = ", ".join(sorted({t.alarm for t in diagnosis.trips})) or "none"
        for step in (steps[0], steps[-1]):
            values = diagnosis.evaluations[step]
            cells = [diagnosis.run.name, str(step), *(_fmt(values.get(k)) for k in COLUMNS)]
            cells.append(tripped if step == steps[-1] else "")
            lines.append("| " + " | ".join(cells) + " |")
    messages = [f"- {d.run.name}: {t.message}" for d in diagnoses for t in d.trips]
    return "\n".join(lines + ["", *(messages or ["No alarm tripped."])])
