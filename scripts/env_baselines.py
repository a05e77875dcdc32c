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
from rlm.env import registered_text_env_ids
from rlm.env_check import text_env
from rlm.evaluation import Evaluator
from rlm.models import load_causal_lm
from rlm.policy import ActorCritic
from rlm.rollout import GenerationSettings, make_prompt_format, resolve_prompt_format
from rlm.settings import eval_seed


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
    seed: int = eval_seed(1)
    """Sampling seed (the experiments' eval seed for their default --seed 1)."""
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
        evaluator = Evaluator(
            env_id, reward=None, heldout=None, num_prompts=config.prompts,
            batch_size=config.prompts,  # GuessNumber's eval split has 20 secrets: all of them
            generation=GenerationSettings(config.max_new_tokens, temperature=1.0),
            prompt_format=make_prompt_format(kind, tokenizer), seed=config.seed,
        )  # fmt: skip
        prompts = evaluator.num_prompts
        metrics, samples = evaluator(model, tokenizer, show_progress=False)
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
