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

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from seremo import bundle, evaluate, fitting, folds, nets, outputs, shards
from seremo.errors import ConfigError, SeremoError
from seremo.labels import get_class_set
from seremo.runtime import ensure_ray
from seremo.settings import TrainSettings
from seremo.settings import load_train as load_settings  # noqa: F401  (re-exported)
from seremo.summary import Outcome, format_table, held_out

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- driver


def training_indices(fit_idx: np.ndarray, aug_src: np.ndarray, n_orig: int) -> np.ndarray:
    """A fold's training rows plus the augmented copies (stored after the ``n_orig``
    originals) whose source utterance is one of those training rows, and no others."""
    return np.concatenate([fit_idx, n_orig + np.flatnonzero(np.isin(aug_src, fit_idx))]).astype(np.int64)


def load_data(features_dir: str, settings: TrainSettings, classes: list[str] | None = None) -> dict[str, Any]:
    """Items, labels, groups and corpora; ``classes`` (a test set's) keeps the rows the model can predict.

    Items are what the model reads: audio arrays, transcripts (word ids come per fold, from a
    vocabulary of its training rows), or for a fusion model (audio, transcript) pairs, the
    transcript from the audio shards' own ``transcript`` column.
    """
    feats = shards.read_features(features_dir)
    want = nets.KINDS[settings.model]
    shard_kind = "text" if want == "text" else nets.audio_kind(want)
    if feats.kind != shard_kind:
        raise SeremoError(
            f"{features_dir}: model {settings.model!r} needs {shard_kind} features, but these are "
            f"{feats.feature_set['name']!r} ({feats.kind}); extract e.g. "
            + {"sequence": "mfcc_seq", "image": "logmel", "vector": "seremo", "text": "text"}[shard_kind]
            + (" from a manifest with transcripts" if want.endswith("+text") else "")
        )
    table = feats.table
    mapping = get_class_set(settings.class_set).map if settings.class_set else (lambda lab: lab)
    labels = table.column("label").to_pylist()
    mapped = [mapping(lab) for lab in labels]
    keep = np.array([m is not None and (classes is None or m in classes) for m in mapped])
    excluded = Counter(str(lab) for lab, k in zip(labels, keep, strict=True) if not k)
    audio = [a for a, k in zip(feats.arrays(), keep, strict=True) if k] if want != "text" else None
    texts = list(feats.model_input("text", features_dir, keep)) if nets.reads_text(want) else None
    arrays = audio if texts is None else texts if audio is None else list(zip(audio, texts, strict=True))
    y = np.array([m for m, k in zip(mapped, keep, strict=True) if k])
    groups = np.array(table.column("group").to_pylist())[keep]
    if classes is not None:
        if not len(y):
            raise SeremoError(f"{features_dir}: no row has a class the model predicts ({', '.join(classes)})")
        return {"items": arrays, "labels": np.searchsorted(classes, y), "groups": groups, "excluded": dict(excluded),
                "corpus": np.array(table.column("corpus").to_pylist())[keep], "feature_set": feats.feature_set}  # fmt: skip
    classes = sorted(set(y.tolist()))
    if len(classes) < 2:
        raise SeremoError(f"{features_dir}: needs at least 2 classes, found {classes}")
    if len(set(groups)) < 3:
        raise SeremoError(f"{features_dir}: needs at least 3 groups (train, validation, test speakers)")
    audio_dim = 0 if audio is None else int(audio[0].shape[-1] if shard_kind != "image" else audio[0].shape[0])
    # the vocabulary's size comes per fold: 0 until then
    in_dim: int | list[int] = [audio_dim, 0] if want.endswith("+text") else audio_dim
    return {
        "items": arrays, "labels": np.searchsorted(classes, y), "classes": classes, "groups": groups,
        "ids": np.array(table.column("utterance_id").to_pylist())[keep], "kind": want, "in_dim": in_dim,
        "corpus": np.array(table.column("corpus").to_pylist())[keep],
        "feature_set": feats.feature_set, "corpora": sorted(set(table.column("corpus").to_pylist())),
        "table": table.filter(pa.array(keep)),
    }  # fmt: skip


def train_run(features_dir: str, out: str, settings: TrainSettings, address: str | None = None) -> dict[str, Any]:
    """Train and evaluate by grouped folds, then write the run dir (a local path or a URI)."""
    outputs.check_out(out, [features_dir], what="features")
    with outputs.run_dir(out, "train", {"model": settings.model}) as run:
        return _train_run(features_dir, run.local, run.ray_storage, settings, address)


def _train_run(features_dir: str, out_path: Path, ray_storage: str, settings: TrainSettings,
               address: str | None) -> dict[str, Any]:  # fmt: skip
    import ray

    data = load_data(features_dir, settings)
    outer = folds.plan_validated(data["groups"], settings, data["corpus"])
    tests = load_tests(settings, data)
    fitting.check_model(settings, data)
    ensure_ray(address)
    if settings.gpu and not ray.cluster_resources().get("GPU"):
        raise SeremoError("--gpu asked for, but the Ray cluster has no GPUs")
    n_orig, kind = len(data["labels"]), data["kind"]
    aug_src = np.zeros(0, np.int64)
    if settings.augment.copies:
        from seremo import features
        from seremo.augment import augmented_copies

        print(f"augmenting: {settings.augment.copies} cop(ies) of each utterance for training folds", flush=True)
        aug_items, aug_src = augmented_copies(
            data["table"], features.from_description(data["feature_set"]), settings.augment.model_dump(), settings.seed
        )
        if kind.endswith("+text"):  # a copy says what its source utterance says
            aug_items = list(zip(aug_items, [data["items"][i][1] for i in aug_src], strict=True))
        data = {**data, "items": data["items"] + aug_items, "labels": np.concatenate([data["labels"], data["labels"][aug_src]])}

    def with_copies(idx: np.ndarray) -> np.ndarray:
        return training_indices(idx, aug_src, n_orig)

    # every item's speaker and corpus, augmented copies those of their source utterance
    keys = {k: np.concatenate([data[k], data[k][aug_src]]) for k in ("groups", "corpus")}

    words = nets.reads_text(kind)  # a vocabulary per fold
    vectors = fitting.read_vectors(settings, data) if words else None

    def normalised(fitted_rows: np.ndarray) -> tuple[dict, Any]:
        view = fitting.model_view(data, settings, fitted_rows, keys, vectors, n_orig)
        return view, ray.put(fitting.shipped(view))

    if settings.normalise == "none" and not words:
        fold_data, data_ref = normalised(np.arange(0))
    predicted = np.full(n_orig, -1)
    oof_proba = np.zeros((n_orig, len(data["classes"])), np.float32)
    fold_rows, curves = [], []
    started = time.perf_counter()
    for k, (tr, te) in enumerate(outer):
        fit_idx, val_idx = folds.split_validation(data["groups"], tr, settings.val_fraction, settings.seed + k)
        print(f"fold {k + 1}/{len(outer)}: train {len(fit_idx)}, validate {len(val_idx)}, "
              f"test {len(te)} ({held_out(sorted(set(data['groups'][te].tolist())))})", flush=True)  # fmt: skip
        if settings.normalise != "none" or words:  # statistics / words of its training rows only
            fold_data, data_ref = normalised(with_copies(fit_idx))
        fitted = fitting.fit_one(f"fold{k + 1}", fold_data, data_ref, with_copies(fit_idx), val_idx, settings, ray_storage)
        proba = nets.predict_proba(fitted["model"], [fold_data["items"][i] for i in te])
        predicted[te] = proba.argmax(axis=1)
        oof_proba[te] = proba
        hist = fitted["history"]
        best_epoch = int(np.argmax([h["val_uar"] for h in hist])) + 1
        fold_uar = evaluate.uar(data["labels"][te], predicted[te])
        held = data["corpus"] if settings.groups == "corpus" else data["groups"]
        fold_rows.append({
            "held_out": sorted(set(held[te].tolist())), "n": int(len(te)), "uar": fold_uar,
            "epochs": len(hist), "best_epoch": best_epoch, "best_val_uar": max(h["val_uar"] for h in hist),
            "wall_s": fitted["wall_s"], "samples_per_s": float(np.median([h["samples_per_s"] for h in hist])),
            "restarts": hist[-1]["restarts"],
        })  # fmt: skip
        curves.append(hist)
        print(f"fold {k + 1}: test UAR {fold_uar:.3f} after {len(hist)} epochs ({fitted['wall_s']:.0f} s)", flush=True)
    classes = data["classes"]
    y_names = np.asarray(classes)[data["labels"][:n_orig]]
    pred_names = np.asarray(classes)[predicted]
    metrics = evaluate.scores(y_names, pred_names, classes)
    metrics.update({
        "model": settings.model, "settings": settings.model_dump(), "per_fold": fold_rows,
        "protocol": {
            "outer": folds.describe_outer(outer, data["groups"], data["corpus"], settings.groups),
            "outer_folds": len(outer), "groups": settings.groups,
            "early_stopping": "validation speakers split from each fold's training speakers",
            "normalise": settings.normalise,
        },
        "per_corpus": evaluate.per_corpus(y_names, pred_names, data["corpus"], classes),
        "feature_set": data["feature_set"], "classes": classes, "wall_s": time.perf_counter() - started,
        "samples_per_s": float(np.median([f["samples_per_s"] for f in fold_rows])),
        "workers": settings.workers, "gpu": settings.gpu,
    })  # fmt: skip
    final = None
    if settings.final_fit:
        everyone = np.arange(n_orig)
        fit_idx, val_idx = folds.split_validation(data["groups"], everyone, settings.val_fraction, settings.seed)
        print(f"final fit: train {len(fit_idx)}, validate {len(val_idx)}", flush=True)
        if settings.normalise != "none" or words:
            fold_data, data_ref = normalised(with_copies(fit_idx if words else everyone))
        final = fitting.fit_one("final", fold_data, data_ref, with_copies(fit_idx), val_idx, settings, ray_storage)
        if tests:
            metrics["test"] = {name: score_test(final["model"], t, classes, data, settings.normalise)
                               for name, t in tests.items()}  # fmt: skip
    originals = {**fold_data, "items": fold_data["items"][:n_orig], "labels": data["labels"][:n_orig]}
    _write_run(out_path, metrics, curves, originals, pred_names, settings, final, outer, oof_proba)
    return metrics


def load_tests(settings: TrainSettings, data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each ``test:`` features dir, read before any training: the training feature set, or one line."""
    if settings.test and not settings.final_fit:
        raise ConfigError("train.test: test sets are scored by the final model; set final_fit: true")
    test_settings = settings.model_copy(update={"test": []})
    return evaluate.load_test_sets(settings.test, lambda d: load_data(d, test_settings, classes=data["classes"]),
                                   data["feature_set"])  # fmt: skip


def score_test(model: Any, test: dict[str, Any], classes: list[str], data: dict[str, Any],
               how: str = "none") -> dict[str, Any]:  # fmt: skip
    """The final model on a test set it never saw (test labels are read only here), per corpus.

    Normalised like the training data: each speaker by its own frames; a corpus the
    model trained on by its training statistics, any other corpus by its own.
    """
    n = len(data["groups"])  # transcripts are read through the final model's own vocabulary
    items = evaluate.normalise_audio(
        list(data["items"][:n]) + list(test["items"]), data["kind"], how,
        np.concatenate([data["groups"], test["groups"]]), np.concatenate([data["corpus"], test["corpus"]]),
        np.arange(n),
    )[n:]  # fmt: skip
    pred = np.asarray(classes)[nets.predict_proba(model, items).argmax(axis=1)]
    y = np.asarray(classes)[test["labels"]]
    s = evaluate.scores(y, pred, classes)
    return {**{k: s[k] for k in ("uar", "wa", "macro_f1", "weighted_f1", "n", "per_class", "confusion")},
            "excluded_labels": test["excluded"], "per_corpus": evaluate.per_corpus(y, pred, test["corpus"], classes)}  # fmt: skip


def _write_run(out: Path, metrics: dict, curves: list, data: dict, pred_names: np.ndarray,
               settings: TrainSettings, final: dict | None, folds: list, oof_proba: np.ndarray,
               report: bool = True) -> None:  # fmt: skip
    """The run dir's files; ``report=False`` leaves metrics.json and report.md to the caller (a search)."""
    from seremo.report import train_report

    if report:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    pq.write_table(evaluate.oof_table(data["ids"], data["groups"], np.asarray(data["classes"])[data["labels"]],
                                      pred_names, folds, oof_proba, data["classes"], corpus=data["corpus"]),
                   out / evaluate.PREDICTIONS)  # fmt: skip
    evaluate.plot_confusion(metrics["confusion"], data["classes"], str(out / "confusion_matrix.png"),
                            f"{settings.model}, {metrics['protocol']['outer']}: UAR {metrics['uar']:.3f}")  # fmt: skip
    if curves:
        plot_curves(curves, str(out / "curves.png"), settings.model)
    if final is not None:
        model = final["model"]
        meta = bundle.base_meta(
            model_kind="torch", model_name=settings.model,
            params={"in_dim": data["in_dim"], "arch": settings.arch}, feature_set=data["feature_set"],
            classes=data["classes"],
            training={"corpora": data["corpora"], "utterances": int(len(data["labels"])),
                      "groups": len(set(data["groups"].tolist())), "class_set": settings.class_set},
            metrics={"cv_uar": metrics["uar"], "cv_wa": metrics["wa"], "cv_macro_f1": metrics["macro_f1"]},
        )  # fmt: skip
        meta["normalisation"] = settings.normalise
        meta["inputs"] = "text" if data["kind"] == "text" else "audio+text" if nets.reads_text(data["kind"]) else "audio"
        (out / "model").mkdir(exist_ok=True)
        nets.save_module(out / "model", model)
        bundle.write_meta(out / "model", meta, training_ids=list(data["ids"]))  # the early-stopping rows too
        proba = nets.predict_proba(model, data["items"])
        pq.write_table(
            pa.table({"utterance_id": data["ids"], **{f"p_{c}": proba[:, i] for i, c in enumerate(data["classes"])}}),
            out / "model_predictions.parquet",
        )
    if report:
        (out / "report.md").write_text(train_report(metrics))


def plot_curves(curves: list[list[dict]], path: str, title: str) -> None:
    """Training loss, validation loss and validation UAR per epoch, one line per fold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for k, hist in enumerate(curves):
        ep = [h["epoch"] for h in hist]
        axes[0].plot(ep, [h["train_loss"] for h in hist], color=f"C{k}", label=f"fold {k + 1} train")
        axes[0].plot(ep, [h["val_loss"] for h in hist], color=f"C{k}", ls="--")
        axes[1].plot(ep, [h["val_uar"] for h in hist], color=f"C{k}", label=f"fold {k + 1}")
    axes[0].set(xlabel="epoch", ylabel="loss (solid: train, dashed: validation)")
    axes[1].set(xlabel="epoch", ylabel="validation UAR")
    axes[1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
