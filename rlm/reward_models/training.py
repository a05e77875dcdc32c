"""One supervised training loop for every text classifier (LSTM or transformer).

A model here is any ``torch.nn.Module`` called as ``model(**encode(texts))`` that returns
logits (or an output with ``.logits``), so the LSTM and Hugging Face classifiers share the
loop: cross-entropy, a chosen optimizer (SGD, SGD with momentum, Adam, AdamW) with weight
decay, gradient clipping, evaluation on the validation split after every epoch, and early
stopping with patience on validation macro-F1 (or loss). The best epoch's weights are put
back at the end, so what is saved is what validation chose.

Example:
    >>> settings = TrainSettings(optimizer="momentum", lr=0.05, max_epochs=10)
    >>> result = fit(model, encode, splits.train, splits.validation, settings)  # doctest: +SKIP
    >>> result.best_epoch, result.best_score  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from rlm.errors import ConfigError
from rlm.reward_models.data import LabelledTexts
from rlm.reward_models.metrics import classification_metrics
from rlm.validation import check_ranges

Encoder = Callable[[list[str]], dict[str, torch.Tensor]]
"""Turns a batch of texts into the model's keyword inputs (padded tensors)."""
LogFunction = Callable[[dict[str, float], int], None]
"""Receives scalar metrics and a step, e.g. :meth:`rlm.tracking.Tracker.log`."""

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")


DEFAULT_LR = {"lstm": 2e-3, "head": 1e-3, "lora": 5e-4, "full": 5e-5}
"""Learning rates that worked on the tweets: the LSTM's, and a transformer's by its tuning."""


@dataclass(frozen=True)
class TrainSettings:
    """How to train; every field is a flag of the same name in train_reward_classifier.py."""

    optimizer: Literal["sgd", "momentum", "adam", "adamw"] = "adamw"
    """Optimizer: plain SGD, SGD with --momentum, Adam or AdamW."""
    lr: float | None = None
    """Learning rate; default by model: 2e-3 (LSTM), 1e-3 (head), 5e-4 (LoRA), 5e-5 (full)."""
    weight_decay: float = 0.0
    """Weight decay (decoupled for AdamW, L2 for the others)."""
    momentum: float = 0.9
    """Momentum of --optimizer momentum."""
    max_epochs: int = 5
    """Most epochs; early stopping (--patience) usually ends sooner."""
    patience: int = 2
    """Stop after this many epochs without a better validation score."""
    batch_size: int = 32
    """Training batch size."""
    eval_batch_size: int = 128
    """Batch size for validation and test."""
    monitor: Literal["macro_f1", "loss"] = "macro_f1"
    """Validation score that early stopping and the kept weights follow."""
    max_grad_norm: float = 1.0
    """Gradient clipping (global norm); 0 turns it off."""
    seed: int = 1
    """Seed of initialisation, batch order and the training subsample (--split-seed fixes
    the split)."""
    log_every: int = 50
    """Log the mean training loss every this many steps."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a value out of range (the flag named).

        A learning rate left unset (None) passes: the caller picks one
        (:meth:`with_default_lr`) before training.
        """
        check_ranges(
            self,
            at_least_one=["max_epochs", "patience", "batch_size", "eval_batch_size", "log_every"],
            positive=["lr"],
            non_negative=["weight_decay", "momentum", "max_grad_norm"],
        )
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )

    def with_default_lr(self, model: str) -> TrainSettings:
        """These settings, with :data:`DEFAULT_LR` ``[model]`` if no learning rate is set.

        ``model`` is "lstm", or a transformer's tuning ("head", "lora", "full").
        """
        if self.lr is not None:
            return self
        return dataclasses.replace(self, lr=DEFAULT_LR[model])


@dataclass
class FitResult:
    """What :func:`fit` did: per-epoch validation history and the epoch it kept."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -math.inf
    stopped_early: bool = False
    steps: int = 0
    seconds: float = 0.0


def make_optimizer(params: Any, settings: TrainSettings) -> torch.optim.Optimizer:
    """The optimizer named by ``settings.optimizer`` over ``params``.

    Raises:
        ConfigError: an unknown optimizer name.
    """
    name, lr, wd = settings.optimizer, settings.lr, settings.weight_decay
    if lr is None:
        raise ConfigError("no learning rate: set TrainSettings.lr (or use with_default_lr)")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=settings.momentum, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


def logits_of(output: Any) -> torch.Tensor:
    """The logits tensor of a model output (a tensor, or an object with ``.logits``)."""
    return output if isinstance(output, torch.Tensor) else output.logits


def _batches(n: int, batch_size: int, order: np.ndarray | None = None) -> Iterator[np.ndarray]:
    indices = np.arange(n) if order is None else order
    for start in range(0, n, batch_size):
        yield indices[start : start + batch_size]


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    encode: Encoder,
    texts: list[str],
    *,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Logits for ``texts`` in eval mode, one row each, on the CPU."""
    was_training = model.training
    model.eval()
    rows = []
    for idx in _batches(len(texts), batch_size):
        batch = {k: v.to(device) for k, v in encode([texts[i] for i in idx]).items()}
        rows.append(logits_of(model(**batch)).float().cpu())
    model.train(was_training)
    return torch.cat(rows) if rows else torch.empty(0)


def evaluate(
    model: nn.Module,
    encode: Encoder,
    data: LabelledTexts,
    *,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
) -> tuple[dict[str, Any], float]:
    """Classification metrics and mean cross-entropy of ``model`` on ``data``."""
    logits = predict_logits(model, encode, data.texts, batch_size=batch_size, device=device)
    labels = torch.tensor(data.labels)
    loss = float(nn.functional.cross_entropy(logits, labels))
    metrics = classification_metrics(data.labels, logits.argmax(-1).tolist(), data.label_names)
    return metrics, loss


def fit(
    model: nn.Module,
    encode: Encoder,
    train: LabelledTexts,
    validation: LabelledTexts,
    settings: TrainSettings,
    *,
    device: str | torch.device = "cpu",
    log: LogFunction | None = None,
    progress: bool = True,
    report_epochs: bool = True,
) -> FitResult:
    """Train ``model`` with early stopping on ``validation``; restore the best epoch's weights.

    ``progress`` shows a bar per epoch; ``report_epochs`` prints each epoch's validation
    scores. Only parameters with ``requires_grad`` learn (a frozen trunk stays frozen), and only
    they are snapshotted for the best epoch.

    Raises:
        ConfigError: settings out of range, or a model with nothing to train.
    """
    settings.validate()
    if settings.lr is None:
        raise ConfigError("no learning rate: set TrainSettings.lr (or use with_default_lr)")
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ConfigError("the model has no trainable parameters")
    optimizer = make_optimizer([p for _, p in trainable], settings)
    model.to(device)
    generator = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)
    result = FitResult()
    best_state: dict[str, torch.Tensor] = {}
    bad_epochs = 0
    step = 0
    start = time.perf_counter()
    log = log or (lambda metrics, step: None)
    labels = torch.tensor(train.labels)
    for epoch in range(1, settings.max_epochs + 1):
        model.train()
        order = generator.permutation(len(train))
        total_batches = math.ceil(len(train) / settings.batch_size)
        bar = tqdm(
            _batches(len(train), settings.batch_size, order),
            total=total_batches,
            desc=f"epoch {epoch}/{settings.max_epochs}",
            disable=not progress,
            leave=False,
        )
        running = 0.0
        for idx in bar:
            batch = {k: v.to(device) for k, v in encode([train.texts[i] for i in idx]).items()}
            loss = nn.functional.cross_entropy(
                logits_of(model(**batch)).float(), labels[idx].to(device)
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings.max_grad_norm > 0:
                nn.utils.clip_grad_norm_([p for _, p in trainable], settings.max_grad_norm)
            optimizer.step()
            step += 1
            running += loss.item()
            if step % settings.log_every == 0:
                log({"train/loss": running / settings.log_every, "train/epoch": epoch}, step)
                bar.set_postfix(loss=f"{running / settings.log_every:.3f}")
                running = 0.0
        metrics, val_loss = evaluate(
            model, encode, validation, batch_size=settings.eval_batch_size, device=device
        )
        row = {
            "epoch": epoch,
            "validation/loss": val_loss,
            "validation/accuracy": metrics["accuracy"],
            "validation/macro_f1": metrics["macro"]["f1"],
            "perf/seconds": time.perf_counter() - start,
        }
        result.history.append(row)
        log(row, step)
        score = metrics["macro"]["f1"] if settings.monitor == "macro_f1" else -val_loss
        if report_epochs:
            tqdm.write(
                f"epoch {epoch}: validation loss {val_loss:.4f}, accuracy "
                f"{metrics['accuracy']:.4f}, macro-F1 {metrics['macro']['f1']:.4f}"
            )
        if score > result.best_score:
            result.best_score, result.best_epoch, bad_epochs = score, epoch, 0
            best_state = {n: p.detach().clone() for n, p in trainable}
        else:
            bad_epochs += 1
            if bad_epochs >= settings.patience:
                result.stopped_early = epoch < settings.max_epochs
                break
    # Put back the weights of the epoch validation liked best.
    with torch.no_grad():
        for name, param in trainable:
            param.copy_(best_state[name])
    model.eval()
    result.seconds = time.perf_counter() - start
    result.steps = step
    return result
