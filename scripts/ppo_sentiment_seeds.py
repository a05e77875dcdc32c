"""Run the default PPO experiment over several seeds and print a table of the results.

    python scripts/ppo_sentiment_seeds.py --seeds 1 2 3              # ~9 min a seed on 2 cores
    python scripts/ppo_sentiment_seeds.py --seeds 1 2 -- --lr 3e-4   # flags after -- go to the run
    python scripts/ppo_sentiment_seeds.py --table runs/measure       # re-print existing runs

Each seed is a separate run of ``experiments/ppo_sentiment.py`` (its defaults unless flags
follow ``--``), one after the other so that wall times are not distorted by each other.
The table gives the held-out reward before and after training (mean over the evaluation
prompts, with its standard error), the sequence KL to the reference policy after
training, and the wall time, read from each run's ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def table(output_dir: Path) -> str:
    rows = []
    for summary_path in sorted(output_dir.glob("*/summary.json")):
        summary = json.loads(summary_path.read_text())
        config = json.loads((summary_path.parent / "config.json").read_text())
        rows.append((config["seed"], summary))
    if not rows:
        return f"no finished runs in {output_dir}"
    lines = [
        "| seed | held-out reward before | after | gain | KL after (nats) | wall time (s) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    gains = []
    for seed, s in sorted(rows, key=lambda r: r[0]):
        gain = s["eval_reward_after"] - s["eval_reward_before"]
        gains.append(gain)
        lines.append(
            f"| {seed} | {s['eval_reward_before']:+.3f} ± {s['eval_reward_sem_before']:.3f} "
            f"| {s['eval_reward_after']:+.3f} ± {s['eval_reward_sem_after']:.3f} "
            f"| {gain:+.3f} | {s['eval_kl_after']:.2f} | {s['wall_time_s']:.0f} |"
        )
    spread = f" (min {min(gains):+.3f}, max {max(gains):+.3f})" if len(gains) > 1 else ""
    lines.append(f"\nmean gain over {len(gains)} seeds: {statistics.mean(gains):+.3f}{spread}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--output-dir", type=Path, default=ROOT / "runs" / "seeds")
    parser.add_argument("--table", type=Path, help="only print the table of this folder's runs")
    parser.add_argument("extra", nargs="*", help="flags for the experiment, after --")
    args = parser.parse_args()
    if args.table is not None:
        print(table(args.table))
        return 0
    for seed in args.seeds:
        command = [
            sys.executable, str(ROOT / "experiments" / "ppo_sentiment.py"),
            "--seed", str(seed), "--output-dir", str(args.output_dir), *args.extra,
        ]  # fmt: skip
        print("$", " ".join(command), flush=True)
        if subprocess.run(command, cwd=ROOT).returncode != 0:
            print(f"seed {seed} failed", file=sys.stderr)
            return 1
    print(table(args.output_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
