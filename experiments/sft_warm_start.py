"""Supervised warm start (TRL's SFTTrainer) on demonstrations from an environment's data.

    python experiments/sft_warm_start.py                         # positive tweets, SmolLM2-135M
    python experiments/sft_warm_start.py --max-examples 2000 --epochs 2
    python experiments/sft_warm_start.py --demonstrations demos.jsonl --env-id my_envs:rlm/X-v0
    python experiments/ppo_sentiment.py --model runs/<this run>/model  # then RL from it
    python experiments/grpo.py --model runs/<this run>/model

Demonstrations: for ``rlm/Sentiment-v0``, the training split's tweet openings continued
with the rest of their tweet, for tweets labelled ``--label`` (positive); for any
environment, a JSON Lines file of ``{"prompt", "completion"}`` rows. The policy learns
them with a LoRA adapter (loss on the completion only); the adapter is then merged and
the full model saved in ``model/`` inside the run folder, a folder that ``--model`` of
every RL script accepts. The held-out reward and the KL to the starting model are
evaluated before and after, exactly as in the RL scripts.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import envs  # noqa: F401  (registers the rlm/ environments)
from envs.tweets import load_tweets
from rlm.demonstrations import Demonstration, read_demonstrations, sft_dataset
from rlm.env import TextEnv, check_env_id
from rlm.errors import ConfigError
from rlm.models import resolve_model_path
from rlm.rollout import make_prompt_format
from rlm.run import RunDir
from rlm.scripting import run_cli
from rlm.trl_adapters import TokenCounter
from rlm.trl_experiment import (
    TRLSettings,
    actor_critic_of,
    common_trainer_arguments,
    load_policy,
    lora_config,
    resolve_dtype,
    train_and_report,
    trainer_output_dir,
    training_env,
)
from rlm.validation import check_ranges

SENTIMENT_ENV = "rlm/Sentiment-v0"


@dataclass
class Config:
    """Supervised fine-tuning on demonstrations, saved as a model the RL scripts start from."""

    env_id: str = SENTIMENT_ENV
    """Environment whose task is demonstrated (and evaluated before and after)."""
    model: str = "default"
    """Starting policy: 'default' (SmolLM2-135M-Instruct), a local folder, or a Hub id."""
    demonstrations: Path | None = None
    """JSON Lines file of {"prompt", "completion"} rows; default: the environment's own data."""
    label: Literal["positive", "neutral", "negative"] = "positive"
    """Sentiment task: continue the tweets carrying this label."""
    min_confidence: float = 0.0
    """Sentiment task: keep tweets whose annotators' confidence is at least this."""
    max_examples: int = 1000
    """Demonstrations used at most (the first ones, after shuffling with the seed)."""
    prompt_format: Literal["plain", "chat"] = "plain"
    """'plain' continues the prompt; 'chat' trains user/assistant turns (match the RL run)."""
    exp_name: str = Path(__file__).stem
    """Experiment name, part of the run name."""
    seed: int = 1
    """Seed of everything: the sample of demonstrations, initialisation."""
    epochs: float = 1.0
    """Passes over the demonstrations."""
    batch_size: int = 16
    """Demonstrations per optimizer step."""
    lr: float = 2e-4
    """AdamW learning rate of the LoRA adapter."""
    max_length: int = 64
    """Tokens per demonstration (prompt and completion) at most; longer ones are cut."""
    lora_r: int = 16
    """LoRA rank (the adapter is merged into the saved model)."""
    lora_alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    max_new_tokens: int = 20
    """Evaluation: tokens per completion at most (as in the RL scripts)."""
    eval_every: int = 50
    """Evaluate on held-out prompts every this many steps (and before and after)."""
    eval_prompts: int = 64
    """Held-out prompts per evaluation."""
    eval_batch_size: int = 32
    """Held-out prompts generated at once."""
    samples_logged: int = 16
    """Evaluation samples per table."""
    output_dir: Path = Path("runs")
    """Parent folder of run folders."""
    wandb: Literal["auto", "online", "offline", "disabled"] = "auto"
    """W&B mode; 'auto' is online when logged in, else offline."""
    wandb_project: str = "rlm"
    """W&B project."""
    tensorboard: bool = True
    """Write TensorBoard events."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Weights' dtype: auto is bfloat16 on a GPU that supports it, float32 on CPU."""
    threads: int | None = None
    """torch CPU threads (default: torch's choice)."""

    def settings(self) -> TRLSettings:
        """The fields the shared set-up (model, evaluation, logging) reads."""
        shared = {f.name for f in dataclasses.fields(TRLSettings)}
        values = {k: v for k, v in dataclasses.asdict(self).items() if k in shared}
        return TRLSettings(**values)


def sentiment_demonstrations(
    env: TextEnv, label: str, min_confidence: float
) -> list[Demonstration]:
    """Each training opening continued with the rest of its tweet, for tweets with ``label``."""
    tweets = load_tweets()
    demos = []
    for task in env.tasks:
        tweet = tweets[task["tweet_id"]]
        if tweet["label"] != label or not tweet["confidence"] >= min_confidence:
            continue
        prompt = str(task["prompt"])
        rest = tweet["text"][len(prompt) :]
        if tweet["text"].startswith(prompt) and rest.strip():
            demos.append(Demonstration(prompt, rest))
    return demos


def load_demonstrations(config: Config, env: TextEnv) -> list[Demonstration]:
    """The file's rows, or the environment's own demonstrations."""
    if config.demonstrations is not None:
        return read_demonstrations(config.demonstrations)
    if config.env_id != SENTIMENT_ENV:
        raise ConfigError(
            f"{config.env_id} has no built-in demonstrations: pass --demonstrations FILE.jsonl "
            'with {"prompt": ..., "completion": ...} rows'
        )
    return sentiment_demonstrations(env, config.label, config.min_confidence)


def main(config: Config) -> dict:
    """Train; return the summary (eval reward before/after, KL to the start, wall time)."""
    from trl import SFTConfig, SFTTrainer  # imported here: a second of start-up for --help

    wall_start = time.time()
    check_ranges(
        config,
        at_least_one=["max_examples", "batch_size", "max_length", "lora_r", "lora_alpha",
                      "max_new_tokens", "eval_every", "eval_prompts", "eval_batch_size"],
        positive=["epochs", "lr"],
    )  # fmt: skip
    config.env_id = check_env_id(config.env_id)
    resolve_model_path(config.model)  # fail on a bad path before any slow work
    settings = config.settings()

    # --- demonstrations and model
    env = training_env(config.env_id)
    demos = load_demonstrations(config, env)
    dataset = sft_dataset(demos, prompt_format=config.prompt_format)
    dataset = dataset.shuffle(seed=config.seed).select(
        range(min(config.max_examples, len(dataset)))
    )
    print(f"{len(dataset)} demonstrations (of {len(demos)}), e.g. {demos[0]}")
    model, tokenizer = load_policy(settings)
    scratch = trainer_output_dir()
    args = SFTConfig(
        **common_trainer_arguments(
            output_dir=scratch, seed=config.seed, lr=config.lr, dtype=resolve_dtype(config.dtype)
        ),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        max_length=config.max_length,
    )
    trainer = SFTTrainer(
        model, args=args, train_dataset=dataset, processing_class=tokenizer,
        peft_config=lora_config(settings),
    )  # fmt: skip
    policy = actor_critic_of(trainer)  # reference = the starting model (adapter off)

    # --- evaluation before training, run folder, logging, training; then the merged model
    # where the RL scripts' --model can read it
    model_dirs: list[Path] = []

    def save_merged_model(run_dir: RunDir) -> None:
        model_dir = run_dir.path / "model"
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        merged.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        run_dir.update_meta(model_dir=str(model_dir), demonstrations=len(dataset))
        model_dirs.append(model_dir)

    summary = train_and_report(
        trainer, settings, config, policy, tokenizer,
        make_prompt_format(config.prompt_format, tokenizer), TokenCounter(),
        algorithm="sft", wall_start=wall_start, save=save_merged_model,
    )  # fmt: skip
    print(f"start RL from it: python experiments/grpo.py --model {model_dirs[0]}")
    return summary


def cli(argv: list[str] | None = None) -> int:
    """Parse flags, train, and turn user errors into one line and exit status 2."""
    return run_cli(main, Config, argv)


if __name__ == "__main__":
    sys.exit(cli())
