"""The performance suite (``make bench``), tiny, and the arithmetic limits it reports.

Run: ``python -m pytest tests/test_benchmark.py -q``
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from rlm.arithmetic_limits import Machine, ModelSize, StepWork, phase_limits
from rlm.models import load_causal_lm
from tests.helpers import load_script

MACHINE = Machine(
    cpu="test", cores=2, threads=1, matmul_flops=60e9, bf16_matmul_flops=400e9, bandwidth=10e9
)
MODEL = ModelSize(trunk=100_000_000, head=30_000_000, bytes_per_weight=4)
WORK = StepWork(episodes=16, context_tokens=16 * 40, completion_tokens=16 * 32,
                decode_steps=32, epochs=2)  # fmt: skip


def test_the_suite_writes_its_tables_between_the_marks_and_keeps_the_prose(
    tiny_model_path, tmp_path
):
    benchmark = load_script("benchmark")
    output = tmp_path / "performance.md"
    output.write_text(f"# Prose before\n\n{benchmark.START}\nold\n{benchmark.END}\n\nProse after\n")
    block = benchmark.main(benchmark.Config(model=str(tiny_model_path), tiny=True, output=output))
    text = output.read_text()
    assert text.startswith("# Prose before") and text.endswith("Prose after\n")
    assert "old" not in text and block in text
    rows = {line.split(" | ")[0].lstrip("| "): line for line in block.splitlines()}
    # Every phase measured, and the step's share of its limit from the phases' limits.
    for phase in ("generation", "forward without gradients", "update", "step"):
        seconds, _, limit, reached = rows[phase].split(" | ")[1:5]
        assert float(seconds) > 0 and float(limit) > 0 and reached.endswith("% |")
    assert rows["the model's plain `generate` (transformers' sampling)"].endswith("| 1.00x |")
    for sampler in ("the model's `generate`, rlm's draw (no adapter)",
                    "rlm's rollout (LoRA policy, as PPO samples)"):  # fmt: skip
        rate, ratio = rows[sampler].split(" | ")[1:3]
        assert float(rate) > 0 and float(ratio.rstrip(" |x")) > 0
    assert "inference alone" in block and "PPO, LoRA" in block
    # rlm against TRL: both sides timed, TRL 1.12 for PPO (in its own environment), this
    # environment's TRL for the adapters; the ratio is rlm's step time over TRL's.
    compared = {}
    for line in block.splitlines():
        if line.startswith(("| PPO in", "| GRPO", "| RLOO")):
            work, _, version, rlm_step, trl_step, ratio, _ = line.split(" | ")
            compared[work.split()[1]] = (version, float(rlm_step), float(trl_step), ratio)
    assert sorted(compared) == ["GRPO:", "PPO", "RLOO:"]
    assert compared["PPO"][0] == "1.12.0"
    assert compared["GRPO:"][0] == compared["RLOO:"][0] == benchmark.trl.__version__
    for _, rlm_step, trl_step, ratio in compared.values():
        assert rlm_step > 0 and trl_step > 0
        # The table rounds the seconds to 0.01 (the ratio comes from the unrounded ones), so
        # the printed ratio lies between the rounded seconds' extreme ratios.
        lowest = (rlm_step - 0.005) / (trl_step + 0.005)
        highest = (rlm_step + 0.005) / (trl_step - 0.005)
        assert lowest - 0.005 <= float(ratio.rstrip("x")) <= highest + 0.005
    assert "| ppo | 1 x 2 |" not in block  # tests/test_benchmark_scaling.py runs those


def test_the_model_size_counts_every_weight_once(tiny_model_path):
    policy, _ = load_causal_lm(str(tiny_model_path))
    size = ModelSize.of(policy)
    total = sum(p.numel() for p in policy.parameters())  # tied weights once
    embedding = policy.get_input_embeddings().weight
    tied = embedding is policy.get_output_embeddings().weight
    assert size.weights + (0 if tied else embedding.numel()) == total
    assert size.head == embedding.numel()


def test_each_limit_scales_with_its_own_work():
    base = phase_limits(MODEL, MACHINE, WORK)
    twice = phase_limits(MODEL, MACHINE, replace(WORK, epochs=4))
    assert twice["update"] == pytest.approx(2 * base["update"])
    assert twice["forward"] == base["forward"] and twice["generate"] == base["generate"]
    # Full fine-tuning's backward computes the weights' gradients too: 6 FLOPs, not 4.
    full = phase_limits(MODEL, MACHINE, replace(WORK, full_fine_tune=True))
    assert full["update"] == pytest.approx(1.5 * base["update"])
    # One episode at a time, a decoding step reads all the weights for little arithmetic:
    # the bandwidth sets it.
    alone = phase_limits(MODEL, MACHINE, replace(WORK, episodes=1, context_tokens=40,
                                                 completion_tokens=32))  # fmt: skip
    reads = WORK.decode_steps * MODEL.weights * MODEL.bytes_per_weight / MACHINE.bandwidth
    assert alone["generate"] > reads > 2 * MODEL.weights * WORK.decode_steps / 60e9


def test_the_generation_profile_names_its_operators_and_the_decoding_matmul_rates(
    tiny_model_path,
):
    profiler = load_script("profile_generation")
    text = profiler.main(
        profiler.Config(model=str(tiny_model_path), batch_size=2, max_new_tokens=4, rows=5)
    )
    assert "aten::" in text and "Self CPU" in text and "torch.float32 weights" in text
    rates = [line for line in text.splitlines() if line.startswith("| MLP") or "vocabulary" in line]
    assert len(rates) == 2 and all(float(r.split(" | ")[2]) > 0 for r in rates)
    # MKL's packed weight: a rate where torch has MKL, a dash where it has none.
    packed = [r.split(" | ")[3] for r in rates]
    if torch.backends.mkl.is_available():
        assert all(float(cell) > 0 for cell in packed)
    else:
        assert packed == ["-", "-"]
    tiny_bf16 = profiler.Config(model=str(tiny_model_path), batch_size=2, max_new_tokens=2,
                                rows=3, dtype="bfloat16")  # fmt: skip
    assert "torch.bfloat16 weights" in profiler.main(tiny_bf16)


def test_the_memory_profile_reads_every_phase_of_every_step(tiny_model_path):
    profiler = load_script("profile_memory")
    text = profiler.main(profiler.Config(model=str(tiny_model_path), batch_size=2,
                                         max_new_tokens=4, steps=2))  # fmt: skip
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith(("| 1 ", "| 2 "))]
    phases = {"generation", "reward (the environments' step)", "forward without gradients",
              "advantages", "update"}  # fmt: skip
    for step in ("| 1", "| 2"):
        assert {row[1] for row in rows if row[0] == step} == phases
    for _, _, start, peak, growth in rows:
        assert 0 < float(start) <= float(peak)
        assert float(growth.rstrip(" |")) == pytest.approx(float(peak) - float(start), abs=0.011)
    times = text.splitlines()[-1].split(": ")[1].split(", ")
    assert len(times) == 2 and all(float(t) > 0 for t in times)
    # The learner calls its own phases again once the profile is over.
    import rlm.ppo_learner
    from rlm.ppo_update import ppo_update

    assert rlm.ppo_learner.ppo_update is ppo_update


def test_the_update_profile_names_each_phases_operators_and_what_backward_keeps(
    tiny_model_path,
):
    profiler = load_script("profile_update")
    text = profiler.main(profiler.Config(model=str(tiny_model_path), batch_size=2,
                                         max_new_tokens=4, rows=5))  # fmt: skip
    assert text.count("Self CPU time total") == 2 and "aten::mm" in text
    for phase in ("forward without gradients", "update"):
        assert float(text.split(f"{phase}: ")[1].split(" s ")[0]) > 0
    saved = {row.split(" | ")[0].lstrip("| "): float(row.split(" | ")[1].rstrip(" |"))
             for row in text.splitlines() if row.startswith("| ") and "MiB" not in row
             and "---" not in row}  # fmt: skip
    # The frozen weights are saved (the backward multiplies by them), and the logits.
    assert saved["weights (resident anyway)"] > 0
    assert saved["vocabulary-wide (logits, log-softmax)"] > 0
    kinds = [k for k in saved if k not in ("all but the weights", "weights (resident anyway)")]
    assert saved["all but the weights"] == pytest.approx(sum(saved[k] for k in kinds), abs=0.2)
    import rlm.ppo_learner
    from rlm.ppo_update import ppo_update

    assert rlm.ppo_learner.ppo_update is ppo_update
