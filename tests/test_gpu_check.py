"""scripts/gpu_check.py, tiny, on a CPU: the cases run as experiments and the JSON file
holds what a GPU machine's run would (the GPU's own figures are null here).

Run: ``python -m pytest tests/test_gpu_check.py -q``
"""

from __future__ import annotations

import json

from tests.helpers import load_script


def test_the_gpu_check_runs_its_cases_and_writes_one_json_file(tiny_model_path, tmp_path):
    check = load_script("gpu_check")
    output = tmp_path / "check.json"
    check.main(check.Config(output=output, model=str(tiny_model_path), steps=3, tiny=True,
                            threads=1, cases=("ppo-random-0.5b",)))  # fmt: skip
    summary = json.loads(output.read_text())
    assert (summary["device"], summary["passed"]) == ("cpu", True)
    (random,) = summary["cases"]
    assert random["case"] == "ppo-random-0.5b"
    hidden, layers, heads, kv_heads, mlp = check.TINY_SHAPES["0.5b"]
    vocab = json.loads((tiny_model_path / "config.json").read_text())["vocab_size"]
    head = hidden // heads
    per_layer = (
        hidden * hidden * 2
        + 2 * hidden * kv_heads * head
        + (hidden + 2 * kv_heads * head)
        + 3 * hidden * mlp
        + 2 * hidden
    )  # attention (with q, k, v biases), MLP, norms
    assert random["parameters"] == vocab * hidden + layers * per_layer + hidden
    assert random["passed"] and random["step_time_s"] > 0
    assert 0 < random["generate_share"] < 1 and random["generated_tokens_per_s"] > 0
    assert random["gpu_memory_peak_gib"] is None and random["update_mfu"] is None  # no GPU
    assert "vLLM" in summary["vllm"]


def test_a_case_that_runs_out_of_time_fails_with_the_reason(tiny_model_path, tmp_path):
    check = load_script("gpu_check")
    output = tmp_path / "check.json"
    check.main(check.Config(output=output, model=str(tiny_model_path), tiny=True,
                            case_timeout=1, cases=("sft-default",)))  # fmt: skip
    summary = json.loads(output.read_text())
    assert summary["passed"] is False
    assert summary["cases"][0]["failure"] == "did not finish within 1 s"
