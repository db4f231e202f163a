"""The files every evaluated run leaves, written one way for tune, train, the deep search and ensembles.

A stage writes into its staged run dir (``outputs.run_dir``'s ``local``): the
figures (``metrics.json``), the report (``report.md``), every row's out-of-fold
prediction (``predictions.parquet``, what ``seremo ensemble`` joins), the
confusion matrix, and where a model is shipped, its predictions on the rows it
was fitted on (``model_predictions.parquet``). What is a stage's own (its
trials, curves, bundle) it writes itself beside these.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from seremo import measure
from seremo.dataset import FeatureTable
from seremo.folds import Folds

METRICS, REPORT, CONFUSION, MODEL_PREDICTIONS = "metrics.json", "report.md", "confusion_matrix.png", "model_predictions.parquet"


@dataclass(frozen=True)
class OutOfFold:
    """Each row's prediction by the model that did not train on it, and the outer fold that held it out."""

    ids: np.ndarray
    groups: np.ndarray
    labels: np.ndarray  # class names
    predicted: np.ndarray  # class names
    folds: Folds
    proba: np.ndarray  # rows x classes
    classes: list[str]
    corpus: np.ndarray | None = None

    def table(self) -> pa.Table:
        return measure.oof_table(self.ids, self.groups, self.labels, self.predicted, self.folds, self.proba,
                                  self.classes, corpus=self.corpus)  # fmt: skip


def write_evaluation(out: Path, metrics: dict[str, Any], oof: OutOfFold, title: str, report: str | None = None,
                     default: Any = None) -> None:  # fmt: skip
    """``predictions.parquet`` and the confusion matrix (titled ``title``); ``metrics.json`` and
    ``report.md`` too unless ``report`` is None (a caller that adds to the metrics writes them later)."""
    pq.write_table(oof.table(), out / measure.PREDICTIONS)
    measure.plot_confusion(metrics["confusion"], oof.classes, str(out / CONFUSION), title)
    if report is not None:
        write_metrics(out, metrics, report, default)


def write_metrics(out: Path, metrics: dict[str, Any], report: str, default: Any = None) -> None:
    """``metrics.json`` (``default`` as json.dumps takes it, for values JSON lacks) and ``report.md``."""
    (out / METRICS).write_text(json.dumps(metrics, indent=2, default=default))
    (out / REPORT).write_text(report)


def write_model_predictions(out: Path, ids: Sequence[str], proba: np.ndarray, classes: Sequence[str]) -> None:
    """The shipped model's probabilities on the rows it was fitted on (``model_predictions.parquet``)."""
    pq.write_table(pa.table({"utterance_id": ids, **{f"p_{c}": proba[:, i] for i, c in enumerate(classes)}}),
                   out / MODEL_PREDICTIONS)  # fmt: skip


def test_set_figures(test: FeatureTable, pred: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """A shipped model's figures on a ``test:`` set it never saw, per corpus too (its labels are read only here)."""
    s = measure.scores(test.y, pred, classes)
    return {**{k: s[k] for k in ("uar", "wa", "macro_f1", "weighted_f1", "n", "per_class", "confusion")},
            "per_corpus": measure.per_corpus(test.y, pred, test.corpus, classes)}  # fmt: skip
