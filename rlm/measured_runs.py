"""Experiments run as a user runs them, and what their metrics say about speed and memory.

Each case is ``experiments/<algorithm>.py`` in its own process (or under a launcher such
as torchrun), into its own run folder; :func:`run_case` reads the folder's
``metrics.jsonl`` back and summarises the steps between the first (warm-up) and the last
(which evaluates). ``scripts/gpu_check.py``, ``scripts/benchmark_scaling.py`` and
``scripts/benchmark.py`` are made of such cases; :func:`random_model` gives them models of
real families' shapes without a download, :func:`random_reward_model` a reward model that
rlm and TRL both read, and :func:`overlay_venv` another TRL release to compare with.
"""

from __future__ import annotations

import itertools
import math
import site
import statistics
import subprocess
import sys
import time
import venv
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from transformers import PreTrainedTokenizerBase

from rlm.env import make_text_vector_env
from rlm.files import read_jsonl
from rlm.models import load_causal_lm
from rlm.reward_models.folder import write_metadata
from rlm.rollout import PlainFormat, encode_context

PROJECT_DIR = Path(__file__).resolve().parents[1]

# Decoder shapes of real model families: (hidden, layers, heads, key-value heads, MLP).
SHAPES = {
    "360m": (960, 32, 15, 5, 2560),  # SmolLM2-360M
    "0.5b": (896, 24, 14, 2, 4864),  # Qwen2.5-0.5B
    "1.5b": (1536, 28, 12, 2, 8960),  # Qwen2.5-1.5B
}
TINY_SHAPES = {"360m": (64, 2, 4, 2, 128), "0.5b": (96, 3, 4, 2, 192), "1.5b": (128, 3, 4, 2, 256)}
"""Stand-ins of :data:`SHAPES` a few layers deep, for the scripts' own tests."""


def random_model(shape: tuple[int, int, int, int, int], tokenizer_from: str, folder: Path) -> Path:
    """A randomly initialised Qwen2 decoder of ``shape`` (:data:`SHAPES`) with
    ``tokenizer_from``'s tokenizer, saved in ``folder``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    _, tokenizer = load_causal_lm(tokenizer_from)
    hidden, layers, heads, kv_heads, mlp = shape
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=mlp,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def random_reward_model(tokenizer_from: str | Path, folder: Path) -> Path:
    """A random 2-layer Llama sequence classifier with one output and ``tokenizer_from``'s
    tokenizer, saved in ``folder`` as a preference reward model (it scores prompt and
    completion). rlm reads it with ``--reward folder``; TRL's trainers read it as their
    ``reward_model`` or as a reward function given by path, so both sides score with it."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    if (folder / "config.json").exists():
        return folder
    _, tokenizer = load_causal_lm(str(tokenizer_from))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )  # fmt: skip
    config.num_labels = 1
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_metadata(folder, kind="preference", labels=["reward"], score_prompt=True, text_suffix="")
    return folder


def overlay_venv(folder: Path, requirement: str) -> Path:
    """The python of a virtual environment in ``folder`` holding ``requirement`` (say
    ``trl==1.12.0``) and otherwise this environment's packages, made on the first call.

    ``requirement`` is installed without its dependencies into the new environment's own
    site-packages, which come first on its path; a ``.pth`` file appends this one's after
    them. So both sides of a comparison run the same torch and transformers, and only the
    overlaid package differs.
    """
    python = folder / "bin" / "python"
    base = "\n".join(site.getsitepackages()) + "\n"
    # Made for this requirement over this environment (another checkout's is remade).
    marker, wanted = folder / "overlay.txt", f"{requirement}\n{base}"
    if python.exists() and marker.is_file() and marker.read_text() == wanted:
        return python
    venv.create(folder, clear=True, with_pip=True)
    own = subprocess.run(
        [str(python), "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(own, "_rlm_base_packages.pth").write_text(base)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", requirement], check=True
    )
    marker.write_text(wanted)
    return python


def count_parameters(folder: str | Path) -> int:
    """A model folder's parameters, from its safetensors files' headers (nothing loaded)."""
    count = 0
    for path in Path(folder).glob("*.safetensors"):
        with safe_open(path, "pt") as weights:
            for key in weights.keys():  # noqa: SIM118 (safe_open is no dict)
                count += math.prod(weights.get_slice(key).get_shape())
    return count


def case_flags(
    model: str, output_dir: Path, name: str, *, steps: int, batch_size: int,
    max_new_tokens: int, threads: int | None = None,
) -> list[str]:  # fmt: skip
    """The flags every case shares: the budget, an evaluation only before and after, one
    checkpoint, no W&B, the run folder ``output_dir/name``."""
    flags = [
        "--model", model, "--steps", str(steps), "--batch-size", str(batch_size),
        "--max-new-tokens", str(max_new_tokens), "--eval-prompts", str(batch_size),
        "--eval-every", str(steps), "--checkpoint-every", str(steps),
        "--output-dir", str(output_dir), "--run-name", name, "--wandb", "disabled",
    ]  # fmt: skip
    return flags + (["--threads", str(threads)] if threads else [])


def run_case(
    name: str, algorithm: str, model: str, flags: list[str], output_dir: Path, *,
    timeout: float, launcher: list[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Run ``experiments/<algorithm>.py flags`` (``flags`` from :func:`case_flags`, into
    ``output_dir/name``) and summarise it: passed (or the end of its output), wall time,
    parameters, and over the timed steps the medians of step time, episodes and generated
    tokens per second and the share spent generating (PPO), and the peak memory."""
    script = PROJECT_DIR / "experiments" / f"{algorithm}.py"
    command = [*(launcher or [sys.executable]), str(script)]
    started = time.perf_counter()
    try:
        result = subprocess.run(
            [*command, *flags], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=timeout
        )
        failure = None if result.returncode == 0 else (result.stderr or result.stdout)[-2000:]
    except subprocess.TimeoutExpired:
        failure = f"did not finish within {timeout:g} s"
    case: dict[str, Any] = {
        "case": name, "algorithm": algorithm, "model": model,
        "parameters": count_parameters(model), "passed": failure is None,
        "wall_time_s": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    if failure is not None:
        return {**case, "failure": failure}
    rows = [r for r in read_jsonl(output_dir / name / "metrics.jsonl") if r["step"] > 0]
    return {**case, **summarise_steps(rows)}


def scaled_case(
    name: str, algorithm: str, model: str, folder: Path, *, processes: int, cores: int,
    steps: int, batch_size: int, max_new_tokens: int, timeout: float,
    extra_flags: tuple[str, ...] = (),
) -> dict[str, Any]:  # fmt: skip
    """:func:`run_case` with ``cores`` shared out: one process of ``cores`` threads, or
    ``processes`` (torchrun, DDP) of ``cores // processes`` threads with an equal share of
    the ``batch_size`` episodes each. Adds ``processes`` and ``threads`` to the summary."""
    threads = cores // processes
    flags = case_flags(
        model, folder, name, steps=steps, batch_size=batch_size // processes,
        max_new_tokens=max_new_tokens, threads=threads,
    )  # fmt: skip
    launcher = None
    if processes > 1:
        torchrun = str(Path(sys.executable).parent / "torchrun")
        launcher = [torchrun, "--standalone", "--nproc_per_node", str(processes)]
    case = run_case(name, algorithm, model, [*flags, *extra_flags], folder, timeout=timeout,
                    launcher=launcher)  # fmt: skip
    print(f"{name}: {'passed' if case['passed'] else case['failure'][-500:]}", flush=True)
    return {**case, "processes": processes, "threads": threads}


def number(value: float | None, digits: int = 2) -> str:
    """A table cell: ``value`` to ``digits`` places, or ``-`` for none."""
    return "-" if value is None else f"{value:.{digits}f}"


def processes_table(cases: list[dict[str, Any]]) -> str:
    """A markdown table of :func:`scaled_case` summaries in pairs (one process, then
    several): episodes per second, and the pair's ratio."""
    lines = [
        "| algorithm | processes x threads | episodes per step | step (s) | episodes/s "
        "| vs one process |",
        "| --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    for one, many in zip(cases[::2], cases[1::2], strict=True):
        for case in (one, many):
            ratio = None
            if case is many and one.get("episodes_per_s") and many.get("episodes_per_s"):
                ratio = many["episodes_per_s"] / one["episodes_per_s"]
            lines.append(
                f"| {case['algorithm']} | {case['processes']} x {case['threads']} | "
                f"{number(case.get('episodes_per_step'), 0)} | "
                f"{number(case.get('step_time_s'))} | {number(case.get('episodes_per_s'))} | "
                f"{'-' if ratio is None else f'{ratio:.2f}x'} |"
            )
    return "\n".join(lines)


def summarise_steps(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the steps after the first and before the last (all of them when there
    are fewer than 3), and the peaks over all."""
    timed = rows[1:-1] or rows

    def median(key: str) -> float | None:
        values = [r[key] for r in timed if key in r]
        return statistics.median(values) if values else None

    def per_step(key: str) -> float:  # the median step's, from the running totals
        totals = [r[key] for r in rows]
        values = [totals[0], *(b - a for a, b in itertools.pairwise(totals))]
        return statistics.median(values[1:-1] if len(rows) >= 3 else values)

    def peak(key: str) -> float | None:
        values = [r[key] for r in rows if key in r]
        return max(values) if values else None

    step = median("perf/time_iteration")
    tokens, episodes = per_step("perf/tokens"), per_step("perf/episodes")
    generate = median("perf/time_generate")
    return {
        "step_time_s": step,
        "episodes_per_step": episodes,
        "episodes_per_s": episodes / step if step else None,
        # PPO times its generation; otherwise generated tokens over the whole step.
        "generated_tokens_per_s": median("perf/tokens_per_second")
        or (tokens / step if step and tokens else None),
        "generate_share": generate / step if generate is not None and step else None,
        "memory_peak_gib": peak("perf/memory_peak_gib"),
        "gpu_memory_peak_gib": peak("perf/gpu_memory_peak_gib"),
        "update_time_s": median("perf/time_update"),
        "completion_length": median("train/completion_length"),
    }


def first_prompts(env_id: str, count: int, tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
    """The token ids of a task's first ``count`` training prompts (plain format), the batch
    the benchmarks generate from."""
    train_envs = make_text_vector_env(env_id, count, split="train")
    observations, _ = train_envs.reset(seed=0)
    fmt = PlainFormat()
    return [encode_context(tokenizer, fmt, fmt.first(o), first=True) for o in observations]
