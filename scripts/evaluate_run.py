"""Evaluate a finished run's policy again, against any reference model.

    python scripts/evaluate_run.py runs/<run>                       # repeat its last evaluation
    python scripts/evaluate_run.py runs/<run> --reference default   # KL to the base model
    python scripts/evaluate_run.py runs/<run> --eval-prompts 256 --output eval256.json

Works on the run folder of any experiment (PPO, GRPO, RLOO, SFT: rlm/saved_runs.py). The
evaluation is the runner's own (:class:`rlm.evaluation.Evaluator`: the first
``--eval-prompts`` eval tasks, the run's seed, sampling settings, prompt format, reward
and held-out reward), so with the run's own reference and prompts it repeats the run's
final evaluation. The reference defaults to the model the run started from;
``--reference default`` measures the KL to the base model instead, which is what makes
runs that started from a supervised warm start comparable with runs that started from
the base model. The metrics are printed and written as JSON to ``--output`` (default
``<run>/eval_<reference>.json``).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import tyro

import envs  # noqa: F401  (registers the rlm/ environments)
from rlm.env import check_env_id, make_text_vector_env
from rlm.models import load_causal_lm
from rlm.policy import ActorCritic
from rlm.rollout import make_prompt_format, resolve_prompt_format
from rlm.runner import make_evaluator, make_rewards
from rlm.saved_runs import SavedRun
from rlm.scripting import run_cli
from rlm.validation import check_ranges


@dataclass
class Config:
    run: tyro.conf.Positional[Path]
    """A finished run folder (one with summary.json)."""
    reference: str | None = None
    """Reference model for the KL: 'default', a folder or a Hub id (default: the run's start)."""
    eval_prompts: int | None = None
    """Held-out prompts (default: the run's)."""
    output: Path | None = None
    """Where to write the metrics as JSON (default: <run>/eval_<reference>.json)."""
    threads: int | None = 1
    """torch CPU threads; to repeat a run's samples exactly, use the run's thread count."""


def output_path(config: Config, saved: SavedRun) -> Path:
    if config.output is not None:
        return config.output
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", config.reference or "start").strip("_")
    return saved.path / f"eval_{name[-60:]}.json"


def main(config: Config) -> dict[str, Any]:
    start = time.time()
    check_ranges(config, at_least_one=["eval_prompts", "threads"])
    saved = SavedRun.open(config.run)
    settings = saved.run_settings
    env_id = check_env_id(settings.env_id)
    if config.threads:
        torch.set_num_threads(config.threads)
    dtype = settings.weights_dtype  # the run's, so that its samples repeat
    policy, tokenizer = saved.load_policy(dtype)
    reference, _ = load_causal_lm(config.reference or saved.model, dtype=dtype)
    model = ActorCritic(policy, reference=reference).eval()
    env = make_text_vector_env(env_id, 1, split="eval").envs[0]
    reward, _, heldout = make_rewards(settings, env)
    kind = resolve_prompt_format(
        settings.prompt_format, tokenizer, conversational=env.conversational
    )
    evaluator = make_evaluator(
        settings, env_id, make_prompt_format(kind, tokenizer), reward, heldout,
        num_prompts=config.eval_prompts,
    )  # fmt: skip
    metrics, _ = evaluator(model, tokenizer)
    result = {
        "run": str(saved.path),
        "policy": str(saved.policy_dir),
        "reference": config.reference or saved.model,
        "eval_prompts": evaluator.num_prompts,
        **metrics,
        "wall_time_s": time.time() - start,
    }
    path = output_path(config, saved)
    path.write_text(json.dumps(result, indent=2))
    recorded = saved.summary
    print(
        f"held-out reward {metrics['eval/reward_mean']:+.3f} ± {metrics['eval/reward_sem']:.3f} "
        f"(the run recorded {recorded['eval_reward_after']:+.3f}), KL to "
        f"{result['reference']} {metrics['eval/kl']:.2f} nats (the run recorded "
        f"{recorded['eval_kl_after']:.2f} to its own reference); written to {path}"
    )
    return result


if __name__ == "__main__":
    raise SystemExit(run_cli(main, Config))
