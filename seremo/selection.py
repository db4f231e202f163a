"""Choosing configurations from inner scores: what ``seremo tune`` and its deep search share.

The selection rules (``best``, ``top_k``, ``family_vote``), the decision-level
joins of the members they pick, the nested predictions (per outer fold, the
members chosen by inner scores alone) and Ray Tune's Optuna searcher.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from seremo import vote
from seremo.errors import ConfigError


def pick(ranked: list[dict], selection: str, top_k: int = 5, margin: float | None = None,
         score: Callable[[dict], float] | None = None) -> list[dict]:  # fmt: skip
    """The members a selection rule takes from trials ranked best first by ``score`` (inner, or plain-CV,
    UAR); ``family_vote`` with a ``margin`` keeps only the families whose best is within it of the best."""
    if selection == "best":
        return ranked[:1]
    if selection == "top_k":
        return ranked[:top_k]
    members, families = [], set()
    for t in ranked:  # family_vote: the best of each family
        if t["family"] not in families:
            members.append(t)
            families.add(t["family"])
    if margin is not None and score is not None and members:
        members = [t for t in members if score(t) >= score(members[0]) - margin - 1e-9]  # 0.8 - 0.1 is 0.7000000000000001
    return members


def optuna_search(seed: int) -> Any:
    """Ray Tune's Optuna searcher; without the optional extra, one line saying how to get it."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise ConfigError("search: optuna needs the optuna package: pip install -e '.[optuna]' "
                          "(or use search: random)") from None  # fmt: skip
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(seed=seed)


COMBINATIONS = vote.RULES


def combine(probas: list[np.ndarray], rule: str, inner_uar: list[float], n_classes: int) -> np.ndarray:
    """Members' class probabilities joined by a decision-level rule (``vote.combine``); the ``weighted``
    rule's weights come from the members' inner-CV UAR, so from the training folds only."""
    weights = vote.weights_from_uar(inner_uar, n_classes) if rule == "weighted" else None
    return vote.combine(probas, rule, weights)


class NestedPredictions(NamedTuple):
    predicted: np.ndarray  # class names, one per row
    chosen: list[dict]  # per outer fold, the members picked
    proba: np.ndarray  # rows x classes: each row's probabilities from the fold that held it out


def nested(trials: list[dict], outer: list, n: int, classes: list[str], selection: str = "best",
            top_k: int = 5, rule: str = "average", margin: float | None = None) -> NestedPredictions:  # fmt: skip
    """Per outer fold, the members ``selection`` picks by inner score; their mean probabilities on that fold.

    ``best`` is the single best configuration. A soft vote is the default because
    with few speakers per inner fold, which one configuration wins is mostly noise,
    and the best of each family (``family_vote``) are diverse models whose errors
    partly cancel; every vote is chosen from inner scores only, like the single choice.
    """
    probas = np.zeros((n, len(classes)), np.float32)
    chosen = []
    for f, (_, te) in enumerate(outer):
        top = pick(sorted(trials, key=lambda t: (-t["inner_uar"][f], t["trial"])), selection, top_k, margin,
                   score=lambda t, f=f: t["inner_uar"][f])  # fmt: skip
        probas[te] = combine([t["proba"][te] for t in top], rule, [t["inner_uar"][f] for t in top], len(classes))
        chosen.append({"members": [{"family": t["family"], "params": json.loads(t["params"]),
                                    "inner_uar": t["inner_uar"][f]} for t in top]})  # fmt: skip
    return NestedPredictions(np.asarray(classes, dtype=object)[np.argmax(probas, axis=1)], chosen, probas)


