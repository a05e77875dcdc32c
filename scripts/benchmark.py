"""The performance suite: where a PPO step's time goes against what this machine allows.

    make bench                                   # = python scripts/benchmark.py (~4 minutes here)
    python scripts/benchmark.py --tiny --model <folder> --output /tmp/performance.md

It prints each table and writes them into ``docs/performance.md`` (between its
``bench:start`` and ``bench:end`` marks, so the prose around them stays):

1. the machine: its CPU, the versions, and the float32 matmul rate and memory bandwidth
   measured with the runs' threads;
2. rlm's default PPO configuration (LoRA, a value head on the policy's trunk) run as a
   user runs it (``experiments/ppo.py``), per phase: the median seconds of the steps
   after the first and before the last, the phase's arithmetic limit
   (:mod:`rlm.arithmetic_limits`) and the share of it reached;
3. generation: rlm's rollout (the LoRA policy, as PPO samples) against the model's plain
   ``generate`` on the same prompts, in this process, alternately;
4. peak resident memory: the PPO run against inference alone (the model loaded and the
   same batch generated, in a process of its own);
5. rlm against TRL on identical work (:mod:`rlm.trl_comparison`): rlm's PPO in TRL's
   configuration against TRL 1.12.0's ``PPOTrainer`` (in a virtual environment of its own,
   made once in the rlm cache), on a tiny model and on this model; rlm's GRPO and RLOO
   adapters against TRL's trainers called directly with the config the adapters build;
6. processes: the default PPO configuration in one process of 2 threads against 2
   processes (DDP) of one thread each, the same global batch.

No figure is written by hand: every number comes from this run.
"""

from __future__ import annotations

import datetime
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
import trl
import tyro
from transformers import PreTrainedModel

import envs  # noqa: F401  (registers the environments)
from rlm.arithmetic_limits import Machine, ModelSize, StepWork, measure_machine, phase_limits
from rlm.env import make_text_vector_env
from rlm.files import read_jsonl
from rlm.measured_runs import (
    PROJECT_DIR,
    case_flags,
    first_prompts,
    processes_table,
    random_reward_model,
    run_case,
    scaled_case,
)
from rlm.memory import peak_resident_gib
from rlm.models import build_tiny_model, cache_dir, load_causal_lm, resolve_model_path
from rlm.phase_probes import ProfiledWork
from rlm.policy import ActorCritic, LoraSettings, add_lora
from rlm.ppo_update import PPOSettings
from rlm.rollout import GenerationSettings, PlainFormat, collect_episodes, eos_token_ids
from rlm.samplers import HFSampler, left_padded_batch, trim_completion
from rlm.trl_comparison import Comparison, Work, compare

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


@dataclass
class Config(ProfiledWork):
    """The performance suite. --threads holds for every run and measurement (one thread
    per run, as the comparisons elsewhere use)."""

    steps: int = 5
    """PPO steps of the run (the timed ones: all but the first and the last)."""
    comparison_steps: int = 4
    """Steps of each rlm run compared with TRL (TRL runs one fewer); the timed ones are
    all but the first and the last (rlm) or the first (TRL)."""
    repeats: int = 3
    """Timed repeats of each generation measurement (after a warm-up)."""
    output: Path = PROJECT_DIR / "docs" / "performance.md"
    """The file whose bench:start ... bench:end block is replaced (created if missing)."""
    tiny: bool = False
    """Tiny budgets: the suite's own check (the tests), not a measurement."""
    inference_probe: bool = False
    """(internal) Load the model, generate one batch, print the peak resident GiB."""


def inference_probe(config: Config) -> None:
    """Inference alone: what the memory table compares a training run with."""
    policy, tokenizer = load_causal_lm(config.model)
    sampler = HFSampler(policy)
    eos = eos_token_ids(tokenizer, policy.generation_config.eos_token_id)
    prompts = first_prompts(config.env_id, config.batch_size, tokenizer)
    sampler.sample(prompts, GenerationSettings(config.max_new_tokens), eos_ids=eos,
                   pad_id=tokenizer.pad_token_id)  # fmt: skip
    print(f"{peak_resident_gib():.4f}")


def machine_table(machine: Machine) -> list[str]:
    return [
        "| CPU | cores | threads | torch | transformers | trl | float32 matmul GFLOP/s "
        "| bfloat16 matmul GFLOP/s | memory GB/s |",
        "| --- " * 9 + "|",
        f"| {machine.cpu} | {machine.cores} | {machine.threads} | {torch.__version__} "
        f"| {transformers.__version__} | {trl.__version__} | {machine.matmul_flops / 1e9:.1f} "
        f"| {machine.bf16_matmul_flops / 1e9:.1f} | {machine.bandwidth / 1e9:.1f} |",
    ]


def ppo_phases(config: Config, machine: Machine, size: ModelSize, work_dir: Path) -> tuple:
    """Run the default PPO configuration; its phase table and its peak memory."""
    flags = case_flags(
        config.model, work_dir, "ppo-default", steps=config.steps,
        batch_size=config.batch_size, max_new_tokens=config.max_new_tokens,
        threads=config.threads,
    )  # fmt: skip
    case = run_case("ppo-default", "ppo", config.model, flags, work_dir, timeout=3600)
    if not case["passed"]:
        raise SystemExit(f"the PPO run failed:\n{case['failure']}")
    rows = [r for r in read_jsonl(work_dir / "ppo-default" / "metrics.jsonl") if r["step"] > 0]
    timed = rows[1:-1] or rows

    def median(key: str) -> float:
        return statistics.median(r[key] for r in timed)

    episodes = config.batch_size
    work = StepWork(
        episodes=episodes, context_tokens=round(median("perf/context_tokens")),
        completion_tokens=round(median("train/completion_length") * episodes),
        decode_steps=round(median("perf/decode_steps")), epochs=PPOSettings().epochs,
    )  # fmt: skip
    limits = phase_limits(size, machine, work)
    phases = {
        "generation": (median("perf/time_generate"), limits["generate"]),
        "reward": (median("perf/time_score"), None),
        "forward without gradients": (median("perf/time_forward"), limits["forward"]),
        "update": (median("perf/time_update"), limits["update"]),
    }
    step = median("perf/time_iteration")
    timed_phases = (
        "perf/time_generate",
        "perf/time_score",
        "perf/time_forward",
        "perf/time_update",
    )
    # Each step's own remainder (a median of differences, not a difference of medians).
    rest = statistics.median(
        r["perf/time_iteration"] - sum(r[k] for k in timed_phases) for r in timed
    )
    phases["everything else"] = (rest, None)
    total_limit = sum(limits.values())
    table = [
        f"{len(timed)} timed steps of {episodes} episodes, {work.completion_tokens} generated "
        f"tokens, {work.context_tokens} tokens in all, {work.decode_steps} decoding steps, "
        f"{work.epochs} epochs; {size.weights / 1e6:.0f}M weights",
        "",
        "| phase | seconds | share of the step | arithmetic limit (s) | of the limit reached |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, (seconds, limit) in [*phases.items(), ("step", (step, total_limit))]:
        limit_cells = f"{limit:#.3g} | {limit / seconds:.0%}" if limit else "- | -"
        table.append(f"| {name} | {seconds:.2f} | {seconds / step:.0%} | {limit_cells} |")
    return table, max(r["perf/memory_peak_gib"] for r in rows)


def transformers_sampling(
    model: PreTrainedModel, prompts: list[list[int]], generation: GenerationSettings,
    eos: set[int], pad_id: int,
) -> list[list[int]]:  # fmt: skip
    """The model's ``generate`` sampling as transformers does (its own draw): the baseline."""
    input_ids, attention_mask = left_padded_batch(prompts, pad_id)
    output = model.generate(  # type: ignore[operator]
        input_ids=input_ids, attention_mask=attention_mask,
        max_new_tokens=generation.max_new_tokens, do_sample=True, top_k=0, top_p=1.0,
        pad_token_id=pad_id, eos_token_id=sorted(eos),
    )  # fmt: skip
    return output[:, input_ids.shape[1] :].tolist()


def generation_table(config: Config) -> list[str]:
    """rlm's sampling (its draw; the LoRA policy of a rollout) against transformers' plain
    ``generate`` on the same prompts, alternately."""
    plain_model, tokenizer = load_causal_lm(config.model)
    policy, _ = load_causal_lm(config.model)  # peft adds the adapter into its modules
    prompts = first_prompts(config.env_id, config.batch_size, tokenizer)
    generation = GenerationSettings(config.max_new_tokens)
    eos = eos_token_ids(tokenizer, policy.generation_config.eos_token_id)
    pad_id = tokenizer.pad_token_id
    plain_rlm = HFSampler(plain_model)
    actor_critic = ActorCritic(add_lora(policy, LoraSettings()))
    train_envs = make_text_vector_env(config.env_id, config.batch_size, split="train")
    samplers: dict[str, Callable[[], list[list[int]]]] = {
        "plain": lambda: transformers_sampling(plain_model, prompts, generation, eos, pad_id),
        "plain, rlm's draw": lambda: plain_rlm.sample(
            prompts, generation, eos_ids=eos, pad_id=pad_id
        ),  # fmt: skip
    }
    rates: dict[str, list[float]] = {name: [] for name in [*samplers, "rlm"]}
    with torch.no_grad():
        for _ in range(config.repeats + 1):
            for name, sample in samplers.items():
                start = time.perf_counter()
                rows = sample()
                seconds = time.perf_counter() - start
                tokens = sum(len(trim_completion(row, eos)[0]) for row in rows)
                rates[name].append(tokens / seconds)
            episodes = collect_episodes(
                actor_critic, tokenizer, train_envs, generation=generation,
                prompt_format=PlainFormat(), seed=0,
            )  # fmt: skip
            rlm_tokens = float(episodes.action_mask.sum())
            rates["rlm"].append(rlm_tokens / episodes.timings["generate"])
    # The first repeat is a warm-up.
    plain, draw, rlm = (statistics.median(rates[k][1:]) for k in [*samplers, "rlm"])
    return [
        "| sampler | generated tokens/s | vs plain generate |",
        "| --- | --- | --- |",
        f"| the model's plain `generate` (transformers' sampling) | {plain:.1f} | 1.00x |",
        f"| the model's `generate`, rlm's draw (no adapter) | {draw:.1f} | {draw / plain:.2f}x |",
        f"| rlm's rollout (LoRA policy, as PPO samples) | {rlm:.1f} | {rlm / plain:.2f}x |",
    ]


def memory_table(config: Config, ppo_peak: float) -> list[str]:
    probe = [sys.executable, __file__, "--inference-probe", "--model", config.model,
             "--env-id", config.env_id, "--batch-size", str(config.batch_size),
             "--max-new-tokens", str(config.max_new_tokens)]  # fmt: skip
    result = subprocess.run(probe, capture_output=True, text=True, cwd=PROJECT_DIR, check=True)
    inference = float(result.stdout.strip().splitlines()[-1])
    return [
        "| process | peak resident memory (GiB) | vs inference |",
        "| --- | --- | --- |",
        f"| inference alone (load, generate one batch) | {inference:.2f} | 1.00x |",
        f"| PPO, LoRA (the run above) | {ppo_peak:.2f} | {ppo_peak / inference:.2f}x |",
    ]


# Issue 15's targets for rlm's step time over TRL's, where it sets one.
TARGETS = {("ppo", "tiny"): "at most 0.50x", ("ppo", "model"): "at most 0.90x"}
WORK_NAMES = {
    "ppo": "PPO in TRL's configuration (full fine-tune, separate critic)",
    "grpo": "GRPO: rlm's adapter vs GRPOTrainer",
    "rloo": "RLOO: rlm's adapter vs RLOOTrainer",
}


def trl_table(config: Config, work_dir: Path) -> list[str]:
    """rlm against TRL's trainers on identical work (:mod:`rlm.trl_comparison`)."""
    reward_model = random_reward_model(config.model, cache_dir() / "bench-reward-model")
    tiny = str(build_tiny_model(cache_dir() / "tiny-llama-test"))

    def work(model: str) -> Work:
        return Work(
            model=model, reward_model=reward_model, env_id=config.env_id,
            steps=config.comparison_steps, batch_size=config.batch_size,
            max_new_tokens=config.max_new_tokens, threads=config.threads,
            num_generations=min(4, config.batch_size),
        )  # fmt: skip

    comparisons = [Comparison("model", "ppo", work(config.model))]
    if Path(tiny).resolve() != Path(config.model).resolve():
        comparisons.insert(0, Comparison("tiny", "ppo", work(tiny)))
    comparisons += [Comparison("model", a, work(config.model)) for a in ("grpo", "rloo")]
    lines = [
        f"{config.batch_size} episodes of at most {config.max_new_tokens} new tokens a step, "
        f"{config.comparison_steps - 2} timed steps a side; the same reward model (a random "
        "2-layer sequence classifier) scores both sides.",
        "",
        "| work | model | TRL | rlm step (s) | TRL step (s) | rlm / TRL | target |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for comparison in comparisons:
        row = compare(comparison, work_dir, timeout=3600)
        model = Path(comparison.work.model).name
        target = TARGETS.get((comparison.algorithm, comparison.label), "-")
        lines.append(
            f"| {WORK_NAMES[comparison.algorithm]} | {model} | {row['trl']} "
            f"| {row['rlm_step_s']:.2f} | {row['trl_step_s']:.2f} | {row['ratio']:.2f}x "
            f"| {target} |"
        )
        print(lines[-1], flush=True)
    return lines


def processes_section(config: Config, work_dir: Path) -> list[str]:
    """The default PPO configuration: 1 process x 2 threads against 2 x 1 (DDP)."""
    cases = [
        scaled_case(
            f"ppo-{processes}p",
            "ppo",
            config.model,
            work_dir,
            processes=processes,
            cores=2,
            steps=config.steps,
            batch_size=config.batch_size,
            max_new_tokens=config.max_new_tokens,
            timeout=3600,
        )  # fmt: skip
        for processes in (1, 2)
    ]
    failed = [c for c in cases if not c["passed"]]
    if failed:
        raise SystemExit(f"the processes case failed:\n{failed[0]['failure']}")
    return processes_table(cases).splitlines()


def write_block(path: Path, block: str) -> None:
    """Put ``block`` between the file's marks (the file and the marks made if missing)."""
    text = path.read_text() if path.is_file() else ""
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + START + "\n" + block + "\n" + END + rest.split(END, 1)[1]
    else:
        text += f"{START}\n{block}\n{END}\n"
    path.write_text(text)


def main(config: Config) -> str:
    if config.tiny:
        config.steps, config.batch_size, config.max_new_tokens, config.repeats = 3, 4, 4, 1
        config.comparison_steps = 3
    config.model = resolve_model_path(config.model)
    torch.set_num_threads(config.threads)
    machine = measure_machine(size=256 if config.tiny else 1024)
    policy, _ = load_causal_lm(config.model)
    size = ModelSize.of(policy)
    del policy
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        phases, ppo_peak = ppo_phases(config, machine, size, Path(scratch))
        sections = {
            "The machine": machine_table(machine),
            "PPO, rlm's default configuration, per phase": phases,
            "Generation": generation_table(config),
            "Memory": memory_table(config, ppo_peak),
            "rlm against TRL, identical work": trl_table(config, Path(scratch)),
        }
        # --tiny leaves these two runs to tests/test_benchmark_scaling.py, which runs the
        # same cases (rlm.measured_runs.scaled_case): the test suite's time is short.
        if not config.tiny:
            sections["Processes: 1 x 2 threads against 2 x 1 (DDP), the same global batch"] = (
                processes_section(config, Path(scratch))
            )
    command = " ".join(["python scripts/benchmark.py", *sys.argv[1:]])
    lines = [f"Measured by `{command}` on {datetime.date.today()}, {machine.threads} "
             "thread(s) per run and measurement.", ""]  # fmt: skip
    for title, table in sections.items():
        lines += [f"### {title}", "", *table, ""]
    block = "\n".join(lines).rstrip()
    print(block, flush=True)
    write_block(config.output, block)
    return block


if __name__ == "__main__":
    chosen = tyro.cli(Config)
    if chosen.inference_probe:
        inference_probe(chosen)
    else:
        main(chosen)
