"""The ready scorers: golden orderings, batch invariance, bad input, specs and composites."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from rlm.env import TextEnv
from rlm.errors import ConfigError, ModelNotFoundError, RewardError
from rlm.rewards import check_rewards
from rlm.scorers import (
    Bleu,
    Chrf,
    Composite,
    KeywordsPresent,
    LengthTarget,
    Normalized,
    RegexMatch,
    RepetitionPenalty,
    Rouge,
    SemanticSimilarity,
    TextBlobPolarity,
    UnfinishedPenalty,
    VaderSentiment,
    make_reward,
)
from rlm.scorers.similarity import load_sentence_model

POSITIVE = "This is wonderful, I love it and I am so happy!"
NEUTRAL = "The meeting is at three o'clock in room four."
NEGATIVE = "This is terrible, I hate it and I am so miserable."

REFERENCE = "The cat sat quietly on the warm mat by the fire."
PARAPHRASE = "A cat was sitting calmly on the warm rug near the fire."
UNRELATED = "Quarterly tax filings are due before the end of April."

BAD_INPUTS = [
    "",
    " ",
    "word " * 5000,  # very long
    "Das ist ein wunderbarer Tag, ich bin sehr glücklich.",
    "今日はとても良い天気ですね。",
    "Привет, как дела?",
    "🎉🎉🎉 😀 ❤️",
    "\n\t\x00 control characters",
]


def scores(reward, completions, **info):
    return reward([""] * len(completions), completions, **info)


@pytest.fixture(scope="module")
def similarity():
    return SemanticSimilarity()


def sentiment_scorers():
    return [VaderSentiment(), TextBlobPolarity()]


@pytest.mark.parametrize("reward", sentiment_scorers(), ids=lambda r: r.__name__)
def test_sentiment_orders_positive_above_neutral_above_negative(reward):
    positive, neutral, negative = scores(reward, [POSITIVE, NEUTRAL, NEGATIVE])
    assert positive > neutral > negative
    assert positive > 0.3 and negative < -0.3 and abs(neutral) < 0.2


def reference_scorers():
    return [Bleu(REFERENCE), Chrf(REFERENCE), Rouge(REFERENCE), Rouge(REFERENCE, variant="rouge1")]


@pytest.mark.parametrize("reward", reference_scorers(), ids=lambda r: r.__name__)
def test_reference_metrics_order_reference_above_paraphrase_above_unrelated(reward):
    same, paraphrase, unrelated = scores(reward, [REFERENCE, PARAPHRASE, UNRELATED])
    assert same == pytest.approx(1.0)
    assert same > paraphrase > unrelated
    assert unrelated < 0.2


def test_similarity_orders_reference_above_paraphrase_above_unrelated(similarity):
    reward = SemanticSimilarity(target=REFERENCE)
    same, paraphrase, unrelated = scores(reward, [REFERENCE, PARAPHRASE, UNRELATED])
    assert same == pytest.approx(1.0, abs=1e-5)
    assert same > paraphrase > unrelated
    assert paraphrase > 0.5 > unrelated


def test_reference_column_gives_each_sample_its_own_reference(similarity):
    completions = [REFERENCE, UNRELATED]
    references = {"reference": [REFERENCE, UNRELATED]}
    for reward in [SemanticSimilarity(), Chrf(), Bleu(), Rouge()]:
        assert scores(reward, completions, **references) == pytest.approx([1.0, 1.0], abs=1e-5)


def test_reference_metric_without_reference_says_what_to_give():
    with pytest.raises(RewardError, match="give target=..."):
        scores(Chrf(), ["text"])


def test_missing_sentence_model_folder_is_one_line():
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_sentence_model("/no/such/sentence-model")


def all_scorers():
    return [
        *sentiment_scorers(),
        *reference_scorers(),
        SemanticSimilarity(target=REFERENCE),
        RegexMatch(r"\d+"),
        KeywordsPresent(["cat", "fire"]),
        LengthTarget(10),
        LengthTarget(40, unit="chars"),
        RepetitionPenalty(2),
        UnfinishedPenalty(),
        Composite([(0.5, VaderSentiment()), (1.0, RepetitionPenalty())]),
    ]


@pytest.mark.parametrize("reward", all_scorers(), ids=lambda r: r.__name__)
def test_batched_scores_equal_one_by_one(reward):
    texts = [POSITIVE, NEUTRAL, NEGATIVE, REFERENCE, PARAPHRASE, UNRELATED, *BAD_INPUTS]
    batched = scores(reward, texts)
    one_by_one = [scores(reward, [t])[0] for t in texts]
    assert batched == pytest.approx(one_by_one, abs=1e-5)


@pytest.mark.parametrize("reward", all_scorers(), ids=lambda r: r.__name__)
def test_bad_input_gets_a_finite_score_within_the_declared_range(reward):
    values = check_rewards(scores(reward, BAD_INPUTS), len(BAD_INPUTS), env_id="t", reward=reward)
    low, high = reward.reward_range
    assert all(low - 1e-6 <= v <= high + 1e-6 for v in values), values


def test_emoji_and_other_languages_are_not_mistaken_for_sentiment():
    vader, textblob = sentiment_scorers()
    assert scores(vader, ["😀 😍"])[0] > 0.3  # VADER reads emoji
    assert scores(textblob, ["今日はとても良い天気ですね。"]) == [0.0]  # unknown words: neutral


def test_rules_give_their_documented_values():
    assert scores(RegexMatch(r"answer: \d+", full=True), ["answer: 42", "answer: 42!"]) == [1, 0]
    assert scores(KeywordsPresent(["Sun", "sea"]), ["The SUN and the sea.", "sunny seas"]) == [
        1.0,
        0.0,
    ]
    assert scores(KeywordsPresent(), ["red fox"], keywords=["red,blue"]) == [0.5]
    assert scores(LengthTarget(4), ["a b c d", "a b", "a b c d e f g h", ""]) == [1, 0.5, 0, 0]
    assert scores(RepetitionPenalty(1), ["no no no", "all different words"]) == [-2 / 3, 0.0]
    assert scores(UnfinishedPenalty(-0.5), ["Done!", 'He said "go."', "and so", ""]) == [
        0,
        0,
        -0.5,
        -0.5,
    ]


def test_rule_options_are_checked():
    with pytest.raises(ConfigError, match="invalid pattern"):
        RegexMatch("(")
    with pytest.raises(ConfigError, match="at least 1"):
        LengthTarget(0)
    with pytest.raises(RewardError, match="give words="):
        scores(KeywordsPresent(), ["text"])


def test_composite_is_the_weighted_sum_and_reports_each_part():
    reward = Composite(
        [(2.0, LengthTarget(2)), (0.5, RepetitionPenalty(1)), (1.0, LengthTarget(4))]
    )
    texts = ["so so", "a b c d"]
    total = scores(reward, texts)
    parts = reward.last_components
    assert list(parts) == ["length", "repetition", "length_2"]
    expected = [2 * a + 0.5 * b + c for a, b, c in zip(*parts.values(), strict=True)]
    assert total == pytest.approx(expected)
    assert reward.reward_range == (-0.5, 3.0)


def test_nested_composites_report_their_parts():
    inner = Composite([(1.0, LengthTarget(2)), (1.0, RepetitionPenalty(1))])
    outer = Composite([(1.0, inner), (1.0, VaderSentiment())])
    scores(outer, ["good good"])
    assert set(outer.last_components) == {
        "composite",
        "composite/length",
        "composite/repetition",
        "vader",
    }


def test_normalized_matches_numpy_running_statistics_and_clips():
    reward = Normalized(LengthTarget(100, unit="chars"), clip=1.5)
    rng = np.random.default_rng(0)
    seen: list[float] = []
    for _ in range(4):
        texts = ["x" * int(n) for n in rng.integers(0, 200, size=7)]
        raw = scores(LengthTarget(100, unit="chars"), texts)
        seen += raw
        got = scores(reward, texts)
        mean, std = np.mean(seen), np.std(seen)
        expected = np.clip((np.array(raw) - mean) / (std + 1e-8), -1.5, 1.5)
        assert got == pytest.approx(expected.tolist(), abs=1e-6)
        assert reward.last_components["length_raw"] == raw

    frozen = Normalized(LengthTarget(4), clip=None)
    scores(frozen, ["a", "a b c d"])
    state = frozen.state_dict()
    frozen.update = False
    scores(frozen, ["a b"] * 10)
    assert frozen.state_dict() == state
    restored = Normalized(LengthTarget(4), clip=None)
    restored.load_state_dict(state)
    restored.update = False
    assert scores(restored, ["a b"]) == scores(frozen, ["a b"])


def test_clip_only_keeps_the_scale():
    reward = Normalized(Composite([(10.0, LengthTarget(2))]), normalize=False, clip=2.0)
    assert scores(reward, ["a b", "a", ""]) == [2.0, 2.0, 0.0]


def test_make_reward_builds_scorers_and_composites():
    assert isinstance(make_reward("vader"), VaderSentiment)
    rule = make_reward(r"regex:pattern=^\d+(\.\d+)?$,full=true")
    assert isinstance(rule, RegexMatch) and rule.full
    assert scores(rule, ["3.14", "pi"]) == [1.0, 0.0]
    keywords = make_reward("keywords:words=sun|sea")
    assert keywords.keywords == ["sun", "sea"]

    composite = make_reward("0.7*vader + 0.3*repetition:n=2 + -1e-1*length:target=5,unit=chars")
    assert isinstance(composite, Composite)
    assert [(name, weight) for name, weight, _ in composite.parts] == [
        ("vader", 0.7),
        ("repetition", 0.3),
        ("length", -0.1),
    ]
    assert composite.parts[1][2].n == 2

    def env_reward(prompts, completions, **info):
        return [1.0] * len(completions)

    with_env = make_reward("env + 0.5*unfinished", env_reward)
    assert scores(with_env, ["cut off", "done."]) == [0.5, 1.0]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty reward spec"),
        ("vadr", "unknown reward 'vadr': use one of bleu"),
        ("runs/none-here", "no folder 'runs/none-here' exists"),
        ("length", "reward 'length'"),
        ("length:target=ten", "option target='ten'"),
        ("length:size=3", "has no option 'size' (options: target, unit)"),
        ("regex:pattern", "is not key=value"),
        ("env", "none is at hand"),
        ("model:path=/no/such/model", "/no/such/model"),
        ("model:label=positive", "reward 'model'"),
    ],
)
def test_make_reward_errors_say_what_to_do(spec, message):
    with pytest.raises((ConfigError, ModelNotFoundError), match=re.escape(message)):
        make_reward(spec)


def test_environment_reports_composite_components_in_info():
    reward = Composite([(1.0, LengthTarget(3)), (2.0, RepetitionPenalty(1))])
    env = TextEnv([{"prompt": "Say three words."}], reward)
    env.reset(seed=0)
    _, value, terminated, _, info = env.step("go go go")
    assert terminated
    assert info["reward/length"] == 1.0
    assert info["reward/repetition"] == pytest.approx(-2 / 3)
    assert value == pytest.approx(1.0 - 4 / 3)
    assert math.isfinite(value)
