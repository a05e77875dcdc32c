"""Learned reward models: data, metrics, the LSTM, the training loop and both scripts.

    python -m pytest tests/test_reward_models.py -q

The scripts run end to end on small slices of the real tweet corpus, in this process
(their flags parsed into ``Config`` and passed to ``main``, the same function the command
line calls): an LSTM that must beat the majority-class baseline on the test split and rank
clearly positive above neutral above clearly negative text, a LoRA classifier and a TRL
preference model on the tiny Llama. Their flags are the shared ones: ``--output-dir`` is
the parent of run folders, ``--run-name`` the folder's name, ``--seed`` never moves the
split (``--split-seed`` does).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
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
from rlm.reward_models.runs import fingerprint
from rlm.reward_models.training import TrainSettings, evaluate, fit, make_optimizer
from rlm.reward_models.transformer import build_transformer_classifier
from rlm.scorers.classifier import ClassifierReward
from rlm.scripting import run_cli

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


def parse(name: str, *args: str) -> Any:
    """A script's ``Config`` from command-line flags, W&B off."""
    return tyro.cli(load_script(name).Config, args=[*args, "--wandb", "disabled"])


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
    momentum = make_optimizer(params, TrainSettings(optimizer="momentum", lr=0.1, momentum=0.8))
    assert type(sgd) is torch.optim.SGD and sgd.defaults["momentum"] == 0
    assert momentum.defaults["momentum"] == 0.8
    adamw = make_optimizer(params, TrainSettings(optimizer="adamw", lr=1e-3, weight_decay=0.1))
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["weight_decay"] == 0.1
    adam = make_optimizer(params, TrainSettings(optimizer="adam").with_default_lr("lora"))
    assert type(adam) is torch.optim.Adam and adam.defaults["lr"] == 5e-4
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        make_optimizer(params, TrainSettings(optimizer="rmsprop", lr=0.1))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no learning rate"):
        make_optimizer(params, TrainSettings())


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
    settings = TrainSettings(optimizer="sgd", lr=1e-12, max_epochs=5, patience=2)
    result = fit(model, vocab.encode, train, validation, settings, progress=False)
    assert (result.best_epoch, len(result.history), result.stopped_early) == (1, 3, True)


def test_fit_keeps_the_best_epochs_weights() -> None:
    model, vocab, train, validation = _small_lstm_task()
    settings = TrainSettings(optimizer="adam", lr=3e-2, max_epochs=4, patience=4, batch_size=16)
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
    """The LSTM baseline on 4,000 tweets, seed 0 (the documented one), in <parent>/lstm."""
    parent = tmp_path_factory.mktemp("runs")
    config = parse(
        "train_reward_classifier",
        "--arch", "lstm", "--max-train-examples", "4000", "--max-eval-examples", "600",
        "--max-epochs", "3", "--seed", "0", "--output-dir", str(parent), "--run-name", "lstm",
        "--no-progress",
    )  # fmt: skip
    summary = load_script("train_reward_classifier").main(config)
    assert [p.name for p in parent.iterdir()] == ["lstm"]  # <output-dir>/<run-name>, nothing else
    return parent / "lstm", summary


def test_lstm_script_beats_the_majority_baseline(lstm_run: tuple[Path, dict[str, Any]]) -> None:
    out, summary = lstm_run
    test, baseline = summary["test"], summary["majority_baseline"]
    assert test["n"] == 600 and summary["train_examples"] == 4000
    assert len(summary["validation_history"]) <= 3  # --max-epochs
    assert test["accuracy"] > baseline["accuracy"] + 0.1
    assert test["macro"]["f1"] > baseline["macro"]["f1"] + 0.2
    assert summary["model_dir"] == str(out / "model")
    assert json.loads((out / "metrics.json").read_text())["test"]["accuracy"] == test["accuracy"]
    report = (out / "metrics.md").read_text()
    assert "| **macro** |" in report and "| true \\ predicted |" in report
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("validation/macro_f1" in row for row in logged)
    assert any(row.get("test/accuracy") == test["accuracy"] for row in logged)
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert read_metadata(out / "model")["kind"] == "lstm"  # type: ignore[index]
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["max_epochs"] == 3 and config["train"]["lr"] == 2e-3
    assert config["tracking"]["run_name"] == "lstm"
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["status"], meta["wandb_mode"]) == ("finished", "disabled")


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
    config = parse(
        "train_reward_classifier",
        "--arch", "transformer", "--trunk", str(tiny_model_path), "--tuning", "lora",
        "--max-train-examples", "60", "--max-eval-examples", "30", "--max-epochs", "1",
        "--patience", "5", "--batch-size", "16", "--output-dir", str(tmp_path),
        "--run-name", "run", "--no-progress", "--no-tensorboard",
    )  # fmt: skip
    summary = script.main(config)
    folder = Path(summary["model_dir"])
    assert folder == tmp_path / "run" / "model"
    assert len(summary["validation_history"]) == 1  # --max-epochs 1, whatever the patience
    assert not (tmp_path / "run" / "tb").exists()  # --no-tensorboard
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
    config = parse(
        "train_preference_reward",
        "--trunk", str(tiny_model_path), "--pairs", "48", "--eval-pairs", "24",
        "--batch-size", "8", "--lr", "1e-3", "--data-passes", "2", "--output-dir", str(tmp_path),
        "--run-name", "run",
    )  # fmt: skip
    summary = script.main(config)
    assert 0 <= summary["eval"]["pairwise_accuracy"] <= 1 and summary["eval"]["n"] == 24
    assert summary["train_pairs"] == 48 and summary["train"]["epoch"] == 2  # --data-passes 2
    assert summary["model_dir"] == str(tmp_path / "run" / "model")
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
    bad_trunk = parse(
        "train_reward_classifier", "--arch", "transformer", "--trunk", "/no/such",
        "--output-dir", str(tmp_path), "--run-name", "r",
    )  # fmt: skip
    with pytest.raises(ModelNotFoundError, match="'/no/such' does not exist"):
        script.main(bad_trunk)
    assert not (tmp_path / "r").exists()  # failed before making a run folder
    with pytest.raises(ConfigError, match="--lr must be a positive number"):
        script.Config(train=TrainSettings(lr=-1.0))
    with pytest.raises(ConfigError, match="--max-epochs must be at least 1"):
        script.Config(train=TrainSettings(max_epochs=0))
    with pytest.raises(ConfigError, match="--dropout"):
        script.Config(lstm=LSTMSettings(dropout=1.5))
    with pytest.raises(ConfigError, match="--trunk-dropout"):
        script.Config(trunk_dropout=1.5)
    with pytest.raises(ConfigError, match="--max-train-examples must be at least 30"):
        script.Config(max_train_examples=10)
    assert (
        parse("train_reward_classifier", "--arch", "transformer", "--tuning", "lora").train.lr
        == 5e-4
    )
    assert parse("train_reward_classifier", "--lr", "0.01").train.lr == 0.01
    preference = load_script("train_preference_reward")
    with pytest.raises(ConfigError, match="--data-passes must be a positive number"):
        preference.Config(train=preference.PreferenceSettings(data_passes=0.0))
    with pytest.raises(ConfigError, match="--pairs must be at least 1"):
        preference.Config(pairs=0)


@pytest.mark.parametrize(
    ("name", "own_flags"),
    [
        ("train_reward_classifier", ["--max-epochs", "--patience", "--dropout", "--trunk-dropout"]),
        ("train_preference_reward", ["--data-passes", "--tuning", "--lora-rank"]),
    ],
)
def test_script_help_lists_the_shared_flags(
    name: str, own_flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    script = load_script(name)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(script.main, script.Config, ["--help"])
    assert exit_info.value.code == 0
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", capsys.readouterr().out))
    shared = ["--output-dir", "--run-name", "--seed", "--split-seed", "--wandb", "--wandb-project"]
    assert set(shared + own_flags) <= flags
    assert "--epochs" not in flags  # in the experiments, passes over one batch of episodes
    defaults = script.Config()
    assert (defaults.train.seed, defaults.split_seed) == (1, 0)
    assert defaults.tracking.output_dir == Path("runs/reward_models")
    assert (defaults.tracking.wandb, defaults.tracking.wandb_project) == (
        "auto",
        "rlm-reward-models",
    )


def test_seed_moves_training_but_never_the_test_split(tmp_path: Path) -> None:
    """Two seeds, no --run-name: generated names in --output-dir, the same test tweets."""
    script = load_script("train_reward_classifier")
    subsample = ["--max-train-examples", "60", "--max-eval-examples", "90"]
    tiny = [*subsample, "--max-epochs", "1", "--embedding-dim", "8", "--hidden-size", "8",
            "--no-progress", "--no-tensorboard", "--output-dir", str(tmp_path)]  # fmt: skip
    summaries = [
        script.main(parse("train_reward_classifier", *tiny, "--seed", seed)) for seed in "34"
    ]
    runs = sorted(p.name for p in tmp_path.iterdir())
    assert len(runs) == 2
    assert re.fullmatch(r"lstm__3__\d+", runs[0]) and re.fullmatch(r"lstm__4__\d+", runs[1])
    for run, summary in zip(runs, summaries, strict=True):
        assert summary["model_dir"] == str(tmp_path / run / "model")
        written = json.loads((tmp_path / run / "metrics.json").read_text())
        assert written["test_fingerprint"] == summary["test_fingerprint"]
    three, four = summaries
    assert three["test"]["n"] == four["test"]["n"] == 90
    assert three["test_fingerprint"] == four["test_fingerprint"]
    loss = [summary["validation_history"][0]["validation/loss"] for summary in summaries]
    assert loss[0] != loss[1]  # the seed did change the training

    # What the fingerprint stands for: the test texts, which move with --split-seed only.
    def split(*args: str) -> tuple[LabelledTexts, LabelledTexts]:
        _, train, _, test = script.load_data(parse("train_reward_classifier", *args))
        return train, test

    whole_test = split_dataset(load_labelled_tweets()[0], seed=0).test.texts
    assert split("--seed", "3")[1].texts == split("--seed", "4")[1].texts == whole_test
    assert split("--seed", "3", "--split-seed", "1")[1].texts != whole_test
    (train_3, test_3), (train_4, test_4) = (split("--seed", s, *subsample) for s in "34")
    assert test_3.texts == test_4.texts and train_3.texts != train_4.texts
    assert fingerprint(test_3.texts) == three["test_fingerprint"]


def test_preference_seed_never_moves_the_evaluation_pairs() -> None:
    script = load_script("train_preference_reward")

    def pairs(*args: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        config = parse("train_preference_reward", "--pairs", "30", "--eval-pairs", "30", *args)
        return script.make_pairs(config)

    (train_3, eval_3), (train_4, eval_4) = pairs("--seed", "3"), pairs("--seed", "4")
    assert eval_3 == eval_4 and train_3 != train_4
    assert pairs("--seed", "3", "--split-seed", "1")[1] != eval_3
    test_texts = set(split_dataset(load_labelled_tweets()[0], seed=0).test.texts)
    assert all(p["chosen"] in test_texts and p["rejected"] in test_texts for p in eval_3)
    assert not any(p["chosen"] in test_texts for p in train_3)
