"""Feature normalisation as a named protocol: none, per speaker, or per corpus.

``speaker`` z-scores each speaker's rows (frames) with their own statistics (a
call's channel when scoring); ``corpus`` each corpus with the statistics of its
training rows only. Tune and train evaluate each as a variant; a bundle records
the one it ships (``VARIANTS``: variant -> the bundle's ``normalisation``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


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
