"""Alarms: thresholds on the diagnostics of every evaluation (:mod:`rlm.diagnostics`).

When an alarm trips, the run prints one line saying what tripped and by how much, appends
it to ``alerts.jsonl`` in the run folder (and ``summary.json``'s ``alerts``), sends it to
W&B with ``wandb.alert`` when online, and carries on: an alarm asks a person to read the
samples, it does not stop the run. An alarm that stays tripped is reported once, when it
trips; it is reported again if it clears and trips again.

Most alarms compare an evaluation with the one before training, so that they hold for any
task and completion length; ``--alarm-<name> none`` turns one off. The defaults and why:

=================  ===========================================================  =========
alarm              trips when                                                   default
=================  ===========================================================  =========
repetition         share of repeated word 3-grams within completions above      0.1
distinct_drop      distinct-2 below this fraction of its value before training  0.6
perplexity_rise    perplexity under the reference above this multiple of before 3.0
length_change      mean length this many times longer or shorter than before    2.0
kl_per_token       KL to the reference per policy token above (nats)            1.0
heldout_gap        training minus held-out reward, standardised, above          1.0
=================  ===========================================================  =========

docs/diagnostics.md gives the reason for each default: what these diagnostics were for
the base model and for the PPO and GRPO runs of the algorithm comparison.

Example:
    >>> before = {"eval/distinct_2": 0.8}
    >>> [trip.message for trip in check_alarms({"eval/distinct_2": 0.2}, before,
    ...                                        AlarmSettings(), step=30)]
    ['alarm at step 30: distinct_drop: eval/distinct_2 is 0.25x its value before training (0.8 -> 0.2; alarm below 0.6x)']
"""  # noqa: E501

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from rlm.diagnostics import REPEAT_N
from rlm.errors import ConfigError

Measure = Literal["value", "ratio"]
Direction = Literal["above", "below", "either"]


@dataclass(frozen=True)
class Alarm:
    """What one alarm watches: ``metric``'s value, or its ratio to the value before
    training, against a threshold (``either``: above it or below its inverse)."""

    metric: str
    measure: Measure
    direction: Direction


ALARMS: dict[str, Alarm] = {
    "repetition": Alarm(f"eval/repeated_{REPEAT_N}gram_share", "value", "above"),
    "distinct_drop": Alarm("eval/distinct_2", "ratio", "below"),
    "perplexity_rise": Alarm("eval/ref_perplexity", "ratio", "above"),
    "length_change": Alarm("eval/completion_length", "ratio", "either"),
    "kl_per_token": Alarm("eval/kl_per_token", "value", "above"),
    "heldout_gap": Alarm("eval/heldout_gap", "value", "above"),
}
"""Every alarm by name; :class:`AlarmSettings` holds each one's threshold."""


@dataclass
class AlarmSettings:
    """Thresholds of the alarms on each evaluation's diagnostics (None: off)."""

    alarm_repetition: float | None = 0.1
    """Alarm when more than this share of the completions' word 3-grams repeat an earlier
    one in the same completion (one word over and over: near 1; fluent text: near 0)."""
    alarm_distinct_drop: float | None = 0.6
    """Alarm when distinct-2 over the evaluation's completions falls below this fraction
    of its value before training (the policy writes the same things for every prompt)."""
    alarm_perplexity_rise: float | None = 3.0
    """Alarm when the completions' perplexity under the reference model rises above this
    multiple of its value before training (text the starting model finds unlikely)."""
    alarm_length_change: float | None = 2.0
    """Alarm when the mean completion length grows or shrinks by more than this factor
    from its value before training."""
    alarm_kl_per_token: float | None = 1.0
    """Alarm when the KL to the reference exceeds this many nats per policy token."""
    alarm_heldout_gap: float | None = 1.0
    """Alarm when the training reward's rise exceeds the held-out reward's by more than
    this many standard deviations (each measured before training); needs
    --heldout-reward."""

    def thresholds(self) -> dict[str, float]:
        """The threshold of every alarm that is on, by alarm name."""
        values = {name.removeprefix("alarm_"): value for name, value in asdict(self).items()}
        return {name: value for name, value in values.items() if value is not None}

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a threshold that is not positive."""
        for name, value in self.thresholds().items():
            if not value > 0:
                flag = f"--alarm-{name.replace('_', '-')}"
                raise ConfigError(f"{flag} must be > 0 (or None: off), got {value}")


@dataclass(frozen=True)
class Trip:
    """An alarm that tripped at an evaluation."""

    step: int
    alarm: str
    metric: str
    value: float
    """The metric's value at the evaluation."""
    before: float | None
    """Its value before training (for alarms that compare with it)."""
    threshold: float
    message: str

    def details(self) -> dict[str, Any]:
        """What tripped, by how much: the fields besides ``step`` and ``message``."""
        fields = asdict(self)
        return {k: v for k, v in fields.items() if k not in ("step", "message")}


def _describe(
    name: str, alarm: Alarm, value: float, before: float | None, threshold: float, step: int
) -> str:
    head = f"alarm at step {step}: {name}: {alarm.metric}"
    if alarm.measure == "value":
        return f"{head} is {value:.4g} (alarm {alarm.direction} {threshold:g})"
    assert before is not None
    ratio = value / before
    limit = {"above": f"above {threshold:g}x", "below": f"below {threshold:g}x"}.get(
        alarm.direction, f"beyond {threshold:g}x either way"
    )
    return (
        f"{head} is {ratio:.2f}x its value before training "
        f"({before:.4g} -> {value:.4g}; alarm {limit})"
    )


def _tripped(alarm: Alarm, measured: float, threshold: float) -> bool:
    if alarm.direction == "above":
        return measured > threshold
    if alarm.direction == "below":
        return measured < threshold
    return measured > threshold or measured < 1 / threshold


def check_alarms(
    metrics: Mapping[str, float],
    before: Mapping[str, float],
    settings: AlarmSettings,
    *,
    step: int,
) -> list[Trip]:
    """The alarms that ``metrics`` (an evaluation's) trip, compared with ``before`` (the
    evaluation before training). A metric that is missing or not finite trips nothing."""
    trips = []
    for name, threshold in settings.thresholds().items():
        alarm = ALARMS[name]
        value = metrics.get(alarm.metric)
        if value is None or not math.isfinite(value):
            continue
        reference = None
        measured = value
        if alarm.measure == "ratio":
            reference = before.get(alarm.metric)
            if reference is None or not math.isfinite(reference) or reference <= 0:
                continue
            measured = value / reference
        if _tripped(alarm, measured, threshold):
            message = _describe(name, alarm, value, reference, threshold, step)
            trips.append(Trip(step, name, alarm.metric, value, reference, threshold, message))
    return trips


class AlarmWatch:
    """The alarms of one run over its evaluations: which are tripped now, which are new.

    Example:
        >>> watch = AlarmWatch(AlarmSettings(alarm_kl_per_token=1.0))
        >>> [t.alarm for t in watch.update({"eval/kl_per_token": 2.0}, {}, step=10)]
        ['kl_per_token']
        >>> watch.update({"eval/kl_per_token": 3.0}, {}, step=20)  # still tripped: not new
        []
    """

    def __init__(self, settings: AlarmSettings, active: set[str] | None = None) -> None:
        self.settings = settings
        self.active: set[str] = set(active or ())

    def update(
        self, metrics: Mapping[str, float], before: Mapping[str, float], *, step: int
    ) -> list[Trip]:
        """The alarms that trip at this evaluation and were not tripped at the last one."""
        trips = check_alarms(metrics, before, self.settings, step=step)
        new = [trip for trip in trips if trip.alarm not in self.active]
        self.active = {trip.alarm for trip in trips}
        return new
