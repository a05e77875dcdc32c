"""A pretrained causal LM as a stable-baselines3 policy over the token-level view.

:class:`LMActorCriticPolicy` subclasses SB3's ``ActorCriticPolicy`` (SB3's ``PPO`` and
``A2C`` train it) and :class:`MaskableLMActorCriticPolicy` sb3-contrib's
``MaskableActorCriticPolicy`` (``MaskablePPO``). Both replace SB3's feature extractor and
MLP heads with an :class:`rlm.policy.ActorCritic`: the action distribution is the LM's
next-token distribution over the context in the observation (divided by the sampling
temperature, the mask applied), and the value is the actor-critic's value head on the
last position's hidden state (or its separate critic trunk). LoRA, the reference policy
and the model loading are the rest of rlm's, unchanged.

:class:`TopPMasker` is NLPO's action mask (Ramamurthy et al. 2023): the tokens in the
top-p nucleus of a *masking policy*, a copy of the policy refreshed every few updates.

Example:
    >>> kwargs = {"actor_critic": ac}
    >>> model = PPO(LMActorCriticPolicy, vec_env, policy_kwargs=kwargs)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from transformers import TopPLogitsWarper

from rlm.errors import ConfigError
from rlm.policy import ActorCritic, next_token_logits
from rlm.token_env import TokenObservation


def trim_left_padding(
    input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the columns that are padding in every row: a batch of short contexts in
    ``max_length``-wide observations costs only its longest context's length."""
    used = attention_mask.any(0).nonzero()
    start = int(used[0]) if len(used) else attention_mask.shape[1] - 1
    return input_ids[:, start:], attention_mask[:, start:]


def context_tensors(obs: PyTorchObs) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask (as int64, whatever dtype SB3 hands over) from an
    observation batch, trimmed of shared padding."""
    assert isinstance(obs, dict), "the token view's observations are dicts"
    return trim_left_padding(obs["input_ids"].long(), obs["attention_mask"].long())


class _LMPolicy:
    """What both policies share: the actor-critic's next-token logits and values in place
    of SB3's networks, and an optimizer over the actor-critic's trainable weights."""

    actor_critic: ActorCritic
    temperature: float
    action_space: spaces.Discrete
    action_dist: Any
    optimizer_class: type[torch.optim.Optimizer]
    optimizer_kwargs: dict[str, Any]

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        lr_schedule: Schedule,
        *,
        actor_critic: ActorCritic,
        temperature: float = 1.0,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.AdamW,
        optimizer_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # Kept outside nn.Module's registry until SB3's __init__ has made this a Module;
        # _build (called from that __init__) registers it.
        self.__dict__["_pending"] = (actor_critic, temperature)
        # The SB3 policy class after this one in the method order (the mixin's subclasses).
        super().__init__(  # type: ignore[call-arg]
            observation_space, action_space, lr_schedule,
            optimizer_class=optimizer_class, optimizer_kwargs=optimizer_kwargs, **kwargs,
        )  # fmt: skip

    def _build(self, lr_schedule: Schedule) -> None:
        actor_critic, self.temperature = self.__dict__.pop("_pending")
        vocab = actor_critic.policy.get_output_embeddings().weight.shape[0]
        if vocab < self.action_space.n:
            raise ConfigError(
                f"the policy's vocabulary ({vocab}) is smaller than the token view's action "
                f"space ({self.action_space.n}): build the view with the policy's tokenizer"
            )
        self.actor_critic = actor_critic
        trainable = [p for p in actor_critic.parameters() if p.requires_grad]
        make_optimizer: Any = self.optimizer_class  # (SB3 types it as a bare Optimizer)
        self.optimizer = make_optimizer(trainable, lr=lr_schedule(1), **self.optimizer_kwargs)

    def _logits_values(self, obs: PyTorchObs) -> tuple[torch.Tensor, torch.Tensor]:
        input_ids, attention_mask = context_tensors(obs)
        logits, values = self.actor_critic.next_token(input_ids, attention_mask, self.temperature)
        # A model whose embedding is padded past the tokenizer has more logits than actions.
        return logits[:, : self.action_space.n], values

    def _distribution(self, logits: torch.Tensor, action_masks: Any = None) -> Distribution:
        dist = self.action_dist.proba_distribution(action_logits=logits)
        if action_masks is not None:
            dist.apply_masking(action_masks)
        return dist  # type: ignore[no-any-return]

    def forward(
        self, obs: PyTorchObs, deterministic: bool = False, action_masks: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, values = self._logits_values(obs)
        dist = self._distribution(logits, action_masks)
        actions = dist.get_actions(deterministic=deterministic)
        return actions, values.unsqueeze(-1), dist.log_prob(actions)

    def evaluate_actions(
        self, obs: PyTorchObs, actions: torch.Tensor, action_masks: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        logits, values = self._logits_values(obs)
        dist = self._distribution(logits, action_masks)
        return values.unsqueeze(-1), dist.log_prob(actions), dist.entropy()

    def get_distribution(self, obs: PyTorchObs, action_masks: Any = None) -> Distribution:
        return self._distribution(self._logits_values(obs)[0], action_masks)

    def predict_values(self, obs: PyTorchObs) -> torch.Tensor:
        return self._logits_values(obs)[1].unsqueeze(-1)

    def _predict(
        self, observation: PyTorchObs, deterministic: bool = False, action_masks: Any = None
    ) -> torch.Tensor:
        return self.get_distribution(observation, action_masks).get_actions(deterministic)


class LMActorCriticPolicy(_LMPolicy, ActorCriticPolicy):  # type: ignore[misc]
    """SB3's actor-critic policy whose actor and critic are a causal LM (:class:`ActorCritic`).

    Args:
        observation_space, action_space, lr_schedule: as SB3 passes them.
        actor_critic: the LM and its value head.
        temperature: the sampling temperature (the logits are divided by it).
        optimizer_class, optimizer_kwargs: the optimizer over the trainable weights.
    """


class MaskableLMActorCriticPolicy(_LMPolicy, MaskableActorCriticPolicy):  # type: ignore[misc]
    """:class:`LMActorCriticPolicy` for sb3-contrib's ``MaskablePPO``: the environment's
    ``action_masks()`` limit the tokens (NLPO's top-p mask, :class:`TopPMasker`)."""


class TopPMasker:
    """NLPO's mask: the tokens inside the top-p nucleus of a masking policy's next-token
    distribution, the policy as it was at the last :meth:`refresh`.

    The masking policy is a copy of the actor-critic's LM (for LoRA: the base weights
    too, which are never trained); :meth:`refresh` copies the trainable weights into it.

    Args:
        actor_critic: the policy being trained.
        top_p: the nucleus' probability mass (RL4LMs' default: 0.9).
        temperature: applied before the nucleus is taken, as in sampling.
        vocab_size: the actions (a model whose embedding is padded past the tokenizer has
            more logits); default: all of the logits.
    """

    def __init__(
        self,
        actor_critic: ActorCritic,
        top_p: float,
        temperature: float = 1.0,
        vocab_size: int | None = None,
    ):
        if not 0 < top_p <= 1:
            raise ConfigError(f"--mask-top-p must be in (0, 1], got {top_p}")
        self.source = actor_critic.policy
        self.masking = copy.deepcopy(self.source).eval().requires_grad_(False)
        self.warper = TopPLogitsWarper(top_p, min_tokens_to_keep=1)
        self.temperature = temperature
        self.vocab_size = vocab_size
        self.refreshes = 0
        self.seconds = 0.0
        """Time spent computing masks (the masking policy's forward passes)."""

    def refresh(self) -> None:
        """Copy the trained weights into the masking policy."""
        trained = {k: v for k, v in self.source.named_parameters() if v.requires_grad}
        self.load_trained_state(trained)
        self.refreshes += 1

    def trained_state(self) -> dict[str, torch.Tensor]:
        """The masking policy's copies of the trained weights (what a checkpoint keeps)."""
        trained = {k for k, v in self.source.named_parameters() if v.requires_grad}
        return {
            k: v.detach().contiguous().cpu()
            for k, v in self.masking.named_parameters() if k in trained
        }  # fmt: skip

    def load_trained_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Set the masking policy's copies of the trained weights."""
        parameters = dict(self.masking.named_parameters())
        unknown = sorted(set(tensors) - set(parameters))
        if unknown:
            raise RuntimeError(f"the masking policy has no weights {unknown[:3]}")
        with torch.no_grad():
            for name, tensor in tensors.items():
                parameters[name].copy_(tensor)

    @torch.no_grad()
    def masks(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Boolean ``[batch, vocab]``: True inside each context's nucleus."""
        start = time.perf_counter()
        input_ids, attention_mask = trim_left_padding(input_ids, attention_mask)
        logits = next_token_logits(self.masking, input_ids, attention_mask, self.temperature)
        logits = logits[:, : self.vocab_size]  # the nucleus of the actions' distribution
        masks = torch.isfinite(self.warper(input_ids, logits))
        self.seconds += time.perf_counter() - start
        return masks

    def __call__(self, obs: TokenObservation) -> np.ndarray:
        """One observation's mask, as :class:`rlm.token_env.TokenEnv` asks for it."""
        device = next(self.masking.parameters()).device
        ids = torch.as_tensor(obs["input_ids"], device=device).unsqueeze(0)
        mask = torch.as_tensor(obs["attention_mask"], device=device).unsqueeze(0)
        return self.masks(ids, mask)[0].cpu().numpy()
