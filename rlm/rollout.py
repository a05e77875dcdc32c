"""The one rollout path: a policy plays a vector of text environments to episodes.

Every algorithm consumes what :func:`collect_episodes` returns: PPO directly, evaluation
on held-out prompts through the same call, and TRL's GRPO on multi-turn tasks through
:class:`rlm.trl_adapters.EnvRollout`. :func:`score_episodes` then adds what the policy,
the reference and the critic say of those tokens, as a new value (:class:`ScoredEpisodes`).

Tokens are kept exactly as generated, never re-tokenized from text: an episode is the
prompt's tokens, then each turn's completion tokens (the policy's, ``action_mask`` 1),
then, in multi-turn tasks, the environment's reply tokens (``action_mask`` 0), and so on.

Layout of the batch: prompts are left-padded to a common width ``P`` (generation needs
that), the rest is right-padded to width ``R``; the ``response_start`` is ``P``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from transformers import PreTrainedTokenizerBase

from rlm.env import TextVectorEnv
from rlm.policy import ActorCritic
from rlm.samplers import HFSampler, Sampler, padded, trim_completion


@dataclass
class GenerationSettings:
    """How completions are sampled."""

    max_new_tokens: int = 24
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0


class PromptFormat(Protocol):
    """Turns the environment's text into the text the policy reads."""

    def first(self, observation: str) -> str: ...

    def followup(self, observation: str, completion_ended: bool) -> str: ...


class PlainFormat:
    """The observation as is: the model continues the text."""

    add_special_tokens = True

    def first(self, observation: str) -> str:
        return observation

    def followup(self, observation: str, completion_ended: bool) -> str:
        return f"\n{observation}\n"


class ChatFormat:
    """The tokenizer's chat template: the environment speaks as the user.

    The text between two assistant turns is read off the template itself, by rendering a
    conversation with a placeholder answer, so any template works.
    """

    add_special_tokens = False
    _PLACEHOLDER = "\u2063RLM-COMPLETION\u2063"

    def __init__(self, tokenizer: PreTrainedTokenizerBase, system_prompt: str | None = None):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template: use the plain prompt format")
        self.tokenizer = tokenizer
        self.system = [{"role": "system", "content": system_prompt}] if system_prompt else []

    def _render(self, messages: list[dict[str, str]]) -> str:
        text = self.tokenizer.apply_chat_template(
            self.system + messages, tokenize=False, add_generation_prompt=True
        )
        return str(text)

    def first(self, observation: str) -> str:
        return self._render([{"role": "user", "content": observation}])

    def followup(self, observation: str, completion_ended: bool) -> str:
        text = self._render(
            [
                {"role": "user", "content": "..."},
                {"role": "assistant", "content": self._PLACEHOLDER},
                {"role": "user", "content": observation},
            ]
        )
        after = text.split(self._PLACEHOLDER, 1)[1]
        eos = self.tokenizer.eos_token or ""
        # A completion that stopped on EOS already holds the template's end-of-turn token.
        if completion_ended and eos and after.startswith(eos):
            after = after[len(eos) :]
        return after


def resolve_prompt_format(
    kind: Literal["auto", "plain", "chat"],
    tokenizer: PreTrainedTokenizerBase,
    *,
    conversational: bool,
) -> Literal["plain", "chat"]:
    """``"auto"`` becomes the chat template for a conversational task (multi-turn, or an
    instruction to answer: :attr:`rlm.env.TextEnv.conversational`) when the tokenizer has
    one, and plain text otherwise (a text to continue); ``"plain"``/``"chat"`` stay."""
    if kind != "auto":
        return kind
    has_template = bool(getattr(tokenizer, "chat_template", None))
    return "chat" if conversational and has_template else "plain"


def make_prompt_format(
    kind: Literal["plain", "chat"], tokenizer: PreTrainedTokenizerBase
) -> PromptFormat:
    return ChatFormat(tokenizer) if kind == "chat" else PlainFormat()


@dataclass(frozen=True)
class Episodes:
    """A batch of finished episodes, as tokens and as text."""

    input_ids: torch.Tensor  # [B, P + R]
    attention_mask: torch.Tensor  # [B, P + R]
    action_mask: torch.Tensor  # [B, R] 1 on the policy's tokens
    scores: torch.Tensor  # [B, R] each turn's env reward on its last token
    response_start: int
    prompts: list[str]
    completions: list[list[str]]  # per episode, per turn
    replies: list[list[str]]  # the environment's text after each turn but the last
    rewards: list[list[float]]  # per episode, per turn
    infos: list[dict[str, Any]]  # the last info of each episode
    reward_components: list[dict[str, float]] = field(default_factory=list)
    """Per episode, each reported reward component (``reward/<name>``) summed over turns."""
    cut: list[list[bool]] = field(default_factory=list)
    """Per episode, per turn: whether the completion was cut at ``max_new_tokens`` (it
    generated no end-of-text)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent generating (``generate``) and in the environment's reward (``score``)."""
    decode_steps: int = 0
    """Decoding passes the batched generation made: each turn's longest completion."""

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def returns(self) -> torch.Tensor:
        """Each episode's total env reward."""
        return torch.tensor([sum(r) for r in self.rewards], dtype=torch.float32)

    @property
    def completion_lengths(self) -> torch.Tensor:
        """Policy tokens per episode."""
        return self.action_mask.sum(1)

    def component_means(self) -> dict[str, float]:
        """The batch mean of each reward component, keyed ``reward/<name>``."""
        keys = sorted({k for parts in self.reward_components for k in parts})
        return {k: sum(p.get(k, 0.0) for p in self.reward_components) / len(self) for k in keys}

    def sample_rows(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Rows of (prompt, completion, reward) for sample tables."""
        rows = []
        for i in range(len(self) if limit is None else min(limit, len(self))):
            turns = []
            for t, completion in enumerate(self.completions[i]):
                turns.append(completion)
                if t < len(self.replies[i]):
                    turns.append(f"[env] {self.replies[i][t]}")
            rows.append(
                {
                    "prompt": self.prompts[i],
                    "completion": "\n".join(turns),
                    "reward": sum(self.rewards[i]),
                }
            )
        return rows


def rollout_seed(seed: int, iteration: int, rank: int, processes: int, batch_size: int) -> int:
    """The first environment seed of a training rollout (the batch's environments take it
    and the next ``batch_size - 1``): a function of the run's seed, the iteration and the
    process only, so that a resumed run replays exactly, and far apart for different seeds.

    Example:
        >>> rollout_seed(1, 0, 0, 1, 16), rollout_seed(1, 1, 0, 1, 16)
        (16000048, 16000064)
    """
    return (seed * 1_000_003 + iteration * processes + rank) * batch_size


def eos_token_ids(
    tokenizer: PreTrainedTokenizerBase, extra: int | list[int] | None = None
) -> set[int]:
    """The ids that end a turn: the tokenizer's end-of-sequence token and ``extra`` (a
    model's ``generation_config.eos_token_id``, which may list several)."""
    ids = set(extra if isinstance(extra, list) else [extra]) if extra is not None else set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def encode_context(
    tokenizer: PreTrainedTokenizerBase, prompt_format: PromptFormat, text: str, *, first: bool
) -> list[int]:
    """The token ids of text added to an episode's context: the first observation (with
    the tokenizer's special tokens when the format wants them) or a later reply. The
    rollout and the token view (:mod:`rlm.token_env`) both encode through this."""
    special = bool(getattr(prompt_format, "add_special_tokens", False)) and first
    return [int(t) for t in tokenizer(text, add_special_tokens=special).input_ids]


def _eos_ids(model: ActorCritic, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    return eos_token_ids(tokenizer, model.policy.generation_config.eos_token_id)


@torch.no_grad()
def collect_episodes(
    model: ActorCritic,
    tokenizer: PreTrainedTokenizerBase,
    envs: TextVectorEnv,
    *,
    generation: GenerationSettings,
    prompt_format: PromptFormat,
    seed: int | Sequence[int] | None = None,
    options: dict[str, Any] | None = None,
    sampler: Sampler | None = None,
) -> Episodes:
    """Run one episode in each environment of ``envs`` and return them as a batch.

    Each turn, the episodes still running are sampled in one batch (by ``sampler``;
    default: the policy's ``generate`` with the KV cache) and all their completions are
    scored by one ``envs.step``.
    """
    timings: dict[str, float] = defaultdict(float)
    sampler = sampler or HFSampler(model.policy)
    eos_ids = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id
    observations, _ = envs.reset(seed=seed, options=options)
    n = envs.num_envs

    def encode(text: str, first: bool) -> list[int]:
        return encode_context(tokenizer, prompt_format, text, first=first)

    prompt_ids = [encode(prompt_format.first(o), first=True) for o in observations]
    response_ids: list[list[int]] = [[] for _ in range(n)]
    response_mask: list[list[int]] = [[] for _ in range(n)]
    score_at: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    completions: list[list[str]] = [[] for _ in range(n)]
    cut: list[list[bool]] = [[] for _ in range(n)]
    replies: list[list[str]] = [[] for _ in range(n)]
    rewards: list[list[float]] = [[] for _ in range(n)]
    final_infos: list[dict[str, Any]] = [{} for _ in range(n)]
    components: list[dict[str, float]] = [defaultdict(float) for _ in range(n)]
    running = list(range(n))
    decode_steps = 0

    was_training = model.training
    model.eval()
    while running:
        contexts = [prompt_ids[i] + response_ids[i] for i in running]
        start = time.perf_counter()
        sampled = sampler.sample(contexts, generation, eos_ids=eos_ids, pad_id=pad_id)
        decode_steps += max(len(row) for row in sampled)
        timings["generate"] += time.perf_counter() - start

        actions: list[str | None] = [None] * n
        ended: dict[int, bool] = {}
        for row, i in enumerate(running):
            ids, ended[i] = trim_completion(sampled[row], eos_ids)
            response_ids[i] += ids
            response_mask[i] += [1] * len(ids)
            text = str(tokenizer.decode(ids, skip_special_tokens=True))
            completions[i].append(text)
            cut[i].append(not ended[i])
            actions[i] = text

        start = time.perf_counter()
        next_obs, step_rewards, terminated, truncated, infos = envs.step(actions)
        timings["score"] += time.perf_counter() - start

        still_running = []
        for i in running:
            rewards[i].append(float(step_rewards[i]))
            score_at[i].append((len(response_ids[i]) - 1, float(step_rewards[i])))
            final_infos[i] = {k: v[i] for k, v in infos.items() if not k.startswith("_")}
            for key, value in final_infos[i].items():
                if key.startswith("reward/"):
                    components[i][key] += float(value)
            if terminated[i] or truncated[i]:
                continue
            reply = next_obs[i]
            replies[i].append(reply)
            reply_ids = encode(prompt_format.followup(reply, ended[i]), first=False)
            response_ids[i] += reply_ids
            response_mask[i] += [0] * len(reply_ids)
            still_running.append(i)
        running = still_running
    model.train(was_training)

    prompt_tensor = padded(prompt_ids, pad_id, left=True)
    response_tensor = padded(response_ids, pad_id, left=False)
    action_mask = padded(response_mask, 0, left=False)
    attention = torch.cat(
        [
            padded([[1] * len(p) for p in prompt_ids], 0, left=True),
            padded([[1] * len(r) for r in response_ids], 0, left=False),
        ],
        dim=1,
    )
    scores = torch.zeros(action_mask.shape, dtype=torch.float32)
    for i, marks in enumerate(score_at):
        for position, value in marks:
            scores[i, position] += value
    return Episodes(
        input_ids=torch.cat([prompt_tensor, response_tensor], dim=1),
        attention_mask=attention,
        action_mask=action_mask.float(),
        scores=scores,
        response_start=prompt_tensor.shape[1],
        prompts=list(observations),
        completions=completions,
        replies=replies,
        rewards=rewards,
        infos=final_infos,
        reward_components=[dict(c) for c in components],
        cut=cut,
        timings=dict(timings),
        decode_steps=decode_steps,
    )


@dataclass(frozen=True)
class ScoredEpisodes:
    """Episodes with the policy's, the reference's and the critic's view of their tokens.

    Every tensor is ``[batch, response_length]`` and zero where ``action_mask`` is 0.
    """

    episodes: Episodes
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    entropy: torch.Tensor
    forward_seconds: float
    """Time of the no-grad forward passes that produced them."""

    def __len__(self) -> int:
        return len(self.episodes)

    def finite(self) -> bool:
        """Whether every log-prob (policy and reference) and value is a finite number."""
        tensors = (self.logprobs, self.ref_logprobs, self.values)
        return all(bool(t.isfinite().all()) for t in tensors)

    @property
    def sequence_kl(self) -> torch.Tensor:
        """Per episode: the sum over its policy tokens of ``log p - log q`` (k1), the KL of
        the sampled sequence to the reference."""
        return (self.logprobs - self.ref_logprobs).sum(1)


@torch.no_grad()
def score_episodes(
    model: ActorCritic,
    episodes: Episodes,
    *,
    micro_batch_size: int,
    temperature: float,
) -> ScoredEpisodes:
    """The policy's and the reference's log-probs, the values and the entropy of ``episodes``."""
    start = time.perf_counter()
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = defaultdict(list)
    for lo in range(0, len(episodes), micro_batch_size):
        ids = episodes.input_ids[lo : lo + micro_batch_size].to(device)
        mask = episodes.attention_mask[lo : lo + micro_batch_size].to(device)
        out = model(ids, mask, episodes.response_start, temperature, with_entropy=True)
        assert out.entropy is not None
        parts["logprobs"].append(out.logprobs)
        parts["values"].append(out.values)
        parts["entropy"].append(out.entropy)
        parts["ref"].append(
            model.reference_logprobs(ids, mask, episodes.response_start, temperature)
        )
    model.train(was_training)
    action_mask = episodes.action_mask.to(device)
    return ScoredEpisodes(
        episodes=episodes,
        logprobs=torch.cat(parts["logprobs"]) * action_mask,
        ref_logprobs=torch.cat(parts["ref"]) * action_mask,
        values=torch.cat(parts["values"]) * action_mask,
        entropy=torch.cat(parts["entropy"]) * action_mask,
        forward_seconds=time.perf_counter() - start,
    )
