"""Decision-level combination of several models' class probabilities (no heavy imports: bundles use it).

``average``: the soft vote. ``weighted``: a weighted mean, each member's weight its
UAR above chance on rows it did not test on (``weights_from_uar``), so the weights
are fitted on training folds only. ``max_confidence``: per row, the probabilities of
the member most sure of its top class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RULES = ("average", "weighted", "max_confidence")


def weights_from_uar(uar: Sequence[float], n_classes: int) -> np.ndarray:
    """Weights summing to 1 from each member's UAR above chance; one at or below chance keeps a token weight."""
    w = np.maximum(np.asarray(uar, np.float64) - 1.0 / n_classes, 1e-3)
    return w / w.sum()


def combine(probas: Sequence[np.ndarray], rule: str, weights: Sequence[float] | None = None) -> np.ndarray:
    """Members' probabilities (each rows x classes) joined by ``rule``; ``weighted`` needs ``weights``."""
    stack = np.stack(probas)  # members x rows x classes
    if rule == "average":
        return stack.mean(axis=0)
    if rule == "weighted":
        if weights is None or len(weights) != len(stack):
            raise ValueError(f"the weighted rule needs one weight per member ({len(stack)})")
        w = np.asarray(weights, np.float64)
        return np.tensordot(w / w.sum(), stack, axes=1)
    if rule == "max_confidence":
        most_sure = stack.max(axis=2).argmax(axis=0)
        return stack[most_sure, np.arange(stack.shape[1])]
    raise ValueError(f"unknown combination {rule!r}; choose one of {', '.join(RULES)}")
