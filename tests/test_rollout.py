"""The rollout path of :mod:`rlm.rollout` and the evaluation built on it, with the tiny model.

The log-probs that :func:`score_episodes` computes must be those of the distribution that
``generate`` sampled from (left padding and position ids included), the batch layout must
be the one :class:`Episodes` documents (single- and multi-turn), and the prompt formats must
reproduce the chat template. ``generate`` and the reward functions are wrapped, never
replaced, so that what is checked is the library's own path.

Run: ``OMP_NUM_THREADS=1 python -m pytest tests/test_rollout.py -q``
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LogitsProcessor, LogitsProcessorList

import envs  # noqa: F401  (registers the rlm/ environments)
from envs.guess_number import PROMPT
from rlm import diagnostics
from rlm.diagnostics import DIAGNOSTICS
from rlm.env import TextEnv, TextVectorEnv
from rlm.errors import ConfigError
from rlm.evaluation import Evaluator
from rlm.models import load_causal_lm, load_tokenizer
from rlm.policy import ActorCritic, LoraSettings, add_lora
from rlm.rollout import (
    ChatFormat,
    Episodes,
    GenerationSettings,
    PlainFormat,
    collect_episodes,
    make_prompt_format,
    resolve_prompt_format,
    score_episodes,
)
from rlm.samplers import SampleFromLogits
from rlm.scorers import VaderSentiment

GUESS_REPLIES = {"Please answer with one number.", "Higher.", "Lower."}


# --- spies: they wrap the real objects and record what passed through ------------------


@dataclass
class GenerateCall:
    """One ``generate`` call: its left-padded context, what it returned, its sampling scores."""

    input_ids: torch.Tensor  # [B, W]
    attention_mask: torch.Tensor  # [B, W]
    sequences: torch.Tensor  # [B, W + T]
    scores: torch.Tensor  # [B, T, V] the processed scores the tokens were sampled from


class ForceEos(LogitsProcessor):
    """Make ``row`` emit EOS as its ``step``-th new token (0-based), so that it stops early."""

    def __init__(self, row: int, step: int, width: int, eos_id: int):
        self.row, self.at, self.eos_id = row, width + step, eos_id

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] == self.at:
            scores[self.row] = -float("inf")
            scores[self.row, self.eos_id] = 0.0
        return scores


class GenerateSpy:
    """Stands in for ``policy.generate``: calls it, records each call and the logits each
    token was drawn from.

    ``force_eos`` maps a call's index to ``(row, step)`` pairs where EOS is forced.
    """

    def __init__(self, policy: Any, force_eos: dict[int, list[tuple[int, int]]] | None = None):
        self.generate = policy.generate
        self.eos_id = policy.generation_config.eos_token_id
        self.force_eos = force_eos or {}
        self.calls: list[GenerateCall] = []

    def __call__(self, **kwargs: Any) -> torch.Tensor:
        width = kwargs["input_ids"].shape[1]
        forced = [
            ForceEos(row, step, width, self.eos_id)
            for row, step in self.force_eos.get(len(self.calls), [])
        ]
        # rlm's sampling processor draws each token: it records the logits it drew from.
        (sampling,) = kwargs.pop("logits_processor")
        assert isinstance(sampling, SampleFromLogits)
        sampling.history = []
        sequences = self.generate(
            **kwargs, logits_processor=LogitsProcessorList([*forced, sampling])
        )
        self.calls.append(
            GenerateCall(
                kwargs["input_ids"].clone(),
                kwargs["attention_mask"].clone(),
                sequences.clone(),
                torch.stack(sampling.history, dim=1),
            )
        )
        return sequences

    def batch_sizes(self) -> list[int]:
        return [call.input_ids.shape[0] for call in self.calls]


class RewardSpy:
    """Wraps an env's reward function; records each batched call and shifts the rewards.

    The shift (``1 + k`` for the ``k``-th completion of a call) makes every reward nonzero
    and distinct, so the score positions and the order of rows can be checked.
    """

    def __init__(self, reward_fn: Callable[..., list[float]]):
        self.reward_fn = reward_fn
        self.calls: list[dict[str, Any]] = []

    def __call__(self, prompts: list[str], completions: list[str], **info: Any) -> list[float]:
        raw = self.reward_fn(prompts, completions, **info)
        given = [value + 1.0 + k for k, value in enumerate(raw)]
        self.calls.append(dict(prompts=prompts, completions=completions, raw=raw, given=given))
        return given

    def batch_sizes(self) -> list[int]:
        return [len(call["completions"]) for call in self.calls]


def spy_on_rewards(vector_env: TextVectorEnv) -> RewardSpy:
    # The vector env scores every step with its first env's reward function.
    spy = RewardSpy(vector_env.envs[0].reward_fn)
    vector_env.envs[0].reward_fn = spy
    return spy


def finish_after(env: TextEnv, turns: int, reply: str = "Correct!") -> None:
    """Make ``env`` end its episode after ``turns`` turns (its ``respond`` otherwise kept)."""
    respond = env.respond

    def patched(completion: str) -> tuple[str, bool]:
        text, finished = respond(completion)
        return (reply, True) if env._turn >= turns else (text, finished)

    env.respond = patched  # type: ignore[method-assign]


# --- fixtures and helpers --------------------------------------------------------------


def make_policy(path: Path) -> tuple[ActorCritic, Any]:
    """A fresh LoRA actor-critic (tests perturb its weights) and its tokenizer."""
    torch.manual_seed(0)
    model, tokenizer = load_causal_lm(str(path))
    return ActorCritic(add_lora(model, LoraSettings(r=4))), tokenizer


@pytest.fixture
def policy(tiny_model_path: Path) -> tuple[ActorCritic, Any]:
    """The tiny Llama as a LoRA actor-critic, and its tokenizer."""
    return make_policy(tiny_model_path)


def make_envs(env_id: str, num_envs: int, **kwargs: Any) -> TextVectorEnv:
    vector_env = gym.make_vec(env_id, num_envs=num_envs, **kwargs)
    assert isinstance(vector_env, TextVectorEnv)
    return vector_env


def trim(ids: list[int], eos_id: int) -> list[int]:
    """Generated ids up to and including the first EOS."""
    return ids[: ids.index(eos_id) + 1] if eos_id in ids else ids


def segments(episodes: Episodes, i: int) -> list[tuple[str, int, int]]:
    """Row ``i``'s response region as runs ``(kind, start, end)``, kind "policy" or "env"."""
    mask = episodes.action_mask[i].tolist()
    attended = episodes.attention_mask[i, episodes.response_start :].tolist()
    runs: list[tuple[str, int, int]] = []
    for position, (action, seen) in enumerate(zip(mask, attended, strict=True)):
        if not seen:
            assert action == 0 and not any(attended[position:]), "padding must be on the right"
            break
        kind = "policy" if action else "env"
        if runs and runs[-1][0] == kind:
            runs[-1] = (kind, runs[-1][1], position + 1)
        else:
            runs.append((kind, position, position + 1))
    return runs


def policy_segments(episodes: Episodes, i: int) -> list[tuple[int, int]]:
    return [(start, end) for kind, start, end in segments(episodes, i) if kind == "policy"]


def unpadded(ids: torch.Tensor, attention: torch.Tensor) -> list[int]:
    return ids[attention.bool()].tolist()


def collect(
    model: ActorCritic,
    tokenizer: Any,
    vector_env: TextVectorEnv,
    fmt: str,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    seed: int = 0,
) -> Episodes:
    return collect_episodes(
        model,
        tokenizer,
        vector_env,
        generation=GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature),
        prompt_format=make_prompt_format(fmt, tokenizer),  # type: ignore[arg-type]
        seed=seed,
    )


# --- 1. log-probs ----------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:fan_in_fan_out:UserWarning")  # peft on GPT-2's Conv1D
@pytest.mark.parametrize(
    ("architecture", "env_id", "fmt", "temperature"),
    [
        ("llama", "rlm/Sentiment-v0", "plain", 1.0),
        ("llama", "rlm/Sentiment-v0", "plain", 0.7),
        ("llama", "rlm/GuessNumber-v0", "chat", 1.0),
        ("gpt2", "rlm/Sentiment-v0", "plain", 1.0),
        ("gpt2", "rlm/GuessNumber-v0", "chat", 1.0),
    ],
)
def test_scored_logprobs_are_those_generate_sampled_from(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    architecture: str,
    env_id: str,
    fmt: str,
    temperature: float,
) -> None:
    path = request.getfixturevalue(
        {"llama": "tiny_model_path", "gpt2": "tiny_gpt2_path"}[architecture]
    )
    model, tokenizer = make_policy(path)
    vector_env = make_envs(env_id, num_envs=3)
    if env_id == "rlm/GuessNumber-v0":
        # Contexts of different lengths in later turns, and episodes that end at different
        # turns, so that the rows of a generate call are not the rows of the batch.
        finish_after(vector_env.envs[1], turns=2)
        vector_env.envs[2].respond = lambda completion: ("Lower. " * 4, False)  # type: ignore[method-assign]
    spy = GenerateSpy(model.policy)
    monkeypatch.setattr(model.policy, "generate", spy)
    torch.manual_seed(0)
    episodes = collect(model, tokenizer, vector_env, fmt, max_new_tokens=6, temperature=temperature)
    scored = score_episodes(model, episodes, micro_batch_size=2, temperature=temperature)

    # The point of the test: some generate call ran on left-padded contexts of different lengths.
    assert any(call.attention_mask.sum(1).unique().numel() > 1 for call in spy.calls)
    assert any((call.attention_mask[:, 0] == 0).any() for call in spy.calls)

    checked = 0
    for i in range(len(episodes)):
        for turn, (start, end) in enumerate(policy_segments(episodes, i)):
            call = spy.calls[turn]
            # This episode's row in that call: its rank among the episodes still running.
            row = sum(len(episodes.completions[j]) > turn for j in range(i))
            width = call.input_ids.shape[1]
            # generate saw exactly the tokens that are scored, up to this turn...
            p = episodes.response_start
            scored_context = unpadded(
                episodes.input_ids[i, : p + start], episodes.attention_mask[i, : p + start]
            )
            assert unpadded(call.input_ids[row], call.attention_mask[row]) == scored_context
            # ...and produced exactly the tokens of this policy segment.
            tokens = episodes.input_ids[i, p + start : p + end]
            assert call.sequences[row, width : width + end - start].tolist() == tokens.tolist()
            sampled = torch.log_softmax(call.scores[row, : end - start], dim=-1)
            expected = sampled.gather(-1, tokens[:, None]).squeeze(-1)
            torch.testing.assert_close(scored.logprobs[i, start:end], expected, atol=1e-4, rtol=0)
            checked += end - start
    assert checked == int(episodes.action_mask.sum())
    # Only the policy's tokens carry log-probs.
    assert (scored.logprobs[episodes.action_mask == 0] == 0).all()


def test_reference_is_the_policy_without_the_adapter(policy: tuple[ActorCritic, Any]) -> None:
    model, tokenizer = policy
    vector_env = make_envs("rlm/Sentiment-v0", num_envs=2)
    torch.manual_seed(0)
    episodes = collect(model, tokenizer, vector_env, "plain", max_new_tokens=4)
    scored = score_episodes(model, episodes, micro_batch_size=2, temperature=1.0)
    # LoRA's B starts at zero: the adapted policy is the reference.
    torch.testing.assert_close(scored.logprobs, scored.ref_logprobs, atol=1e-6, rtol=0)
    reference = scored.ref_logprobs.clone()

    with torch.no_grad():
        for name, parameter in model.policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    scored = score_episodes(model, episodes, micro_batch_size=2, temperature=1.0)
    actions = episodes.action_mask.bool()
    gap = (scored.logprobs - scored.ref_logprobs)[actions].abs()
    assert gap.max() > 1e-2
    torch.testing.assert_close(scored.ref_logprobs, reference, atol=1e-6, rtol=0)


# --- 2. single-turn layout -------------------------------------------------------------


def test_a_given_reference_replaces_the_disabled_adapter(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    from rlm.models import build_tiny_model

    policy, tokenizer = make_policy(tiny_model_path)  # adapter at zero: policy == its start
    other, _ = load_causal_lm(str(build_tiny_model(tmp_path / "other", seed=1)))
    model = ActorCritic(policy.policy, reference=other)
    assert all(not p.requires_grad for p in other.parameters())
    assert "other" not in dict(model.named_modules())  # neither trained nor checkpointed
    torch.manual_seed(0)
    episodes = collect(
        model, tokenizer, make_envs("rlm/Sentiment-v0", 2), "plain", max_new_tokens=4
    )
    scored = score_episodes(model, episodes, micro_batch_size=2, temperature=1.0)
    gap = (scored.logprobs - scored.ref_logprobs)[episodes.action_mask.bool()].abs()
    assert gap.max() > 1e-2  # scored by the other weights, not by the policy without adapter


def test_a_reference_with_another_vocabulary_is_refused(tiny_model_path: Path) -> None:
    policy, _ = make_policy(tiny_model_path)
    small = AutoModelForCausalLM.from_config(
        GPT2Config(vocab_size=1000, n_embd=16, n_layer=1, n_head=2)
    )
    with pytest.raises(ConfigError, match="reference model's vocabulary"):
        ActorCritic(policy.policy, reference=small)


def test_single_turn_layout(
    policy: tuple[ActorCritic, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tokenizer = policy
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    vector_env = make_envs("rlm/Sentiment-v0", num_envs=3)
    rewards = spy_on_rewards(vector_env)
    spy = GenerateSpy(model.policy, force_eos={0: [(0, 2)]})  # row 0 stops on its 3rd token
    monkeypatch.setattr(model.policy, "generate", spy)
    model.train()
    torch.manual_seed(0)
    episodes = collect(model, tokenizer, vector_env, "plain", max_new_tokens=6)
    assert model.training, "collect_episodes must restore the training mode"

    assert spy.batch_sizes() == [3] and rewards.batch_sizes() == [3]
    prompt_ids = [tokenizer(p, add_special_tokens=True).input_ids for p in episodes.prompts]
    assert len({len(ids) for ids in prompt_ids}) > 1, "the test needs prompts of different lengths"
    p = episodes.response_start
    assert p == max(len(ids) for ids in prompt_ids)
    call = spy.calls[0]
    generated = [trim(row.tolist(), eos) for row in call.sequences[:, call.input_ids.shape[1] :]]
    assert generated[0][-1] == eos and len(generated[0]) == 3
    assert all(len(ids) == 6 for ids in generated[1:]), "the random model should not stop"
    width = max(len(ids) for ids in generated)
    assert episodes.input_ids.shape == (3, p + width)
    assert episodes.action_mask.shape == episodes.scores.shape == (3, width)

    for i, (prompt, ids) in enumerate(zip(prompt_ids, generated, strict=True)):
        left = p - len(prompt)
        assert episodes.input_ids[i, :p].tolist() == [pad] * left + prompt
        assert episodes.attention_mask[i, :p].tolist() == [0] * left + [1] * len(prompt)
        right = width - len(ids)
        assert episodes.input_ids[i, p:].tolist() == ids + [pad] * right
        assert episodes.action_mask[i].tolist() == [1] * len(ids) + [0] * right
        assert episodes.attention_mask[i, p:].tolist() == [1] * len(ids) + [0] * right
        expected_scores = [0.0] * width
        expected_scores[len(ids) - 1] = rewards.calls[0]["given"][i]
        assert episodes.scores[i].tolist() == pytest.approx(expected_scores)
        assert episodes.completions[i] == [tokenizer.decode(ids, skip_special_tokens=True)]
    assert episodes.completion_lengths.tolist() == [len(ids) for ids in generated]

    # The env scored exactly the decoded completions of exactly these prompts.
    completions = [c[0] for c in episodes.completions]
    assert rewards.calls[0]["completions"] == completions
    assert rewards.calls[0]["prompts"] == episodes.prompts
    assert VaderSentiment()(episodes.prompts, completions) == rewards.calls[0]["raw"]
    assert episodes.rewards == [[r] for r in rewards.calls[0]["given"]]
    assert episodes.returns.tolist() == pytest.approx(rewards.calls[0]["given"])
    assert episodes.replies == [[], [], []]


# --- 3. multi-turn layout --------------------------------------------------------------


def test_multi_turn_layout(
    policy: tuple[ActorCritic, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tokenizer = policy
    eos = tokenizer.eos_token_id
    fmt = ChatFormat(tokenizer)
    vector_env = make_envs("rlm/GuessNumber-v0", num_envs=3)
    rewards = spy_on_rewards(vector_env)
    steps: list[tuple[Any, ...]] = []
    step = vector_env.step

    def recorded_step(actions: Sequence[str | None]) -> tuple[Any, ...]:
        steps.append((list(actions), *step(actions)))
        return steps[-1][1:]

    monkeypatch.setattr(vector_env, "step", recorded_step)
    # Row 0 ends its first completion on EOS: the reply must not repeat the end of turn.
    spy = GenerateSpy(model.policy, force_eos={0: [(0, 1)]})
    monkeypatch.setattr(model.policy, "generate", spy)
    torch.manual_seed(0)
    episodes = collect(model, tokenizer, vector_env, "chat", max_new_tokens=4)

    # The random model never finds the number: every episode is truncated after five turns.
    turns = 5
    assert spy.batch_sizes() == [3] * turns
    assert rewards.batch_sizes() == [3] * turns, "one batched reward call per step"
    assert len(steps) == turns
    assert not steps[-1][3].any() and steps[-1][4].all()  # terminated, truncated
    p = episodes.response_start
    for i in range(len(episodes)):
        assert tokenizer.decode(
            unpadded(episodes.input_ids[i, :p], episodes.attention_mask[i, :p])
        ) == (fmt.first(PROMPT))
        runs = segments(episodes, i)
        assert [kind for kind, _, _ in runs] == ["policy", "env"] * (turns - 1) + ["policy"]
        assert len(episodes.completions[i]) == len(episodes.rewards[i]) == turns
        assert episodes.replies[i] == [steps[t][1][i] for t in range(turns - 1)]
        assert episodes.infos[i]["turn"] == turns
        score_positions = episodes.scores[i].nonzero().flatten().tolist()
        assert score_positions == [end - 1 for kind, _, end in runs if kind == "policy"]
        assert episodes.scores[i, score_positions].tolist() == pytest.approx(episodes.rewards[i])
        for t in range(turns):
            assert episodes.rewards[i][t] == rewards.calls[t]["given"][i]
            assert (
                episodes.completions[i][t] == steps[t][0][i] == rewards.calls[t]["completions"][i]
            )
        for t, (_, start, end) in enumerate(runs[1::2]):
            reply = episodes.replies[i][t]
            assert reply in GUESS_REPLIES
            text = tokenizer.decode(episodes.input_ids[i, p + start : p + end])
            ended = int(episodes.input_ids[i, p + start - 1]) == eos
            assert text == fmt.followup(reply, completion_ended=ended)
            assert f"<|im_start|>user\n{reply}<|im_end|>\n<|im_start|>assistant\n" in text
            assert text.startswith("\n<|im_start|>user" if ended else "<|im_end|>\n<|im_start|>")
    first_env_segment = segments(episodes, 0)[1]
    assert int(episodes.input_ids[0, p + first_env_segment[1] - 1]) == eos, "EOS was forced"

    rows = episodes.sample_rows()
    assert rows[1]["completion"].count("\n[env] ") == turns - 1
    assert rows[1]["reward"] == pytest.approx(sum(episodes.rewards[1]))


def test_multi_turn_episodes_that_end_early(
    policy: tuple[ActorCritic, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tokenizer = policy
    vector_env = make_envs("rlm/GuessNumber-v0", num_envs=3)
    rewards = spy_on_rewards(vector_env)
    finish_after(vector_env.envs[0], turns=1)
    begin_step = vector_env.envs[0].begin_step
    env0_steps: list[str] = []

    def counted(action: str) -> Any:
        env0_steps.append(action)
        return begin_step(action)

    monkeypatch.setattr(vector_env.envs[0], "begin_step", counted)
    spy = GenerateSpy(model.policy)
    monkeypatch.setattr(model.policy, "generate", spy)
    torch.manual_seed(0)
    episodes = collect(model, tokenizer, vector_env, "chat", max_new_tokens=4)

    assert spy.batch_sizes() == [3, 2, 2, 2, 2]
    assert rewards.batch_sizes() == [3, 2, 2, 2, 2]
    assert len(env0_steps) == 1, "an ended episode is never stepped again"
    assert [kind for kind, _, _ in segments(episodes, 0)] == ["policy"]
    assert len(episodes.completions[0]) == len(episodes.rewards[0]) == 1
    assert episodes.replies[0] == []
    assert episodes.scores[0].count_nonzero() == 1
    for i in (1, 2):
        assert len(policy_segments(episodes, i)) == 5
        assert episodes.scores[i].count_nonzero() == 5
    # The ended row is right-padded to the longest episode.
    end = segments(episodes, 0)[0][2]
    assert not episodes.attention_mask[0, episodes.response_start + end :].any()
    assert episodes.input_ids.shape[1] == episodes.response_start + segments(episodes, 1)[-1][2]


# --- 4. prompt formats -----------------------------------------------------------------


@pytest.mark.parametrize("system_prompt", [None, "Answer briefly."])
@pytest.mark.parametrize("ended", [False, True])
def test_chat_followup_continues_the_template(
    tiny_model_path: Path, system_prompt: str | None, ended: bool
) -> None:
    _, tokenizer = load_causal_lm(str(tiny_model_path))
    fmt = ChatFormat(tokenizer, system_prompt=system_prompt)
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    observation, answer, reply = "Guess a number.", "I guess 42.", "Higher."
    conversation = system + [
        {"role": "user", "content": observation},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": reply},
    ]
    full = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    # A completion that stopped on EOS holds the end-of-turn token as generated.
    completion = answer + tokenizer.eos_token if ended else answer
    assert tokenizer.eos_token == "<|im_end|>"
    assert fmt.first(observation) + completion + fmt.followup(reply, ended) == full
    assert fmt.first(observation) == tokenizer.apply_chat_template(
        system + conversation[-3:-2], tokenize=False, add_generation_prompt=True
    )


def test_prompt_formats(tiny_model_path: Path) -> None:
    _, tokenizer = load_causal_lm(str(tiny_model_path))
    plain = make_prompt_format("plain", tokenizer)
    assert isinstance(plain, PlainFormat) and plain.add_special_tokens
    assert plain.first("Once upon a time") == "Once upon a time"
    assert plain.followup("Higher.", completion_ended=True) == "\nHigher.\n"
    assert plain.followup("Higher.", completion_ended=False) == "\nHigher.\n"
    chat = make_prompt_format("chat", tokenizer)
    assert isinstance(chat, ChatFormat) and not chat.add_special_tokens
    with pytest.raises(ValueError, match="plain prompt format"):
        ChatFormat(types.SimpleNamespace(chat_template=None))  # type: ignore[arg-type]


# --- 5. sample rows --------------------------------------------------------------------


def test_sample_rows() -> None:
    empty = torch.zeros(2, 1)
    episodes = Episodes(
        input_ids=empty.long(),
        attention_mask=empty.long(),
        action_mask=empty,
        scores=empty,
        response_start=0,
        prompts=["Continue:", "Guess:"],
        completions=[["a happy day"], ["12", "40", "33"]],
        replies=[[], ["Higher.", "Lower."]],
        rewards=[[0.5], [0.0, 0.0, 0.8]],
        infos=[{}, {}],
    )
    assert episodes.sample_rows() == [
        {"prompt": "Continue:", "completion": "a happy day", "reward": 0.5},
        {
            "prompt": "Guess:",
            "completion": "12\n[env] Higher.\n40\n[env] Lower.\n33",
            "reward": 0.8,
        },
    ]
    assert episodes.sample_rows(limit=1) == episodes.sample_rows()[:1]
    assert episodes.returns.tolist() == pytest.approx([0.5, 0.8])


# --- 6. evaluation ---------------------------------------------------------------------


def test_evaluate_is_reproducible_and_keeps_the_rng(policy: tuple[ActorCritic, Any]) -> None:
    model, tokenizer = policy
    kwargs: dict[str, Any] = dict(
        reward=None,
        heldout=None,
        num_prompts=4,
        batch_size=2,
        generation=GenerationSettings(max_new_tokens=4),
        prompt_format=PlainFormat(),
        seed=3,
    )
    evaluator = Evaluator("rlm/Sentiment-v0", **kwargs)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = evaluator(model, tokenizer)
    assert torch.equal(torch.get_rng_state(), state), "evaluation must not move the global RNG"
    second = evaluator(model, tokenizer)
    assert first == second
    metrics, rows = first
    assert set(metrics) == {
        "eval/reward_mean",
        "eval/reward_std",
        "eval/reward_sem",
        *DIAGNOSTICS.keys() - {"eval/heldout_gap"},  # (no held-out reward here)
    }
    assert metrics["eval/kl"] == pytest.approx(0.0, abs=1e-5)  # LoRA B is zero at init
    assert metrics["eval/completion_length"] == pytest.approx(4.0)
    assert metrics["eval/cut_share"] == 1.0  # 4 tokens each, none of them end-of-text
    completions = [row["completion"] for row in rows]
    assert metrics["eval/distinct_2"] == diagnostics.distinct_n(completions, 2)
    # The reference is the policy (LoRA B = 0): the samples' perplexity lies between 1
    # and the vocabulary's size.
    assert 1 < metrics["eval/ref_perplexity"] < tokenizer.vocab_size
    # The first prompts of the split, in order.
    tasks = make_envs("rlm/Sentiment-v0", num_envs=1, split="eval").envs[0].tasks
    assert [row["prompt"] for row in rows] == [t["prompt"] for t in tasks[:4]]
    other = Evaluator("rlm/Sentiment-v0", **{**kwargs, "seed": 4})(model, tokenizer)
    assert other[1] != rows


def test_evaluation_takes_the_prompts_the_split_has_in_batches_of_at_most_the_batch_size(
    policy: tuple[ActorCritic, Any], caplog: pytest.LogCaptureFixture
) -> None:
    model, tokenizer = policy
    settings: dict[str, Any] = dict(
        reward=None, heldout=None, generation=GenerationSettings(max_new_tokens=3),
        prompt_format=PlainFormat(), seed=3,
    )  # fmt: skip
    # 5 prompts in batches of at most 2: 2 + 2 + 1, the same prompts as in one batch of 5.
    uneven = Evaluator("rlm/Sentiment-v0", num_prompts=5, batch_size=2, **settings)
    metrics, rows = uneven(model, tokenizer)
    assert len(rows) == 5 and sorted(uneven._envs) == [1, 2]
    whole = Evaluator("rlm/Sentiment-v0", num_prompts=5, batch_size=5, **settings)
    assert [r["prompt"] for r in rows] == [r["prompt"] for r in whole(model, tokenizer)[1]]
    # More prompts than GuessNumber's eval split has (20): all of them, with a warning.
    with caplog.at_level("WARNING"):
        small = Evaluator("rlm/GuessNumber-v0", num_prompts=64, batch_size=32, **settings)
    assert (small.num_prompts, small.batch_size) == (20, 20)
    assert "the eval split has 20 prompts" in caplog.text


def test_auto_prompt_format_is_chat_only_for_conversational_tasks_with_a_template(tiny_model_path):
    tokenizer = load_tokenizer(tiny_model_path)
    assert resolve_prompt_format("auto", tokenizer, conversational=True) == "chat"
    assert resolve_prompt_format("auto", tokenizer, conversational=False) == "plain"
    assert resolve_prompt_format("plain", tokenizer, conversational=True) == "plain"
    assert resolve_prompt_format("chat", tokenizer, conversational=False) == "chat"
    tokenizer.chat_template = None
    assert resolve_prompt_format("auto", tokenizer, conversational=True) == "plain"
