"""Per-speaker normalisation, honestly: where it helps and where it removes the emotion itself.

z-scoring each speaker's features with that speaker's own (unlabelled) rows takes the speaker out of the
features, and it gains when every speaker's rows hold varied speech. When one speaker's rows are mostly one
emotion (one side of a short call), that emotion *is* the speaker's mean, and z-scoring removes it.

On a features folder (any vector set, e.g. ``seremo extract ... --features whisper``), leave one speaker
out, logistic regression (C=0.1, scaled), each model trained on the other speakers:
- varied: the held-out speaker's rows as they are (every emotion);
- skewed: the held-out speaker's rows cut to one dominant emotion (all its rows of that emotion) plus one
  row of each other emotion, for every (speaker, emotion) pair; normalised with these rows only, as
  ``seremo score`` normalises a call's channel with its own segments.

Reported: UAR (varied) and accuracy (skewed: mostly one class, so UAR says little), raw and normalised.

    python benchmarks/speaker_norm.py FEATURES_DIR
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from seremo import classical, measure, normalisation
from seremo.outcome import format_table
from seremo.shards import read_features


def skewed_accuracy(X: np.ndarray, y: np.ndarray, groups: np.ndarray, normalised: bool) -> tuple[float, int]:
    """Mean accuracy over every (held-out speaker, dominant emotion) pair, and how many pairs there were."""
    accs = []
    for g in np.unique(groups):
        train, test = groups != g, np.flatnonzero(groups == g)
        Xtr = normalisation.speaker_normalise(X[train], groups[train]) if normalised else X[train]
        model = classical.fit("logreg", {"C": 0.1}, Xtr.astype(np.float32), y[train])
        for emotion in np.unique(y[test]):
            dominant = test[y[test] == emotion]
            others = [test[y[test] == e][0] for e in np.unique(y[test]) if e != emotion]
            rows = np.concatenate([dominant, np.asarray(others, int)])
            Xte = normalisation.speaker_normalise(X[rows], np.zeros(len(rows))) if normalised else X[rows]
            accs.append(float(np.mean(model.predict(Xte.astype(np.float32)) == y[rows])))
    return float(np.mean(accs)), len(accs)


def varied_uar(X: np.ndarray, y: np.ndarray, groups: np.ndarray, normalised: bool) -> float:
    Xn = normalisation.speaker_normalise(X, groups) if normalised else X
    predicted = np.empty(len(y), dtype=object)
    for g in np.unique(groups):
        train = groups != g
        model = classical.fit("logreg", {"C": 0.1}, Xn[train].astype(np.float32), y[train])
        predicted[~train] = model.predict(Xn[~train].astype(np.float32))
    return measure.uar(y, predicted.astype(str))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("features")
    args = p.parse_args()
    feats = read_features(args.features)
    X = feats.matrix().astype(np.float64)
    y = np.asarray(feats.table.column("label").to_pylist())
    groups = np.asarray(feats.table.column("group").to_pylist())
    rows = []
    for normalised in (False, True):
        skew, pairs = skewed_accuracy(X, y, groups, normalised)
        rows.append(["per-speaker z-score" if normalised else "raw", round(varied_uar(X, y, groups, normalised), 3),
                     round(skew, 3)])  # fmt: skip
    print(f"{args.features}: {feats.feature_set['name']}, {len(y)} rows, {len(set(groups))} speakers, "
          f"{len(set(y))} classes; skewed: {pairs} (speaker, dominant emotion) pairs")  # fmt: skip
    print(format_table(["features", "varied speakers: UAR", "one emotion dominant: accuracy"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
