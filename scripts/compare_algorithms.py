"""Compare PPO, GRPO, RLOO and SFT-then-PPO over seeds at an equal budget of generated tokens.

    python scripts/compare_algorithms.py plan               # print the commands, run nothing
    python scripts/compare_algorithms.py run --seeds 1 2 3  # every algorithm x seed, then report
    python scripts/compare_algorithms.py run --algorithms grpo --seeds 4   # add to the folder
    python scripts/compare_algorithms.py base-kl            # KL of every final policy to the base
    python scripts/compare_algorithms.py report             # table and figure from finished runs
    python scripts/compare_algorithms.py time               # CPU s per step of each script
    python scripts/compare_algorithms.py run --token-budget 9600 -- --threads 1  # flags for all

Every algorithm gets the same budget: ``--iterations`` steps of ``--batch-size``
completions of at most ``--max-new-tokens`` tokens (PPO's defaults: 30 x 16 x 20, at most
9,600 generated tokens), or, with ``--token-budget N``, exactly the steps it takes each run
to generate N tokens (algorithms whose completions are shorter then get more steps), on
the default environment and model, evaluated on the same held-out prompts every
``--eval-every`` steps. "sft_ppo" first trains experiments/sft_warm_start.py with the same
seed, then PPO from its model; the SFT step generates nothing, so its budget of generated
tokens is PPO's.

Runs go one after the other (wall times are then comparable) into
``<output-dir>/<algorithm>/<run>``, and every command is appended to
``<output-dir>/commands.jsonl``. Each run's KL is to its own reference, which for sft_ppo
is the SFT model; ``base-kl`` (also the last step of ``run``) therefore evaluates every
final policy again with scripts/evaluate_run.py against ``--base-model``, into
``<run>/eval_base.json``, which also checks that the recorded evaluation repeats.

``report`` reads each run's ``summary.json``, ``metrics.jsonl`` and ``eval_base.json`` and
writes ``docs/algorithm_comparison.md`` (tables with bootstrap confidence intervals of the
mean and the interquartile mean over seeds; the commands, seeds and wall times; and
``<output-dir>/notes.md``, if present, on how the runs were made) and
``docs/algorithm_comparison.png`` (held-out reward and KL against generated tokens, one
line per algorithm with a 95% band). ``time`` runs each script for ``--timing-steps``
steps at one thread, measures CPU seconds per step (robust to other processes on the
machine) and estimates the CPU time of the whole comparison.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a file: import rlm from the checkout

from rlm.aggregate import Interval, band, curves_on_grid, summarize  # noqa: E402

ALGORITHMS = ("ppo", "grpo", "rloo", "sft_ppo")
LABELS = {
    "ppo": "PPO (rlm)",
    "grpo": "GRPO (TRL)",
    "rloo": "RLOO (TRL)",
    "sft_ppo": "SFT, then PPO",
}
SCRIPTS = {
    "ppo": "experiments/ppo_sentiment.py",
    "grpo": "experiments/grpo.py",
    "rloo": "experiments/rloo.py",
    "sft": "experiments/sft_warm_start.py",
}
BASE_EVAL = "eval_base.json"
"""A run's final policy evaluated against the base model (scripts/evaluate_run.py)."""


# --- running ------------------------------------------------------------------------------


def run_commands(
    algorithm: str, seed: int, args: argparse.Namespace, sft_model: str | None = None
) -> list[str]:
    """The command line of one run (for sft_ppo, the PPO half; see :func:`sft_command`)."""
    out = Path(args.output_dir) / algorithm
    common = [
        "--seed", str(seed), "--batch-size", str(args.batch_size),
        "--max-new-tokens", str(args.max_new_tokens), "--eval-every", str(args.eval_every),
        "--output-dir", str(out), "--wandb", args.wandb, *args.extra,
    ]  # fmt: skip
    steps = args.iterations
    if args.token_budget is not None:
        # Stop on generated tokens; the step count is only a (generous) upper bound.
        common += ["--token-budget", str(args.token_budget)]
        steps = 2 * args.iterations
    if algorithm in ("ppo", "sft_ppo"):
        command = [sys.executable, SCRIPTS["ppo"], "--iterations", str(steps), *common]
        if algorithm == "sft_ppo":
            command += ["--model", sft_model or "<sft run>/model", "--exp-name", "sft_ppo"]
        return command
    return [sys.executable, SCRIPTS[algorithm], "--steps", str(steps), *common]


def sft_command(seed: int, args: argparse.Namespace) -> list[str]:
    """The supervised warm start before sft_ppo's PPO run."""
    return [
        sys.executable, SCRIPTS["sft"], "--seed", str(seed),
        "--output-dir", str(Path(args.output_dir) / "sft"), "--wandb", args.wandb,
    ]  # fmt: skip


def newest_run(folder: Path, seed: int) -> Path:
    """The newest finished run of ``seed`` in ``folder``."""
    runs = [r for r in folder.glob("*/summary.json") if read_seed(r.parent) == seed]
    if not runs:
        raise SystemExit(f"no finished run of seed {seed} in {folder}")
    return max(runs, key=lambda p: p.stat().st_mtime).parent


def execute(command: list[str], log: Path) -> float:
    """Run ``command`` from the project root, record it in ``log``; return its wall time."""
    print("$", shlex.join(command), flush=True)
    start = time.time()
    result = subprocess.run(command, cwd=ROOT)
    elapsed = time.time() - start
    with log.open("a", encoding="utf-8") as f:
        record = {"command": shlex.join(command), "returncode": result.returncode}
        f.write(json.dumps({**record, "wall_time_s": round(elapsed, 1)}) + "\n")
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {shlex.join(command)}")
    return elapsed


def base_kl_command(run: Path, args: argparse.Namespace) -> list[str]:
    """Evaluate ``run``'s final policy again, with the base model as the reference."""
    return [
        sys.executable, "scripts/evaluate_run.py", str(run), "--reference", args.base_model,
        "--output", str(run / BASE_EVAL),
    ]  # fmt: skip


def evaluate_against_base(args: argparse.Namespace) -> None:
    """``base_kl_command`` for every finished run of ``args.algorithms`` still without one."""
    output = Path(args.output_dir)
    for algorithm in args.algorithms:
        for summary in sorted((output / algorithm).glob("*/summary.json")):
            if not (summary.parent / BASE_EVAL).exists():
                execute(base_kl_command(summary.parent, args), output / "commands.jsonl")


def run_all(args: argparse.Namespace) -> None:
    """Every algorithm x seed, one after the other."""
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    log = output / "commands.jsonl"
    for seed in args.seeds:
        for algorithm in args.algorithms:
            sft_model = None
            if algorithm == "sft_ppo":
                execute(sft_command(seed, args), log)
                sft_model = str(newest_run(output / "sft", seed) / "model")
            execute(run_commands(algorithm, seed, args, sft_model), log)


# --- reading runs -------------------------------------------------------------------------


def read_seed(run: Path) -> int | None:
    """The seed in a run's config.json (top level for PPO and SFT, under run/ for TRL RL)."""
    config = json.loads((run / "config.json").read_text())
    seed = config.get("seed", config.get("run", {}).get("seed"))
    return None if seed is None else int(seed)


@dataclass
class RunRecord:
    """One finished run: its summary and its held-out learning curve."""

    algorithm: str
    seed: int
    path: Path
    summary: dict[str, Any]
    tokens: list[float] = field(default_factory=list)
    reward: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    extra_wall_time_s: float = 0.0
    """Time spent before the run that belongs to it (the SFT warm start of sft_ppo)."""
    base: dict[str, Any] | None = None
    """The final policy evaluated against the base model (``BASE_EVAL``), if done."""

    @property
    def wall_time_s(self) -> float:
        return float(self.summary["wall_time_s"]) + self.extra_wall_time_s


def read_run(algorithm: str, run: Path) -> RunRecord:
    """A run folder's summary and its evaluations (``eval/`` rows of metrics.jsonl)."""
    seed = read_seed(run)
    record = RunRecord(
        algorithm, -1 if seed is None else seed, run, json.loads((run / "summary.json").read_text())
    )
    if (run / BASE_EVAL).exists():
        record.base = json.loads((run / BASE_EVAL).read_text())
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "eval/reward_mean" in row:
            record.tokens.append(float(row.get("perf/tokens", 0)))  # PPO's step 0 has none
            record.reward.append(float(row["eval/reward_mean"]))
            record.kl.append(float(row["eval/kl"]))
    return record


def collect(output_dir: Path) -> dict[str, list[RunRecord]]:
    """Finished runs by algorithm; sft_ppo runs carry their SFT run's wall time."""
    records: dict[str, list[RunRecord]] = {}
    for algorithm in ALGORITHMS:
        for summary in sorted((output_dir / algorithm).glob("*/summary.json")):
            record = read_run(algorithm, summary.parent)
            if algorithm == "sft_ppo":
                record.extra_wall_time_s = _sft_wall_time(output_dir / "sft", record.seed)
            records.setdefault(algorithm, []).append(record)
    return records


def _sft_wall_time(folder: Path, seed: int) -> float:
    try:
        run = newest_run(folder, seed)
    except SystemExit:
        return 0.0
    return float(json.loads((run / "summary.json").read_text())["wall_time_s"])


# --- report -------------------------------------------------------------------------------


def _fmt(interval: Interval, signed: bool = True) -> str:
    return interval.format(3 if signed else 2, signed=signed)


def separator(header: str) -> str:
    """The markdown line under ``header``."""
    return "|" + " --- |" * (header.count("|") - 1)


def has_base_kl(records: dict[str, list[RunRecord]]) -> bool:
    return all(r.base is not None for runs in records.values() for r in runs)


def aggregate_table(records: dict[str, list[RunRecord]]) -> tuple[str, dict[str, dict]]:
    """The markdown table over seeds, and the statistics behind it.

    The KL to the base model is a column when every run has been evaluated against it.
    """
    base = has_base_kl(records)
    header = (
        "| algorithm | seeds | held-out reward after, mean [95% CI] | IQM [95% CI] "
        "| gain over before (mean) | KL to reference after (nats), mean [95% CI] "
        "| KL IQM [95% CI] |"
    )
    if base:
        header += " KL to base model after, mean [95% CI] |"
    header += " generated tokens (mean) | wall time s (mean) |"
    lines = [header, separator(header)]
    stats: dict[str, dict] = {}
    for algorithm, runs in records.items():
        after = [float(r.summary["eval_reward_after"]) for r in runs]
        before = [float(r.summary["eval_reward_before"]) for r in runs]
        kl = [float(r.summary["eval_kl_after"]) for r in runs]
        reward_stats, kl_stats = summarize(after), summarize(kl)
        stats[algorithm] = {"reward": reward_stats, "kl": kl_stats, "seeds": len(runs)}
        gain = float(np.mean(after) - np.mean(before))
        tokens = float(np.mean([r.summary["generated_tokens"] for r in runs]))
        wall = float(np.mean([r.wall_time_s for r in runs]))
        row = (
            f"| {LABELS.get(algorithm, algorithm)} | {len(runs)} | {_fmt(reward_stats['mean'])} "
            f"| {_fmt(reward_stats['iqm'])} | {gain:+.3f} | {_fmt(kl_stats['mean'], False)} "
            f"| {_fmt(kl_stats['iqm'], False)} |"
        )
        if base:
            stats[algorithm]["base_kl"] = summarize(
                [float(r.base["eval/kl"]) for r in runs if r.base]
            )
            row += f" {_fmt(stats[algorithm]['base_kl']['mean'], False)} |"
        lines.append(row + f" {tokens:,.0f} | {wall:,.0f} |")
    return "\n".join(lines), stats


def runs_table(records: dict[str, list[RunRecord]]) -> str:
    """One row per run; "re-evaluated" is the final policy's reward in ``BASE_EVAL``."""
    header = (
        "| algorithm | seed | reward before | reward after | re-evaluated | KL to reference "
        "| KL to base | tokens | wall time s | run |"
    )
    lines = [header, separator(header)]
    for algorithm, runs in records.items():
        for r in sorted(runs, key=lambda r: r.seed):
            s = r.summary
            again = "" if r.base is None else f"{r.base['eval/reward_mean']:+.3f}"
            base_kl = "" if r.base is None else f"{r.base['eval/kl']:.2f}"
            lines.append(
                f"| {LABELS.get(algorithm, algorithm)} | {r.seed} | {s['eval_reward_before']:+.3f} "
                f"| {s['eval_reward_after']:+.3f} | {again} | {s['eval_kl_after']:.2f} "
                f"| {base_kl} | {int(s['generated_tokens']):,} | {r.wall_time_s:,.0f} "
                f"| `{r.path.name}` |"
            )
    return "\n".join(lines)


def reproduction(records: dict[str, list[RunRecord]]) -> str:
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


def reading(stats: dict[str, dict]) -> str:
    """Which algorithm came first and last, and which intervals overlap (no verdict beyond that)."""
    if len(stats) < 2:
        return "Fewer than two algorithms: nothing to compare."
    order = sorted(stats, key=lambda a: stats[a]["reward"]["mean"].estimate, reverse=True)
    best, worst = order[0], order[-1]
    name = {a: LABELS.get(a, a) for a in order}
    lines = [f"Highest mean held-out reward: {name[best]}; lowest: {name[worst]}."]
    if min(stats[a]["seeds"] for a in order) < 2:
        lines.append("- One seed for some algorithm: no interval to compare; run more seeds.")
        return "\n".join(lines)
    for i, a in enumerate(order):  # every pair, the higher mean first
        for b in order[i + 1 :]:
            x, y = stats[a]["reward"]["mean"], stats[b]["reward"]["mean"]
            overlap = x.low <= y.high and y.low <= x.high
            verb = "overlap" if overlap else "do not overlap"
            lines.append(f"- {name[a]} vs {name[b]}: the 95% intervals of the mean {verb}.")
    return "\n".join(lines)


def figure(records: dict[str, list[RunRecord]], path: Path) -> None:
    """Held-out reward and KL against generated tokens, mean over seeds with a 95% band;
    with the KL to the base model of every run, a third panel: each run's final reward
    against that KL (what each algorithm paid for its reward)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = has_base_kl(records)
    fig, axes = plt.subplots(1, 3 if base else 2, figsize=(16 if base else 11, 4))
    for algorithm, runs in records.items():
        end = min(max(r.tokens) for r in runs)
        grid = np.linspace(0, end, 40)
        for ax, key in zip(axes[:2], ("reward", "kl"), strict=True):
            curves = [(r.tokens, getattr(r, key)) for r in runs]
            mean, low, high = band(curves_on_grid(curves, grid))
            (line,) = ax.plot(
                grid, mean, label=f"{LABELS.get(algorithm, algorithm)} (n={len(runs)})"
            )
            ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.2)
        if base:
            kl = [float(r.base["eval/kl"]) for r in runs if r.base]
            after = [float(r.summary["eval_reward_after"]) for r in runs]
            axes[2].scatter(kl, after, color=line.get_color(), label=LABELS.get(algorithm))
    axes[0].set_ylabel("held-out reward (mean VADER score)")
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


def portable(command: str) -> str:
    """A logged command as a reader types it: ``python`` and paths relative to the project."""
    words = shlex.split(command)
    if words and Path(words[0]).name.startswith("python"):
        words[0] = "python"
    return shlex.join(w.replace(f"{ROOT}/", "") for w in words)


def report(output_dir: Path, docs: Path, notes: Path | None = None) -> str:
    """Write the markdown report and the figure; return the markdown.

    ``notes``: a markdown file included as it is (how and where the runs were made);
    default: ``<output_dir>/notes.md`` if there is one.
    """
    if notes is None and (output_dir / "notes.md").exists():
        notes = output_dir / "notes.md"
    records = collect(output_dir)
    if not records:
        raise SystemExit(f"no finished runs under {output_dir}/<algorithm>/")
    table, stats = aggregate_table(records)
    figure_path = docs / "algorithm_comparison.png"
    figure(records, figure_path)
    log = output_dir / "commands.jsonl"
    commands = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    seeds = sorted({r.seed for runs in records.values() for r in runs})
    total = sum(r.wall_time_s for runs in records.values() for r in runs)
    parts = [
        "# Algorithm comparison: PPO, GRPO, RLOO, SFT then PPO",
        "",
        "Written by `python scripts/compare_algorithms.py report` from the runs in "
        f"`{portable(str(output_dir))}`. Held-out reward: mean reward over the evaluation "
        "prompts after training. KL to reference: sequence KL, on those samples, to the "
        "run's own reference policy, its starting model (for SFT then PPO, the SFT model). "
        "KL to base model: the same, to the base model for every run (`base-kl`). "
        "Intervals: 95% percentile bootstrap over seeds (10,000 resamples, seed 0) of the "
        "mean and of the interquartile mean (rlm/aggregate.py). With 3 seeds an interval is "
        "coarse: read overlapping intervals as no evidence of a difference.",
        "",
        f"Seeds: {', '.join(map(str, seeds))}. Total wall time: {total:,.0f} s. The gain is "
        "over the run's own start (for SFT then PPO, the SFT model); wall times of SFT then "
        "PPO include the SFT run.",
        "",
        table,
        "",
        reading(stats),
        "",
        reproduction(records),
        "",
        f"![held-out reward and KL against generated tokens]({figure_path.name})",
        "",
        *([notes.read_text().strip(), ""] if notes is not None else []),
        "## Runs",
        "",
        runs_table(records),
        "",
        "## Commands",
        "",
        "```",
        *[f"{portable(c['command'])}    # {c['wall_time_s']} s" for c in commands],
        "```",
        "",
    ]
    text = "\n".join(parts)
    (docs / "algorithm_comparison.md").write_text(text)
    return text


# --- timing -------------------------------------------------------------------------------


def run_stamped(argv: list[str]) -> None:
    """Run the experiment ``argv[0]`` with every metrics line stamped with CPU seconds.

    CPU time of a one-thread process counts its own work only, so steps timed this way
    are comparable while other processes share the cores (wall time is not).
    """
    import runpy

    from rlm.tracking import Tracker

    log = Tracker.log

    def stamped(self: Tracker, metrics: Any, step: int) -> None:
        log(self, {**metrics, "perf/cpu_time_total": time.process_time()}, step)

    Tracker.log = stamped  # type: ignore[method-assign]
    sys.argv = argv
    runpy.run_path(argv[0], run_name="__main__")


def timing_commands(args: argparse.Namespace) -> dict[str, list[str]]:
    """Short runs of each script, one thread, evaluating only before and at the end."""
    out = Path(args.output_dir) / "timing"
    common = [
        "--seed", "1", "--wandb", "disabled", "--threads", "1", "--eval-every", "1000",
        "--eval-prompts", "32", "--eval-batch-size", "32", "--max-new-tokens",
        str(args.max_new_tokens),
    ]  # fmt: skip
    rl = [*common, "--batch-size", str(args.batch_size)]
    n = str(args.timing_steps)
    stamp = [sys.executable, str(Path(__file__).resolve()), "_stamped"]
    return {
        "ppo": [*stamp, SCRIPTS["ppo"], *rl, "--iterations", n, "--checkpoint-every", "1000",
                "--output-dir", str(out / "ppo")],
        "grpo": [*stamp, SCRIPTS["grpo"], *rl, "--steps", n, "--output-dir", str(out / "grpo")],
        "rloo": [*stamp, SCRIPTS["rloo"], *rl, "--steps", n, "--output-dir", str(out / "rloo")],
        "sft": [*stamp, SCRIPTS["sft"], *common, "--max-examples", str(16 * args.timing_steps),
                "--output-dir", str(out / "sft")],
    }  # fmt: skip


def step_seconds(metrics: Path) -> tuple[float, float]:
    """Median CPU seconds of a middle step, and of one 32-prompt evaluation.

    The first step also pays the trainer's start, the last one the final evaluation.
    """
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    cpu = [r["perf/cpu_time_total"] for r in rows]
    steps = np.diff(cpu)
    middle = float(np.median(steps[1:-1])) if len(steps) > 2 else float(steps[0])
    return middle, float(steps[-1]) - middle


def timing(args: argparse.Namespace) -> str:
    """Time each script, then estimate the comparison's CPU time at one thread."""
    log = Path(args.output_dir) / "timing_commands.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, tuple[float, float]] = {}
    for name, command in timing_commands(args).items():
        execute(command, log)
        run = max((Path(args.output_dir) / "timing" / name).glob("*/metrics.jsonl"),
                  key=lambda p: p.stat().st_mtime)  # fmt: skip
        seconds[name] = step_seconds(run)
    evaluation = 2 * float(np.median([e for _, e in seconds.values()]))  # 64 prompts
    evals = 1 + args.iterations // args.eval_every
    # The warm start's defaults: 1000 demonstrations in batches of 16, evaluated before,
    # at step 50 and at the end.
    sft_steps, sft_evals = -(-1000 // 16), 3
    per_run = {
        name: args.iterations * step + evals * evaluation
        for name, (step, _) in seconds.items() if name != "sft"
    }  # fmt: skip
    per_run["sft"] = sft_steps * seconds["sft"][0] + sft_evals * evaluation
    per_seed = per_run["ppo"] * 2 + per_run["grpo"] + per_run["rloo"] + per_run["sft"]
    lines = [
        "| script | CPU s per step (1 thread) | CPU s per run (estimate) |",
        "| --- | --- | --- |",
        *[f"| {n} | {seconds[n][0]:.1f} | {per_run[n]:,.0f} |" for n in seconds],
        "",
        f"evaluation of 64 prompts: {evaluation:.1f} CPU s; {evals} per RL run "
        f"({args.iterations} steps, every {args.eval_every}); SFT: {sft_steps} steps",
        f"one seed of ppo + grpo + rloo + sft + ppo: {per_seed:,.0f} CPU s; "
        f"{len(args.seeds)} seeds: {per_seed * len(args.seeds) / 3600:.1f} h at one thread",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_stamped"]:
        run_stamped(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("action", choices=["plan", "run", "base-kl", "report", "time"])
    parser.add_argument(
        "--timing-steps", type=int, default=5, help="time: steps of each short timing run"
    )
    parser.add_argument("--algorithms", nargs="+", choices=ALGORITHMS, default=list(ALGORITHMS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--iterations", type=int, default=30, help="steps (PPO iterations) per run")
    parser.add_argument(
        "--token-budget",
        type=int,
        default=None,
        help="stop every run once this many tokens were generated (steps then cap at 2x)",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="completions per step")
    parser.add_argument("--max-new-tokens", type=int, default=20, help="tokens per completion")
    parser.add_argument("--eval-every", type=int, default=10, help="steps between evaluations")
    parser.add_argument("--wandb", default="offline", choices=["offline", "online", "disabled"])
    parser.add_argument("--output-dir", type=Path, default=ROOT / "runs" / "compare")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where the report goes")
    parser.add_argument(
        "--base-model", default="default", help="base-kl: the reference every run is measured to"
    )
    parser.add_argument(
        "--notes",
        type=Path,
        default=None,
        help="report: a markdown file to include (default: <output-dir>/notes.md if present)",
    )
    # Flags after "--" go to every run (e.g. -- --threads 1), wherever the action stands.
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    args.extra = extra
    if args.action == "plan":
        for seed in args.seeds:
            for algorithm in args.algorithms:
                if algorithm == "sft_ppo":
                    print(shlex.join(sft_command(seed, args)))
                print(shlex.join(run_commands(algorithm, seed, args)))
        return 0
    if args.action == "time":
        print(timing(args))
        return 0
    if args.action == "run":
        run_all(args)
    if args.action in ("run", "base-kl"):
        evaluate_against_base(args)
    print(report(args.output_dir, args.docs, args.notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
