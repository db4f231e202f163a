"""``seremo tune``: Ray Tune over classical model grids with nested speaker-independent CV.

Protocol (no test speaker ever influences a choice):

1. Outer folds hold out whole groups (leave-one-speaker-out by default).
2. Inside each outer training set, grouped inner folds score every
   configuration; each trial of Ray Tune is one (family, hyperparameters)
   configuration and computes, for every outer fold, its mean inner-CV UAR and
   its predictions for the held-out speakers after a refit on the outer
   training set.
3. For each outer fold, the configuration with the best *inner* score is
   chosen (per family, and across families for the headline); its predictions
   on that fold's held-out speakers form the nested predictions.
4. The shipped model is the configuration with the best plain grouped-CV score
   on all data, refitted on all data; its expected accuracy is the nested figure.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from seremo import bundle, classical, config, evaluate, outputs, shards, storage
from seremo.errors import ConfigError, SeremoError
from seremo.labels import get_class_set
from seremo.runtime import ensure_ray

log = logging.getLogger(__name__)


class TuneSettings(BaseModel):
    """What ``--config`` may set (a YAML file, flat or under a ``tune:`` key)."""

    model_config = ConfigDict(extra="forbid")

    class_set: str | None = None
    models: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {name: {} for name in classical.FAMILIES},
        description="families to search, each with optional search-space overrides",
    )
    search: Literal["grid", "random", "optuna"] = "grid"
    num_samples: int = Field(20, ge=1, description="trials for random/optuna search")
    outer_folds: int | None = Field(None, ge=2, le=1000, description="None = leave one group out")
    inner_folds: int = Field(3, ge=2, le=1000)
    speaker_norm: bool = False
    max_concurrent: int | None = None
    seed: int = 0


def load_settings(path: str | None) -> TuneSettings:
    return settings_from_dict(config.read_section(path, "tune"), path or "settings")


def settings_from_dict(raw: Any, source: str) -> TuneSettings:
    settings = config.validate(TuneSettings, raw, source, "tune.")
    for name, override in settings.models.items():
        family = classical.get_family(name)
        unknown = set(override) - set(family.space) - {"select_k"}
        if unknown:
            raise ConfigError(
                f"{source}: model {name!r} has no hyperparameter(s) {sorted(unknown)}; "
                f"it takes: {', '.join(sorted(family.space))}, select_k"
            )
    return settings


# --------------------------------------------------------------------------- data


def load_data(features_dir: str, class_set: str | None) -> dict[str, Any]:
    """Vectors, labels and groups from a features directory, with the class set applied."""
    feats = shards.read_features(features_dir)
    if feats.kind != "vector":
        raise SeremoError(
            f"{features_dir}: feature set {feats.feature_set['name']!r} is a {feats.kind}; "
            "tune needs a vector set (use `seremo train` for sequences and images)"
        )
    table = feats.table
    labels = table.column("label").to_pylist()
    mapping = get_class_set(class_set).map if class_set else (lambda lab: lab)
    mapped = [mapping(lab) for lab in labels]
    keep = np.array([m is not None for m in mapped])
    excluded = Counter(str(lab) for lab, k in zip(labels, keep, strict=True) if not k)
    X = feats.matrix()[keep]
    y = np.array([m for m in mapped if m is not None])
    groups = np.array(table.column("group").to_pylist())[keep]
    ids = np.array(table.column("utterance_id").to_pylist())[keep]
    classes = sorted(set(y.tolist()))
    if len(classes) < 2:
        raise SeremoError(f"{features_dir}: needs at least 2 classes to learn, found {classes or 'none'}")
    n_groups = len(set(groups))
    if n_groups < 2:
        raise SeremoError(
            f"{features_dir}: needs at least 2 groups (speakers) for speaker-independent evaluation, found {n_groups}"
        )
    return {
        "X": X.astype(np.float32),
        "y": y,
        "groups": groups,
        "ids": ids,
        "classes": classes,
        "excluded": dict(excluded),
        "feature_set": feats.feature_set,
        "corpora": sorted(set(table.column("corpus").to_pylist())),
    }


def plan_folds(groups: np.ndarray, outer_folds: int | None, inner_folds: int,
               inner_is_default: bool = False) -> tuple[list, list]:  # fmt: skip
    """Outer grouped folds, and inner grouped folds inside each outer training set.

    Fold counts the data cannot give are a ConfigError naming the setting, raised
    before any work, so a run never quietly runs (and reports) other folds than asked;
    only the default inner count (3) shrinks to what a small corpus has, as reported.
    """
    n_groups = len(set(np.asarray(groups).tolist()))
    if outer_folds is not None and not 2 <= outer_folds <= n_groups:
        raise ConfigError(
            f"tune.outer_folds: {outer_folds} folds asked for, but the data has {n_groups} groups "
            f"(speakers); use at most {n_groups}, or leave it unset for leave-one-group-out"
        )
    outer = evaluate.group_folds(groups, outer_folds)
    smallest = min(len(set(groups[tr].tolist())) for tr, _ in outer)
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
    inner = [evaluate.group_folds(groups[tr], inner_folds) for tr, _ in outer]
    return outer, inner


def describe_protocol(outer: list, inner: list, groups: np.ndarray) -> dict[str, str]:
    """The outer and inner fold schemes as they ran (counts from the folds, not the settings)."""
    counts = sorted({len(folds) for folds in inner})
    n_inner = str(counts[0]) if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
    return {
        "outer": evaluate.describe_folds(outer, groups),
        "inner": f"{n_inner} grouped folds inside each outer training set",
    }


# --------------------------------------------------------------------------- the trial


def run_config(family: str, params: dict[str, Any], X: np.ndarray, y: np.ndarray, outer: list, inner: list,
               report=None) -> dict[str, Any]:  # fmt: skip
    """Inner-CV UAR per outer fold and outer predictions for one configuration."""
    inner_uar: list[float] = []
    predicted = np.empty(len(y), dtype=object)
    for k, (tr, te) in enumerate(outer):
        Xtr, ytr = X[tr], y[tr]
        fold_scores = [
            evaluate.uar(ytr[b], classical.fit(family, params, Xtr[a], ytr[a]).predict(Xtr[b]))
            for a, b in inner[k]
        ]
        inner_uar.append(float(np.mean(fold_scores)))
        predicted[te] = classical.fit(family, params, Xtr, ytr).predict(X[te])
        if report is not None:
            report({"fold": k + 1, "inner_uar_mean": float(np.mean(inner_uar))})
    return {"inner_uar": inner_uar, "predicted": predicted.tolist()}


def _trial(config: dict[str, Any], data: dict[str, Any]) -> None:
    """The Ray Tune function trainable: one configuration, all outer folds.

    Scalars go to ``tune.report``; the per-fold inner scores and the outer
    predictions (class indices) travel in the final checkpoint, which Tune
    stores under the run's storage path (shared storage on a cluster).
    """
    import tempfile

    from ray import tune

    family, params = decode_config(config, data["spaces"])
    X = data["X_norm"] if config.get("variant") == "speaker_norm" else data["X"]
    progress: list[dict] = []
    result = run_config(family, params, X, data["y"], data["outer"], data["inner"], report=progress.append)
    for metrics in progress[:-1]:
        tune.report(metrics)
    classes = data["classes"]
    codes = np.searchsorted(classes, np.asarray(result["predicted"], dtype=str)).astype(np.int16)
    with tempfile.TemporaryDirectory() as d:
        np.save(f"{d}/predicted.npy", codes)
        np.save(f"{d}/inner_uar.npy", np.asarray(result["inner_uar"]))
        tune.report(
            {**progress[-1], "family": family, "params": json.dumps(params)},
            checkpoint=tune.Checkpoint.from_directory(d),
        )


def decode_config(config: dict[str, Any], spaces: dict[str, dict[str, list]]) -> tuple[str, dict[str, Any]]:
    """(family, params) from a grid config or a random/Optuna flat config of choice indices."""
    if "trial" in config:
        return config["trial"]["family"], dict(config["trial"]["params"])
    family = config["family"]
    params = {k: spaces[family][k][config[f"{family}/{k}"]] for k in spaces[family]}
    return family, params


def param_space(settings: TuneSettings, spaces: dict[str, dict[str, list]]) -> tuple[dict, int]:
    from ray import tune

    variants = ["raw", "speaker_norm"] if settings.speaker_norm else ["raw"]
    if settings.search == "grid":
        trials = [
            {"family": f, "params": p}
            for f in spaces
            for p in classical.grid(classical.get_family(f), spaces[f])
        ]
        return {"trial": tune.grid_search(trials), "variant": tune.grid_search(variants)}, 1
    space: dict[str, Any] = {"family": tune.choice(list(spaces)), "variant": tune.choice(variants)}
    for f, s in spaces.items():
        for k, values in s.items():
            space[f"{f}/{k}"] = tune.choice(list(range(len(values))))
    return space, settings.num_samples


def full_spaces(settings: TuneSettings) -> dict[str, dict[str, list]]:
    out = {}
    for name, override in settings.models.items():
        space = dict(classical.get_family(name).space)
        space.update({k: v if isinstance(v, list) else [v] for k, v in override.items()})
        out[name] = space
    return out


# --------------------------------------------------------------------------- driver


def _progress_callback(total: int):
    """A Tune callback printing one line per finished trial (Tune's own tables are verbose)."""
    from ray.tune import Callback

    class Progress(Callback):
        def __init__(self) -> None:
            self.done = 0
            self.started = time.perf_counter()

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self.done += 1
            r = trial.last_result or {}
            print(
                f"[{self.done}/{total}] {r.get('family', '?')} {r.get('params', '')} "
                f"inner UAR {r.get('inner_uar_mean', float('nan')):.3f} "
                f"({time.perf_counter() - self.started:.0f} s)",
                flush=True,
            )

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self.done += 1
            print(f"[{self.done}/{total}] trial {trial.trial_id} failed: see {trial.local_path}", flush=True)

    return Progress()



def tune_run(features_dir: str, out: str, settings: TuneSettings, address: str | None = None) -> dict[str, Any]:
    """Run the nested search and write the run dir (a local path or a URI); returns metrics.json's content."""
    with outputs.run_dir(out, "tune", {}) as out_path:
        return _tune_run(features_dir, out_path, storage.ray_storage(out, out_path), settings, address)


def _tune_run(features_dir: str, out_path: Path, ray_storage: str, settings: TuneSettings,
              address: str | None) -> dict[str, Any]:  # fmt: skip
    from ray import tune

    started = time.perf_counter()
    data = load_data(features_dir, settings.class_set)
    outer, inner = plan_folds(data["groups"], settings.outer_folds, settings.inner_folds,
                              inner_is_default="inner_folds" not in settings.model_fields_set)  # fmt: skip
    spaces = full_spaces(settings)
    space, num_samples = param_space(settings, spaces)
    ensure_ray(address)
    shared = {
        "X": data["X"],
        "X_norm": evaluate.speaker_normalise(data["X"], data["groups"]).astype(np.float32)
        if settings.speaker_norm
        else None,
        "y": data["y"],
        "outer": outer,
        "inner": inner,
        "spaces": spaces,
        "classes": data["classes"],
    }
    n_fits = len(outer) * (1 + len(inner[0]))
    log.info(
        "tune: %d utterances, %d groups, classes %s; %d outer folds x %d fits per trial",
        len(data["y"]), len(set(data["groups"])), data["classes"], len(outer), n_fits,
    )  # fmt: skip
    n_trials = num_samples if settings.search != "grid" else len(space["trial"]["grid_search"]) * len(
        space["variant"]["grid_search"]
    )
    print(f"tune: {n_trials} trials, each {n_fits} model fits", flush=True)
    search_alg = None
    if settings.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(seed=settings.seed)
    tuner = tune.Tuner(
        tune.with_parameters(_trial, data=shared),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="inner_uar_mean",
            mode="max",
            search_alg=search_alg,
            num_samples=num_samples,
            max_concurrent_trials=settings.max_concurrent,
        ),
        run_config=tune.RunConfig(
            storage_path=ray_storage,
            name="tune",
            verbose=0,
            callbacks=[_progress_callback(n_trials)],
        ),
    )
    grid = tuner.fit()
    trials = _collect(grid, data["classes"])
    if not any(t["status"] == "ok" for t in trials):
        first = next((t["error"] for t in trials if t["error"]), "unknown error")
        raise SeremoError(f"every tune trial failed; the first error: {first}")
    metrics = summarise(trials, data, outer, inner, settings)
    metrics["wall_s"] = time.perf_counter() - started
    final = _fit_final(trials, data)
    _write_run(out_path, trials, metrics, data, final)
    return metrics


def _collect(grid, classes: list[str]) -> list[dict[str, Any]]:
    rows = []
    for i, r in enumerate(grid):
        m = r.metrics or {}
        cfg = r.config or {}
        ok = r.error is None and r.checkpoint is not None
        inner_uar = predicted = None
        if ok:
            with r.checkpoint.as_directory() as d:
                inner_uar = np.load(f"{d}/inner_uar.npy").tolist()
                predicted = np.asarray(classes, dtype=object)[np.load(f"{d}/predicted.npy")].tolist()
        rows.append(
            {
                "trial": i,
                "variant": cfg.get("variant", "raw"),
                "family": m.get("family") or (cfg.get("trial") or {}).get("family") or cfg.get("family"),
                "params": m.get("params") or json.dumps((cfg.get("trial") or {}).get("params", {})),
                "status": "ok" if ok else "error",
                "error": None if r.error is None else str(r.error).strip().splitlines()[-1][:500],
                "inner_uar": inner_uar,
                "predicted": predicted,
            }
        )
    return rows


def _nested(trials: list[dict], k_folds: int, outer: list, n: int) -> tuple[np.ndarray, list[dict]]:
    """Per outer fold, the trial with the best inner score; its predictions on that fold."""
    predicted = np.empty(n, dtype=object)
    chosen = []
    for k, (_, te) in enumerate(outer):
        best = max(trials, key=lambda t: (t["inner_uar"][k], -t["trial"]))
        predicted[te] = np.asarray(best["predicted"], dtype=object)[te]
        chosen.append({"family": best["family"], "params": json.loads(best["params"]), "inner_uar": best["inner_uar"][k]})
    return predicted, chosen


def summarise(
    trials: list[dict], data: dict, outer: list, inner: list, settings: TuneSettings
) -> dict[str, Any]:
    y, groups, classes = data["y"], data["groups"], data["classes"]

    def block(variant: str) -> dict[str, Any]:
        ok = [t for t in trials if t["status"] == "ok" and t["variant"] == variant]
        for t in ok:
            t["loso_uar"] = evaluate.uar(y, t["predicted"])
        pred, chosen = _nested(ok, len(outer), outer, len(y))
        result = evaluate.scores(y, pred, classes)
        result["per_fold"] = [
            {
                "held_out": sorted(set(groups[te].tolist())),
                "n": int(len(te)),
                "uar": evaluate.uar(y[te], pred[te]),
                "wa": float(np.mean(y[te] == pred[te])),
                "chosen": chosen[k],
            }
            for k, (_, te) in enumerate(outer)
        ]
        families = {}
        for fam in sorted({t["family"] for t in ok}):
            fam_trials = [t for t in ok if t["family"] == fam]
            fp, fchosen = _nested(fam_trials, len(outer), outer, len(y))
            s = evaluate.scores(y, fp, classes)
            best_plain = max(fam_trials, key=lambda t: t["loso_uar"])
            families[fam] = {
                "uar": s["uar"], "wa": s["wa"], "macro_f1": s["macro_f1"], "configs": len(fam_trials),
                "chosen_per_fold": [c["params"] for c in fchosen],
                "best_config_plain_cv": {"params": json.loads(best_plain["params"]), "uar": best_plain["loso_uar"]},
                "per_class_recall": {c: v["recall"] for c, v in s["per_class"].items()},
            }  # fmt: skip
        result["families"] = families
        result["predicted"] = pred.tolist()
        return result

    metrics = block("raw")
    predicted = metrics.pop("predicted")
    metrics["protocol"] = {
        **describe_protocol(outer, inner, groups),
        "outer_folds": len(outer),
        "selection": "per outer fold, the configuration with the best mean inner-CV UAR",
        "search": settings.search,
        "speaker_norm": False,
    }
    metrics["classes"] = classes
    metrics["groups"] = sorted(set(groups.tolist()))
    metrics["excluded_labels"] = data["excluded"]
    metrics["feature_set"] = data["feature_set"]
    metrics["trials"] = {"ok": sum(t["status"] == "ok" for t in trials), "failed": sum(t["status"] != "ok" for t in trials)}
    metrics["_predicted"] = predicted
    if settings.speaker_norm:
        sn = block("speaker_norm")
        sn.pop("predicted")
        metrics["speaker_normalised"] = {
            **sn,
            "note": "each speaker's features z-scored with that speaker's own unlabelled audio; a separate protocol",
        }
    return metrics


def _fit_final(trials: list[dict], data: dict) -> dict[str, Any]:
    """Refit the configuration with the best plain grouped-CV UAR on all data."""
    ok = [t for t in trials if t["status"] == "ok" and t["variant"] == "raw"]
    best = max(ok, key=lambda t: (t["loso_uar"], -t["trial"]))
    params = json.loads(best["params"])
    model = classical.fit(best["family"], params, data["X"], data["y"])
    return {"family": best["family"], "params": params, "cv_uar": best["loso_uar"], "model": model}


def _write_run(out: Path, trials: list[dict], metrics: dict, data: dict, final: dict) -> None:
    from seremo.report import tune_report

    predicted = metrics.pop("_predicted")
    metrics["final_model"] = {k: final[k] for k in ("family", "params", "cv_uar")}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    pq.write_table(
        pa.table(
            {
                "trial": [t["trial"] for t in trials],
                "variant": [t["variant"] for t in trials],
                "family": [t["family"] for t in trials],
                "params": [t["params"] for t in trials],
                "status": [t["status"] for t in trials],
                "error": [t["error"] for t in trials],
                "inner_uar_mean": [float(np.mean(t["inner_uar"])) if t["inner_uar"] else None for t in trials],
                "inner_uar_per_fold": [t["inner_uar"] for t in trials],
                "plain_cv_uar": [t.get("loso_uar") for t in trials],
            }
        ),
        out / "trials.parquet",
    )
    pq.write_table(
        pa.table({"utterance_id": data["ids"], "group": data["groups"], "label": data["y"], "predicted": predicted}),
        out / "predictions.parquet",
    )
    evaluate.plot_confusion(
        metrics["confusion"], data["classes"], str(out / "confusion_matrix.png"),
        f"nested {metrics['protocol']['outer']}: UAR {metrics['uar']:.3f}",
    )  # fmt: skip
    model = final["model"]
    meta = bundle.base_meta(
        model_kind="sklearn", model_name=final["family"], params=final["params"],
        feature_set=data["feature_set"], classes=list(model.classes_),
        training={"corpora": data["corpora"], "utterances": int(len(data["y"])),
                  "groups": len(set(data["groups"].tolist())), "class_set": metrics.get("class_set")},
        metrics={"nested_uar": metrics["uar"], "nested_wa": metrics["wa"], "nested_macro_f1": metrics["macro_f1"],
                 "plain_cv_uar": final["cv_uar"]},
    )  # fmt: skip
    bundle.save_classical(out / "model", model, meta)
    proba = model.predict_proba(data["X"])
    pq.write_table(
        pa.table({"utterance_id": data["ids"], **{f"p_{c}": proba[:, i] for i, c in enumerate(model.classes_)}}),
        out / "model_predictions.parquet",
    )
    (out / "report.md").write_text(tune_report(metrics, data))
