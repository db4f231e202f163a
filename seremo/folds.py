"""Speaker-independent folds: the one planner tune, train and the deep search split data with.

Folds always hold out whole groups (speakers, sessions for IEMOCAP, or whole
corpora). Every fold count the data cannot give is an error raised before any
work, naming the setting, so a run never reports folds other than it ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut

from seremo.errors import ConfigError, SeremoError

if TYPE_CHECKING:
    from seremo.settings import TrainSettings

Folds = list[tuple[np.ndarray, np.ndarray]]

# The default protocol scales with the data: leave-one-group-out up to this many groups (RAVDESS's
# 24 actors included), else AUTO_FOLDS grouped folds (CREMA-D's 91 speakers, MELD's ~1,000 dialogues).
LOGO_UP_TO = 30
AUTO_FOLDS = 10


def default_folds(n_groups: int) -> int:
    """The fold count used when none is set: one per group up to ``LOGO_UP_TO`` groups, else ``AUTO_FOLDS``."""
    return n_groups if n_groups <= LOGO_UP_TO else AUTO_FOLDS


def group_folds(groups: Sequence[str], n_folds: int | None = None) -> Folds:
    """(train, test) index pairs holding out whole groups.

    ``n_folds=None`` is the default protocol (``default_folds``: leave-one-group-out
    for up to 30 groups, else 10 grouped folds); an int gives that many grouped folds
    (as many as there are groups is leave-one-group-out). More folds than groups
    is an error, not a quiet fallback, so a run never reports folds it did not run.
    """
    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    if n_folds is None and n_groups >= 2:
        n_folds = default_folds(n_groups)
    if n_groups < 2:
        raise SeremoError(f"speaker-independent evaluation needs at least 2 groups, found {n_groups}")
    dummy = np.zeros(len(groups))
    if n_folds is not None and n_folds < 2:
        raise SeremoError(f"need at least 2 folds, got {n_folds}")
    if n_folds is not None and n_folds > n_groups:
        raise SeremoError(f"{n_folds} folds asked for, but there are only {n_groups} groups")
    if n_folds is None or n_folds == n_groups:
        splitter = LeaveOneGroupOut()
    else:
        splitter = GroupKFold(n_splits=n_folds)
    return [(tr, te) for tr, te in splitter.split(dummy, dummy, groups)]


def describe_folds(folds: Folds, groups: Sequence[str]) -> str:
    """The fold scheme as it ran: "leave-one-group-out" or "5 grouped folds" (the count of a
    leave-one-group-out run is ``len(folds)``, beside it in the metrics and in the reports)."""
    groups = np.asarray(groups)
    if all(len(np.unique(groups[te])) == 1 for _, te in folds):
        return "leave-one-group-out"
    return f"{len(folds)} grouped folds"


def describe_corpus_folds(folds: Folds, corpus: Sequence[str]) -> str:
    """Folds that hold out whole corpora, as they ran (their count is part of the name)."""
    if all(len(np.unique(np.asarray(corpus)[te])) == 1 for _, te in folds):
        return f"leave-one-corpus-out ({len(folds)} folds)"
    return f"{len(folds)} folds of whole corpora"


def describe_outer(folds: Folds, groups: np.ndarray, corpus: np.ndarray, held_out: str) -> str:
    """The outer folds as they ran, whether they held out speakers (``held_out="speaker"``) or corpora."""
    return describe_folds(folds, groups) if held_out == "speaker" else describe_corpus_folds(folds, corpus)


# --------------------------------------------------------------------------- nested (tune)


def plan_nested(groups: np.ndarray, outer_folds: int | None, inner_folds: int, inner_is_default: bool = False,
                inner_groups: np.ndarray | None = None) -> tuple[Folds, list[Folds]]:  # fmt: skip
    """Outer grouped folds, and inner grouped folds inside each outer training set.

    The outer folds hold out ``groups`` (speakers, or corpora); the inner folds
    always split by ``inner_groups`` (speakers; default: ``groups``). Fold counts
    the data cannot give are a ConfigError naming the setting, raised before any
    work, so a run never quietly runs (and reports) other folds than asked; only
    the default inner count (3) shrinks to what a small corpus has, as reported.
    """
    groups = np.asarray(groups)
    inner_groups = groups if inner_groups is None else np.asarray(inner_groups)
    n_groups = len(set(groups.tolist()))
    if outer_folds is not None and not 2 <= outer_folds <= n_groups:
        raise ConfigError(
            f"tune.outer_folds: {outer_folds} folds asked for, but the data has {n_groups} groups "
            f"({'corpora' if inner_groups is not groups else 'speakers'}); use at most {n_groups}, "
            "or leave it unset for the default (leave-one-group-out up to 30 groups, else 10 grouped folds)"
        )
    outer = group_folds(groups, outer_folds)
    smallest = min(len(set(inner_groups[tr].tolist())) for tr, _ in outer)
    if smallest < 2:
        raise SeremoError(
            "an outer training set has fewer than 2 groups: nested CV needs at least 3 groups"
        )
    if inner_is_default and inner_folds > smallest:
        inner_folds = smallest
    if not 2 <= inner_folds <= smallest:
        raise ConfigError(
            f"tune.inner_folds: {inner_folds} folds asked for, but the smallest outer training set "
            f"has {smallest} groups (speakers); use at most {smallest}"
        )
    inner = [group_folds(inner_groups[tr], inner_folds) for tr, _ in outer]
    return outer, inner


def describe_protocol(outer: Folds, inner: list[Folds], groups: np.ndarray) -> dict[str, str]:
    """The outer and inner fold schemes as they ran (counts from the folds, not the settings)."""
    counts = sorted({len(folds) for folds in inner})
    n_inner = str(counts[0]) if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
    return {
        "outer": describe_folds(outer, groups),
        "inner": f"{n_inner} grouped folds inside each outer training set",
    }


# --------------------------------------------------------------------------- test folds with validation speakers (train)


def n_validation_groups(n_groups: int, fraction: float) -> int:
    """How many of ``n_groups`` training-side groups become validation groups (at least one)."""
    return max(1, int(round(fraction * n_groups)))


def split_validation(groups: np.ndarray, idx: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out whole training-side groups (about ``fraction`` of them) for early stopping."""
    names = sorted(set(groups[idx].tolist()))
    rng = np.random.default_rng(seed)
    n_val = n_validation_groups(len(names), fraction)
    val_names = set(rng.choice(names, size=n_val, replace=False).tolist())
    is_val = np.array([g in val_names for g in groups[idx]])
    return idx[~is_val], idx[is_val]


def plan_validated(groups: np.ndarray, settings: TrainSettings, corpus: np.ndarray | None = None) -> Folds:
    """The grouped test folds, after checking each leaves training and validation groups.

    With ``groups: corpus`` the folds hold out whole corpora (leave-one-corpus-out,
    unless ``folds`` asks for fewer); validation still holds out training-side speakers.
    Checked on the driver before Ray starts, so a fold count or validation share the
    data cannot give is one line naming the setting, not a failure inside a worker.
    """
    n_groups = len(set(groups.tolist()))
    if settings.groups == "corpus":
        corpora = sorted(set(np.asarray(corpus).tolist()))
        if len(corpora) < 2:
            raise ConfigError(f"train.groups: corpus holds out whole corpora, but the data has one ({corpora[0]})")
        units, n_units, what = np.asarray(corpus), len(corpora), "corpora"
        n_folds = settings.folds if "folds" in settings.model_fields_set else n_units
    else:
        units, n_units, what = groups, n_groups, "groups (speakers)"
        n_folds = settings.folds if "folds" in settings.model_fields_set else min(settings.folds, n_groups)
    if n_folds > n_units:
        raise ConfigError(
            f"train.folds: {settings.folds} folds asked for, but the data has {n_units} "
            f"{what}; use at most {n_units} ({n_units} is leave-one-group-out)"
        )
    folds = group_folds(units, n_folds)
    sides = [
        (f"fold {k + 1} of {len(folds)}", len(set(groups[tr].tolist())))
        for k, (tr, _) in enumerate(folds)
    ]
    if settings.final_fit:
        sides.append(("the final fit", n_groups))
    for where, n_side in sides:
        if n_side < 2:
            raise ConfigError(
                f"train.folds: {where} leaves {n_side} group(s) for training and validation; "
                f"each fold needs at least 2 (one to train on, one to validate on): use more "
                f"folds (at most {n_groups})"
            )
        n_val = n_validation_groups(n_side, settings.val_fraction)
        if n_val >= n_side:
            raise ConfigError(
                f"train.val_fraction: {settings.val_fraction} of the {n_side} training-side groups "
                f"in {where} is {n_val} validation group(s), leaving none to train on; use a "
                f"smaller val_fraction"
            )
    return folds
