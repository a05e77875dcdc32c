"""The environment catalogue: every registered ``rlm/`` environment and each task's rules.

Every environment passes ``rlm check-env`` (its token view too), documents its task,
reward and range, gives the same rewards in its synchronous and subprocess vector forms,
handles bad input, and every multi-turn one trains for a short PPO run with the tiny model.
Then each task's parsing and scoring is tested on hand-worked examples.

Run: ``python -m pytest tests/test_env_catalogue.py -q``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the rlm/ environments)
from envs.arithmetic import exact_answer, parse_answer
from envs.compress import CompressionReward
from envs.constrained import coverage, fluency
from envs.recommend import matches
from envs.search import RetrievalRankReward
from envs.word_guess import answer_question, parse_guess
from rlm.env import MAX_TEXT_LENGTH, registered_text_env_ids
from rlm.env_check import PROBES, check_text_env, probe_action
from rlm.models import load_tokenizer
from rlm.settings import RunSettings
from rlm.tracking import TrackingSettings
from tests.helpers import load_experiment

ROOT = Path(__file__).resolve().parents[1]
ENV_IDS = registered_text_env_ids()
MULTI_TURN = [i for i in ENV_IDS if gym.make(i).unwrapped.max_turns > 1]


def test_the_catalogue_has_its_tasks() -> None:
    expected = {"Sentiment", "GuessNumber", "Constrained", "Compress", "Search", "Arithmetic",
                "WordGuess", "Recommend"}  # fmt: skip
    assert {f"rlm/{name}-v0" for name in expected} <= set(ENV_IDS)
    assert {"rlm/GuessNumber-v0", "rlm/WordGuess-v0", "rlm/Recommend-v0"} <= set(MULTI_TURN)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env_passes(env_id: str, tiny_model_path: Path) -> None:
    """The text view and the token view (stable-baselines3's, with the tiny model's
    tokenizer) pass every check."""
    report = check_text_env(env_id, tokenizer=load_tokenizer(tiny_model_path))
    assert report.passed, report.format()
    assert report.results[-1].name == "token view"


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_docstrings_state_task_reward_and_range(env_id: str) -> None:
    env = gym.make(env_id).unwrapped
    low, high = env.reward_range
    summary = (type(env).__doc__ or "").strip().splitlines()[0]
    assert f"[{low:g}, {high:g}]" in summary, summary
    module_doc = sys.modules[type(env).__module__].__doc__ or ""
    assert module_doc.startswith(f"``{env_id}``")
    for part in ("Task:", "Reward", "Splits"):
        assert part in module_doc, part


# --- vector forms ------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_async_vector_env_gives_the_same_rewards_as_sync(env_id: str) -> None:
    steps, seed = 6, 3
    results = {}
    for mode in ("vector_entry_point", "async"):
        venv = gym.make_vec(env_id, num_envs=2, vectorization_mode=mode)
        guide = gym.make(env_id).unwrapped  # only lends its example action to the probes
        observations, _ = venv.reset(seed=seed)
        trace: list[Any] = [tuple(observations)]
        for step in range(steps):
            guide.reset(seed=seed)
            actions = [probe_action(guide, step), PROBES[(step + 2) % len(PROBES)]]
            observations, rewards, terminated, truncated, _ = venv.step(actions)
            trace.append((tuple(observations), rewards.tolist(), terminated.tolist(),
                          truncated.tolist()))  # fmt: skip
        venv.close()
        results[mode] = trace
    assert results["async"] == results["vector_entry_point"]
    assert any(o for o in results["async"][0])  # real text crossed the process boundary


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_odd_text_gets_a_reward_in_range(env_id: str) -> None:
    env = gym.make(env_id).unwrapped
    low, high = env.reward_range
    for text in [
        "",
        " ",
        "🎉🎉🎉",
        "Привет, мир",
        "مرحبا",
        "日本語",
        "\x00\n\t",
        "a" * MAX_TEXT_LENGTH,
    ]:
        env.reset(seed=0)
        reward = env.step(text)[1]
        assert low <= reward <= high, (text[:20], reward)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_too_long_action_is_a_one_line_error(env_id: str) -> None:
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match=f"at most {MAX_TEXT_LENGTH} characters"):
        env.step("a" * (MAX_TEXT_LENGTH + 1))
    env.step("fine")  # the failed step changed nothing


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_reset_with_a_new_seed_mid_episode_starts_afresh(env_id: str) -> None:
    env = gym.make(env_id)
    env.reset(seed=1)
    if env.unwrapped.max_turns > 1:
        env.step("Does it contain the letter e?")
    observation, info = env.reset(seed=2)
    fresh_observation, fresh_info = gym.make(env_id).reset(seed=2)
    assert (observation, info["task_index"], info["turn"]) == (
        fresh_observation, fresh_info["task_index"], 0,
    )  # fmt: skip
    fresh = gym.make(env_id)
    fresh.reset(seed=2)
    np.testing.assert_equal(env.step(PROBES[2]), fresh.step(PROBES[2]))


# --- PPO on each multi-turn environment ------------------------------------------------------


@pytest.mark.parametrize("env_id", MULTI_TURN)
def test_ppo_trains_on_multi_turn_environment(
    env_id: str, tiny_model_path: Path, tmp_path: Path
) -> None:
    experiment = load_experiment("ppo")
    settings = RunSettings(
        env_id=env_id, model=str(tiny_model_path), prompt_format="chat", steps=1,
        batch_size=4, max_new_tokens=6, eval_prompts=4, eval_batch_size=4, eval_every=1,
        checkpoint_every=1, lora_r=4, threads=1,
        tracking=TrackingSettings(output_dir=tmp_path, wandb="disabled", tensorboard=False),
    )  # fmt: skip
    experiment.main(experiment.Config(run=settings))
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["perf/episodes"] == 4
    assert rows[-1]["train/turns"] > 1  # the environment answered at least once
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert any("[env] " in s["completion"] for s in samples)
    assert all(np.isfinite(r["reward/mean"]) for r in rows[1:])
    # The random tiny model rarely earns a reward, so its weights may not move; the update
    # still ran over the policy's tokens of every turn (the environment's are masked out).
    for key in ("train/policy_loss", "train/value_loss", "train/kl", "train/completion_length"):
        assert all(np.isfinite(r[key]) for r in rows[1:]), key
    assert rows[-1]["train/completion_length"] <= 6 * rows[-1]["train/turns"]
    assert list((run / "checkpoints").glob("checkpoint-1/trainable.safetensors"))


# --- the tasks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("#### 42", 42),
        ("3 + 4 = 7, so 7 apples. #### 7", 7),
        ("The answer is $1,250.", 1250),
        ("Answer: 12.0", 12),
        ("\\boxed{36}", 36),
        ("Each friend gets 5 cookies.", 5),
        ("First 20 then 3 more, 23", 23),
        ("twelve", 12),
        ("The result is -8.", -8),
        ("about 4.5", None),
        ("I do not know.", None),
        ("", None),
        ("🎉", None),
    ],
)
def test_arithmetic_parses_answers(text: str, answer: int | None) -> None:
    assert parse_answer(text) == answer


def test_arithmetic_reward_is_exact() -> None:
    rewards = exact_answer(["", "", ""], ["#### 7", "#### 8", "seven"], answer=[7, 7, 7])
    assert rewards == [1.0, 0.0, 1.0]


def test_arithmetic_prompts_hold_their_answer() -> None:
    env = gym.make("rlm/Arithmetic-v0", split="eval").unwrapped
    env.reset(seed=0, options={"index": 0})
    assert env.task["prompt"].startswith("Fatima buys 4 packs of 9 pencils and then finds 24 more")
    assert env.task["answer"] == 4 * 9 + 24


def test_constrained_coverage_counts_inflections() -> None:
    words = ["dog", "frisbee", "catch"]
    assert coverage("The dog catches the frisbee.", words) == 1.0
    assert coverage("Dogs chase frisbees.", words) == pytest.approx(2 / 3)
    assert coverage("", words) == 0.0


def test_constrained_fluency_prefers_a_sentence_to_a_list() -> None:
    sentence = fluency("The dog catches the frisbee in the park.")
    assert sentence == 1.0
    assert fluency("dog frisbee catch") < 0.5 * sentence  # too short, no sentence end
    assert fluency("dog dog dog dog dog dog dog.") < 0.3
    assert fluency("Xqzv blorp fnark wuzzle grib.") == 0.0  # no known word
    assert fluency("") == 0.0


def test_constrained_reward_and_components() -> None:
    env = gym.make("rlm/Constrained-v0").unwrapped
    env.reset(seed=0)
    first, second, verb = env.task["concepts"]
    _, reward, _, _, info = env.step(f"The {first} and the {second} {verb} together.")
    assert reward == 1.0 and info["reward/coverage"] == 1.0 and info["reward/fluency"] == 1.0
    env.reset(seed=0)
    _, reward, _, _, info = env.step(f"{first} {second}")
    assert info["reward/coverage"] == pytest.approx(2 / 3) and reward < 0.5


def test_compression_rewards_meaning_within_the_budget() -> None:
    original = "The only people who never fail are those who never try at all."
    budget = len(original) // 2
    reward = CompressionReward()
    short, unrelated, long, empty = reward(
        [""] * 4,
        ["Only those who never try never fail.", "Bananas are yellow.", original, ""],
        original=[original] * 4,
        budget=[budget] * 4,
    )
    assert short > 0.6 and short > unrelated
    assert long == pytest.approx(reward.last_components["similarity"][2] * budget / len(original))
    assert empty == 0.0
    assert all(0.0 <= r <= 1.0 for r in (short, unrelated, long))


def test_search_rewards_the_rank_of_the_document() -> None:
    documents = [
        "I failed my way to success.",
        "Ubuntu users are apt to get this joke.",
        "Knowledge is power, but enthusiasm pulls the switch.",
    ]
    reward = RetrievalRankReward()
    rewards = reward(
        [""] * 4,
        [
            "failing on the way to success",
            "Linux Ubuntu apt joke",
            "",
            "one two three four five six seven eight nine",
        ],
        documents=[documents] * 4,
        target=[0] * 4,
    )
    assert rewards[0] == 1.0  # ranked first of three
    assert rewards[1] < 1.0  # the query finds another document
    assert rewards[2] == 0.0 and rewards[3] == 0.0  # empty, and over eight words
    assert reward.last_components["rank"][:1] == [1.0]


def test_word_guess_answers_questions_and_guesses() -> None:
    assert answer_question("Does it contain the letter e?", "table") == "Yes."
    assert answer_question("Does it start with s?", "table") == "No."
    assert answer_question("Does it end with 'e'?", "table") == "Yes."
    assert answer_question("Does it contain a lot of letters?", "table") is None
    assert parse_guess("Is it a house? Maybe table.", 5) == "table"
    env = gym.make("rlm/WordGuess-v0")
    env.reset(seed=0)
    secret = env.unwrapped.task["secret"]
    letter = secret[0]
    transitions = [
        env.step(f"Does it start with {letter}?"),
        env.step("Hmm."),
        env.step(f"Is it {secret.upper()}?"),
    ]
    assert [t[0] for t in transitions[::2]] == ["Yes.", "Correct!"]
    assert transitions[1][0].startswith("Ask about a letter")
    assert [t[1] for t in transitions] == pytest.approx([0.0, 0.0, 0.8])
    assert transitions[-1][2]  # terminated


def test_word_guess_question_naming_the_secret_is_not_a_guess() -> None:
    env = gym.make("rlm/WordGuess-v0")
    env.reset(seed=0)
    secret = env.unwrapped.task["secret"]
    observation, reward, terminated, _, _ = env.step(f"Does {secret} contain the letter z?")
    assert (reward, terminated) == (0.0, False) and observation in ("Yes.", "No.")


def test_recommendation_dialogue_and_reward() -> None:
    env = gym.make("rlm/Recommend-v0")
    env.reset(seed=0)
    task = env.unwrapped.task
    genre, era, length = task["preference"]
    other_genre = next(g for g in ("comedy", "drama") if g != genre)
    reply = env.step(f"Do you like {genre} or {other_genre}?")[0]
    assert f"I like {genre}." in reply and f"Not {other_genre}." in reply
    assert env.step("Which genre do you like best?")[0] == f"My favourite genre is {genre}."
    titles = [film[0] for film in task["films"]]
    assert env.step(f"{titles[0]} or {titles[1]}?")[0] == "Please recommend just one film."
    best = next(f for f in task["films"] if f[1:] == [genre, era, length])
    observation, reward, terminated, _, _ = env.step(f"Watch {best[0].lower()}!")
    assert (observation, terminated) == ("Thanks, I will watch it.", True)
    assert reward == pytest.approx(1.0 - 0.1 * 3)  # all three match, on turn 3
    env.reset(seed=0)
    worst = min(task["films"], key=lambda film: matches(film, task["preference"]))
    assert matches(worst, task["preference"]) < 3
    assert env.step(worst[0])[1] == pytest.approx(matches(worst, task["preference"]) / 3)
