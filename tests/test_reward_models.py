"""Learned reward models: data, metrics, the LSTM, the training loop and both scripts.

    python -m pytest tests/test_reward_models.py -q

The scripts run end to end on small slices of the real tweet corpus, in this process
(``main(Config(...))``, the same function the command line calls): an LSTM that must
beat the majority-class baseline on the test split and rank clearly positive above
neutral above clearly negative text, a LoRA classifier and a TRL preference model on the
tiny Llama.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
import tyro
from safetensors.torch import load_file

from rlm.errors import ConfigError, ModelNotFoundError
from rlm.reward_models.data import (
    CleaningReport,
    LabelledTexts,
    clean_rows,
    load_labelled_tweets,
    split_dataset,
    stratified_sample,
)
from rlm.reward_models.folder import read_metadata
from rlm.reward_models.lstm import LSTMClassifier, LSTMSettings, Vocabulary, load_lstm, save_lstm
from rlm.reward_models.metrics import classification_metrics, majority_baseline
from rlm.reward_models.preference import ORDER, build_preference_pairs
from rlm.reward_models.training import TrainSettings, evaluate, fit, make_optimizer
from rlm.reward_models.transformer import build_transformer_classifier
from rlm.scorers.classifier import ClassifierReward

ROOT = Path(__file__).resolve().parents[1]
POSITIVE = ["I love this, what a wonderful day!", "Thank you so much, this is great!"]
NEUTRAL = ["The meeting is at noon on Tuesday.", "The train leaves at nine."]
NEGATIVE = ["This is awful, I hate it.", "Worst service ever, terrible delay."]


@functools.cache
def load_script(name: str) -> ModuleType:
    """A script of scripts/ as a module (registered, so its dataclasses resolve)."""
    spec = importlib.util.spec_from_file_location(
        f"scripts_{name}", ROOT / "scripts" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --- data


def test_cleaning_counts_match_a_hand_count() -> None:
    rows = [
        ("RT @bob: I love it http://t.co/x", "positive"),
        ("i LOVE   it", "positive"),  # the same text once cleaned and lower-cased
        ("too short", "neutral"),
        ("same text here", "negative"),
        ("Same text here", "positive"),  # annotators disagree: no label is right
        ("a b c d", "neutral"),
        ("&amp; the end is near", "negative"),
    ]
    data, report = clean_rows(rows)
    assert report == CleaningReport(raw=7, too_short=1, duplicates=2, conflicting=1, kept=3)
    assert data.texts == ["I love it", "a b c d", "& the end is near"]
    assert data.labels == [2, 1, 0]
    with pytest.raises(ConfigError, match="unknown label 'joy'"):
        clean_rows([("a b c", "joy")])


def test_real_corpus_split_is_stratified_disjoint_and_seeded() -> None:
    data, report = load_labelled_tweets()
    assert report.raw == 38158 and report.kept == len(data) > 30000
    splits = split_dataset(data, seed=0)
    parts = (splits.train, splits.validation, splits.test)
    assert sum(len(p) for p in parts) == len(data)
    assert len(splits.test) == pytest.approx(0.1 * len(data), abs=2)
    texts = [set(p.texts) for p in parts]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    for part in parts:
        for name, count in part.counts().items():
            share = data.counts()[name] / len(data)
            assert count / len(part) == pytest.approx(share, abs=0.002)
    assert split_dataset(data, seed=0).test.texts == splits.test.texts
    assert split_dataset(data, seed=1).test.texts != splits.test.texts
    small = stratified_sample(splits.train, 1000, seed=0)
    assert len(small) == 1000 and small.counts()["positive"] == pytest.approx(185, abs=2)


# --- metrics


def test_metrics_match_a_hand_computation() -> None:
    m = classification_metrics([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0], ("a", "b", "c"))
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["b"]["f1"] == pytest.approx(0.8)
    assert m["per_class"]["c"]["f1"] == pytest.approx(2 / 3)
    assert m["macro"]["f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    baseline = majority_baseline([1, 1, 0], [0, 1, 1, 1], ("a", "b"))
    assert baseline["accuracy"] == 0.75 and baseline["per_class"]["a"]["recall"] == 0.0


# --- the LSTM and the training loop


def test_lstm_scores_do_not_depend_on_padding_and_survive_saving(tmp_path: Path) -> None:
    torch.manual_seed(0)
    vocab = Vocabulary.build(["good day today", "bad day", "a day"], min_count=1, max_length=4)
    assert vocab.encode([""])["input_ids"].tolist() == [[1]]  # empty -> one <unk>
    assert vocab.tokens == ["<pad>", "<unk>", "day", "good", "today", "bad", "a"]
    assert vocab.encode(["Good ZEBRA day!"])["input_ids"].tolist() == [[3, 1, 2, 1]]
    model = LSTMClassifier(len(vocab), 3, LSTMSettings(8, 8, dropout=0.5)).eval()
    texts = ["good day", "bad bad bad day today", "", "unknown words only here"]
    batched = model(**vocab.encode(texts))
    single = torch.cat([model(**vocab.encode([t])) for t in texts])
    assert torch.allclose(batched, single, atol=1e-6)
    loaded, loaded_vocab, labels = load_lstm(save_lstm(tmp_path, model, vocab, ["a", "b", "c"]))
    assert labels == ["a", "b", "c"] and loaded_vocab.max_length == 4
    assert torch.equal(loaded(**loaded_vocab.encode(texts)), batched)


def test_vocabulary_maps_unseen_words_to_unk_and_truncates() -> None:
    vocab = Vocabulary.build(["good day", "good night"], min_count=2, max_length=3)
    assert vocab.tokens == ["<pad>", "<unk>", "good"]
    encoded = vocab.encode(["GOOD night, good 😀 day"])
    assert encoded["input_ids"].tolist() == [[2, 1, 1]]  # good, night->unk, ","->unk; cut at 3


def test_optimizers_are_the_ones_named() -> None:
    params = [torch.nn.Parameter(torch.zeros(2))]
    sgd = make_optimizer(params, TrainSettings(optimizer="sgd", lr=0.1))
    momentum = make_optimizer(params, TrainSettings(optimizer="momentum", lr=0.1))
    assert type(sgd) is torch.optim.SGD and sgd.defaults["momentum"] == 0
    assert momentum.defaults["momentum"] == 0.9
    adamw = make_optimizer(params, TrainSettings(optimizer="adamw", weight_decay=0.1))
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["weight_decay"] == 0.1
    assert type(make_optimizer(params, TrainSettings(optimizer="adam"))) is torch.optim.Adam
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        make_optimizer(params, TrainSettings(optimizer="rmsprop"))  # type: ignore[arg-type]


def _small_lstm_task() -> tuple[LSTMClassifier, Vocabulary, LabelledTexts, LabelledTexts]:
    data, _ = load_labelled_tweets()
    splits = split_dataset(data, seed=0)
    train = stratified_sample(splits.train, 300, seed=0)
    validation = stratified_sample(splits.validation, 100, seed=0)
    vocab = Vocabulary.build(train.texts, min_count=1)
    torch.manual_seed(0)
    return LSTMClassifier(len(vocab), 3, LSTMSettings(16, 16)), vocab, train, validation


def test_early_stopping_stops_when_validation_does_not_improve() -> None:
    model, vocab, train, validation = _small_lstm_task()
    # A learning rate too small to change any prediction: epoch 1 stays the best.
    settings = TrainSettings(optimizer="sgd", lr=1e-12, epochs=5, patience=2)
    result = fit(model, vocab.encode, train, validation, settings, progress=False)
    assert (result.best_epoch, len(result.history), result.stopped_early) == (1, 3, True)


def test_fit_keeps_the_best_epochs_weights() -> None:
    model, vocab, train, validation = _small_lstm_task()
    settings = TrainSettings(optimizer="adam", lr=3e-2, epochs=4, patience=4, batch_size=16)
    result = fit(model, vocab.encode, train, validation, settings, progress=False)
    metrics, _ = evaluate(model, vocab.encode, validation)
    assert metrics["macro"]["f1"] == pytest.approx(result.best_score)
    assert result.best_score == max(row["validation/macro_f1"] for row in result.history)


def test_head_tuning_trains_only_the_head(tiny_model_path: Path) -> None:
    model, _ = build_transformer_classifier(str(tiny_model_path), ["a", "b"], tuning="head")
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["score.weight"]
    with pytest.raises(ConfigError, match="tuning must be one of"):
        build_transformer_classifier(str(tiny_model_path), ["a"], tuning="prefix")  # type: ignore[arg-type]
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        build_transformer_classifier("/no/such/trunk", ["a"])


# --- the scripts, end to end on small slices


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    script = load_script("train_reward_classifier")
    out = tmp_path_factory.mktemp("runs") / "lstm"
    config = tyro.cli(
        script.Config,
        args=["--arch", "lstm", "--max-train-examples", "4000", "--max-eval-examples", "600",
              "--epochs", "3", "--output-dir", str(out), "--no-progress"],
    )  # fmt: skip
    return out, script.main(config)


def test_lstm_script_beats_the_majority_baseline(lstm_run: tuple[Path, dict[str, Any]]) -> None:
    out, summary = lstm_run
    test, baseline = summary["test"], summary["majority_baseline"]
    assert test["n"] == 600 and summary["train_examples"] == 4000
    assert test["accuracy"] > baseline["accuracy"] + 0.1
    assert test["macro"]["f1"] > baseline["macro"]["f1"] + 0.2
    assert json.loads((out / "metrics.json").read_text())["test"]["accuracy"] == test["accuracy"]
    report = (out / "metrics.md").read_text()
    assert "| **macro** |" in report and "| true \\ predicted |" in report
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("validation/macro_f1" in row for row in logged)
    assert any(row.get("test/accuracy") == test["accuracy"] for row in logged)
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert read_metadata(out / "model")["kind"] == "lstm"  # type: ignore[index]


def test_trained_sentiment_model_ranks_positive_neutral_negative(
    lstm_run: tuple[Path, dict[str, Any]],
) -> None:
    reward = ClassifierReward(lstm_run[0], output="polarity", device="cpu")  # the run folder
    pos, neu, neg = (reward([""] * len(t), t) for t in (POSITIVE, NEUTRAL, NEGATIVE))
    assert min(pos) > max(neg)
    assert sum(pos) / len(pos) > sum(neu) / len(neu) > sum(neg) / len(neg)


def test_lora_classifier_script_saves_a_merged_loadable_model(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    script = load_script("train_reward_classifier")
    config = script.Config(
        arch="transformer", trunk=str(tiny_model_path), tuning="lora", max_train_examples=60,
        max_eval_examples=30, epochs=1, batch_size=16, output_dir=str(tmp_path / "run"),
        progress=False,
    )  # fmt: skip
    summary = script.main(config)
    folder = Path(summary["model_dir"])
    assert read_metadata(folder)["tuning"] == "lora"  # type: ignore[index]
    key = "model.layers.0.self_attn.q_proj.weight"
    trained, base = (
        load_file(folder / "model.safetensors"),
        load_file(tiny_model_path / "model.safetensors"),
    )
    assert not torch.allclose(trained[key], base[key])  # LoRA learned and was merged in
    reward = ClassifierReward(tmp_path / "run", device="cpu")
    assert reward.labels == list(ORDER[::-1]) and len(reward([""], ["hello"])) == 1


def test_preference_pairs_rank_every_couple_of_labels() -> None:
    data, _ = load_labelled_tweets()
    label_of = dict(zip(data.texts, data.labels, strict=True))
    pairs = build_preference_pairs(data, 30, seed=3)
    assert pairs == build_preference_pairs(data, 30, seed=3) != build_preference_pairs(data, 30)
    couples = {(label_of[p["chosen"]], label_of[p["rejected"]]) for p in pairs}
    assert couples == {(2, 1), (2, 0), (1, 0)}  # positive > neutral > negative, all couples
    assert all(len(p["prompt"].split()) <= 5 and p["prompt"].endswith(" ") for p in pairs)
    assert len({p["chosen"] for p in pairs}) == 30
    with pytest.raises(ConfigError, match="'joy'"):
        build_preference_pairs(data, 3, order=("joy", "negative"))


def test_preference_script_trains_a_loadable_reward_model(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    script = load_script("train_preference_reward")
    config = script.Config(
        trunk=str(tiny_model_path), pairs=48, eval_pairs=24, batch_size=8, lr=1e-3,
        output_dir=str(tmp_path / "run"),
    )  # fmt: skip
    summary = script.main(config)
    assert 0 <= summary["eval"]["pairwise_accuracy"] <= 1 and summary["eval"]["n"] == 24
    assert summary["train"]["train_loss"] > 0
    meta = read_metadata(summary["model_dir"])
    assert meta is not None and (meta["kind"], meta["score_prompt"]) == ("preference", True)
    key = "model.layers.0.self_attn.q_proj.weight"
    trained = load_file(Path(summary["model_dir"]) / "model.safetensors")
    assert not torch.allclose(trained[key], load_file(tiny_model_path / "model.safetensors")[key])
    reward = ClassifierReward(tmp_path / "run", device="cpu")
    assert reward.output == "logit" and reward.model.text_suffix == meta["text_suffix"]
    assert (tmp_path / "run" / "metrics.md").read_text().count("| positive |") == 1


def test_script_configs_reject_bad_values(tmp_path: Path) -> None:
    script = load_script("train_reward_classifier")
    bad_trunk = script.Config(arch="transformer", trunk="/no/such", output_dir=str(tmp_path / "r"))
    with pytest.raises(ModelNotFoundError, match="'/no/such' does not exist"):
        script.main(bad_trunk)
    assert not (tmp_path / "r").exists()  # failed before making a run folder
    with pytest.raises(ConfigError, match="--lr must be a positive number"):
        script.Config(lr=-1.0)
    with pytest.raises(ConfigError, match="--dropout"):
        script.Config(dropout=1.5)
    assert script.Config(arch="transformer", tuning="lora").lr == 5e-4
