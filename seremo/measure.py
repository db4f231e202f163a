"""Measures of speaker-independent evaluation: the metrics, the out-of-fold table and the confusion plot.

The headline metric is UAR (unweighted average recall = balanced accuracy); WA
(weighted accuracy = plain accuracy) and macro-F1 stand beside it. The folds are
:mod:`seremo.folds`; normalisation protocols :mod:`seremo.normalisation`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from seremo.folds import Folds


def scores(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str]) -> dict[str, Any]:
    """UAR, WA, macro- and weighted F1, macro precision/recall, per-class figures and the confusion matrix."""
    y_true, y_pred, classes = np.asarray(y_true), np.asarray(y_pred), list(classes)
    p, r, f, support = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=0
    )
    present = support > 0  # a class absent from y_true has no recall to average
    return {
        "uar": float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "wa": float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "macro_f1": float(f1_score(y_true, y_pred, labels=np.asarray(classes)[present], average="macro", zero_division=0)),
        # support-weighted F1: what MELD and IEMOCAP text baselines report
        "weighted_f1": float(f1_score(y_true, y_pred, labels=classes, average="weighted", zero_division=0))
        if len(y_true) else 0.0,
        "precision": float(np.mean(p[present])) if present.any() else 0.0,
        "recall": float(np.mean(r[present])) if present.any() else 0.0,
        "n": int(len(y_true)),
        "per_class": {
            c: {"recall": float(r[i]), "precision": float(p[i]), "f1": float(f[i]), "support": int(support[i])}
            for i, c in enumerate(classes)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=classes).tolist(),
    }


def per_corpus(y_true: Sequence[str], y_pred: Sequence[str], corpus: Sequence[str],
               classes: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    """UAR, WA and macro-F1 on each corpus: cross-corpus figures are reported per corpus, never pooled."""
    y_true, y_pred, corpus = np.asarray(y_true), np.asarray(y_pred), np.asarray(corpus)
    out = {}
    for c in sorted(set(corpus.tolist())):
        m = corpus == c
        s = scores(y_true[m], y_pred[m], classes)
        out[c] = {k: s[k] for k in ("uar", "wa", "macro_f1", "n")}
    return out


def uar(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Balanced accuracy; a fold whose speaker lacks a predicted class is expected, not a warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(y_true, y_pred))


def plot_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str], path: str, title: str) -> None:
    """Row-normalised confusion matrix (recall per true class) with counts, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(classes), 0.6 + 0.8 * len(classes)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{int(cm[i, j])}\n{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


PREDICTIONS = "predictions.parquet"


def oof_table(ids: Sequence[str], groups: Sequence[str], labels: Sequence[str], predicted: Sequence[str],
              folds: Folds, proba: np.ndarray, classes: Sequence[str], corpus: Sequence[str] | None = None) -> Any:  # fmt: skip
    """A run's out-of-fold predictions, ``predictions.parquet``: one row per utterance.

    ``fold`` is the outer fold (1-based) that held the row out, and ``p_<class>``
    the probabilities the model trained without that fold gave it: what
    ``seremo ensemble`` joins and re-scores without refitting anything.
    """
    import pyarrow as pa

    fold = np.zeros(len(ids), np.int32)
    for k, (_, te) in enumerate(folds):
        fold[te] = k + 1
    if (fold == 0).any():
        raise ValueError("every row must be held out by exactly one outer fold")
    cols = {"utterance_id": np.asarray(ids), **({"corpus": np.asarray(corpus)} if corpus is not None else {}),
            "group": np.asarray(groups), "label": np.asarray(labels), "predicted": np.asarray(predicted, dtype=str),
            "fold": fold}  # fmt: skip
    cols.update({f"p_{c}": np.asarray(proba[:, i], np.float32) for i, c in enumerate(classes)})
    return pa.table(cols)
