"""Classification metrics of a reward model on a labelled split, as a dict and a table.

Accuracy, precision, recall and F1 per class and macro-averaged, and the confusion
matrix (rows: true label, columns: predicted), computed with scikit-learn. The
majority-class baseline is the floor every trained model has to beat.

Example:
    >>> m = classification_metrics([0, 1, 2, 2], [0, 1, 2, 1], ("neg", "neu", "pos"))
    >>> m["accuracy"], round(m["macro"]["f1"], 3)
    (0.75, 0.778)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


def classification_metrics(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    label_names: Sequence[str],
) -> dict[str, Any]:
    """Accuracy, per-class and macro precision/recall/F1, support and the confusion matrix.

    Returns:
        ``{"accuracy", "per_class": {name: {"precision", "recall", "f1", "support"}},
        "macro": {"precision", "recall", "f1"}, "confusion_matrix": [[...]], "labels",
        "n"}``; a class never predicted has precision 0 (no warning).
    """
    labels = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    macro = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(label_names)
        },
        "macro": {"precision": float(macro[0]), "recall": float(macro[1]), "f1": float(macro[2])},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "labels": list(label_names),
    }


def majority_baseline(
    train_labels: Sequence[int], test_labels: Sequence[int], label_names: Sequence[str]
) -> dict[str, Any]:
    """Metrics of always predicting the most frequent training label on the test labels."""
    majority = Counter(train_labels).most_common(1)[0][0]
    return classification_metrics(test_labels, [majority] * len(test_labels), label_names)


def metrics_table(metrics: dict[str, Any]) -> str:
    """Per-class and macro precision/recall/F1 and accuracy, as a markdown table."""
    lines = ["| class | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |"]
    for name, row in metrics["per_class"].items():
        lines.append(
            f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} "
            f"| {row['support']} |"
        )
    macro = metrics["macro"]
    lines.append(
        f"| **macro** | {macro['precision']:.3f} | {macro['recall']:.3f} | {macro['f1']:.3f} "
        f"| {metrics['n']} |"
    )
    lines.append(f"| **accuracy** | | | {metrics['accuracy']:.3f} | {metrics['n']} |")
    return "\n".join(lines)


def confusion_table(metrics: dict[str, Any]) -> str:
    """The confusion matrix as a markdown table: rows true labels, columns predictions."""
    names = metrics["labels"]
    lines = [
        "| true \\ predicted | " + " | ".join(names) + " |",
        "| --- |" + " --- |" * len(names),
    ]
    for name, row in zip(names, metrics["confusion_matrix"], strict=True):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def flat_metrics(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    """Scalar metrics under ``prefix/`` for trackers: accuracy, macro and per-class F1."""
    flat = {
        f"{prefix}/accuracy": metrics["accuracy"],
        f"{prefix}/macro_precision": metrics["macro"]["precision"],
        f"{prefix}/macro_recall": metrics["macro"]["recall"],
        f"{prefix}/macro_f1": metrics["macro"]["f1"],
    }
    for name, row in metrics["per_class"].items():
        flat[f"{prefix}/f1_{name}"] = row["f1"]
    return flat
