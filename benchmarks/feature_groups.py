"""Which feature groups carry emotion across speakers and corpora, and which carry the speaker.

For a vector feature set, each named group of dimensions is scored alone and
left out, with one fixed protocol so that rows compare: a scaled logistic
regression whose C is chosen by grouped inner CV (speakers) inside every outer
fold (the nested protocol of `seremo tune`, one family, no Ray). Every figure
in a table is measured in the same run:

- in-corpus: leave one speaker out on each corpus of FEATURES_DIR;
- cross-corpus (with two or more corpora): train on one corpus, test on each
  other, on the classes they share;
- speaker identification: how well the group names the speaker (grouped by
  utterance text is not available everywhere, so plain 5-fold CV over
  utterances, stratified by speaker): a group that identifies speakers well and
  emotions poorly across speakers is a liability.

    python benchmarks/feature_groups.py FEATURES_DIR [--class-set core4]

FEATURES_DIR may hold several corpora (`seremo prepare A ROOT B ROOT`, then
`seremo extract`). Groups come from the feature names (`FeatureSet.feature_names`).
"""

from __future__ import annotations

import argparse
import re
import time
import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    GridSearchCV,
    GroupKFold,
    LeaveOneGroupOut,
    StratifiedKFold,
    cross_val_predict,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from seremo import dataset, features, measure

GROUPS = {  # by "name@version": a new version of a set gets its own groups
    "seremo@2": {
        "F0 relative to the utterance": r"^(f0_rel|f0_rise|f0_fall|df0)",
        "energy relative to the speech level": r"^(energy|denergy)",
        "voice quality (HNR, H1-H2, H1-A3, jitter, shimmer)": r"^(hnr|h1h2|h1a3|jitter|shimmer|voicing)",
        "formants (with --param formants=true)": r"^[FB][123]_",
        "spectral balance (alpha, Hammarberg, slopes)": r"^(alpha|hammarberg|slope)",
        "cepstral dynamics (MFCC and delta spread)": r"^d?mfcc\d+_std",
        "MFCC 1-4 means": r"^mfcc(_voiced)?\d+_mean",
        "rhythm": r"^(voiced|speech|pause)",
    },
    "seremo@1": {
        "cepstra (MFCC levels)": r"^mfcc\d+_",
        "cepstra over voiced frames": r"^mfcc_",
        "delta cepstra": r"^dmfcc",
        "octave bands": r"^band",
        "spectral shape": r"^(zcr|centroid|entropy|flatness|flux|rolloff|spread)_",
        "log-mel spectrum": r"^logmel",
        "prosody (F0, energy)": r"^(f0|df0|energy|denergy)_",
        "voice quality": r"^(jitter|shimmer|voicing)",
        "rhythm": r"^(voiced|speech|pause)",
    },
    "egemaps@02": {
        "F0": r"F0semitone",
        "loudness": r"loudness|equivalentSoundLevel",
        "formants": r"^F[123]",
        "voice quality (jitter, shimmer, HNR, H1-H2, H1-A3)": r"jitter|shimmer|HNR|logRelF0",
        "spectral balance (alpha, Hammarberg, slopes)": r"alphaRatio|hammarberg|slope",
        "MFCC 1-4": r"^mfcc",
        "spectral flux": r"spectralFlux",
        "rhythm": r"Segment|PerSec",
    },
}


def nested_logreg() -> GridSearchCV:
    return GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, class_weight="balanced")),
        {"logisticregression__C": [0.01, 0.03, 0.1, 0.3, 1.0]}, scoring="balanced_accuracy", cv=GroupKFold(3),
    )  # fmt: skip


def loso(X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    pred = np.empty(len(y), dtype=object)
    for tr, te in LeaveOneGroupOut().split(X, y, groups):
        pred[te] = nested_logreg().fit(X[tr], y[tr], groups=groups[tr]).predict(X[te])
    return measure.uar(y, pred)


def across(X: np.ndarray, y: np.ndarray, groups: np.ndarray, tr: np.ndarray, te: np.ndarray) -> float:
    return measure.uar(y[te], nested_logreg().fit(X[tr], y[tr], groups=groups[tr]).predict(X[te]))


def speaker_id(X: np.ndarray, speakers: np.ndarray) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.1))
    pred = cross_val_predict(model, X, speakers, cv=StratifiedKFold(5, shuffle=True, random_state=0))
    return measure.uar(speakers, pred)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("features")
    ap.add_argument("--class-set", default=None)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    data = dataset.load(args.features, args.class_set)
    name = f"{data.feature_set['name']}@{data.feature_set['version']}"
    names = features.from_description(data.feature_set).feature_names()
    if name not in GROUPS or not names:
        raise SystemExit(f"no groups defined for feature set {name!r} (groups exist for {', '.join(GROUPS)})")
    cols = {g: np.array([bool(re.search(rx, n)) for n in names]) for g, rx in GROUPS[name].items()}
    cols = {"all": np.ones(len(names), bool), **{g: m for g, m in cols.items() if m.any()}}  # groups it has
    X, y, groups, corpus = data.X, data.y, data.groups, data.corpus
    corpora = sorted(set(corpus.tolist()))
    pairs = [(a, b) for a in corpora for b in corpora if a != b]
    head = ["group", "dims", *[f"LOSO {c}" for c in corpora], *[f"{a}->{b}" for a, b in pairs], "speaker ID"]
    print(f"{args.features}: {name}, {len(y)} utterances, classes {', '.join(data.classes)}")
    print(" | ".join(head))
    started = time.perf_counter()
    for g, keep in cols.items():
        for label, mask in ((g, keep), (f"  without {g}", ~keep)) if g != "all" else ((g, keep),):
            if not mask.any():
                continue
            Xg = X[:, mask]
            row = [label, int(mask.sum())]
            row += [loso(Xg[corpus == c], y[corpus == c], groups[corpus == c]) for c in corpora]
            row += [across(Xg, y, groups, np.flatnonzero(corpus == a), np.flatnonzero(corpus == b)) for a, b in pairs]
            row += [speaker_id(Xg, groups)]
            print(" | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row), flush=True)
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
