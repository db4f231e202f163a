"""``seremo train``: deep models trained data-parallel with Ray Train (TorchTrainer, v2).

Evaluation is speaker-independent: grouped folds hold out whole speakers for
testing; inside each fold's training speakers a further group split gives the
validation speakers that drive early stopping (the test speakers never do).
Each fold is one ``TorchTrainer`` run (``seremo.fitting``: DDP, bucketed
batches, bf16 on GPU, a checkpoint every epoch, resume after a worker dies).
``model/`` is a final fit on all speakers (less the validation speakers it
stops on), saved as safetensors.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from seremo import (
    dataset,
    deep_runs,
    fitting,
    folds,
    measure,
    nets,
    normalisation,
    outputs,
    runs,
)
from seremo.dataset import FeatureTable
from seremo.errors import ConfigError, SeremoError
from seremo.folds import Folds
from seremo.outcome import Outcome, format_table, held_out
from seremo.runtime import ensure_ray
from seremo.settings import TrainSettings
from seremo.settings import load_train as load_settings  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- driver


@dataclass(frozen=True)
class Augmented:
    """The training data with its augmented copies stored after the ``n_orig`` originals (none without
    ``augment``); each copy carries its source utterance's label, speaker and corpus (``src``: its row)."""

    data: FeatureTable
    src: np.ndarray
    n_orig: int

    def with_copies(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` and the copies of them (a fit's training rows: copies of no other row)."""
        return training_indices(idx, self.src, self.n_orig)


def training_indices(fit_idx: np.ndarray, aug_src: np.ndarray, n_orig: int) -> np.ndarray:
    """A fold's training rows plus the augmented copies (stored after the ``n_orig``
    originals) whose source utterance is one of those training rows, and no others."""
    return np.concatenate([fit_idx, n_orig + np.flatnonzero(np.isin(aug_src, fit_idx))]).astype(np.int64)


def augment(data: FeatureTable, settings: TrainSettings) -> Augmented:
    """``settings.augment.copies`` augmented copies of each utterance (re-read from its audio), after the originals."""
    src = np.zeros(0, np.int64)
    if not settings.augment.copies:
        return Augmented(data, src, len(data.y))
    from seremo import features
    from seremo.augment import augmented_copies

    print(f"augmenting: {settings.augment.copies} cop(ies) of each utterance for training folds", flush=True)
    items, src = augmented_copies(data.rows_table, features.from_description(data.feature_set),
                                  settings.augment.model_dump(), settings.seed)  # fmt: skip
    if data.kind.endswith("+text"):  # a copy says what its source utterance says
        items = list(zip(items, [data.items[i][1] for i in src], strict=True))
    copies = replace(data, items=data.items + items, y=np.concatenate([data.y, data.y[src]]),
                     groups=np.concatenate([data.groups, data.groups[src]]),
                     corpus=np.concatenate([data.corpus, data.corpus[src]]),
                     ids=np.concatenate([data.ids, data.ids[src]]))  # fmt: skip
    return Augmented(copies, src, len(data.y))


class Views:
    """The inputs each fit reads (``fitting.model_view``), put once in the object store.

    Normalisation statistics and vocabularies are fitted on a fit's training rows
    only, so each fit gets its own view; with neither, one view serves every fit.
    """

    def __init__(self, aug: Augmented, settings: TrainSettings) -> None:
        import ray

        self.aug, self.settings, self._put = aug, settings, ray.put
        self.words = nets.reads_text(aug.data.kind)  # a vocabulary per fit
        self.vectors = fitting.read_vectors(settings, aug.data) if self.words else None
        self.per_fit = settings.normalise != "none" or self.words
        self.last: tuple[fitting.NetInputs, Any] | None = None if self.per_fit else self._view(np.arange(0))

    def _view(self, fitted_rows: np.ndarray) -> tuple[fitting.NetInputs, Any]:
        view = fitting.model_view(self.aug.data, self.settings, fitted_rows, self.vectors, self.aug.n_orig)
        return view, self._put(view)

    def fitted_on(self, rows: np.ndarray) -> tuple[fitting.NetInputs, Any]:
        """The view whose statistics and words come from ``rows`` (copies included), and its object ref."""
        if self.per_fit:
            self.last = self._view(self.aug.with_copies(rows))
        assert self.last is not None
        return self.last


def train_run(features_dir: str, out: str, settings: TrainSettings, address: str | None = None) -> dict[str, Any]:
    """Train and evaluate by grouped folds, then write the run dir (a local path or a URI)."""
    outputs.check_out(out, [features_dir], what="features")
    with outputs.run_dir(out, "train", {"model": settings.model}) as run:
        return train_in(features_dir, run.local, run.ray_storage, settings, address)


def train_in(features_dir: str, out_path: Path, ray_storage: str, settings: TrainSettings,
             address: str | None) -> dict[str, Any]:  # fmt: skip
    """``train_run`` inside a staged run dir (``out_path``): evaluate by folds, fit the final model, write."""
    data = dataset.load(features_dir, settings.class_set, model=settings.model)
    outer = folds.plan_validated(data.groups, settings, data.corpus)
    tests = load_tests(settings, data)
    fitting.check_model(settings, data)
    start_ray(settings, address)
    aug = augment(data, settings)
    views = Views(aug, settings)
    started = time.perf_counter()
    cv = cross_validate(views, outer, settings, ray_storage)
    metrics = cv_metrics(data, cv, outer, settings, started)
    final = None
    if settings.final_fit:
        final = fit_final(views, settings, ray_storage)
        if tests:
            metrics["test"] = {name: score_test(final["model"], t, data, settings.normalise)
                               for name, t in tests.items()}  # fmt: skip
    view = views.last[0]
    deep_runs.write_run(out_path, metrics, cv.curves, data, replace(view, items=view.items[:aug.n_orig]), cv.oof(data, outer),
              settings, final)  # fmt: skip
    return metrics


def start_ray(settings: TrainSettings, address: str | None) -> None:
    """Ray, with the GPUs ``--gpu`` asks for, or one line."""
    import ray

    ensure_ray(address)
    if settings.gpu and not ray.cluster_resources().get("GPU"):
        raise SeremoError("--gpu asked for, but the Ray cluster has no GPUs")


@dataclass
class CrossValidation:
    """Every fold's test predictions (class indices and probabilities), figures and training curves."""

    predicted: np.ndarray
    proba: np.ndarray
    fold_rows: list[dict[str, Any]]
    curves: list[list[dict[str, Any]]]

    def oof(self, data: FeatureTable, outer: Folds) -> runs.OutOfFold:
        names = np.asarray(data.classes)
        return runs.OutOfFold(data.ids, data.groups, data.y, names[self.predicted], outer, self.proba, data.classes,
                              data.corpus)  # fmt: skip


def cross_validate(views: Views, outer: Folds, settings: TrainSettings, ray_storage: str) -> CrossValidation:
    """One fit per fold on its training speakers (less its validation speakers), scored on its test speakers."""
    data, n_orig = views.aug.data, views.aug.n_orig
    cv = CrossValidation(np.full(n_orig, -1), np.zeros((n_orig, len(data.classes)), np.float32), [], [])
    for k, (tr, te) in enumerate(outer):
        fit_idx, val_idx = folds.split_validation(data.groups, tr, settings.val_fraction, settings.seed + k)
        print(f"fold {k + 1}/{len(outer)}: train {len(fit_idx)}, validate {len(val_idx)}, "
              f"test {len(te)} ({held_out(sorted(set(data.groups[te].tolist())))})", flush=True)  # fmt: skip
        view, ref = views.fitted_on(fit_idx)  # statistics / words of its training rows only
        fitted = fitting.fit_one(f"fold{k + 1}", view, ref, views.aug.with_copies(fit_idx), val_idx, settings,
                                 ray_storage)  # fmt: skip
        proba = nets.predict_proba(fitted["model"], [view.items[i] for i in te])
        cv.predicted[te] = proba.argmax(axis=1)
        cv.proba[te] = proba
        hist = fitted["history"]
        fold_uar = measure.uar(data.labels[te], cv.predicted[te])
        held = data.corpus if settings.groups == "corpus" else data.groups
        cv.fold_rows.append({
            "held_out": sorted(set(held[te].tolist())), "n": int(len(te)), "uar": fold_uar,
            "epochs": len(hist), "best_epoch": int(np.argmax([h["val_uar"] for h in hist])) + 1,
            "best_val_uar": max(h["val_uar"] for h in hist),
            "wall_s": fitted["wall_s"], "samples_per_s": float(np.median([h["samples_per_s"] for h in hist])),
            "restarts": hist[-1]["restarts"],
        })  # fmt: skip
        cv.curves.append(hist)
        print(f"fold {k + 1}: test UAR {fold_uar:.3f} after {len(hist)} epochs ({fitted['wall_s']:.0f} s)", flush=True)
    return cv


def cv_metrics(data: FeatureTable, cv: CrossValidation, outer: Folds, settings: TrainSettings,
               started: float) -> dict[str, Any]:  # fmt: skip
    """metrics.json's figures of the pooled fold predictions, per fold and per corpus, and how they were made."""
    classes = data.classes
    pred_names = np.asarray(classes)[cv.predicted]
    metrics = measure.scores(data.y, pred_names, classes)
    metrics.update({
        "model": settings.model, "settings": settings.model_dump(), "per_fold": cv.fold_rows,
        "protocol": {
            "outer": folds.describe_outer(outer, data.groups, data.corpus, settings.groups),
            "outer_folds": len(outer), "groups": settings.groups,
            "early_stopping": "validation speakers split from each fold's training speakers",
            "normalise": settings.normalise,
        },
        "per_corpus": measure.per_corpus(data.y, pred_names, data.corpus, classes),
        "feature_set": data.feature_set, "classes": classes, "wall_s": time.perf_counter() - started,
        "samples_per_s": float(np.median([f["samples_per_s"] for f in cv.fold_rows])),
        "workers": settings.workers, "gpu": settings.gpu,
    })  # fmt: skip
    return metrics


def fit_final(views: Views, settings: TrainSettings, ray_storage: str) -> dict[str, Any]:
    """The shipped model: a fit on all speakers, less the validation speakers it stops on."""
    data = views.aug.data
    everyone = np.arange(views.aug.n_orig)
    fit_idx, val_idx = folds.split_validation(data.groups, everyone, settings.val_fraction, settings.seed)
    print(f"final fit: train {len(fit_idx)}, validate {len(val_idx)}", flush=True)
    view, ref = views.fitted_on(fit_idx if views.words else everyone)
    return fitting.fit_one("final", view, ref, views.aug.with_copies(fit_idx), val_idx, settings, ray_storage)


def load_tests(settings: TrainSettings, data: FeatureTable) -> dict[str, FeatureTable]:
    """Each ``test:`` features dir, read before any training: the training feature set, or one line."""
    if settings.test and not settings.final_fit:
        raise ConfigError("train.test: test sets are scored by the final model; set final_fit: true")
    return dataset.load_test_sets(settings.test, lambda d: dataset.load(d, settings.class_set, classes=data.classes,
                                                                         model=settings.model), data.feature_set)  # fmt: skip


def score_test(model: Any, test: FeatureTable, data: FeatureTable, how: str = "none") -> dict[str, Any]:
    """The final model on a test set it never saw (test labels are read only here), per corpus.

    Normalised like the training data: each speaker by its own frames; a corpus the
    model trained on by its training statistics, any other corpus by its own.
    """
    n = len(data.groups)  # transcripts are read through the final model's own vocabulary
    items = normalisation.normalise_audio(
        list(data.items) + list(test.items), data.kind, how, np.concatenate([data.groups, test.groups]),
        np.concatenate([data.corpus, test.corpus]), np.arange(n),
    )[n:]  # fmt: skip
    pred = np.asarray(data.classes)[nets.predict_proba(model, items).argmax(axis=1)]
    return {**runs.test_set_figures(test, pred, data.classes), "excluded_labels": test.excluded}


# --------------------------------------------------------------------------- the stage


def run_stage(features_dir: str, out: str, settings: TrainSettings, address: str | None) -> Outcome:
    """``seremo train``: grouped-fold training, its per-fold table and where the report is."""
    from seremo.report import outer_protocol, variants_lines

    metrics = train_run(features_dir, out, settings, address=address)
    text = [
        format_table(["held out", "n", "test UAR", "epochs", "samples/s", "wall s"],
                     [[held_out(f["held_out"]), f["n"], f["uar"], f["epochs"], f["samples_per_s"], f["wall_s"]]
                      for f in metrics["per_fold"]]),
        "",
        f"{settings.model}: UAR {metrics['uar']:.3f}  WA {metrics['wa']:.3f}  macro-F1 {metrics['macro_f1']:.3f}  "
        f"({outer_protocol(metrics)}, {metrics['wall_s']:.0f} s)",
        *variants_lines(metrics),
        f"report: {out}/report.md",
    ]  # fmt: skip
    return Outcome({"uar": metrics["uar"], "wa": metrics["wa"], "macro_f1": metrics["macro_f1"]}, "\n".join(text))
