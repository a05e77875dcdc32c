"""Over-optimisation diagnostics and alarms against hand-computed values.

pytest tests/test_diagnostics.py
"""

from __future__ import annotations

import math

import pytest

from rlm import diagnostics
from rlm.alarms import ALARMS, AlarmSettings, AlarmWatch, check_alarms
from rlm.errors import ConfigError


def test_words_lowercase_and_split_off_punctuation() -> None:
    assert diagnostics.words("Love, LOVE! it's fine") == ["love", ",", "love", "!", "it's", "fine"]


def test_distinct_n_counts_over_the_whole_set() -> None:
    # 1-grams: a b a | a b c -> 6 in all, {a, b, c} distinct
    assert diagnostics.distinct_n(["a b a", "a b c"], 1) == 3 / 6
    # 2-grams: ab ba | ab bc -> 4 in all, {ab, ba, bc} distinct
    assert diagnostics.distinct_n(["a b a", "a b c"], 2) == 3 / 4
    # The same completion for every prompt: each one is varied, the set is not.
    assert diagnostics.distinct_n(["x y z"] * 4, 1) == 3 / 12
    assert math.isnan(diagnostics.distinct_n(["one", ""], 2))


def test_repeated_ngram_share_counts_repeats_within_each_text() -> None:
    # 3-grams of "love love love love love": 3, all the same: 2 repeat the first.
    assert diagnostics.repeated_ngram_share(["love love love love love"]) == 2 / 3
    # Across texts nothing is a repeat: "a b c" twice has no repeated 3-gram.
    assert diagnostics.repeated_ngram_share(["a b c", "a b c"]) == 0.0
    # Pooled: "a b a b" has 2-grams ab ba ab (one repeat); "c d" has cd.
    assert diagnostics.repeated_ngram_share(["a b a b", "c d"], 2) == 1 / 4
    assert math.isnan(diagnostics.repeated_ngram_share(["a b"]))


def test_perplexity_is_exp_of_the_mean_negative_log_prob() -> None:
    # Two tokens of probability 1/4 each: perplexity 4.
    assert diagnostics.perplexity(sum_logprob=2 * math.log(0.25), tokens=2) == pytest.approx(4.0)
    assert math.isnan(diagnostics.perplexity(sum_logprob=0.0, tokens=0))


def test_heldout_gap_standardises_both_rewards_against_before() -> None:
    before = {
        "eval/reward_mean": 0.1, "eval/reward_std": 0.2,
        "eval/heldout_reward_mean": 0.3, "eval/heldout_reward_std": 0.5,
    }  # fmt: skip
    now = {**before, "eval/reward_mean": 0.5, "eval/heldout_reward_mean": 0.4}
    # training reward +0.4 / 0.2 = +2 sd; held-out +0.1 / 0.5 = +0.2 sd
    assert diagnostics.heldout_gap(now, before) == pytest.approx(1.8)
    assert diagnostics.heldout_gap(before, before) == 0.0
    assert diagnostics.heldout_gap({"eval/reward_mean": 1.0}, before) is None


def test_every_alarm_watches_a_logged_diagnostic() -> None:
    assert {alarm.metric for alarm in ALARMS.values()} <= diagnostics.DIAGNOSTICS.keys()
    assert set(AlarmSettings().thresholds()) == set(ALARMS)


def test_alarms_trip_on_values_and_on_ratios_to_before() -> None:
    before = {"eval/distinct_2": 0.9, "eval/completion_length": 20.0, "eval/ref_perplexity": 30.0}
    quiet = {**before, "eval/repeated_3gram_share": 0.01, "eval/kl_per_token": 0.5}
    assert check_alarms(quiet, before, AlarmSettings(), step=10) == []
    loud = {
        "eval/repeated_3gram_share": 0.5,  # above 0.1
        "eval/distinct_2": 0.3,  # 0.33x before, below 0.6x
        "eval/completion_length": 8.0,  # 0.4x before: more than 2x shorter
        "eval/ref_perplexity": 120.0,  # 4x before, above 3x
        "eval/kl_per_token": 1.5,  # above 1.0
        "eval/heldout_gap": 2.5,  # above 1.0
    }
    trips = check_alarms(loud, before, AlarmSettings(), step=30)
    assert [t.alarm for t in trips] == list(ALARMS)
    by_name = {t.alarm: t for t in trips}
    assert by_name["distinct_drop"].message == (
        "alarm at step 30: distinct_drop: eval/distinct_2 is 0.33x its value before "
        "training (0.9 -> 0.3; alarm below 0.6x)"
    )
    assert by_name["repetition"].message == (
        "alarm at step 30: repetition: eval/repeated_3gram_share is 0.5 (alarm above 0.1)"
    )
    assert by_name["length_change"].before == 20.0
    # Longer by more than the factor trips it as well; within the factor does not.
    assert check_alarms({"eval/completion_length": 41.0}, before, AlarmSettings(), step=1)
    assert not check_alarms({"eval/completion_length": 39.0}, before, AlarmSettings(), step=1)


def test_a_threshold_set_per_run_changes_what_trips_and_none_turns_it_off() -> None:
    metrics = {"eval/repeated_3gram_share": 0.3}
    assert check_alarms(metrics, {}, AlarmSettings(alarm_repetition=0.2), step=1)
    assert not check_alarms(metrics, {}, AlarmSettings(alarm_repetition=0.4), step=1)
    assert not check_alarms(metrics, {}, AlarmSettings(alarm_repetition=None), step=1)
    with pytest.raises(ConfigError, match="--alarm-repetition must be > 0"):
        AlarmSettings(alarm_repetition=0).validate()


def test_missing_or_non_finite_metrics_trip_nothing() -> None:
    before = {"eval/distinct_2": math.nan}
    metrics = {"eval/distinct_2": 0.0, "eval/repeated_3gram_share": math.nan}
    assert check_alarms(metrics, before, AlarmSettings(), step=1) == []


def test_a_watch_reports_an_alarm_when_it_trips_and_again_after_it_clears() -> None:
    watch = AlarmWatch(AlarmSettings())
    high, low = {"eval/kl_per_token": 2.0}, {"eval/kl_per_token": 0.1}
    assert [t.step for t in watch.update(high, {}, step=10)] == [10]
    assert watch.update(high, {}, step=20) == []
    assert watch.update(low, {}, step=30) == []
    assert [t.step for t in watch.update(high, {}, step=40)] == [40]
    # A resumed run's watch starts from the alarms its checkpoint had tripped.
    assert AlarmWatch(AlarmSettings(), active={"kl_per_token"}).update(high, {}, step=50) == []
