"""scripts/benchmark_scaling.py, tiny: one process against two (torchrun), and the size
table, as markdown.

Run: ``python -m pytest tests/test_benchmark_scaling.py -q``
"""

from __future__ import annotations

from tests.helpers import load_script


def test_the_scaling_benchmark_prints_both_tables(tiny_model_path, tmp_path):
    benchmark = load_script("benchmark_scaling")
    output = tmp_path / "scaling.md"
    # (Random models of real shapes: tests/test_gpu_check.py runs one.)
    config = benchmark.Config(model=str(tiny_model_path), steps=3, tiny=True,
                              algorithms=("ppo",), sizes=(), output=output)  # fmt: skip
    text = benchmark.main(config)
    assert output.read_text() == text + "\n"
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| ")]
    processes = [r for r in rows if r[0] == "| ppo"]
    # The same global batch: 4 episodes in one process of 2 threads, or 2 in each of two.
    assert [(r[1], r[2]) for r in processes] == [("1 x 2", "4"), ("2 x 1", "4")]
    assert processes[0][-1] == "- |" and processes[1][-1].endswith("x |")
    (size,) = [r for r in rows if r[0] == f"| {tiny_model_path}"]
    assert float(size[2]) > 0 and float(size[4].rstrip(" |")) > 0  # step time, peak memory
