"""ClassifierReward: any classifier or preference-model folder as a batched reward.

    python -m pytest tests/test_classifier_reward.py -q

The folders are real models of each kind the reward loads, built in a second or two: an
rlm LSTM folder, a MiniLM (BERT tokenizer) classifier saved with ``save_pretrained`` and
no rlm metadata, and tiny Llamas (the SmolLM2 tokenizer, no pad token of its own) as a
classifier and as a one-output preference model. Their heads are untrained, so these
tests check loading, text handling and consistency, not accuracy (test_reward_models.py
trains real ones).
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rlm.errors import ConfigError, ModelNotFoundError
from rlm.reward_models.data import LABELS
from rlm.reward_models.folder import METADATA_FILE
from rlm.reward_models.lstm import LSTMClassifier, LSTMSettings, Vocabulary, save_lstm
from rlm.reward_models.transformer import prepare_tokenizer, save_transformer_classifier
from rlm.rewards import check_rewards
from rlm.scorers.classifier import ClassifierReward
from rlm.scorers.similarity import default_sentence_model_path

TEXTS = [
    "I love this, what a wonderful day!",
    "The meeting is at noon.",
    "This is awful and I hate it.",
    "",
    "Das ist ein wunderbarer Tag, vielen Dank!",
    "😀🎉🔥 so happy 😍",
    "word " * 3000,  # longer than any model's window
    "   ",
]


@pytest.fixture(scope="module")
def lstm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    vocab = Vocabulary.build(
        ["i love this day", "this is awful", "the meeting is at noon"], min_count=1
    )
    model = LSTMClassifier(len(vocab), len(LABELS), LSTMSettings(16, 16))
    return save_lstm(tmp_path_factory.mktemp("lstm") / "model", model, vocab, list(LABELS))


@pytest.fixture(scope="module")
def minilm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face classifier as a user would bring one: no rlm_reward.json."""
    torch.manual_seed(0)
    path = str(default_sentence_model_path())
    labels = {0: "NEGATIVE", 1: "POSITIVE"}
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=2, id2label=labels, label2id={v: k for k, v in labels.items()}
    )
    folder = tmp_path_factory.mktemp("minilm")
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(path).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def llama_classifier_folder(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path
) -> Path:
    """A decoder-trunk classifier with generic LABEL_i names and no metadata."""
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_path, num_labels=3)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(tiny_model_path))
    model.config.pad_token_id = tokenizer.pad_token_id
    folder = tmp_path_factory.mktemp("llama-cls")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def preference_folder(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Path:
    """A one-output preference model saved the way train_preference_model saves one."""
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_path, num_labels=1)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(tiny_model_path))
    model.config.pad_token_id = tokenizer.pad_token_id
    run = tmp_path_factory.mktemp("preference-run")
    save_transformer_classifier(
        run / "model",
        model,
        tokenizer,
        ["reward"],
        kind="preference",
        score_prompt=True,
        text_suffix=tokenizer.eos_token,
    )
    (run / "config.json").write_text("{}")  # a run folder's training config, not a model's
    return run


@pytest.fixture(params=["lstm", "minilm", "llama_classifier", "preference"])
def any_reward(request: pytest.FixtureRequest) -> ClassifierReward:
    folder = request.getfixturevalue(f"{request.param}_folder")
    label = "LABEL_2" if request.param == "llama_classifier" else None
    return ClassifierReward(folder, label=label, batch_size=3, device="cpu", max_length=48)


def test_awkward_text_gets_finite_scores_in_range(any_reward: ClassifierReward) -> None:
    values = check_rewards(
        any_reward(["Prompt: "] * len(TEXTS), TEXTS), len(TEXTS), env_id="test", reward=any_reward
    )
    low, high = any_reward.reward_range
    assert all(low <= v <= high for v in values)


def test_batched_scores_equal_one_by_one(any_reward: ClassifierReward) -> None:
    prompts = [f"Opening {i} " for i in range(len(TEXTS))]
    batched = any_reward(prompts, TEXTS)
    single = [any_reward([p], [t])[0] for p, t in zip(prompts, TEXTS, strict=True)]
    assert batched == pytest.approx(single, abs=1e-5)


def test_reward_survives_pickling(any_reward: ClassifierReward) -> None:
    # Environments holding a reward are pickled (async vector envs, Gymnasium's checks).
    copy = pickle.loads(pickle.dumps(any_reward))
    assert copy(["Hi "] * 3, TEXTS[:3]) == any_reward(["Hi "] * 3, TEXTS[:3])


def test_defaults_follow_the_kind_of_model(
    lstm_folder: Path, minilm_folder: Path, preference_folder: Path
) -> None:
    lstm = ClassifierReward(lstm_folder, device="cpu")
    assert (lstm.label, lstm.output, lstm.include_prompt) == ("positive", "probability", False)
    assert lstm.reward_range == (0.0, 1.0) and lstm.__name__ == "classifier"
    minilm = ClassifierReward(minilm_folder, device="cpu", name="sentiment")
    assert (minilm.label, minilm.labels) == ("POSITIVE", ["NEGATIVE", "POSITIVE"])
    assert minilm.__name__ == "sentiment"
    preference = ClassifierReward(preference_folder, device="cpu")
    assert (preference.output, preference.include_prompt) == ("logit", True)
    assert preference.reward_range == (-math.inf, math.inf)


def test_classifier_ignores_prompt_and_preference_model_reads_it(
    minilm_folder: Path, preference_folder: Path
) -> None:
    classifier = ClassifierReward(minilm_folder, device="cpu")
    a, b = classifier(["I am so sad. ", "Great news! "], ["the weather", "the weather"])
    assert a == b
    preference = ClassifierReward(preference_folder, device="cpu")
    a, b = preference(["I am so sad. ", "Great news! "], ["the weather", "the weather"])
    assert a != b
    with_prompt = ClassifierReward(minilm_folder, device="cpu", include_prompt=True)
    a, b = with_prompt(["I am so sad. ", "Great news! "], ["the weather", "the weather"])
    assert a != b


def test_probability_and_logit_outputs_agree(minilm_folder: Path) -> None:
    prob = ClassifierReward(minilm_folder, "positive", "probability", device="cpu")
    logit = ClassifierReward(minilm_folder, "negative", "logit", device="cpu")
    negative_logit = ClassifierReward(minilm_folder, "POSITIVE", "logit", device="cpu")
    p = torch.tensor(prob([""] * 3, TEXTS[:3]))
    difference = torch.tensor(negative_logit([""] * 3, TEXTS[:3])) - torch.tensor(
        logit([""] * 3, TEXTS[:3])
    )
    assert torch.allclose(p, torch.sigmoid(difference), atol=1e-5)  # two-class softmax


def test_polarity_is_positive_minus_negative_probability(
    lstm_folder: Path, llama_classifier_folder: Path
) -> None:
    polarity = ClassifierReward(lstm_folder, output="polarity", device="cpu")
    assert polarity.reward_range == (-1.0, 1.0)
    positive = ClassifierReward(lstm_folder, "positive", device="cpu")
    negative = ClassifierReward(lstm_folder, "negative", device="cpu")
    expected = [
        p - n
        for p, n in zip(positive([""] * 3, TEXTS[:3]), negative([""] * 3, TEXTS[:3]), strict=True)
    ]
    assert polarity([""] * 3, TEXTS[:3]) == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ConfigError, match=r"needs a model with labels.*\['LABEL_0'"):
        ClassifierReward(llama_classifier_folder, output="polarity", device="cpu")


def test_missing_path_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist") as info:
        ClassifierReward(tmp_path / "no-such-model")
    assert "\n" not in str(info.value)
    with pytest.raises(ModelNotFoundError, match=METADATA_FILE):
        ClassifierReward(tmp_path)  # exists, but holds no model
    with pytest.raises(ModelNotFoundError, match="not a local folder.*Hub") as info:
        ClassifierReward("no-such-org/no-such-model")  # the hub is off in tests
    assert "\n" not in str(info.value)


def test_unknown_label_lists_the_known_ones(
    lstm_folder: Path, llama_classifier_folder: Path
) -> None:
    with pytest.raises(ConfigError, match=r"'joy'.*\['negative', 'neutral', 'positive'\]"):
        ClassifierReward(lstm_folder, label="joy", device="cpu")
    with pytest.raises(ConfigError, match=r"none is 'positive'.*label="):
        ClassifierReward(llama_classifier_folder, device="cpu")
    with pytest.raises(ConfigError, match="output must be one of"):
        ClassifierReward(lstm_folder, output="softmax", device="cpu")  # type: ignore[arg-type]


def test_adapter_folder_asks_to_merge(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / METADATA_FILE).write_text('{"kind": "classifier", "labels": ["positive"]}')
    with pytest.raises(ConfigError, match="merge it first"):
        ClassifierReward(tmp_path, device="cpu")
