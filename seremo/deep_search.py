"""``seremo tune FEATURES_DIR --model NAME``: deep models searched on Ray Tune, each trial a Ray Train run.

The protocol is the classical search's, nested: outer grouped folds hold out whole
speakers; inside each outer training set the search sees the training speakers only.
Those are split once more: the *fit* speakers train every trial, the *validation*
speakers score it every epoch, and that score drives both the ASHA scheduler and each
trial's early stopping. The outer test speakers never reach the search: the trials get
a view of the outer training rows alone (``search_inputs``), normalisation statistics
and vocabularies fitted on the fit rows. The best trial's own best model (by validation
UAR) is then scored on the outer test speakers: it already is the chosen configuration
trained on the outer training speakers without a look at the test ones, so it is not
trained again. The headline pools the outer folds' predictions.

Each trial is a function trainable that starts a ``TorchTrainer`` (Ray Train v2: a
Trainer inside a Tune function) with its own ``ScalingConfig``; ``TuneReportCallback``
forwards every epoch's report to Tune. Each outer fold's search is one Tune experiment
under ``RUN_DIR/search/fold<k>``: re-running the same command after the driver died
restores it, so finished trials are not run again. ``model/`` is the configuration of
the best trial over all folds (by validation UAR), trained on all speakers as
``seremo train``'s final fit is.

``protocol: search_once`` searches once over all speakers and then evaluates the chosen
configuration by grouped folds (``seremo train``): cheaper, and optimistic, since the
speakers it is evaluated on took part in choosing it; its report says so.

Over 500 lines, one protocol: the spaces are ``spaces``, the fit every trial runs is
``fitting``, folds ``folds``, the run writer ``runs``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from seremo import (
    dataset,
    deep_runs,
    fitting,
    folds,
    measure,
    nets,
    outputs,
    runs,
    selection,
    spaces,
    storage,
    train,
)
from seremo.dataset import FeatureTable
from seremo.errors import ConfigError, SeremoError
from seremo.outcome import Outcome, format_table, held_out
from seremo.runtime import ensure_ray
from seremo.settings import DeepSearchSettings, TrainSettings

log = logging.getLogger(__name__)

# A trial's function only starts its TorchTrainer and waits: it holds a sliver of a CPU, and each Ray Train
# worker the rest of one, so that N one-worker trials run at once on N CPUs (1 + 1 per trial would halve it).
TRIAL_CPU, WORKER_CPU = 0.01, 0.99

# --------------------------------------------------------------------------- the trial


@dataclass(frozen=True)
class SearchInputs:
    """What every trial of one search reads (sent once to the trials), and on the driver, the rows' view.

    ``data_ref`` holds the search's rows alone, as the net sees them (``fitting.NetInputs``);
    ``fit``/``val`` are positions in those rows, ``norm`` the fit rows' input statistics.
    """

    data_ref: Any
    fit: list[int]
    val: list[int]
    classes: list[str]
    kind: str
    in_dim: int | list[int]
    norm: tuple[np.ndarray, np.ndarray]
    base: dict[str, Any]  # the train settings every trial's values are set into
    gpu_fraction: float | None
    ids: list[str] = field(default_factory=list)  # driver only: the rows' utterance ids
    view: fitting.NetInputs | None = None  # driver only: every row's inputs (the outer test rows' too)
    configs: list[dict[str, Any]] | None = None  # trials only: the drawn configurations
    storage: str = ""  # trials only: where their Ray Train runs live


def _trial(config: dict[str, Any], shared: SearchInputs) -> None:
    """A Tune trial: one TorchTrainer run of the trial's settings on the search's fit/validation rows."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    settings = spaces.trial_settings(TrainSettings.model_validate(shared.base), _config_of(config, shared.configs))
    view = fitting.NetInputs(items=[], labels=np.zeros(0, np.int64), classes=shared.classes, kind=shared.kind,
                             in_dim=shared.in_dim)  # the items are in data_ref; the statistics in norm
    trial_id = tune.get_context().get_trial_id()
    resources = {"CPU": WORKER_CPU, **({"GPU": shared.gpu_fraction} if shared.gpu_fraction else {})}
    fitting.fit_one(f"trial_{trial_id}", view, shared.data_ref, np.asarray(shared.fit), np.asarray(shared.val),
                    settings.model_copy(update={"final_fit": False}), shared.storage,
                    callbacks=[TuneReportCallback()], resources_per_worker=resources, norm=shared.norm,
                    keep_model=False)  # fmt: skip


def _config_of(config: dict[str, Any] | None, configs: list[dict[str, Any]] | None) -> dict[str, Any]:
    """A trial's configuration: Tune's ``{"sample": i}`` read in the drawn list (Optuna's is its own)."""
    config = dict(config or {})
    return dict(configs[config["sample"]]) if configs is not None and "sample" in config else config


def search_inputs(data: FeatureTable, rows: np.ndarray, fit: np.ndarray, val: np.ndarray,
                  settings: DeepSearchSettings) -> SearchInputs:  # fmt: skip
    """What every trial of a search receives: the ``rows`` (an outer training set) alone, as the net sees
    them with normalisation and vocabulary fitted on ``fit``; ``fit``/``val`` as positions in ``rows``."""
    import ray

    view = fitting.model_view(data, settings.train, fit)
    local = view.rows(rows)
    at = {int(r): j for j, r in enumerate(rows)}
    fit_l, val_l = [at[int(i)] for i in fit], [at[int(i)] for i in val]
    return SearchInputs(
        data_ref=ray.put(local), fit=fit_l, val=val_l, ids=data.ids[rows].tolist(), classes=data.classes,
        kind=data.kind, in_dim=view.in_dim, norm=fitting.norm_stats(local.items, np.asarray(fit_l), data.kind),
        base=settings.train.model_dump(), gpu_fraction=settings.gpu_fraction, view=view,
    )  # fmt: skip


# --------------------------------------------------------------------------- one search


def _progress(label: str, total: int, configs: list[dict[str, Any]] | None, marks: str):
    from ray.tune import Callback

    class Progress(Callback):
        def __init__(self) -> None:
            self.done, self.started = 0, time.perf_counter()

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self.done += 1
            r = trial.last_result or {}
            stopped = ("" if r.get("finished") else ", stopped by ASHA"
                       if storage.exists(storage.join(marks, trial.trial_id)) else ", stopped by the time budget")  # fmt: skip
            print(f"[{label}] [{self.done}/{total}] {_config_text(_config_of(trial.config, configs))}: best validation UAR "
                  f"{r.get('best_val_uar', float('nan')):.3f} ({r.get('epoch', 0)} epochs{stopped}; "
                  f"{time.perf_counter() - self.started:.0f} s)", flush=True)  # fmt: skip

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self.done += 1
            print(f"[{label}] [{self.done}/{total}] trial {trial.trial_id} failed: see {trial.local_path}", flush=True)

    return Progress()


def _config_text(config: dict[str, Any] | None) -> str:
    return " ".join(f"{k}={_short(v)}" for k, v in sorted((config or {}).items()))


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else json.dumps(v) if isinstance(v, list) else str(v)


def run_search(label: str, inputs: SearchInputs, settings: DeepSearchSettings, where: str,
               seed: int = 0) -> list[dict[str, Any]]:  # fmt: skip
    """One search: a Tune experiment (``where``), resumed when an earlier run of it was cut off; its trials.

    Grid and random searches run the configurations ``sample_configs`` drew; a restored experiment that
    holds fewer (Tune's restore of a search killed as it began brings back the trials it had made, not
    the ones it had not) is topped up by one more experiment (``where_rest1``, ...) over the missing
    ones, itself resumable. A search ended by ``time_budget_s`` is not topped up."""
    from ray import tune

    configs = spaces.sample_configs(settings, seed)
    shared = replace(inputs, ids=[], view=None, configs=configs, storage=f"{where}_train")
    trainable = tune.with_resources(tune.with_parameters(_trial, shared=shared), {"cpu": TRIAL_CPU})
    total = len(configs) if configs is not None else settings.num_samples
    rows: list[dict[str, Any]] = []
    for part in range(8):
        name = where if part == 0 else f"{where}_rest{part}"
        missing = list(range(total)) if configs is None else sorted(set(range(total)) - {t["sample"] for t in rows})
        restoring = tune.Tuner.can_restore(name)
        if part and not restoring:  # top up only what a cut-off random or grid search never made
            if not missing or configs is None or settings.time_budget_s:
                break
            print(f"[{label}] {len(missing)} of {total} trials were never made before the search was cut off: "
                  f"running them in {name}", flush=True)  # fmt: skip
        grid = _experiment(name, trainable, f"{where}_train", settings, missing, configs, label, total, restoring)
        rows += [{**t, "fit_rows": len(inputs.fit)}
                 for t in _trials(grid, label, settings, configs, _asha_marks(f"{where}_train"))]
    if len(rows) < total:
        log.warning("%s: the search holds %d of %d trials (a time budget ends a search early)", label, len(rows), total)
        print(f"[{label}] warning: {len(rows)} of {total} trials (see the log)", flush=True)
    return rows


def _experiment(where: str, trainable: Any, trainable_storage: str, settings: DeepSearchSettings, samples: list[int],
                configs: list[dict[str, Any]] | None, label: str, total: int, restore: bool) -> Any:  # fmt: skip
    """A Tune experiment over the configurations ``samples`` (indices into ``configs``; with Optuna, which
    proposes as it goes, ``len(samples)`` trials of the space), or the one cut off at ``where``, restored."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    if restore:
        print(f"[{label}] resuming the search in {where}: finished trials are kept", flush=True)
        # the experiment keeps its run config: the callbacks (progress, releasing trials' resources) come back too
        return tune.Tuner.restore(where, trainable=trainable, resume_unfinished=True, resume_errored=True).fit()
    scheduler = _asha(settings, _asha_marks(trainable_storage)) if settings.scheduler == "asha" else FIFOScheduler()
    search_alg = None
    if configs is None:
        search_alg, space, n = selection.optuna_search(settings.seed), spaces.param_space(settings), len(samples)
    else:  # the drawn configurations, by index: Tune runs each once
        space, n = {"sample": tune.grid_search(list(samples))}, 1
    parent, name = where.rsplit("/", 1)
    callbacks = [fitting.release_trial_resources(), _progress(label, total, configs, _asha_marks(trainable_storage))]
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(metric="val_uar", mode="max", scheduler=scheduler, search_alg=search_alg,
                                    num_samples=n, max_concurrent_trials=concurrency(settings),
                                    time_budget_s=settings.time_budget_s),  # fmt: skip
        run_config=tune.RunConfig(storage_path=parent, name=name, verbose=0, callbacks=callbacks),
    )
    return tuner.fit()


def concurrency(settings: DeepSearchSettings) -> int:
    """Trials at once: ``max_concurrent_trials``, else as many as the cluster's CPUs (or GPU shares) hold."""
    import ray

    if settings.max_concurrent_trials:
        return settings.max_concurrent_trials
    res = ray.cluster_resources()
    if settings.gpu_fraction:
        per_trial = settings.gpu_fraction * settings.train.workers
        return max(1, int(res.get("GPU", 0) / per_trial))
    return max(1, int(res.get("CPU", 1) // settings.train.workers))


def _asha(settings: DeepSearchSettings, marks: str) -> Any:
    """ASHA on validation UAR, which leaves a mark (``marks/<trial id>``) on every trial it stops: a trial
    that neither finished nor failed may also have been ended by the time budget, and only the scheduler
    knows which it was."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class MarkingASHA(ASHAScheduler):
        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
            decision = super().on_trial_result(tune_controller, trial, result)
            if decision == TrialScheduler.STOP and not result.get("finished"):
                storage.write_bytes(storage.join(marks, trial.trial_id), b"")
            return decision

    return MarkingASHA(time_attr="training_iteration", max_t=settings.train.epochs,
                       grace_period=settings.grace_period, reduction_factor=settings.reduction_factor)  # fmt: skip


def _asha_marks(trial_storage: str) -> str:
    return storage.join(trial_storage, "asha_stopped")


def _trials(grid: Any, label: str, settings: DeepSearchSettings, configs: list[dict[str, Any]] | None,
            marks: str) -> list[dict[str, Any]]:  # fmt: skip
    """One row per trial; ``stopped``: finished (all epochs), early (patience), asha, budget (the time
    budget ended the search while it ran) or error."""
    stopped_by_asha = {Path(p).name for p in storage.list_files(marks)} if storage.is_dir(marks) else set()
    rows = []
    for r in grid:
        m = r.metrics or {}
        history = json.loads(m.get("history", "[]") or "[]")
        trial_id = m.get("trial_id") or r.path.rsplit("/", 1)[-1]
        epochs = int(m.get("epoch", 0))
        if r.error:
            stopped = "error"
        elif m.get("finished"):  # the trial's own loop ended it: the last epoch, or patience
            stopped = "finished" if epochs >= settings.train.epochs else "early"
        else:
            stopped = "asha" if trial_id in stopped_by_asha else "budget"
        rows.append({
            "search": label, "trial_id": trial_id, "sample": (r.config or {}).get("sample"),
            "config": _config_of(r.config, configs), "status": "error" if r.error else "ok",
            "error": str(r.error).splitlines()[0] if r.error else None,
            "best_val_uar": float(m.get("best_val_uar", np.nan)), "last_val_uar": float(m.get("val_uar", np.nan)),
            "epochs": epochs, "stopped": stopped,
            "wall_s": float(m.get("time_total_s", np.nan)), "checkpoint_path": m.get("checkpoint_path"),
            "val_curve": [h["val_uar"] for h in history],
        })  # fmt: skip
    return rows


def best_trial(trials: list[dict[str, Any]], label: str, time_budget_s: float | None = None) -> dict[str, Any]:
    """The trial with the best validation UAR; one line when there is none, saying why (errors, or the
    time budget ending every trial before its first validation score)."""
    ok = [t for t in trials if t["status"] == "ok" and t["checkpoint_path"] and np.isfinite(t["best_val_uar"])]
    if not ok and time_budget_s and not any(t["error"] for t in trials):
        raise SeremoError(f"{label}: the time budget (time_budget_s: {time_budget_s:g}) stopped every trial "
                          f"before it reported a validation score ({len(trials)} trials started); raise "
                          "time_budget_s to give each trial at least one epoch, or leave it out")  # fmt: skip
    if not ok:
        first = next((t["error"] for t in trials if t["error"]), "no trial reported a validation score")
        raise SeremoError(f"{label}: every trial failed; the first error: {first}")
    return max(ok, key=lambda t: (t["best_val_uar"], -t["epochs"]))


def load_trial_model(t: dict[str, Any], base: TrainSettings, view: fitting.NetInputs, where: str) -> Any:
    """The best model (by validation UAR) of a finished trial of the search ``where``: its newest Ray Train
    checkpoint holds the best model so far. Read from the trial's run folder, not from the path its last
    report named: a trial restarted by a resumed search continues its Train run, whose older checkpoints
    are rotated away."""
    from pyarrow import fs as pafs
    from ray.train import Checkpoint

    filesystem, base_dir = storage.filesystem(f"{where}_train")
    run = f"{base_dir}/trial_{t['trial_id']}"
    infos = filesystem.get_file_info(pafs.FileSelector(run, allow_not_found=True))
    found = sorted(i.path for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_"))
    found = [d for d in found if filesystem.get_file_info(f"{d}/state.pt").type == pafs.FileType.File]
    if not found:
        raise SeremoError(f"{run}: trial {t['trial_id']} left no checkpoint; run the search again to redo it")
    settings = spaces.trial_settings(base, t["config"])
    return fitting.best_model(Checkpoint(found[-1], filesystem=filesystem), settings, view)["model"]


# --------------------------------------------------------------------------- the run


def search_run(features_dir: str, out: str, settings: DeepSearchSettings, address: str | None = None) -> dict[str, Any]:
    identity = {"model": settings.train.model, "search": settings.fingerprint()}
    outputs.check_out(out, [features_dir], what="features")
    # the trials live in OUT/search across runs, so a killed search resumes; the rest is staged
    with outputs.run_dir(out, "tune", identity, state=("search",)) as run:
        return _search_run(features_dir, run.local, run.state("search"), run.ray_storage, settings, address)


def _search_run(features_dir: str, out_path: Path, where: str, ray_storage: str, settings: DeepSearchSettings,
                address: str | None) -> dict[str, Any]:  # fmt: skip
    started = time.perf_counter()
    base = settings.train
    if base.augment.copies:
        raise ConfigError("tune: augment is not searched yet; train the chosen configuration with `seremo train`")
    spaces.check_space(settings)
    if settings.search == "optuna":  # the extra is there, before any work
        selection.optuna_search(settings.seed)
    data = dataset.load(features_dir, base.class_set, model=base.model)
    fitting.check_model(base, data)
    outer = folds.plan_validated(data.groups, base.model_copy(update={"folds": settings.outer_folds,
                                                                       "final_fit": True}))  # fmt: skip
    ensure_ray(address)
    if settings.gpu_fraction:
        import ray

        if not ray.cluster_resources().get("GPU"):
            raise SeremoError("tune: gpu_fraction asks for GPUs, but the Ray cluster has none")
    print(f"tune {base.model}: {len(outer)} outer folds, {settings.num_samples} trials each "
          f"({settings.search} search, {settings.scheduler}), {concurrency(settings)} at once", flush=True)  # fmt: skip
    if settings.protocol == "search_once":
        return _search_once(features_dir, out_path, where, ray_storage, settings, data, started)
    proba = np.zeros((len(data.y), len(data.classes)), np.float32)
    trials: list[dict[str, Any]] = []
    per_fold = []
    for k, (tr, te) in enumerate(outer):
        label = f"fold {k + 1}/{len(outer)}"
        fit, val = folds.split_validation(data.groups, tr, base.val_fraction, base.seed + k)
        inputs = search_inputs(data, tr, fit, val, settings)
        print(f"[{label}] search on {len(fit)} rows, validated on {len(val)}; test {len(te)} "
              f"({held_out(sorted(set(data.groups[te].tolist())))}) kept out", flush=True)  # fmt: skip
        search_dir = f"{where}/fold{k + 1}"
        fold_trials = run_search(label, inputs, settings, search_dir, seed=settings.seed + k)
        trials += [{**t, "fold": k + 1} for t in fold_trials]
        best = best_trial(fold_trials, label, settings.time_budget_s)
        model = load_trial_model(best, base, inputs.view, search_dir)
        proba[te] = nets.predict_proba(model, [inputs.view.items[i] for i in te])
        fold_uar = measure.uar(data.labels[te], proba[te].argmax(axis=1))
        per_fold.append({"fold": k + 1, "held_out": sorted(set(data.groups[te].tolist())), "n": int(len(te)),
                         "uar": fold_uar, "best_config": best["config"], "best_val_uar": best["best_val_uar"],
                         "trials": len(fold_trials), "asha_stopped": sum(t["stopped"] == "asha" for t in fold_trials)})  # fmt: skip
        print(f"[{label}] chosen {_config_text(best['config'])} (validation UAR {best['best_val_uar']:.3f}): "
              f"test UAR {fold_uar:.3f}", flush=True)  # fmt: skip
    classes = data.classes
    pred_names = np.asarray(classes)[proba.argmax(axis=1)]
    metrics = measure.scores(data.y, pred_names, classes)
    chosen = max((t for t in trials if t["status"] == "ok"), key=lambda t: t["best_val_uar"])
    final_settings = spaces.trial_settings(base, chosen["config"])
    metrics.update(_search_metrics(settings, data, outer, per_fold, trials, started))
    metrics["final_config"] = chosen["config"]
    final = _final_fit(data, final_settings, ray_storage)
    metrics["wall_s"] = time.perf_counter() - started
    oof = runs.OutOfFold(data.ids, data.groups, data.y, pred_names, list(outer), proba, classes, data.corpus)
    deep_runs.write_run(out_path, metrics, [], data, final["view"], oof, final_settings, final, report=False)
    _write_search(out_path, metrics, trials)
    return metrics


def _final_fit(data: FeatureTable, settings: TrainSettings, ray_storage: str) -> dict[str, Any]:
    """The chosen configuration trained on all speakers (less the validation speakers it stops on)."""
    import ray

    everyone = np.arange(len(data.y))
    fit, val = folds.split_validation(data.groups, everyone, settings.val_fraction, settings.seed)
    print(f"final fit of the chosen configuration: train {len(fit)}, validate {len(val)}", flush=True)
    view = fitting.model_view(data, settings, fit)
    final = fitting.fit_one("final", view, ray.put(view), fit, val, settings, ray_storage)
    return {**final, "view": view}


def _search_once(features_dir: str, out_path: Path, where: str, ray_storage: str, settings: DeepSearchSettings,
                 data: FeatureTable, started: float) -> dict[str, Any]:  # fmt: skip
    """One search over all speakers, then the chosen configuration by grouped folds: optimistic."""
    base = settings.train
    everyone = np.arange(len(data.y))
    fit, val = folds.split_validation(data.groups, everyone, base.val_fraction, base.seed)
    inputs = search_inputs(data, everyone, fit, val, settings)
    trials = [{**t, "fold": 0} for t in run_search("search", inputs, settings, f"{where}/all", seed=settings.seed)]
    best = best_trial(trials, "search", settings.time_budget_s)
    chosen = spaces.trial_settings(base, best["config"]).model_copy(update={"folds": settings.outer_folds})
    print(f"[search] chosen {_config_text(best['config'])}; evaluating it by {settings.outer_folds} grouped folds "
          "(optimistic: these speakers chose it)", flush=True)  # fmt: skip
    metrics = train.train_in(features_dir, out_path, ray_storage, chosen, None)
    metrics.update(_search_metrics(settings, data, None, [], trials, started))
    metrics["final_config"] = best["config"]
    metrics["wall_s"] = time.perf_counter() - started
    _write_search(out_path, metrics, trials)
    return metrics


def _search_metrics(settings: DeepSearchSettings, data: FeatureTable, outer: Any, per_fold: list, trials: list,
                    started: float) -> dict[str, Any]:  # fmt: skip
    nested = settings.protocol == "nested"
    stopped = [t["epochs"] for t in trials if t["stopped"] == "asha"]
    wall = time.perf_counter() - started
    return {
        "model": settings.train.model, "settings": settings.train.model_dump(), "search": settings.model_dump(),
        "space": spaces.search_space(settings), "per_fold": per_fold if nested else [],
        "protocol": {
            "outer": (folds.describe_folds(outer, data.groups) if nested else
                      f"{settings.outer_folds} grouped folds after one search over all speakers (optimistic)"),
            "outer_folds": settings.outer_folds, "groups": "speaker", "search": settings.protocol,
            "early_stopping": "validation speakers split from each search's training speakers",
            "normalise": settings.train.normalise,
        },  # fmt: skip
        "trials": {"total": len(trials), "ok": sum(t["status"] == "ok" for t in trials),
                   "asha_stopped": len(stopped), "asha_stopped_at_epochs": sorted(stopped),
                   "budget_stopped": sum(t["stopped"] == "budget" for t in trials),
                   "epochs": sum(t["epochs"] for t in trials)},  # fmt: skip
        "feature_set": data.feature_set, "classes": data.classes, "workers": settings.train.workers,
        "gpu": bool(settings.gpu_fraction),
        # throughput of the searches as a whole (trial start-up included): what a cluster buys
        "trials_per_hour": len(trials) / wall * 3600, "samples_per_s": sum(t["epochs"] * t["fit_rows"] for t in trials) / wall,
        "search_wall_s": wall,
    }  # fmt: skip


def _write_search(out: Path, metrics: dict[str, Any], trials: list[dict[str, Any]]) -> None:
    """trials.parquet, the hyperparameter plot and the search report, beside the training outputs."""
    from seremo.report import search_report

    keys = sorted({k for t in trials for k in t["config"]})
    table = pa.table({
        "fold": [t["fold"] for t in trials], "trial_id": [t["trial_id"] for t in trials],
        **{k: [json.dumps(t["config"].get(k)) for t in trials] for k in keys},
        **{c: [t[c] for t in trials] for c in ("sample", "status", "error", "best_val_uar", "last_val_uar",
                                                "epochs", "stopped", "wall_s")},
        # kept beside `stopped` for readers of earlier tables
        "early_stopped": [t["stopped"] == "early" for t in trials], "asha_stopped": [t["stopped"] == "asha" for t in trials],
        "val_curve": [t["val_curve"] for t in trials],
    })  # fmt: skip
    pq.write_table(table, out / "trials.parquet")
    plot_hyperparameters(trials, keys, str(out / "hyperparameters.png"), metrics["model"])
    runs.write_metrics(out, metrics, search_report(metrics), default=str)


def plot_hyperparameters(trials: list[dict[str, Any]], keys: list[str], path: str, title: str) -> None:
    """Each hyperparameter against the trial's best validation UAR (one colour per outer fold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [t for t in trials if t["status"] == "ok" and np.isfinite(t["best_val_uar"])]
    cols = min(3, max(1, len(keys)))
    rows = max(1, -(-len(keys) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, key in zip(axes.ravel(), keys, strict=False):
        values = [t["config"].get(key) for t in ok]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        labels = sorted({json.dumps(v) for v in values}) if not numeric else []
        xs = values if numeric else [labels.index(json.dumps(v)) for v in values]
        ax.scatter(xs, [t["best_val_uar"] for t in ok], c=[f"C{t['fold'] % 10}" for t in ok], s=18)
        if not numeric:
            ax.set_xticks(range(len(labels)), labels, fontsize=7)
        elif values and min(values) > 0 and max(values) / min(values) > 20:
            ax.set_xscale("log")
        ax.set(xlabel=key, ylabel="best validation UAR")
    for ax in axes.ravel()[len(keys):]:
        ax.axis("off")
    fig.suptitle(f"{title}: hyperparameters against validation UAR (colour: outer fold)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_stage(features_dir: str, out: str, settings: DeepSearchSettings, address: str | None) -> Outcome:
    """``seremo tune --model``: the nested figures per outer fold and where the report is."""
    m = search_run(features_dir, out, settings, address)
    text = []
    if m["per_fold"]:
        text += [format_table(["held out", "n", "test UAR", "chosen (validation UAR)", "trials", "ASHA stopped"],
                              [[held_out(f["held_out"]), f["n"], f["uar"], f"{f['best_val_uar']:.3f}", f["trials"],
                                f["asha_stopped"]] for f in m["per_fold"]]), ""]  # fmt: skip
    text += [f"{m['model']}: UAR {m['uar']:.3f}  WA {m['wa']:.3f}  macro-F1 {m['macro_f1']:.3f}  "
             f"({m['protocol']['outer']}; {m['trials']['total']} trials, {m['trials']['asha_stopped']} stopped by "
             f"ASHA; {m['wall_s']:.0f} s)", f"report: {out}/report.md"]  # fmt: skip
    return Outcome({"uar": m["uar"], "wa": m["wa"], "macro_f1": m["macro_f1"]}, "\n".join(text))

