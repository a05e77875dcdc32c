"""Token-level training with stable-baselines3: SB3's PPO and A2C, sb3-contrib's MaskablePPO.

:class:`TokenLearner` turns the run's text environments into their token views
(:class:`rlm.token_env.TokenEnv`, one SB3 environment each), builds the SB3 algorithm on
:mod:`rlm.token_policy`'s LM-backed policy, and runs one of rlm's steps per call: a
rollout of ``n_steps`` tokens in every environment, then the algorithm's update
(``learn`` for exactly one rollout). Each step starts fresh episodes, seeded from the
run's seed and the step as rlm's PPO seeds its rollouts, so that a resumed run repeats an
uninterrupted one exactly; an episode still running at the end of a step is bootstrapped
by the critic (SB3's GAE) and left.

The algorithms:

- ``ppo``: SB3's ``PPO`` (clipped ratio, ``--epochs`` passes in minibatches);
- ``a2c``: SB3's ``A2C`` (one gradient step on each rollout), with AdamW as everywhere else;
- ``nlpo``: sb3-contrib's ``MaskablePPO`` with NLPO's mask: the top-p nucleus of a masking
  copy of the policy (:class:`rlm.token_policy.TopPMasker`), refreshed every
  ``--mask-refresh-every`` updates.

The per-token KL penalty to the reference (RL4LMs' reward shaping) is subtracted from each
token's reward by :class:`TokenRolloutCallback`, in the rollout, before SB3 stores it: the
env cannot know the policy's log-probs. Checkpoints are rlm's: the trainable tensors and
the optimizer (:func:`rlm.checkpoint.save_training_state`), the random generators, and
SB3's counters and the masking weights as JSON and safetensors; nothing is unpickled.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from accelerate import PartialState
from safetensors.torch import load_file, save_file
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv
from transformers import PreTrainedTokenizerBase, get_scheduler

from rlm.checkpoint import load_training_state, save_training_state
from rlm.env import TextEnv
from rlm.errors import ConfigError
from rlm.policy import ActorCritic
from rlm.ppo_learner import IterationResult, Optimization
from rlm.rollout import GenerationSettings, PromptFormat, eos_token_ids, rollout_seed
from rlm.token_env import DEFAULT_MAX_LENGTH, TokenEnv
from rlm.token_policy import (
    LMActorCriticPolicy,
    MaskableLMActorCriticPolicy,
    TopPMasker,
    context_tensors,
)
from rlm.validation import check_ranges

Algo = Literal["ppo", "a2c", "nlpo"]
_STATE_FILE = "sb3_state.json"
_MASKING_FILE = "masking.safetensors"


@dataclass
class SB3Settings:
    """The token-level algorithm and its update; the rest are the shared settings."""

    algo: Algo = "ppo"
    """SB3's PPO, SB3's A2C, or NLPO-style masked PPO (sb3-contrib's MaskablePPO)."""
    n_steps: int = 32
    """Tokens each environment generates per step (SB3's rollout length); the step's
    batch is --batch-size environments times this."""
    epochs: int = 2
    """Passes over each rollout (PPO and NLPO; A2C takes one gradient step)."""
    minibatch_size: int = 64
    """Tokens per minibatch (PPO and NLPO; SB3's batch_size)."""
    clip_range: float = 0.2
    """Clipping of the probability ratio (PPO and NLPO)."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus."""
    gamma: float = 1.0
    """Discount per token."""
    lam: float = 0.95
    """GAE lambda."""
    kl_coef: float = 0.05
    """Per-token KL penalty to the reference (adapter off) in each token's reward (0: off,
    and no reference forward pass)."""
    context_length: int = DEFAULT_MAX_LENGTH
    """Context tokens an observation holds (a longer context keeps its last ones)."""
    mask_top_p: float = 0.9
    """NLPO: the probability mass of the masking policy's nucleus the actions are limited to."""
    mask_refresh_every: int = 5
    """NLPO: updates between two copies of the policy into the masking policy."""

    def validate(self, batch_size: int, max_new_tokens: int) -> None:
        check_ranges(
            self, at_least_one=["n_steps", "epochs", "minibatch_size", "mask_refresh_every"],
            positive=["clip_range"],
            non_negative=["vf_coef", "ent_coef", "kl_coef", "gamma", "lam"],
        )  # fmt: skip
        if not 0 < self.mask_top_p <= 1:
            raise ConfigError(f"--mask-top-p must be in (0, 1], got {self.mask_top_p}")
        if self.context_length < 2:
            raise ConfigError(f"--context-length must be at least 2, got {self.context_length}")
        if self.n_steps < max_new_tokens:
            raise ConfigError(
                f"--n-steps ({self.n_steps}) is shorter than a turn (--max-new-tokens "
                f"{max_new_tokens}): a step would end before any episode is scored"
            )
        if self.algo != "a2c" and (self.n_steps * batch_size) % self.minibatch_size:
            raise ConfigError(
                f"--minibatch-size ({self.minibatch_size}) must divide the step's tokens "
                f"(--n-steps {self.n_steps} x --batch-size {batch_size})"
            )


def _kl_of_actions(
    actor_critic: ActorCritic,
    obs: dict[str, torch.Tensor],
    actions: np.ndarray,
    logprobs: torch.Tensor,
    temperature: float,
    actions_count: int,
) -> np.ndarray:
    """``log p(a) - log q(a)`` per environment (k1): the policy's log-prob of the sampled
    token (as sampled: under the mask, for NLPO) against the reference's."""
    input_ids, attention_mask = context_tensors(obs)
    ref_logits = actor_critic.reference_next_token_logits(input_ids, attention_mask, temperature)
    ref_logits = ref_logits[:, :actions_count]  # the policy's distribution is over these
    taken = torch.as_tensor(actions, device=ref_logits.device).long().reshape(-1, 1)
    ref_logprobs = torch.log_softmax(ref_logits, -1).gather(1, taken).squeeze(1)
    return (logprobs.reshape(-1) - ref_logprobs).cpu().numpy().astype(np.float64)


class TokenRolloutCallback(BaseCallback):
    """In SB3's rollout: the KL penalty on each token's reward, and episode statistics.

    SB3 calls :meth:`_on_step` after each vector step with its rollout's variables
    (``self.locals``); ``rewards`` is the array it then stores in the buffer, so the
    penalty is subtracted from it in place.
    """

    def __init__(self, actor_critic: ActorCritic, kl_coef: float, temperature: float):
        super().__init__()
        self.actor_critic = actor_critic
        self.kl_coef = kl_coef
        self.temperature = temperature
        self.stats: dict[str, list[float]] = defaultdict(list)
        self.started = self.ended = 0.0
        self.reference_seconds = 0.0
        self._running: dict[str, np.ndarray] = {}

    def _on_rollout_start(self) -> None:
        self.stats = defaultdict(list)
        self.reference_seconds = 0.0
        self.started = time.perf_counter()
        n = self.training_env.num_envs
        self._running = {key: np.zeros(n) for key in ("reward", "kl", "tokens", "turns", "cut")}

    def _on_step(self) -> bool:
        rewards: np.ndarray = self.locals["rewards"]
        env_rewards = rewards.copy()
        kl = np.zeros_like(rewards)
        if self.kl_coef > 0:
            start = time.perf_counter()
            kl = _kl_of_actions(
                self.actor_critic, self.locals["obs_tensor"], self.locals["actions"],
                self.locals["log_probs"], self.temperature,
                int(self.training_env.action_space.n),  # type: ignore[attr-defined]
            )  # fmt: skip
            self.reference_seconds += time.perf_counter() - start
            rewards -= self.kl_coef * kl
        running = self._running
        running["reward"] += env_rewards
        running["kl"] += kl
        running["tokens"] += 1
        for i, (done, info) in enumerate(
            zip(self.locals["dones"], self.locals["infos"], strict=True)
        ):
            if "completion" in info:  # a turn ended
                running["turns"][i] += 1
                running["cut"][i] += bool(info["cut"])
                for key, value in info.items():
                    if key.startswith("reward/"):
                        self.stats[key].append(float(value))
            if done:
                for key, values in running.items():
                    self.stats[key].append(float(values[i]))
                    values[i] = 0.0
        return True

    def _on_rollout_end(self) -> None:
        self.ended = time.perf_counter()


def _algorithm_class(algo: Algo) -> tuple[type[OnPolicyAlgorithm], type[Any]]:
    if algo == "ppo":
        return PPO, LMActorCriticPolicy
    if algo == "a2c":
        return A2C, LMActorCriticPolicy
    from sb3_contrib import MaskablePPO

    return MaskablePPO, MaskableLMActorCriticPolicy


# SB3's metric names -> rlm's (the rest keep theirs under train/).
_RENAMES = {
    "train/learning_rate": "train/lr",
    "train/policy_gradient_loss": "train/policy_loss",
}


class TokenLearner:
    """An SB3 algorithm on the token views of ``text_envs``: a call of :meth:`step` per
    rlm step (one rollout and its update).

    Args:
        actor_critic: the policy and its value head (trained in place).
        tokenizer: the policy's tokenizer.
        text_envs: the run's training environments, one token view each.
        settings: the algorithm and its update.
        optimization: learning rate, schedule, weight decay, clipping.
        generation: ``max_new_tokens`` and the temperature (top-k/top-p sampling is not
            part of the token view; NLPO's mask is its nucleus).
        prompt_format: how observations and replies become tokens.
        seed: the run's seed.
        state: the process (the token view runs in one).
    """

    def __init__(
        self,
        actor_critic: ActorCritic,
        tokenizer: PreTrainedTokenizerBase,
        text_envs: list[TextEnv],
        settings: SB3Settings,
        *,
        optimization: Optimization,
        generation: GenerationSettings,
        prompt_format: PromptFormat,
        seed: int,
        state: PartialState,
    ) -> None:
        self.actor_critic = actor_critic
        self.settings = settings
        self.seed = seed
        self.state = state
        self.masker = None
        if settings.algo == "nlpo":
            self.masker = TopPMasker(
                actor_critic, settings.mask_top_p, generation.temperature, len(tokenizer)
            )
        eos = eos_token_ids(tokenizer, actor_critic.policy.generation_config.eos_token_id)
        token_envs = [
            TokenEnv(
                env,
                tokenizer,
                max_new_tokens=generation.max_new_tokens,
                max_length=settings.context_length,
                prompt_format=prompt_format,
                eos_ids=eos,
                action_masker=self.masker,
            )  # fmt: skip
            for env in text_envs
        ]
        # In this process: the policy's forward pass, not the reward, is a token's cost,
        # and NLPO's mask needs the policy.
        self.envs: VecEnv = DummyVecEnv([lambda env=env: env for env in token_envs])  # type: ignore[misc]
        algorithm, policy = _algorithm_class(settings.algo)
        self.callback = TokenRolloutCallback(actor_critic, settings.kl_coef, generation.temperature)
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        kwargs: dict[str, Any] = dict(
            n_steps=settings.n_steps, gamma=settings.gamma, gae_lambda=settings.lam,
            ent_coef=settings.ent_coef, vf_coef=settings.vf_coef,
            max_grad_norm=optimization.max_grad_norm,
        )  # fmt: skip
        if settings.algo == "a2c":
            kwargs.update(use_rms_prop=False, normalize_advantage=True)
        else:
            kwargs.update(
                n_epochs=settings.epochs, batch_size=settings.minibatch_size,
                clip_range=settings.clip_range,
            )  # fmt: skip
        self.model = algorithm(
            policy, self.envs,
            # SB3's own schedule counts progress within one learn() call; rlm's schedule
            # runs over the run's steps (self.scheduler), and SB3 reads it from there.
            learning_rate=self._learning_rate(optimization.lr),
            policy_kwargs={
                "actor_critic": actor_critic, "temperature": generation.temperature,
                "optimizer_kwargs": {"weight_decay": optimization.weight_decay},
            },
            seed=seed, device=state.device, verbose=0, **kwargs,
        )  # fmt: skip
        self.model.set_logger(Logger(folder=None, output_formats=[]))
        self.scheduler = get_scheduler(
            optimization.schedule, self.model.policy.optimizer,
            num_warmup_steps=0, num_training_steps=optimization.total_steps,
        )  # fmt: skip

    def _learning_rate(self, lr: float) -> Any:
        def current(_progress_remaining: float) -> float:
            return lr if self.scheduler is None else float(self.scheduler.get_last_lr()[0])

        return current

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.model.policy.optimizer

    def step(self, iteration: int) -> IterationResult:
        """Roll out ``n_steps`` tokens in every environment from fresh episodes and
        update once; the metrics, tokens and finished episodes."""
        n = self.envs.num_envs
        self.envs.seed(rollout_seed(self.seed, iteration, 0, 1, n))
        self.model._last_obs = None  # learn() then resets the environments (seeded above)
        started = time.perf_counter()
        masking_before = self.masker.seconds if self.masker is not None else 0.0
        self.model.learn(
            total_timesteps=self.settings.n_steps * n, callback=self.callback,
            reset_num_timesteps=False, log_interval=None,  # type: ignore[arg-type]
        )  # fmt: skip
        assert self.scheduler is not None
        self.scheduler.step()
        if self.masker is not None and (iteration + 1) % self.settings.mask_refresh_every == 0:
            self.masker.refresh()
        callback = self.callback
        tokens = self.settings.n_steps * n
        rollout_seconds = callback.ended - callback.started
        metrics: dict[str, float] = {}
        for key, value in self.model.logger.name_to_value.items():
            if key.startswith("train/") and key != "train/n_updates":
                metrics[_RENAMES.get(key, key)] = float(value)
        if "train/entropy_loss" in metrics:  # SB3's is the negative mean entropy
            metrics["train/entropy"] = -metrics["train/entropy_loss"]
        self.model.logger.dump()  # clears them
        stats = callback.stats
        episodes = len(stats["reward"])
        if episodes:
            rewards = np.array(stats["reward"])
            metrics.update({
                "reward/mean": float(rewards.mean()),
                "reward/std": float(rewards.std(ddof=1)) if episodes > 1 else 0.0,
                "train/kl": float(np.mean(stats["kl"])),
                "train/completion_length": float(np.mean(stats["tokens"])),
                "train/turns": float(np.mean(stats["turns"])),
                "train/cut_share": float(np.sum(stats["cut"]) / max(np.sum(stats["turns"]), 1)),
            })  # fmt: skip
            for key in [k for k in stats if k.startswith("reward/")]:
                metrics[key] = float(np.mean(stats[key]))
        metrics.update({
            "train/kl_coef": self.settings.kl_coef,
            "train/episodes_finished": float(episodes),
            "perf/time_rollout": rollout_seconds,
            "perf/time_reference": callback.reference_seconds,
            "perf/time_update": time.perf_counter() - started - rollout_seconds,
            "perf/tokens_per_second": tokens / rollout_seconds if rollout_seconds else 0.0,
        })  # fmt: skip
        if self.masker is not None:
            metrics["perf/time_mask"] = self.masker.seconds - masking_before
        return IterationResult(metrics, tokens=tokens, episodes=episodes)

    def save(self, folder: Path) -> None:
        """Write everything :meth:`load` needs to continue exactly into ``folder``."""
        assert self.scheduler is not None
        save_training_state(self.state, self.actor_critic, self.optimizer, self.scheduler, folder)
        sb3 = {"num_timesteps": self.model.num_timesteps, "n_updates": self.model._n_updates}
        if self.masker is not None:
            sb3["mask_refreshes"] = self.masker.refreshes
            save_file(self.masker.trained_state(), folder / _MASKING_FILE)
        (folder / _STATE_FILE).write_text(json.dumps(sb3, indent=2))

    def load(self, folder: Path) -> None:
        """Restore the weights, optimizer, schedule, random generators, SB3's counters and
        the masking policy saved in ``folder``."""
        assert self.scheduler is not None
        load_training_state(self.state, self.actor_critic, self.optimizer, self.scheduler, folder)
        sb3 = json.loads((folder / _STATE_FILE).read_text())
        self.model.num_timesteps = sb3["num_timesteps"]
        self.model._n_updates = sb3["n_updates"]
        if self.masker is not None:
            self.masker.load_trained_state(load_file(folder / _MASKING_FILE))
            self.masker.refreshes = sb3["mask_refreshes"]

    def close(self) -> None:
        self.envs.close()
