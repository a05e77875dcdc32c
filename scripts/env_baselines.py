"""The reward of a policy before training on each registered environment's eval split.

    OMP_NUM_THREADS=1 python scripts/env_baselines.py                    # default model, all envs
    python scripts/env_baselines.py --env-ids rlm/Arithmetic-v0 --prompts 16

Each environment is evaluated exactly as an experiment evaluates it before training
(:func:`rlm.evaluation.evaluate`: the first ``--prompts`` eval tasks, sampled at
temperature 1 with a fixed seed), in the prompt format the experiments use by default
(``auto``: plain text for continuation tasks, the chat template for the others). Prints
a markdown table: mean episode reward, its standard error, turns per episode and wall
time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import tyro

import envs  # noqa: F401  (registers the rlm/ environments)
from rlm.env import make_text_vector_env, registered_text_env_ids
from rlm.env_check import text_env
from rlm.evaluation import evaluate
from rlm.models import load_causal_lm
from rlm.policy import ActorCritic
from rlm.rollout import GenerationSettings, make_prompt_format, resolve_prompt_format


@dataclass
class Config:
    model: str = "default"
    """Policy: 'default' (embedded SmolLM2-135M-Instruct), a local folder, or a Hub id."""
    env_ids: list[str] = field(default_factory=registered_text_env_ids)
    """Environments to evaluate (default: every registered rlm/ id)."""
    prompts: int = 32
    """Eval tasks per environment (also the batch size), at most the eval split's size."""
    max_new_tokens: int = 32
    """Tokens per turn at most."""
    seed: int = 10_001
    """Sampling seed (the experiment's default eval seed)."""
    threads: int = 1
    """torch CPU threads."""


def main(config: Config) -> list[dict[str, float | str]]:
    torch.set_num_threads(config.threads)
    policy, tokenizer = load_causal_lm(config.model, dtype=torch.float32)
    model = ActorCritic(policy).eval()
    rows: list[dict[str, float | str]] = []
    print("| id | format | prompts | reward before training | ± sem | turns | s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for env_id in config.env_ids:
        start = time.time()
        env = text_env(env_id, split="eval")
        kind = resolve_prompt_format("auto", tokenizer, conversational=env.conversational)
        size = len(env.tasks)
        prompts = min(config.prompts, size)  # GuessNumber's eval split has 20 secrets
        eval_envs = make_text_vector_env(env_id, prompts, split="eval")
        metrics, samples = evaluate(
            model, tokenizer, eval_envs,
            num_prompts=prompts,
            generation=GenerationSettings(config.max_new_tokens, temperature=1.0),
            prompt_format=make_prompt_format(kind, tokenizer),
            seed=config.seed, show_progress=False,
        )  # fmt: skip
        turns = sum(row["completion"].count("[env] ") + 1 for row in samples) / len(samples)
        row = {
            "id": env_id,
            "format": kind,
            "prompts": prompts,
            "reward": metrics["eval/reward_mean"],
            "sem": metrics["eval/reward_sem"],
            "turns": turns,
            "seconds": time.time() - start,
        }
        rows.append(row)
        print(
            f"| `{env_id}` | {kind} | {prompts} | {row['reward']:+.3f} | {row['sem']:.3f} "
            f"| {turns:.1f} | {row['seconds']:.0f} |",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    main(tyro.cli(Config))
