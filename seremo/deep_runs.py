"""What a deep-model run writes: its evaluation, its training curves and the bundle of its final model.

``seremo train`` and ``seremo tune --model`` (the deep search) both write their run
dir through here; the evaluation files themselves are :mod:`seremo.runs`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seremo import bundle, fitting, nets, runs
from seremo.dataset import FeatureTable
from seremo.settings import TrainSettings


def write_run(out: Path, metrics: dict, curves: list, data: FeatureTable, view: fitting.NetInputs,
              oof: runs.OutOfFold, settings: TrainSettings, final: dict | None, report: bool = True) -> None:  # fmt: skip
    """The run dir's files: the evaluation (``runs``), the curves and the bundle of the final model (inputs as
    ``view`` gives them: its vocabulary); ``report=False`` leaves metrics.json and report.md to a search."""
    from seremo.report import train_report

    runs.write_evaluation(out, metrics, oof, f"{settings.model}, {metrics['protocol']['outer']}: UAR {metrics['uar']:.3f}",
                          train_report(metrics) if report else None)  # fmt: skip
    if curves:
        plot_curves(curves, str(out / "curves.png"), settings.model)
    if final is not None:
        save_bundle(out / "model", final["model"], data, view, metrics, settings)
        runs.write_model_predictions(out, data.ids, nets.predict_proba(final["model"], view.items), data.classes)


def save_bundle(path: Path, model: Any, data: FeatureTable, view: fitting.NetInputs, metrics: dict,
                settings: TrainSettings) -> None:  # fmt: skip
    """``model/``: the net's weights (safetensors) and bundle.json, its training rows listed."""
    meta = bundle.base_meta(
        model_kind="torch", model_name=settings.model,
        params={"in_dim": view.in_dim, "arch": settings.arch}, feature_set=data.feature_set,
        classes=data.classes,
        training={"corpora": data.corpora, "utterances": int(len(data.y)), "groups": data.n_groups,
                  "class_set": settings.class_set},
        metrics={"cv_uar": metrics["uar"], "cv_wa": metrics["wa"], "cv_macro_f1": metrics["macro_f1"]},
    )  # fmt: skip
    meta["normalisation"] = settings.normalise
    meta["inputs"] = data.inputs
    path.mkdir(exist_ok=True)
    nets.save_module(path, model)
    bundle.write_meta(path, meta, training_ids=list(data.ids))  # the early-stopping rows too


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
