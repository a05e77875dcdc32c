"""Comparing finished runs: arms (one config each) over seeds, aggregated with intervals.

A comparison folder holds one folder per arm with the run folders of its seeds,
``<output>/<arm>/<run>/``, as ``scripts/compare.py run`` makes it. Every run is read
through :class:`rlm.saved_runs.SavedRun`, the one schema every algorithm writes, so no
arm is special: an arm that started from another arm's policy (SFT then PPO) is
recognised by its ``--model``, and the warm start's wall time is counted with it.

:func:`report` writes the markdown: the table over seeds (bootstrap intervals of the mean
and the IQM, :mod:`rlm.aggregate`), which intervals overlap, one row per run, the
commands, and a figure of held-out reward and KL against generated tokens.

Example:
    >>> records = collect(Path("runs/compare"))  # doctest: +SKIP
    >>> print(report(records, figure_path=Path("docs/comparison.png")))  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlm.aggregate import Interval, band, curves_on_grid, summarize
from rlm.saved_runs import SavedRun

BASE_EVAL = "eval_base.json"
"""A run's final policy evaluated against the base model (scripts/evaluate_run.py)."""


@dataclass
class RunRecord:
    """One finished run of an arm: its summary and its held-out learning curve."""

    arm: str
    run: SavedRun
    warm_start: SavedRun | None = None
    """The run whose policy this one started from, when it belongs to another arm."""

    @property
    def seed(self) -> int:
        return self.run.seed

    @property
    def summary(self) -> dict[str, Any]:
        return self.run.summary

    @property
    def wall_time_s(self) -> float:
        """The run's wall time, and its warm start's."""
        extra = self.warm_start.summary["wall_time_s"] if self.warm_start else 0.0
        return float(self.summary["wall_time_s"]) + float(extra)

    @property
    def base(self) -> dict[str, Any] | None:
        """The final policy evaluated against the base model (``BASE_EVAL``), if done."""
        path = self.run.path / BASE_EVAL
        return json.loads(path.read_text()) if path.is_file() else None

    def curve(self, key: str) -> tuple[list[float], list[float]]:
        """``key`` (``eval/reward_mean``, ``eval/kl``) against generated tokens."""
        rows = self.run.evaluations()
        return [float(r.get("perf/tokens", 0)) for r in rows], [float(r[key]) for r in rows]


def finished_runs(folder: Path) -> list[SavedRun]:
    """The finished runs in ``folder``, oldest first."""
    summaries = sorted(folder.glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    return [SavedRun.open(p.parent) for p in summaries]


def newest_run(folder: Path, seed: int) -> SavedRun | None:
    """The newest finished run of ``seed`` in ``folder``."""
    runs = [r for r in finished_runs(folder) if r.seed == seed]
    return runs[-1] if runs else None


def _warm_start(run: SavedRun, output_dir: Path) -> SavedRun | None:
    """The run of another arm under ``output_dir`` whose policy ``run`` started from.

    Matched by the model path's last parts, ``<arm>/<run>/policy``, whatever folder it was
    written relative to.
    """
    model = Path(run.model)
    if model.name != "policy" or len(model.parts) < 3:
        return None
    candidate = output_dir / model.parts[-3] / model.parts[-2]
    return SavedRun.open(candidate) if (candidate / "summary.json").is_file() else None


def collect(output_dir: Path, arms: Sequence[str] | None = None) -> dict[str, list[RunRecord]]:
    """Finished runs by arm: ``arms`` in that order, or every arm folder, sorted."""
    if arms is None:
        arms = sorted(p.name for p in output_dir.iterdir() if p.is_dir() and finished_runs(p))
    records: dict[str, list[RunRecord]] = {}
    for arm in arms:
        for run in finished_runs(output_dir / arm):
            record = RunRecord(arm, run, _warm_start(run, output_dir))
            records.setdefault(arm, []).append(record)
    return records


# --- tables ---------------------------------------------------------------------------------


def _fmt(interval: Interval, signed: bool = True) -> str:
    return interval.format(3 if signed else 2, signed=signed)


def separator(header: str) -> str:
    """The markdown line under ``header``."""
    return "|" + " --- |" * (header.count("|") - 1)


def has_base_kl(records: Mapping[str, list[RunRecord]]) -> bool:
    return all(r.base is not None for runs in records.values() for r in runs)


def aggregate_table(
    records: Mapping[str, list[RunRecord]], labels: Mapping[str, str]
) -> tuple[str, dict[str, dict[str, Any]]]:
    """The markdown table over seeds, and the statistics behind it.

    The KL to the base model is a column when every run has been evaluated against it.
    """
    base = has_base_kl(records)
    header = (
        "| arm | seeds | held-out reward after, mean [95% CI] | IQM [95% CI] "
        "| gain over before (mean) | KL to reference after (nats), mean [95% CI] "
        "| KL IQM [95% CI] |"
    )
    if base:
        header += " KL to base model after, mean [95% CI] |"
    header += " generated tokens (mean) | wall time s (mean) |"
    lines = [header, separator(header)]
    stats: dict[str, dict[str, Any]] = {}
    for arm, runs in records.items():
        after = [float(r.summary["eval_reward_after"]) for r in runs]
        before = [float(r.summary["eval_reward_before"]) for r in runs]
        kl = [float(r.summary["eval_kl_after"]) for r in runs]
        reward_stats, kl_stats = summarize(after), summarize(kl)
        stats[arm] = {"reward": reward_stats, "kl": kl_stats, "seeds": len(runs)}
        gain = float(np.mean(after) - np.mean(before))
        tokens = float(np.mean([r.summary["generated_tokens"] for r in runs]))
        wall = float(np.mean([r.wall_time_s for r in runs]))
        row = (
            f"| {labels.get(arm, arm)} | {len(runs)} | {_fmt(reward_stats['mean'])} "
            f"| {_fmt(reward_stats['iqm'])} | {gain:+.3f} | {_fmt(kl_stats['mean'], False)} "
            f"| {_fmt(kl_stats['iqm'], False)} |"
        )
        if base:
            base_kl = [float(r.base["eval/kl"]) for r in runs if r.base is not None]
            stats[arm]["base_kl"] = summarize(base_kl)
            row += f" {_fmt(stats[arm]['base_kl']['mean'], False)} |"
        lines.append(row + f" {tokens:,.0f} | {wall:,.0f} |")
    return "\n".join(lines), stats


# The diagnostics table's columns: (summary key, header, digits).
_DIAGNOSTIC_COLUMNS = [
    ("eval/distinct_1", "distinct-1", 3), ("eval/distinct_2", "distinct-2", 3),
    ("eval/repeated_3gram_share", "repeated 3-grams", 3),
    ("eval/completion_length", "tokens", 1), ("eval/cut_share", "cut at the limit", 2),
    ("eval/ref_perplexity", "reference perplexity", 1), ("eval/entropy", "entropy", 2),
    ("eval/heldout_gap", "held-out gap (SD)", 2),
]  # fmt: skip


def diagnostics_table(records: Mapping[str, list[RunRecord]], labels: Mapping[str, str]) -> str:
    """Means over seeds of the final evaluation's over-optimisation diagnostics
    (:data:`rlm.diagnostics.DIAGNOSTICS`) and of the held-out reward model's score, with
    the same for every run's start as the first row; "" when the runs logged none."""
    runs = [r for rs in records.values() for r in rs]
    if not runs or not all(r.summary.get("diagnostics_after") for r in runs):
        return ""
    heldout = all("eval_heldout_reward_after" in r.summary for r in runs)
    header = "| arm |" + (" held-out reward model |" if heldout else "")
    header += "".join(f" {name} |" for _, name, _ in _DIAGNOSTIC_COLUMNS)

    def row(label: str, group: list[RunRecord], when: str) -> str:
        cells = [label]
        if heldout:
            cells.append(
                f"{np.mean([r.summary[f'eval_heldout_reward_{when}'] for r in group]):+.3f}"
            )
        for key, _, digits in _DIAGNOSTIC_COLUMNS:
            values = [r.summary[f"diagnostics_{when}"].get(key) for r in group]
            present = [v for v in values if v is not None]
            cells.append(f"{np.mean(present):.{digits}f}" if present else "")
        return "| " + " | ".join(cells) + " |"

    lines = [header, separator(header), row("before training (every run)", runs, "before")]
    lines += [row(labels.get(arm, arm), rs, "after") for arm, rs in records.items()]
    return "\n".join(lines)


def runs_table(records: Mapping[str, list[RunRecord]], labels: Mapping[str, str]) -> str:
    """One row per run (± is the evaluation's standard error); "re-evaluated" is the final
    policy's reward in ``BASE_EVAL``."""
    header = (
        "| arm | seed | held-out reward before | after | gain | re-evaluated "
        "| KL to reference | KL to base | tokens | wall time s | run |"
    )
    lines = [header, separator(header)]
    for arm, runs in records.items():
        for r in sorted(runs, key=lambda r: r.seed):
            s, base = r.summary, r.base
            again = "" if base is None else f"{base['eval/reward_mean']:+.3f}"
            base_kl = "" if base is None else f"{base['eval/kl']:.2f}"
            gain = s["eval_reward_after"] - s["eval_reward_before"]
            lines.append(
                f"| {labels.get(arm, arm)} | {r.seed} "
                f"| {s['eval_reward_before']:+.3f} ± {s.get('eval_reward_sem_before', 0):.3f} "
                f"| {s['eval_reward_after']:+.3f} ± {s.get('eval_reward_sem_after', 0):.3f} "
                f"| {gain:+.3f} | {again} | {s['eval_kl_after']:.2f} | {base_kl} "
                f"| {int(s['generated_tokens']):,} | {r.wall_time_s:,.0f} | `{r.run.path.name}` |"
            )
    return "\n".join(lines)


def reproduction(records: Mapping[str, list[RunRecord]]) -> str:
    """How closely evaluating each final policy again repeated the run's own evaluation."""
    pairs = [
        (float(r.summary["eval_reward_after"]), float(r.base["eval/reward_mean"]))
        for runs in records.values() for r in runs if r.base is not None
    ]  # fmt: skip
    if not pairs:
        return "No run has been evaluated against the base model (`base-kl`) yet."
    gap = max(abs(a - b) for a, b in pairs)
    policies = "policy" if len(pairs) == 1 else "policies"
    return (
        f"Evaluating {len(pairs)} final {policies} again (scripts/evaluate_run.py, same "
        f"prompts, seed and sampling) gave held-out rewards within {gap:.1e} of the recorded "
        "ones."
    )


def reading(stats: Mapping[str, dict[str, Any]], labels: Mapping[str, str]) -> str:
    """Which arm came first and last, and which intervals overlap (no verdict beyond that)."""
    if len(stats) < 2:
        return "Fewer than two arms: nothing to compare."
    order = sorted(stats, key=lambda a: stats[a]["reward"]["mean"].estimate, reverse=True)
    name = {a: labels.get(a, a) for a in order}
    lines = [f"Highest mean held-out reward: {name[order[0]]}; lowest: {name[order[-1]]}."]
    if min(stats[a]["seeds"] for a in order) < 2:
        lines.append("- One seed for some arm: no interval to compare; run more seeds.")
        return "\n".join(lines)
    for i, a in enumerate(order):  # every pair, the higher mean first
        for b in order[i + 1 :]:
            x, y = stats[a]["reward"]["mean"], stats[b]["reward"]["mean"]
            verb = "overlap" if x.low <= y.high and y.low <= x.high else "do not overlap"
            lines.append(f"- {name[a]} vs {name[b]}: the 95% intervals of the mean {verb}.")
    return "\n".join(lines)


# --- figure and report ----------------------------------------------------------------------


def figure(records: Mapping[str, list[RunRecord]], path: Path, labels: Mapping[str, str]) -> None:
    """Held-out reward and KL against generated tokens, mean over seeds with a 95% band;
    with the KL to the base model of every run, a third panel: each run's final reward
    against that KL (what each arm paid for its reward)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = has_base_kl(records)
    fig, axes = plt.subplots(1, 3 if base else 2, figsize=(16 if base else 11, 4))
    for arm, runs in records.items():
        label = labels.get(arm, arm)
        curves = {key: [r.curve(key) for r in runs] for key in ("eval/reward_mean", "eval/kl")}
        end = min(max(tokens) for tokens, _ in curves["eval/reward_mean"])
        grid = np.linspace(0, end, 40)
        for ax, key in zip(axes[:2], curves, strict=True):
            mean, low, high = band(curves_on_grid(curves[key], grid))
            (line,) = ax.plot(grid, mean, label=f"{label} (n={len(runs)})")
            ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.2)
        if base:
            kl = [float(r.base["eval/kl"]) for r in runs if r.base is not None]
            after = [float(r.summary["eval_reward_after"]) for r in runs]
            axes[2].scatter(kl, after, color=line.get_color(), label=label)
    axes[0].set_ylabel("held-out reward (mean)")
    axes[1].set_ylabel("KL to the run's reference (nats per completion)")
    for ax in axes[:2]:
        ax.set_xlabel("generated tokens (policy, training)")
    if base:
        axes[2].set_xlabel("KL to the base model after training (nats per completion)")
        axes[2].set_ylabel("held-out reward after training")
        axes[2].set_title("one point per run", fontsize=10)
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("Mean over seeds, 95% bootstrap band")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _diagnostics_part(
    records: Mapping[str, list[RunRecord]], labels: Mapping[str, str]
) -> list[str]:
    table = diagnostics_table(records, labels)
    if not table:
        return []
    return [
        "Over-optimisation diagnostics of the final evaluation, means over seeds "
        "([diagnostics.md](diagnostics.md) defines them; the held-out reward model scores "
        "the same samples and is never trained on):",
        "",
        table,
        "",
    ]


def report(
    records: Mapping[str, list[RunRecord]],
    *,
    figure_path: Path,
    labels: Mapping[str, str] | None = None,
    source: str = "",
    commands: Sequence[str] = (),
    notes: str | None = None,
) -> str:
    """The markdown report (and its figure, written to ``figure_path``).

    ``source`` names the folder the runs came from, ``commands`` are the command lines
    that made them, ``notes`` a markdown text included as it is (how the runs were made).
    """
    labels = labels or {}
    table, stats = aggregate_table(records, labels)
    figure(records, figure_path, labels)
    seeds = sorted({r.seed for runs in records.values() for r in runs})
    total = sum(r.wall_time_s for runs in records.values() for r in runs)
    parts = [
        f"# Comparison: {', '.join(labels.get(a, a) for a in records)}",
        "",
        f"Written by `python scripts/compare.py report` from the runs in `{source}`. "
        "Held-out reward: mean reward over the evaluation prompts after training. KL to "
        "reference: sequence KL, on those samples, to the run's own reference policy, its "
        "starting model. KL to base model: the same, to the base model for every run "
        "(`base-kl`). Intervals: 95% percentile bootstrap over seeds (10,000 resamples, seed "
        "0) of the mean and of the interquartile mean (rliable; with fewer than 4 seeds the "
        "IQM is the mean). With 3 seeds an interval is coarse: read overlapping intervals as "
        "no evidence of a difference.",
        "",
        f"Seeds: {', '.join(map(str, seeds))}. Total wall time: {total:,.0f} s. The gain is "
        "over the run's own start; the wall time of a run that started from another arm's "
        "policy includes that run's.",
        "",
        table,
        "",
        reading(stats, labels),
        "",
        *_diagnostics_part(records, labels),
        reproduction(records),
        "",
        f"![held-out reward and KL against generated tokens]({figure_path.name})",
        "",
        *([notes.strip(), ""] if notes else []),
        "## Runs",
        "",
        runs_table(records, labels),
        "",
        "## Commands",
        "",
        "```",
        *commands,
        "```",
        "",
    ]
    return "\n".join(parts)
