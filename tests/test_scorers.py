"""The ready scorers: golden orderings, batch invariance, bad input, specs and composites."""

from __future__ import annotations

import importlib
import math
import re
import sys
import textwrap
from pathlib import Path

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


USER_REWARDS = """
    THRESHOLD = 3


    def brevity(prompts, completions, **info):
        return [max(0.0, 1 - len(c.split()) / 4) for c in completions]


    class Polite:
        __name__ = "polite"

        def __init__(self, word="please"):
            self.word = word

        def __call__(self, prompts, completions, **info):
            return [float(self.word in c.lower()) for c in completions]


    class NeedsArgs:
        def __init__(self, target):
            self.target = target

        def __call__(self, prompts, completions, **info):
            return [0.0] * len(completions)


    class NotCallable:
        pass
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write modules into tmp_path and run from there, as a user with ``my_rewards.py`` would.

    ``sys.path`` and ``sys.modules`` are restored afterwards, so nothing leaks between tests.
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    written: list[str] = []

    def write(name, source):
        *packages, module = name.split(".")
        folder = tmp_path.joinpath(*packages)
        folder.mkdir(parents=True, exist_ok=True)
        for depth in range(1, len(packages) + 1):
            tmp_path.joinpath(*packages[:depth], "__init__.py").touch()
        (folder / f"{module}.py").write_text(textwrap.dedent(source))
        written.extend(".".join(name.split(".")[:depth]) for depth in range(1, len(packages) + 2))
        importlib.invalidate_caches()
        return tmp_path

    yield write
    for name in written:
        sys.modules.pop(name, None)


def test_module_attribute_names_a_function_found_from_the_current_directory(user_module):
    user_module("my_rewards", USER_REWARDS)
    reward = make_reward("my_rewards:brevity")
    assert reward is sys.modules["my_rewards"].brevity
    assert scores(reward, ["", "one two", "one two three four five"]) == [1.0, 0.5, 0.0]


def test_a_package_folder_in_the_current_directory_is_a_module_not_a_reward_model(user_module):
    # my_pkg/ is a folder beside the command, as a reward-model folder would be; its
    # __init__.py makes it a package, so my_pkg:brevity is an import.
    user_module("my_pkg.scoring", USER_REWARDS)
    (Path("my_pkg") / "__init__.py").write_text("from my_pkg.scoring import brevity\n")
    reward = make_reward("my_pkg:brevity")
    assert reward is sys.modules["my_pkg.scoring"].brevity


def test_module_attribute_naming_a_class_builds_an_instance(user_module, monkeypatch):
    monkeypatch.syspath_prepend(str(user_module("my_pkg.scoring", USER_REWARDS)))
    reward = make_reward("my_pkg.scoring:Polite")
    assert isinstance(reward, sys.modules["my_pkg.scoring"].Polite)
    assert reward.word == "please"
    assert scores(reward, ["Please sit.", "Sit."]) == [1.0, 0.0]

    def env_reward(prompts, completions, **info):
        return [0.25] * len(completions)

    with_env = make_reward("env + 2*my_pkg.scoring:Polite", env_reward)
    assert [(name, weight) for name, weight, _ in with_env.parts] == [
        ("env_reward", 1.0),
        ("polite", 2.0),
    ]
    assert scores(with_env, ["Please sit.", "Sit."]) == [2.25, 0.25]


def test_weighted_composite_with_a_module_term_is_the_weighted_sum(user_module, monkeypatch):
    monkeypatch.syspath_prepend(str(user_module("my_rewards", USER_REWARDS)))
    texts = [POSITIVE, NEGATIVE, "Fine.", ""]
    vader = scores(VaderSentiment(), texts)
    brevity = scores(importlib.import_module("my_rewards").brevity, texts)
    assert len(set(brevity)) > 1 and len(set(vader)) > 1
    reward = make_reward("0.5*vader + 0.5*my_rewards:brevity")
    assert isinstance(reward, Composite)
    assert [(name, weight) for name, weight, _ in reward.parts] == [
        ("vader", 0.5),
        ("brevity", 0.5),
    ]
    assert scores(reward, texts) == [0.5 * v + 0.5 * b for v, b in zip(vader, brevity, strict=True)]
    assert reward.last_components == {"vader": vader, "brevity": brevity}


@pytest.mark.parametrize(
    ("spec", "parts"),
    [
        ("my_rewards:brevity + vader", [("brevity", 1.0), ("vader", 1.0)]),
        ("vader+my_rewards:brevity", [("vader", 1.0), ("brevity", 1.0)]),
        ("my_rewards:brevity + -1*my_rewards:Polite", [("brevity", 1.0), ("polite", -1.0)]),
        (r"regex:pattern=a+b + 2*my_rewards:brevity", [("regex", 1.0), ("brevity", 2.0)]),
    ],
)
def test_a_module_term_is_a_term_of_its_own(user_module, spec, parts):
    user_module("my_rewards", USER_REWARDS)
    reward = make_reward(spec)
    assert isinstance(reward, Composite)
    assert [(name, weight) for name, weight, _ in reward.parts] == parts
    if parts[0][0] == "regex":
        assert reward.parts[0][2].pattern.pattern == "a+b"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "no_such_rewards:brevity",
            "reward 'no_such_rewards:brevity': no module named 'no_such_rewards'; run from the "
            "folder that holds no_such_rewards.py, or put it on PYTHONPATH",
        ),
        ("my_rewards:brevty", "reward 'my_rewards:brevty': 'my_rewards' has no attribute 'brevty'"),
        ("my_rewards:Polite.nope", "'my_rewards.Polite' has no attribute 'nope'"),
        ("my_rewards:THRESHOLD", "'my_rewards:THRESHOLD' is not callable (found int 3)"),
        ("0.5*vader + 0.5*my_rewards:THRESHOLD", "expected a batched reward"),
        ("my_rewards:NotCallable", "instances of class NotCallable are not callable"),
        ("my_rewards:NeedsArgs", "class NeedsArgs cannot be built with no arguments"),
        (
            "broken_rewards:brevity",
            "importing module 'broken_rewards' failed: No module named 'not_installed_dependency'",
        ),
    ],
)
def test_module_term_errors_say_what_was_found_and_what_to_do(user_module, spec, message):
    user_module("my_rewards", USER_REWARDS)
    user_module("broken_rewards", "import not_installed_dependency\n")
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        make_reward(spec)
    assert "\n" not in str(error.value)


def test_scorer_options_are_not_mistaken_for_module_terms(similarity):
    reward = make_reward("similarity:target=a warm thank-you note")
    assert isinstance(reward, SemanticSimilarity) and reward.target == "a warm thank-you note"
    assert make_reward("repetition:n=2").n == 2
    rule = make_reward("regex:pattern=a+b")
    assert isinstance(rule, RegexMatch) and rule.pattern.pattern == "a+b"
    assert scores(rule, ["caab", "ab", "b"]) == [1.0, 1.0, 0.0]
    with pytest.raises(ConfigError, match="is not key=value"):
        make_reward("repetition:n")


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
