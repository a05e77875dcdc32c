"""The actor-critic: a causal LM policy and a value head, in one module.

By default the value head reads the policy's own last hidden states (one forward pass
gives both log-probs and values). With ``value_model`` the critic is a separate trunk; it
must share the policy's tokenizer, since both read the same token ids.

With LoRA (through peft) the reference policy is the same weights with the adapter turned
off, so no second copy of the model is kept; without LoRA, a frozen copy is kept. A
``reference`` model given explicitly replaces both: re-evaluating a run after a
supervised warm start against the base model, for instance, rather than its start.

Example:
    >>> model, tok = load_causal_lm("default")  # doctest: +SKIP
    >>> ac = ActorCritic(add_lora(model, LoraSettings(r=16)))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import PreTrainedModel
from trl.trainer.utils import entropy_from_logits, selective_log_softmax

from rlm.errors import ConfigError


@dataclass
class LoraSettings:
    """LoRA adapter settings (peft)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"

    def peft_arguments(self) -> dict[str, Any]:
        """peft's ``LoraConfig`` keyword arguments for these settings (no task type)."""
        return {"r": self.r, "lora_alpha": self.alpha, "lora_dropout": self.dropout,
                "target_modules": self.target_modules}  # fmt: skip


def add_lora(model: PreTrainedModel, settings: LoraSettings) -> PeftModel:
    """Wrap ``model`` with a trainable LoRA adapter; the base weights are frozen."""
    config = LoraConfig(**settings.peft_arguments(), task_type="CAUSAL_LM")
    with peft_quietly():
        return get_peft_model(model, config)


@contextlib.contextmanager
def peft_quietly() -> Iterator[None]:
    """Silence the deprecation warning that peft (on every wrap or load) and TRL (on every
    generation) trigger in transformers: there is nothing for users to do about it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing.*", FutureWarning)
        yield


def position_ids_from(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, exactly as ``generate`` computes them."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


@dataclass
class ForwardOutput:
    """Per-token quantities over the response region ``[batch, response_length]``."""

    logprobs: torch.Tensor
    values: torch.Tensor
    entropy: torch.Tensor | None


class ActorCritic(nn.Module):
    """Policy LM plus value head; ``forward`` returns both over the response region.

    Args:
        policy: a causal LM, optionally a peft model with a LoRA adapter.
        value_model: optional separate trunk (an ``AutoModel``) for the critic.
        reference: optional reference policy (a causal LM with the policy's tokenizer, on
            the policy's device: ``.to`` does not move it); default: the adapter turned
            off, or a frozen copy of ``policy`` as it is now.
    """

    _reference: PreTrainedModel | PeftModel | None

    def __init__(
        self,
        policy: PreTrainedModel | PeftModel,
        value_model: PreTrainedModel | None = None,
        reference: PreTrainedModel | None = None,
    ):
        super().__init__()
        self.policy = policy
        self.value_model = value_model
        trunk_config = (value_model if value_model is not None else policy).config
        hidden = trunk_config.get_text_config().hidden_size
        self.value_head = nn.Linear(hidden, 1)
        # A zero head predicts 0 for every state at first, so that the first advantages are
        # the rewards themselves rather than noise from random projections of large hidden
        # states.
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        if reference is not None:
            check_same_tokenizer(
                policy.config.get_text_config().vocab_size,
                reference.config.get_text_config().vocab_size,
                what="reference model",
            )
        elif not isinstance(policy, PeftModel):
            # Full fine-tuning needs a frozen copy.
            reference = copy.deepcopy(policy)
        # Kept out of the module tree, so that it is neither trained, nor wrapped by DDP,
        # nor saved in checkpoints.
        if reference is not None:
            reference.eval().requires_grad_(False)
        object.__setattr__(self, "_reference", reference)
        # What accelerate's FSDP shards one unit at a time (its TRANSFORMER_BASED_WRAP reads
        # this from the model it prepares): the trunks' decoder layers.
        self._no_split_modules = sorted(
            {name for trunk in (policy, value_model) if trunk is not None
             for name in _base_model(trunk)._no_split_modules or ()}
        )  # fmt: skip

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        response_start: int,
        temperature: float = 1.0,
        with_entropy: bool = False,
    ) -> ForwardOutput:
        """Log-probs of the response tokens, values before each of them, and entropy.

        The prediction for token ``t`` comes from position ``t - 1``, so the response region
        ``[response_start, L)`` is read from hidden states ``[response_start - 1, L - 1)``.
        """
        position_ids = position_ids_from(attention_mask)
        states = trunk_states(self.policy.get_decoder(), input_ids, attention_mask, position_ids)
        hidden = response_states(states, response_start)
        # The vocabulary projection runs on response positions only: the prompt's logits
        # would cost as much and are never used.
        logits = scaled_logits(self.policy, hidden, temperature)
        targets = input_ids[:, response_start:]
        logprobs = selective_log_softmax(logits, targets)
        entropy = None
        if with_entropy:
            with torch.no_grad():
                entropy = entropy_from_logits(logits)
        if self.value_model is not None:
            states = trunk_states(self.value_model, input_ids, attention_mask, position_ids)
            hidden = response_states(states, response_start)
        # The head stays in float32 whatever the trunk's dtype (bfloat16 weights, say).
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()
        return ForwardOutput(logprobs, values, entropy)

    def next_token(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits of the token after each (left-padded) context and the value of the
        context: ``[batch, vocab]`` and ``[batch]``, from the last position's hidden state
        (the token-level view, :mod:`rlm.token_policy`)."""
        position_ids = position_ids_from(attention_mask)
        # (No KV cache: the token view passes every context whole.)
        decoder = self.policy.get_decoder()
        hidden = trunk_states(decoder, input_ids, attention_mask, position_ids)[:, -1]
        logits = scaled_logits(self.policy, hidden, temperature)
        if self.value_model is not None:
            hidden = trunk_states(self.value_model, input_ids, attention_mask, position_ids)[:, -1]
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()
        return logits, values

    def checkpoint_activations(self) -> None:
        """Turn on activation checkpointing in the policy's trunk and the critic's
        (transformers' own; it applies only to passes with gradients)."""
        for model in (self.policy, self.value_model):
            if model is not None:
                # Non-reentrant: an adapter's inputs need not require gradients.
                _base_model(model).activation_checkpointing_enable({"use_reentrant": False})

    @torch.no_grad()
    def reference_next_token_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float = 1.0
    ) -> torch.Tensor:
        """The reference policy's logits of the token after each context, ``[batch, vocab]``."""
        with self.as_reference() as reference:
            return next_token_logits(reference, input_ids, attention_mask, temperature)

    @contextlib.contextmanager
    def as_reference(self) -> Iterator[PreTrainedModel | PeftModel]:
        """The frozen reference policy: the one given, the adapter disabled, or the copy."""
        if self._reference is not None:
            yield self._reference
        else:
            assert isinstance(self.policy, PeftModel)
            with self.policy.disable_adapter():
                yield self.policy

    @torch.no_grad()
    def reference_logprobs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        response_start: int,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """Log-probs of the response tokens under the reference policy."""
        with self.as_reference() as reference:
            position_ids = position_ids_from(attention_mask)
            states = trunk_states(reference.get_decoder(), input_ids, attention_mask, position_ids)
            logits = scaled_logits(reference, response_states(states, response_start), temperature)
            return selective_log_softmax(logits, input_ids[:, response_start:])


def next_token_logits(
    model: PreTrainedModel | PeftModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """A causal LM's logits (float32, divided by ``temperature``) of the token after each
    left-padded context, ``[batch, vocab]``: the vocabulary projection of the last
    position only."""
    position_ids = position_ids_from(attention_mask)
    hidden = trunk_states(model.get_decoder(), input_ids, attention_mask, position_ids)[:, -1]
    return scaled_logits(model, hidden, temperature)


def trunk_states(
    trunk: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
) -> torch.Tensor:
    """A decoder trunk's last hidden states over whole sequences, ``[batch, L, hidden]``.

    No KV cache: these passes read each sequence once, and building a cache would copy
    every layer's keys and values (a ``cat`` per layer) for nothing.
    """
    return trunk(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
        use_cache=False,
    ).last_hidden_state  # fmt: skip


def response_states(hidden: torch.Tensor, response_start: int) -> torch.Tensor:
    """The hidden states that predict the response tokens, ``[batch, L - response_start,
    hidden]``: positions ``[response_start - 1, L - 1)``, copied into one block.

    The copy pays for itself: on a strided slice the vocabulary projection runs as a
    batched matmul against the weight broadcast per episode, 1.8x as slow on one CPU
    thread as one matmul over the block (SmolLM2, 8 x 32 positions: 166 against 92 ms).
    """
    return hidden[:, response_start - 1 : -1].contiguous()


def scaled_logits(
    model: PreTrainedModel | PeftModel, hidden: torch.Tensor, temperature: float
) -> torch.Tensor:
    """A causal LM's logits of ``hidden`` in float32, divided by ``temperature`` (not at
    1: a pass over a ``[tokens, vocab]`` tensor for nothing, forward and backward)."""
    logits = model.get_output_embeddings()(hidden).float()
    return logits if temperature == 1.0 else logits / temperature


def _base_model(model: PreTrainedModel | PeftModel) -> PreTrainedModel:
    """The transformers model itself, under a peft adapter or not."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    assert isinstance(base, PreTrainedModel)
    return base


def check_same_tokenizer(policy_vocab: int, other_vocab: int, what: str = "value model") -> None:
    """A separate value or reference model must read the policy's token ids."""
    if policy_vocab != other_vocab:
        raise ConfigError(
            f"the {what}'s vocabulary ({other_vocab}) differs from the policy's "
            f"({policy_vocab}): use a {what} with the policy's tokenizer"
        )
