"""``seremo evaluate``: a trained bundle on labelled data it never saw.

The data is a features directory made with the bundle's feature set, or a
manifest, which is extracted on the fly (Ray Data) into ``OUT/features/``.
Labels are mapped onto the bundle's classes through a class set (``--class-set``,
else the one the bundle was trained with); a row whose label the bundle cannot
predict is counted in ``excluded_labels`` and left out, never silently. Features
are normalised as the bundle was evaluated (``normalisation`` in bundle.json):
each speaker, or each corpus, by its own unlabelled statistics.

Rows the bundle was fitted on (its ``training_ids.json``) are not unseen: the
figures leave them out and ``overlap`` counts them (``{rows, of}``; ``rows`` null
where an older bundle records no training rows); data made only of training rows
is refused in one line (exit 2), as it has no honest figure to give.

Writes ``metrics.json`` (``uar``, ``wa``, ``macro_f1``, ``weighted_f1``, per class,
per corpus, ``overlap``), ``report.md``, ``confusion_matrix.png`` and
``predictions.parquet`` (every row, ``training_row`` marking the rows left out).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from seremo import bundle, dataset, measure, normalisation, outputs, shards, storage
from seremo.dataset import FeatureTable
from seremo.errors import SeremoError
from seremo.outcome import Outcome

log = logging.getLogger(__name__)


def _is_manifest(data: str) -> bool:
    return data.endswith(".parquet") and not (os.path.isdir(data) if not storage.is_uri(data) else False)


def features_for(b: bundle.Bundle, data: str, out: str, address: str | None) -> shards.Features:
    """The features to judge ``b`` on: ``data`` itself, or ``data`` (a manifest) extracted into ``out``/features."""
    if _is_manifest(data):
        from seremo.extract import extract_manifest

        target = storage.join(out, "features")
        log.info("evaluate: extracting %s with %s into %s", data, b.meta.feature_set.name, target)
        extract_manifest(data, b.feature_set, target, address=address, overwrite=True)
        data = target
    feats = shards.read_features(data)
    want = b.meta.feature_set.model_dump()
    if feats.feature_set != want:
        raise SeremoError(
            f"{data}: features are {dataset.describe_set(feats.feature_set)}, but the bundle was trained on "
            f"{dataset.describe_set(want)}; extract them with that set (or pass the manifest)"
        )
    return feats


def predict(b: bundle.Bundle, rows: FeatureTable) -> np.ndarray:
    """The bundle's probabilities, with its normalisation fitted on this data's own (unlabelled) rows."""
    X, how, inputs = rows.X, b.meta.normalisation, b.meta.inputs
    if how == "none" or inputs == "text":
        return b.predict_proba(X)
    audio = bundle.input_view(X, inputs, "audio")  # transcripts are not normalised: only the audio part is
    if isinstance(audio, np.ndarray):
        audio = normalisation.normalise(audio, how, rows.groups, rows.corpus).astype(np.float32)
    else:
        audio = normalisation.normalise_items(audio, b.meta.feature_set.kind, how, rows.groups, rows.corpus)
    if inputs == "audio+text":
        audio = bundle.join_inputs(audio, bundle.input_view(X, inputs, "text"))
    return b.predict_proba(audio)


def evaluate_bundle(model: str, data: str, out: str, class_set: str | None = None,
                    address: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Judge bundle ``model`` on ``data``; write the run dir ``out``; return metrics.json's content."""
    started = time.perf_counter()
    b = bundle.load(model)
    class_set = class_set or b.meta.training.get("class_set")
    identity = {"model_id": b.model_id}
    outputs.check_out(out, [str(model)] + ([] if _is_manifest(data) else [data]), [data] if _is_manifest(data) else [],
                      what="bundle or data")  # fmt: skip
    with outputs.run_dir(out, "evaluate", identity, writes=(*outputs.RUN_WRITES, "features")) as run:
        feats = features_for(b, data, run.remote, address)
        rows = dataset.from_features(feats, data, class_set, classes=b.classes, inputs=b.meta.inputs, any_kind=True)
        seen = training_rows(b, rows.ids, data)
        proba = predict(b, rows)
        classes = b.classes
        pred = np.asarray(classes)[np.argmax(proba, axis=1)]
        metrics = unseen_scores(rows, pred, classes, seen)
        metrics.update({
            "model": str(model), "model_id": b.model_id, "data": data, "class_set": class_set,
            "classes": classes, "normalisation": b.meta.normalisation, "excluded_labels": rows.excluded,
            "feature_set": b.meta.feature_set.model_dump(), "trained_on": b.meta.training,
            "wall_s": time.perf_counter() - started,
        })  # fmt: skip
        _write(run.local, metrics, rows, pred, proba, classes, seen)
    return metrics


def training_rows(b: bundle.Bundle, ids: np.ndarray, data: str) -> np.ndarray | None:
    """Which rows the bundle was fitted on (``training_ids.json``); None where the bundle does not record them.

    Judging a model on its own training rows says how well it remembers, not how it
    generalises: those rows are left out of the figures, and data made only of them
    is refused in one line (there is no honest figure to give).
    """
    known = b.training_ids()
    if known is None:
        return None
    seen = np.fromiter((bundle.id_hash(u) in known for u in ids), dtype=bool, count=len(ids))
    if seen.all():
        raise SeremoError(f"{data}: all {len(ids)} rows are training rows of {b.model_id} (its training_ids.json), so "
                          "nothing here is unseen; its held-out figures are in its run's metrics.json: evaluate on "
                          "data it never saw")  # fmt: skip
    return seen


def unseen_scores(rows: FeatureTable, pred: np.ndarray, classes: list[str], seen: np.ndarray | None) -> dict:
    """The figures on the rows the bundle never trained on, and ``overlap``: how many it did (or that nobody knows)."""
    unseen = np.ones(len(pred), bool) if seen is None else ~seen
    y, corpus = rows.y[unseen], rows.corpus[unseen]
    metrics = measure.scores(y, pred[unseen], classes)
    metrics["per_corpus"] = measure.per_corpus(y, pred[unseen], corpus, classes)
    metrics["overlap"] = ({"rows": None, "of": len(pred), "note": "training rows unknown (the bundle predates "
                                                                   "training_ids.json)"}
                          if seen is None else {"rows": int(seen.sum()), "of": len(pred)})  # fmt: skip
    return metrics


def _write(out: Path, metrics: dict, rows: FeatureTable, pred: np.ndarray, proba: np.ndarray, classes: list[str],
           seen: np.ndarray | None) -> None:  # fmt: skip
    """metrics.json, report.md, the confusion matrix (unseen rows) and every row's prediction, training rows marked."""
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    training_row = pa.nulls(len(pred), pa.bool_()) if seen is None else pa.array(seen)
    pq.write_table(
        pa.table({"utterance_id": rows.ids.astype(str), "corpus": rows.corpus, "group": rows.groups,
                  "label": rows.y, "predicted": pred, "training_row": training_row,
                  **{f"p_{c}": proba[:, i].astype(np.float32) for i, c in enumerate(classes)}}),
        out / "predictions.parquet",
    )  # fmt: skip
    measure.plot_confusion(metrics["confusion"], classes, str(out / "confusion_matrix.png"),
                            f"{metrics['model_id']} on unseen data: UAR {metrics['uar']:.3f}")  # fmt: skip
    from seremo.report import evaluate_report

    (out / "report.md").write_text(evaluate_report(metrics))


def overlap_line(overlap: dict[str, Any]) -> str:
    """What the figures below are on: every row, or the rows the bundle did not train on."""
    if overlap["rows"] is None:
        return "training rows unknown (the bundle predates training_ids.json): some rows may be training rows"
    if not overlap["rows"]:
        return f"no row is a training row of the bundle (all {overlap['of']} unseen)"
    return (f"{overlap['rows']} of {overlap['of']} rows are training rows of the bundle: left out, the figures are "
            f"on the {overlap['of'] - overlap['rows']} unseen rows")


def run_stage(model: str, data: str, out: str, class_set: str | None, address: str | None) -> Outcome:
    """``seremo evaluate``: the figures, per corpus, and where the report is."""
    m = evaluate_bundle(model, data, out, class_set=class_set, address=address)
    text = [f"{m['model_id']} on {data}: {m['n']} utterances", overlap_line(m["overlap"]),
            f"UAR {m['uar']:.3f}  WA {m['wa']:.3f}  macro-F1 {m['macro_f1']:.3f}  weighted-F1 {m['weighted_f1']:.3f}"]
    if len(m["per_corpus"]) > 1:
        text += [f"  {c}: UAR {r['uar']:.3f} (n={r['n']})" for c, r in m["per_corpus"].items()]
    if m["excluded_labels"]:
        left = ", ".join(f"{k} {v}" for k, v in sorted(m["excluded_labels"].items()))
        text.append(f"left out (labels the bundle cannot predict): {left}")
    text.append(f"report: {out}/report.md")
    return Outcome({k: m[k] for k in ("uar", "wa", "macro_f1", "weighted_f1", "n")}, "\n".join(text))
