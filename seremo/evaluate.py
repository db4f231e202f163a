"""Speaker-independent evaluation: metrics, normalisation, plots (the folds are ``seremo.folds``).

The headline metric is UAR (unweighted average recall = balanced accuracy); WA
(weighted accuracy = plain accuracy) and macro-F1 stand beside it.
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


def describe_set(fs: dict[str, Any]) -> str:
    """A feature set as one line: name, version, parameters (what two feature dirs must share)."""
    import json

    return f"{fs['name']} v{fs['version']} {json.dumps(fs['params'], sort_keys=True)}"


def load_test_sets(dirs: Sequence[str], load: Any, feature_set: dict[str, Any]) -> dict[str, Any]:
    """Each ``test:`` features dir through ``load(dir)``, named by its folder; a feature set other than
    the training one (``feature_set``) is one line, raised before any work."""
    from seremo.errors import ConfigError

    tests: dict[str, Any] = {}
    for d in dirs:
        t = load(d)  # a dataset.FeatureTable
        if t.feature_set != feature_set:
            raise ConfigError(f"test {d}: feature set {describe_set(t.feature_set)} differs from the training "
                              f"features' {describe_set(feature_set)}; extract it with the same set")  # fmt: skip
        name = d.rstrip("/").rsplit("/", 1)[-1]
        tests[name if name not in tests else d] = t
    return tests


def uar(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Balanced accuracy; a fold whose speaker lacks a predicted class is expected, not a warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(y_true, y_pred))


def speaker_normalise(X: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """z-score every group's features with that group's own mean and std.

    Uses only unlabelled audio of each speaker (the test speaker's included),
    so it is legitimate at test time, but it is a different protocol: seremo
    reports it separately and never turns it on by default.
    """
    X = np.asarray(X, dtype=np.float64)
    out = np.empty_like(X)
    groups = np.asarray(groups)
    for g in np.unique(groups):
        m = groups == g
        mu, sd = X[m].mean(axis=0), X[m].std(axis=0)
        out[m] = (X[m] - mu) / np.where(sd > 1e-12, sd, 1.0)
    return out


NORMALISATIONS = ("none", "speaker", "corpus")
VARIANTS = {"raw": "none", "speaker_norm": "speaker", "corpus_norm": "corpus"}  # tune/train variant -> bundle field


def _zscore(X: np.ndarray, fit_rows: np.ndarray, apply_rows: np.ndarray, out: np.ndarray) -> None:
    mu, sd = X[fit_rows].mean(axis=0), X[fit_rows].std(axis=0)
    out[apply_rows] = (X[apply_rows] - mu) / np.where(sd > 1e-12, sd, 1.0)


def corpus_normalise(X: np.ndarray, corpora: Sequence[str], fitted: np.ndarray | None = None) -> np.ndarray:
    """z-score every corpus with statistics of its rows in ``fitted`` (the training rows).

    A corpus with no row in ``fitted`` (a held-out corpus, a test set) is z-scored
    with its own rows: unlabelled audio, like ``speaker_normalise``. Nothing of a
    held-out corpus ever shifts the statistics of a corpus that has training rows,
    and labels are never read. ``fitted=None`` means every row is a training row.
    """
    X = np.asarray(X, dtype=np.float64)
    corpora = np.asarray(corpora)
    train = np.ones(len(X), bool) if fitted is None else np.isin(np.arange(len(X)), fitted)
    out = np.empty_like(X)
    for c in np.unique(corpora):
        rows = corpora == c
        _zscore(X, rows & train if (rows & train).any() else rows, rows, out)
    return out


def normalise(X: np.ndarray, how: str, groups: Sequence[str], corpora: Sequence[str],
              fitted: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """The features as a model of normalisation ``how`` (none, speaker, corpus) sees them."""
    if how == "none":
        return np.asarray(X)
    if how == "speaker":
        return speaker_normalise(X, groups)
    if how == "corpus":
        return corpus_normalise(X, corpora, fitted)
    raise ValueError(f"unknown normalisation {how!r}; one of {NORMALISATIONS}")


def _frames(item: np.ndarray, kind: str) -> np.ndarray:
    """An item as (frames, dims): a vector is one frame, a sequence its rows, an image its time columns."""
    return item[None, :] if kind == "vector" else item if kind == "sequence" else item.T


def normalise_items(items: Sequence[np.ndarray], kind: str, how: str, groups: Sequence[str], corpora: Sequence[str],
                    fitted: np.ndarray | None = None) -> list[np.ndarray]:  # fmt: skip
    """``normalise`` for variable-length items (sequences, images): statistics over their frames.

    Each speaker (``how="speaker"``) with its own frames; each corpus with the
    frames of its rows in ``fitted`` (its own where it has none), as for vectors.
    """
    if how == "none":
        return list(items)
    keys = np.asarray(groups if how == "speaker" else corpora)
    train = np.ones(len(items), bool) if fitted is None else np.isin(np.arange(len(items)), fitted)
    out = list(items)
    for key in np.unique(keys):
        rows = np.flatnonzero(keys == key)
        src = rows[train[rows]] if how == "corpus" and train[rows].any() else rows
        frames = np.concatenate([_frames(np.asarray(items[i], np.float64), kind) for i in src])
        mu, sd = frames.mean(axis=0), frames.std(axis=0)
        sd = np.where(sd > 1e-12, sd, 1.0)
        for i in rows:
            z = (_frames(np.asarray(items[i], np.float64), kind) - mu) / sd
            out[i] = (z[0] if kind == "vector" else z if kind == "sequence" else z.T).astype(np.float32)
    return out


def normalise_audio(items: Sequence[Any], kind: str, how: str, groups: Sequence[str], corpora: Sequence[str],
                    fitted: np.ndarray | None = None) -> list[Any]:  # fmt: skip
    """``normalise_items`` for any model's items (``nets`` kinds): a fusion pair's audio part is
    normalised and its transcript kept; transcripts alone pass through."""
    if kind == "text" or how == "none":
        return list(items)
    if not kind.endswith("+text"):
        return normalise_items(items, kind, how, groups, corpora, fitted)
    audio = normalise_items([a for a, _ in items], kind.removesuffix("+text"), how, groups, corpora, fitted)
    return list(zip(audio, [t for _, t in items], strict=True))


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


# --------------------------------------------------------------------------- out-of-fold predictions

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
