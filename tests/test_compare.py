"""scripts/compare.py: arms over seeds, and the report read from run folders.

    python -m pytest tests/test_compare.py -q

The report is checked on run folders written by hand (the schema every experiment writes:
config.json, summary.json, metrics.jsonl), with values whose aggregates are known; one
end-to-end comparison runs three tiny arms, one of which starts from another's policy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import ROOT, load_script, metrics_of, read_json, run_python

compare = load_script("compare")


def fake_run(
    folder: Path, arm: str, seed: int, after: float, kl: float, *, base_kl: float | None = None,
    algorithm: str = "ppo", model: str = "default", wall: float | None = None,
    diagnostics: dict[str, float] | None = None,
) -> Path:  # fmt: skip
    run = folder / arm / f"rlm_Sentiment-v0__{arm}__{seed}__0"
    run.mkdir(parents=True)
    config = {"algorithm": algorithm, "run": {"seed": seed, "model": model}, algorithm: {}}
    (run / "config.json").write_text(json.dumps(config))
    summary = {
        "eval_reward_before": 0.1, "eval_reward_after": after, "eval_kl_after": kl,
        "eval_reward_sem_before": 0.04, "eval_reward_sem_after": 0.05,
        "generated_tokens": 9000 + seed, "wall_time_s": 100.0 * seed if wall is None else wall,
    }  # fmt: skip
    if diagnostics is not None:  # and a held-out reward model of 0.2 before, after - 0.1 after
        summary.update(
            diagnostics_before={k: 0.5 for k in diagnostics}, diagnostics_after=diagnostics,
            eval_heldout_reward_before=0.2, eval_heldout_reward_after=after - 0.1,
        )  # fmt: skip
    (run / "summary.json").write_text(json.dumps(summary))
    rows = [{"step": 0, "eval/reward_mean": 0.1, "eval/kl": 0.0}]
    rows += [{"step": 30, "perf/tokens": 9000 + seed, "eval/reward_mean": after, "eval/kl": kl}]
    # One line per row, each ending in a newline, as the tracker writes them.
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if base_kl is not None:  # what `compare.py base-kl` writes
        again = {"eval/reward_mean": after + 0.001 * seed, "eval/kl": base_kl}
        (run / "eval_base.json").write_text(json.dumps(again))
    return run


def report(runs: Path, *args: str) -> str:
    # In this process: the command line's own path, without a new interpreter's imports.
    assert compare.cli(["report", "--output-dir", str(runs), *args]) == 0
    return (runs / "report.md").read_text()


def test_report_from_run_folders(tmp_path):
    runs = tmp_path / "compare"
    for seed, shift in [(1, 0.0), (2, 0.1), (3, 0.2)]:
        fake_run(runs, "ppo", seed, 0.4 + shift, 10.0 + seed)
        fake_run(runs, "grpo", seed, 0.1 + shift, 2.0 + seed, algorithm="grpo")
        sft = fake_run(runs, "sft", seed, 0.25, 1.0, algorithm="sft")
        fake_run(runs, "sft_ppo", seed, 0.6 + shift, 12.0, model=str(sft / "policy"))
    (runs / "commands.jsonl").write_text(
        json.dumps({"command": "python experiments/grpo.py --seed 1", "wall_time_s": 12.5}) + "\n"
    )
    (runs / "notes.md").write_text("Two streams in parallel on a 2-core machine.\n")
    text = report(runs, "--arms", "ppo", "grpo", "sft", "sft_ppo")
    assert "Two streams in parallel on a 2-core machine." in text
    assert (runs / "report.png").stat().st_size > 1000
    page = (runs / "report.html").read_text()  # the same runs, as rlm report's HTML page
    assert "Comparison: PPO (rlm), GRPO (TRL), SFT, SFT, then PPO" in page
    assert "PPO (rlm) (mean of 3)" in page  # the arm's label names its group
    # PPO's rewards 0.4, 0.5, 0.6: mean and IQM 0.5 (3 seeds: the IQM is the mean).
    ppo_row = next(line for line in text.splitlines() if line.startswith("| PPO (rlm) | 3 |"))
    assert "| +0.500 [" in ppo_row and "| +0.400 |" in ppo_row  # gain over 0.1
    # The warm start's wall time counts for sft_ppo: (100 + 100), (200 + 200), (300 + 300).
    sft_row = next(line for line in text.splitlines() if line.startswith("| SFT, then PPO | 3 |"))
    assert sft_row.endswith("| 400 |")
    assert "Highest mean held-out reward: SFT, then PPO; lowest: GRPO (TRL)." in text
    assert "python experiments/grpo.py --seed 1    # 12.5 s" in text
    # The arms in the order --arms gives.
    assert text.index("| PPO (rlm) | 3 |") < text.index("| GRPO (TRL) | 3 |")
    # One row per run, with the evaluation's standard error.
    assert "| PPO (rlm) | 2 | +0.100 ± 0.040 | +0.500 ± 0.050 | +0.400 |" in text


def test_report_adds_the_kl_to_the_base_model_once_every_run_has_it(tmp_path):
    runs = tmp_path / "compare"
    for seed in (1, 2, 3):
        fake_run(runs, "ppo", seed, 0.5, 10.0, base_kl=10.0)
        fake_run(runs, "sft_ppo", seed, 0.6, 8.0, base_kl=20.0 + seed)
    text = report(runs)
    assert "KL to base model after" in text
    sft_row = next(line for line in text.splitlines() if line.startswith("| SFT, then PPO | 3 |"))
    assert "| 22.00 [" in sft_row  # mean of 21, 22, 23; the KL to its own reference is 8
    assert "| 8.00 [" in sft_row
    # Re-evaluated rewards differ from the recorded ones by 0.001 x seed: at most 0.003.
    assert "gave held-out rewards within 3.0e-03 of the recorded ones" in text
    table = [x for x in text.splitlines() if x.startswith("| arm | seeds |")][0]
    separator = text.splitlines()[text.splitlines().index(table) + 1]
    assert separator.count("---") == table.count("|") - 1


def test_report_tables_the_diagnostics_and_the_heldout_reward_model(tmp_path):
    runs = tmp_path / "compare"
    for seed in (1, 2):
        fake_run(runs, "ppo", seed, 0.5, 10.0, diagnostics={"eval/distinct_1": 0.3 + 0.1 * seed})
        fake_run(runs, "sb3_ppo", seed, 0.3, 2.0, algorithm="sb3",
                 diagnostics={"eval/distinct_1": 0.9, "eval/heldout_gap": -1.0})  # fmt: skip
    text = report(runs, "--arms", "ppo", "sb3_ppo")
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| arm | held-out reward model |"))
    assert header.split(" | ")[2:4] == ["distinct-1", "distinct-2"]
    start = lines.index(header)
    assert lines[start + 2].startswith("| before training (every run) | +0.200 | 0.500 |")
    # The means over seeds: distinct-1 (0.4 + 0.5) / 2; a diagnostic not logged is blank.
    assert lines[start + 3].startswith("| PPO (rlm) | +0.400 | 0.450 |  |")
    assert lines[start + 4].startswith("| PPO (SB3, token-level) | +0.200 | 0.900 |")
    assert lines[start + 4].endswith("| -1.00 |")


def test_report_leaves_the_column_out_while_a_run_lacks_it(tmp_path):
    runs = tmp_path / "compare"
    fake_run(runs, "ppo", 1, 0.5, 10.0, base_kl=10.0)
    fake_run(runs, "ppo", 2, 0.5, 10.0)
    text = report(runs)
    assert "KL to base model after" not in text
    assert "Evaluating 1 final policy again" in text
    assert "Fewer than two arms" in text


def test_plan_prints_one_command_per_arm_and_seed_from_the_config_files(tmp_path):
    result = run_python(
        ROOT / "scripts" / "compare.py",
        ["plan", "configs/compare/sft.yaml", "configs/compare/sft_ppo.yaml", "--seeds", "1", "2",
         "--output-dir", str(tmp_path), "--", "--threads", "1"],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0] == (
        f"python experiments/sft.py --config configs/compare/sft.yaml --seed 1 "
        f"--output-dir {tmp_path}/sft --wandb-group {tmp_path.name} --wandb-job-type sft "
        "--threads 1"
    )  # the comparison's runs share a W&B group, their arm the job type
    assert lines[1].startswith("python experiments/ppo.py --config configs/compare/sft_ppo.yaml")
    assert lines[1].endswith("--model '<sft run of seed 1>/policy'") and len(lines) == 4


def test_an_arm_without_an_algorithm_is_refused(tmp_path, capsys):
    arm = tmp_path / "x.yaml"
    arm.write_text("seed: 2\n")
    assert compare.cli(["plan", str(arm)]) == 2
    assert "an arm names its algorithm" in capsys.readouterr().err


def test_run_trains_each_arm_and_seed_and_warm_starts_from_the_other_arm(tiny_model_path, tmp_path):
    arms = tmp_path / "arms"
    arms.mkdir()
    (arms / "sft.yaml").write_text("algorithm: sft\nsteps: 2\nmax_examples: 16\nmax_length: 24\n")
    (arms / "then_ppo.yaml").write_text("algorithm: ppo\nmodel: arm:sft\nexp_name: then_ppo\n")
    out = tmp_path / "runs"
    tiny = ["--steps", "2", "--batch-size", "4", "--max-new-tokens", "6", "--eval-prompts",
            "4", "--eval-batch-size", "4", "--lora-r", "4", "--threads", "1", "--wandb",
            "disabled"]  # fmt: skip
    result = run_python(
        ROOT / "scripts" / "compare.py",
        ["run", str(arms / "sft.yaml"), str(arms / "then_ppo.yaml"), "--seeds", "3",
         "--output-dir", str(out), "--base-kl", "--base-model", str(tiny_model_path),
         "--", "--model", str(tiny_model_path), *tiny],
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (sft_run,) = [p for p in (out / "sft").iterdir()]
    (ppo_run,) = [p for p in (out / "then_ppo").iterdir()]
    assert read_json(ppo_run / "config.json")["run"]["model"] == str(sft_run / "policy")
    assert read_json(ppo_run / "config.json")["run"]["seed"] == 3
    assert [r["step"] for r in metrics_of(ppo_run)] == [0, 1, 2]
    for run in (sft_run, ppo_run):  # evaluated again, against the base model
        again = read_json(run / "eval_base.json")
        assert again["eval/reward_mean"] == pytest.approx(
            read_json(run / "summary.json")["eval_reward_after"], abs=1e-6
        )
    commands = [json.loads(x)["command"] for x in (out / "commands.jsonl").read_text().splitlines()]
    assert len(commands) == 4 and "scripts/evaluate_run.py" in commands[-1]
    text = (out / "report.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| then_ppo | 1 |"))
    wall = read_json(sft_run / "summary.json")["wall_time_s"]
    wall += read_json(ppo_run / "summary.json")["wall_time_s"]
    assert row.endswith(f"| {wall:,.0f} |")
