"""Bootstrap intervals and the IQM against hand-computed values; the comparison report.

python -m pytest tests/test_aggregate.py -q
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rlm.aggregate import band, bootstrap_ci, curves_on_grid, iqm, summarize

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0], 2.5),  # quartiles fall between samples: the middle two
        ([4.0, 1.0, 3.0, 2.0], 2.5),  # order does not matter
        ([1.0, 2.0, 3.0], (1 + 4 * 2 + 3) / 6),  # masses 1/12, 1/3, 1/12 inside [.25, .75]
        ([0.0, 0.0, 6.0], 1.0),
        ([5.0], 5.0),
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 100.0], 4.5),  # the outlier is trimmed away
        # 5 samples, mass 0.2 each: x2 has 0.15 inside, x3 0.2, x4 0.15 -> (.15*2+.2*3+.15*4)/.5
        ([1.0, 2.0, 3.0, 4.0, 50.0], (0.15 * 2 + 0.2 * 3 + 0.15 * 4) / 0.5),
    ],
)
def test_iqm_by_hand(values, expected):
    assert iqm(values) == pytest.approx(expected)


def test_iqm_along_an_axis():
    rows = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 6.0, 0.0]])
    assert np.allclose(iqm(rows, axis=-1), [2.5, 0.0])


def test_bootstrap_of_two_values_by_hand():
    # Resampling {0, 1} twice: the mean is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4.
    # The 10th and 90th percentiles are then 0 and 1; the 30th and 70th are both 0.5.
    wide = bootstrap_ci([0.0, 1.0], np.mean, confidence=0.8, seed=3)
    assert (wide.estimate, wide.low, wide.high) == (0.5, 0.0, 1.0)
    narrow = bootstrap_ci([0.0, 1.0], np.mean, confidence=0.4, seed=3)
    assert (narrow.low, narrow.high) == (0.5, 0.5)


def test_bootstrap_of_three_values_by_hand():
    # Means of 3 draws from {0, 0, 3}: 3 * Binomial(3, 1/3) / 3 = K, K ~ Bin(3, 1/3):
    # P(0) = 8/27 ~ .296, P(1) = 12/27 ~ .444, P(2) = 6/27 ~ .222, P(3) = 1/27 ~ .037.
    # 95% interval: the 2.5th percentile is 0; the cumulative probability reaches only .963
    # at 2, below .975, so the 97.5th percentile is 3. 50% interval: the 25th percentile is
    # 0 (.296 > .25); the cumulative probability at 1 is .741 < .75, so the 75th is 2.
    ci = bootstrap_ci([0.0, 0.0, 3.0], np.mean, confidence=0.95, resamples=40_000, seed=0)
    assert (ci.estimate, ci.low, ci.high) == (1.0, 0.0, 3.0)
    half = bootstrap_ci([0.0, 0.0, 3.0], np.mean, confidence=0.5, resamples=40_000, seed=0)
    assert (half.low, half.high) == (0.0, 2.0)


def test_bootstrap_is_seeded_and_degenerate_data_has_no_width():
    a = bootstrap_ci([0.1, 0.5, 0.3, 0.9], iqm, seed=7)
    b = bootstrap_ci([0.1, 0.5, 0.3, 0.9], iqm, seed=7)
    assert a == b
    flat = bootstrap_ci([0.25, 0.25, 0.25], iqm)
    assert flat.low == flat.high == flat.estimate == 0.25


def test_bootstrap_refuses_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([1.0, math.nan])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0], confidence=1.0)


def test_summarize_and_format():
    stats = summarize([0.2, 0.4, 0.3])
    assert stats["n"] == 3
    assert stats["mean"].estimate == pytest.approx(0.3)
    assert stats["iqm"].estimate == pytest.approx((0.2 + 4 * 0.3 + 0.4) / 6)
    assert stats["mean"].format(2).startswith("+0.30 [")


def test_curves_on_a_grid_and_their_band():
    curves = [([0, 10, 20], [0.0, 1.0, 1.0]), ([0, 20], [0.0, 2.0])]
    values = curves_on_grid(curves, [0, 10, 20, 30])
    assert values[0].tolist()[:3] == [0.0, 1.0, 1.0] and values[1].tolist()[:3] == [0.0, 1.0, 2.0]
    assert np.isnan(values[:, 3]).all()  # no run reached 30 tokens
    mean, low, high = band(values)
    assert mean[:3].tolist() == [0.0, 1.0, 1.5]
    assert low[1] == high[1] == 1.0  # both runs agree
    assert low[2] <= 1.5 <= high[2] and np.isnan(mean[3])


def _fake_run(
    folder: Path, algorithm: str, seed: int, after: float, kl: float, base_kl: float | None = None
) -> None:
    run = folder / algorithm / f"rlm_Sentiment-v0__{algorithm}__{seed}__0"
    run.mkdir(parents=True)
    config = {"seed": seed} if algorithm in ("ppo", "sft_ppo", "sft") else {"run": {"seed": seed}}
    (run / "config.json").write_text(json.dumps(config))
    summary = {
        "eval_reward_before": 0.1, "eval_reward_after": after, "eval_kl_after": kl,
        "generated_tokens": 9000 + seed, "wall_time_s": 100.0 * seed,
    }  # fmt: skip
    (run / "summary.json").write_text(json.dumps(summary))
    rows = [{"step": 0, "eval/reward_mean": 0.1, "eval/kl": 0.0}]
    rows += [{"step": 30, "perf/tokens": 9000 + seed, "eval/reward_mean": after, "eval/kl": kl}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    if base_kl is not None:  # what `compare_algorithms.py base-kl` writes
        again = {"eval/reward_mean": after + 0.001 * seed, "eval/kl": base_kl}
        (run / "eval_base.json").write_text(json.dumps(again))


def _report(runs: Path, docs: Path) -> str:
    script = ROOT / "scripts" / "compare_algorithms.py"
    result = subprocess.run(
        [sys.executable, str(script), "report", "--output-dir", str(runs), "--docs", str(docs)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return (docs / "algorithm_comparison.md").read_text()


def test_report_from_run_folders(tmp_path):
    runs = tmp_path / "compare"
    for seed, shift in [(1, 0.0), (2, 0.1), (3, 0.2)]:
        _fake_run(runs, "ppo", seed, 0.4 + shift, 10.0 + seed)
        _fake_run(runs, "grpo", seed, 0.1 + shift, 2.0 + seed)
        _fake_run(runs, "sft", seed, 0.2, 1.0)
        _fake_run(runs, "sft_ppo", seed, 0.6 + shift, 12.0)
    (runs / "commands.jsonl").write_text(
        json.dumps({"command": "python experiments/grpo.py --seed 1", "wall_time_s": 12.5}) + "\n"
    )
    (runs / "notes.md").write_text("Two streams in parallel on a 2-core machine.\n")
    docs = tmp_path / "docs"
    text = _report(runs, docs)
    assert "Two streams in parallel on a 2-core machine." in text
    assert (docs / "algorithm_comparison.png").stat().st_size > 1000
    # PPO's rewards 0.4, 0.5, 0.6: mean and IQM 0.5; the SFT runs' time counts for sft_ppo.
    ppo_row = next(line for line in text.splitlines() if line.startswith("| PPO (rlm) | 3 |"))
    assert "+0.500 [" in ppo_row and "| +0.400 |" in ppo_row
    sft_row = next(line for line in text.splitlines() if line.startswith("| SFT, then PPO | 3 |"))
    assert sft_row.endswith("| 400 |")  # mean of (100 + 100), (200 + 200), (300 + 300)
    assert "Highest mean held-out reward: SFT, then PPO; lowest: GRPO (TRL)." in text
    assert "python experiments/grpo.py --seed 1    # 12.5 s" in text


def test_report_adds_the_kl_to_the_base_model_once_every_run_has_it(tmp_path):
    runs = tmp_path / "compare"
    for seed in (1, 2, 3):
        _fake_run(runs, "ppo", seed, 0.5, 10.0, base_kl=10.0)
        _fake_run(runs, "sft_ppo", seed, 0.6, 8.0, base_kl=20.0 + seed)
    text = _report(runs, tmp_path / "docs")
    assert "KL to base model after" in text
    assert (tmp_path / "docs" / "algorithm_comparison.png").stat().st_size > 1000  # 3 panels
    sft_row = next(line for line in text.splitlines() if line.startswith("| SFT, then PPO | 3 |"))
    assert "| 22.00 [" in sft_row  # mean of 21, 22, 23; the KL to its own reference is 8
    assert "| 8.00 [" in sft_row
    # Re-evaluated rewards differ from the recorded ones by 0.001 x seed: at most 0.003.
    assert "gave held-out rewards within 3.0e-03 of the recorded ones" in text
    table = [x for x in text.splitlines() if x.startswith("| algorithm |")][0]
    separator = text.splitlines()[text.splitlines().index(table) + 1]
    assert separator.count("---") == table.count("|") - 1


def test_report_leaves_the_column_out_while_a_run_lacks_it(tmp_path):
    runs = tmp_path / "compare"
    _fake_run(runs, "ppo", 1, 0.5, 10.0, base_kl=10.0)
    _fake_run(runs, "ppo", 2, 0.5, 10.0)
    text = _report(runs, tmp_path / "docs")
    assert "KL to base model after" not in text
    assert "Evaluating 1 final policy again" in text
