"""``seremo tune``: Ray Tune over classical model grids with nested speaker-independent CV.

Protocol (no test speaker ever influences a choice):

1. Outer folds hold out whole groups (leave-one-speaker-out by default).
2. Inside each outer training set, grouped inner folds score every
   configuration; each trial of Ray Tune is one (family, hyperparameters)
   configuration and computes, for every outer fold, its mean inner-CV UAR and
   its predictions for the held-out speakers after a refit on the outer
   training set.
3. For each outer fold, the selection rule picks from *inner* scores only:
   by default each family's best configuration, whose outer-fold
   probabilities are averaged (a soft vote; ``selection: top_k`` or ``best``
   otherwise); per family, its best configuration. These are the nested
   predictions.
4. The shipped model is the same rule applied to plain grouped-CV scores on all
   data, refitted on all data; its expected accuracy is the nested figure.

Outer folds hold out speakers, or whole corpora (``groups: corpus``); inner
folds always hold out speakers. Normalisation variants (per speaker, per
corpus) are searched and reported apart; ``test:`` feature dirs are scored by
each variant's shipped model after everything is fitted.

Over 500 lines: the trial, the collection of trials into nested predictions per
variant, the shipped fit and the test sets are one protocol read top to bottom;
what other stages share of it is in ``selection``, ``folds``, ``dataset`` and ``runs``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from seremo import (
    bundle,
    classical,
    dataset,
    folds,
    measure,
    normalisation,
    outputs,
    runs,
    selection,
)
from seremo.dataset import FeatureTable
from seremo.errors import ConfigError, SeremoError
from seremo.folds import Folds
from seremo.outcome import Outcome, format_table
from seremo.runtime import ensure_ray
from seremo.settings import TuneSettings
from seremo.settings import load_tune as load_settings  # noqa: F401  (re-exported)
from seremo.settings import tune_from_dict as settings_from_dict  # noqa: F401

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- data


def load_tests(dirs: list[str], train: FeatureTable, class_set: str | None) -> dict[str, FeatureTable]:
    """Each ``test:`` features dir, read before any work: same feature set and inputs as training, or one line."""
    return dataset.load_test_sets(dirs, lambda d: dataset.load(d, class_set, classes=train.classes,
                                                                inputs=train.inputs), train.feature_set)  # fmt: skip


def outer_units(data: FeatureTable, settings: TuneSettings) -> np.ndarray:
    """What the outer folds hold out: speaker groups, or corpora (``groups: corpus``)."""
    if settings.groups == "speaker":
        return data.groups
    if len(data.corpora) < 2:
        raise ConfigError(f"tune.groups: corpus holds out whole corpora, but the data has one ({data.corpora[0]}); "
                          "prepare several corpora into one manifest, or use test: for another corpus")  # fmt: skip
    return data.corpus


# --------------------------------------------------------------------------- the trial


def aligned_proba(model: Any, X: np.ndarray, classes: list[str]) -> np.ndarray:
    """``predict_proba`` with one column per class of ``classes`` (0 for a class the fold lacked)."""
    out = np.zeros((len(X), len(classes)), np.float32)
    out[:, np.searchsorted(classes, np.asarray(model.classes_, dtype=str))] = model.predict_proba(X)
    return out


def run_config(family: str, params: dict[str, Any], X: np.ndarray, y: np.ndarray, outer: list, inner: list,
               report=None, prep: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, Any]:  # fmt: skip
    """Inner-CV UAR per outer fold, and outer-fold class probabilities, for one configuration.

    ``prep(rows)`` gives the features as normalised with statistics fitted on
    ``rows`` only (the fold's training rows); ``None`` uses ``X`` as it is.
    """
    classes = sorted(set(y.tolist()))
    inner_uar: list[float] = []
    proba = np.zeros((len(y), len(classes)), np.float32)
    for k, (tr, te) in enumerate(outer):
        fold_scores = []
        for a, b in inner[k]:
            fit_rows, test_rows = tr[a], tr[b]
            Xk = X if prep is None else prep(fit_rows)
            model = classical.fit(family, params, Xk[fit_rows], y[fit_rows])
            fold_scores.append(measure.uar(y[test_rows], model.predict(Xk[test_rows])))
        inner_uar.append(float(np.mean(fold_scores)))
        Xk = X if prep is None else prep(tr)
        proba[te] = aligned_proba(classical.fit(family, params, Xk[tr], y[tr]), Xk[te], classes)
        if report is not None:
            report({"fold": k + 1, "inner_uar_mean": float(np.mean(inner_uar))})
    predicted = np.asarray(classes, dtype=object)[np.argmax(proba, axis=1)]
    return {"inner_uar": inner_uar, "predicted": predicted.tolist(), "proba": proba}


def variant_features(variant: str, data: FeatureTable) -> tuple[np.ndarray, Callable | None]:
    """The features a variant's trials start from, and its per-fold ``prep`` (corpus statistics)."""
    X = data.X
    if variant == "speaker_norm":  # each speaker's own rows: the same in every fold
        return normalisation.speaker_normalise(X, data.groups).astype(np.float32), None
    if variant == "corpus_norm":
        corpus = data.corpus
        return X, lambda rows: normalisation.corpus_normalise(X, corpus, rows).astype(np.float32)
    return X, None


@dataclass(frozen=True)
class TrialInputs:
    """What every trial reads (sent once through the object store): the rows, the folds, the grids."""

    data: FeatureTable
    outer: Folds
    inner: list[Folds]
    spaces: dict[str, dict[str, list]]


def _trial(config: dict[str, Any], shared: TrialInputs) -> None:
    """The Ray Tune function trainable: one configuration, all outer folds.

    Scalars go to ``tune.report``; the per-fold inner scores and the outer
    predictions (class indices) travel in the final checkpoint, which Tune
    stores under the run's storage path (shared storage on a cluster).
    """
    import tempfile

    from ray import tune

    family, params = decode_config(config, shared.spaces)
    X, prep = variant_features(config.get("variant", "raw"), shared.data)
    progress: list[dict] = []
    result = run_config(family, params, X, shared.data.y, shared.outer, shared.inner, report=progress.append, prep=prep)
    for metrics in progress[:-1]:
        tune.report(metrics)
    with tempfile.TemporaryDirectory() as d:
        np.save(f"{d}/proba.npy", result["proba"].astype(np.float16))
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

    variants = settings.variants
    if settings.search == "grid":
        # the slowest families first: the last trials to start are short, so both cores end together
        order = sorted(spaces, key=lambda f: -classical.get_family(f).cost)
        trials = [{"family": f, "params": p} for f in order for p in classical.grid(classical.get_family(f), spaces[f])]
        return {"trial": tune.grid_search(trials), "variant": tune.grid_search(variants)}, 1
    space: dict[str, Any] = {"family": tune.choice(list(spaces)), "variant": tune.choice(variants)}
    for f, s in spaces.items():
        for k, values in s.items():
            space[f"{f}/{k}"] = tune.choice(list(range(len(values))))
    return space, settings.num_samples


def full_spaces(settings: TuneSettings, inputs: str = "audio") -> dict[str, dict[str, list]]:
    out = {}
    for name, override in settings.families(inputs).items():
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
            variant = (trial.config or {}).get("variant", "raw")
            print(
                f"[{self.done}/{total}] {r.get('family', '?')} {r.get('params', '')}"
                f"{'' if variant == 'raw' else ' [' + variant + ']'} "
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
    outputs.check_out(out, [features_dir], what="features")
    with outputs.run_dir(out, "tune", {}) as run:
        return _tune_run(features_dir, run.local, run.ray_storage, settings, address)


def _tune_run(features_dir: str, out_path: Path, ray_storage: str, settings: TuneSettings,
              address: str | None) -> dict[str, Any]:  # fmt: skip
    import ray
    from ray import tune

    started = time.perf_counter()
    data = dataset.load(features_dir, settings.class_set, inputs=settings.inputs)
    if data.inputs != "audio" and len(settings.variants) > 1:
        raise ConfigError(f"tune: speaker_norm and corpus_norm normalise audio vectors; with inputs "
                          f"{data.inputs!r} leave them off")  # fmt: skip
    tests = load_tests(settings.test, data, settings.class_set)
    outer, inner = folds.plan_nested(outer_units(data, settings), settings.outer_folds, settings.inner_folds,
                                     inner_is_default="inner_folds" not in settings.model_fields_set,
                                     inner_groups=data.groups)  # fmt: skip
    spaces = full_spaces(settings, data.inputs)
    space, num_samples = param_space(settings, spaces)
    ensure_ray(address)
    shared = TrialInputs(data, outer, inner, spaces)
    n_fits = len(outer) * (1 + len(inner[0]))
    log.info(
        "tune: %d utterances, %d groups, classes %s; %d outer folds x %d fits per trial",
        len(data.y), data.n_groups, data.classes, len(outer), n_fits,
    )  # fmt: skip
    n_trials = num_samples if settings.search != "grid" else len(space["trial"]["grid_search"]) * len(
        space["variant"]["grid_search"]
    )
    print(f"tune: {n_trials} trials, each {n_fits} model fits", flush=True)
    search_alg = selection.optuna_search(settings.seed) if settings.search == "optuna" else None
    tuner = tune.Tuner(
        tune.with_parameters(_trial, shared=shared),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="inner_uar_mean",
            mode="max",
            search_alg=search_alg,
            num_samples=num_samples,
            max_concurrent_trials=settings.max_concurrent,
            reuse_actors=True,  # one process per core for the whole search, not one (imports and all) per trial
        ),
        run_config=tune.RunConfig(
            storage_path=ray_storage,
            name="tune",
            verbose=0,
            callbacks=[_progress_callback(n_trials)],
        ),
    )
    grid = tuner.fit()
    trials = _collect(grid, data.classes)
    if not any(t["status"] == "ok" for t in trials):
        first = next((t["error"] for t in trials if t["error"]), "unknown error")
        raise SeremoError(f"every tune trial failed; the first error: {first}")
    metrics = summarise(trials, data, outer, inner, settings)
    finals = {v: fit_final(trials, data, v, settings.selection, settings.top_k, settings.vote_margin)
              for v in settings.variants}
    if tests:
        metrics["test"] = {name: score_test(finals, data, t) for name, t in tests.items()}
    metrics["wall_s"] = time.perf_counter() - started
    metrics["cores"] = ray.cluster_resources().get("CPU")
    write_run(out_path, trials, metrics, data, finals[settings.ship], settings, outer)
    return metrics


def _collect(grid, classes: list[str]) -> list[dict[str, Any]]:
    rows = []
    for i, r in enumerate(grid):
        m = r.metrics or {}
        cfg = r.config or {}
        ok = r.error is None and r.checkpoint is not None
        inner_uar = proba = predicted = None
        if ok:
            with r.checkpoint.as_directory() as d:
                inner_uar = np.load(f"{d}/inner_uar.npy").tolist()
                proba = np.load(f"{d}/proba.npy").astype(np.float32)
            predicted = np.asarray(classes, dtype=object)[np.argmax(proba, axis=1)].tolist()
        rows.append(
            {
                "trial": i,
                "variant": cfg.get("variant", "raw"),
                "family": m.get("family") or (cfg.get("trial") or {}).get("family") or cfg.get("family"),
                "params": m.get("params") or json.dumps((cfg.get("trial") or {}).get("params", {})),
                "status": "ok" if ok else "error",
                "seconds": m.get("time_total_s"),  # the trial's own time in its process (Ray Tune's)
                "error": None if r.error is None else str(r.error).strip().splitlines()[-1][:500],
                "inner_uar": inner_uar,
                "proba": proba,
                "predicted": predicted,
            }
        )
    return rows


def summarise(
    trials: list[dict], data: FeatureTable, outer: Folds, inner: list[Folds], settings: TuneSettings
) -> dict[str, Any]:
    y, groups, classes = data.y, data.groups, data.classes

    def block(variant: str) -> dict[str, Any]:
        ok = [t for t in trials if t["status"] == "ok" and t["variant"] == variant]
        for t in ok:
            t["loso_uar"] = measure.uar(y, t["predicted"])
        pred, chosen, proba = selection.nested(ok, outer, len(y), classes, settings.selection, settings.top_k,
                                               margin=settings.vote_margin)  # fmt: skip
        single = selection.nested(ok, outer, len(y), classes, "best").predicted
        result = measure.scores(y, pred, classes)
        result["single_best_uar"] = measure.uar(y, single)
        # Decision-level ensembles of the tuned families (each family's best by inner UAR, per outer fold).
        result["ensembles"] = {}
        for rule in selection.COMBINATIONS:
            joined = selection.nested(ok, outer, len(y), classes, "family_vote", rule=rule).predicted
            s = measure.scores(y, joined, classes)
            result["ensembles"][rule] = {k: s[k] for k in ("uar", "wa", "macro_f1")}
        result["per_corpus"] = measure.per_corpus(y, pred, data.corpus, classes)
        result["per_fold"] = [
            {
                "held_out": sorted(set(data.corpus[te].tolist() if settings.groups == "corpus"
                                       else groups[te].tolist())),  # fmt: skip
                "n": int(len(te)),
                "uar": measure.uar(y[te], pred[te]),
                "wa": float(np.mean(y[te] == pred[te])),
                "chosen": chosen[k],
            }
            for k, (_, te) in enumerate(outer)
        ]
        families = {}
        for fam in sorted({t["family"] for t in ok}):
            fam_trials = [t for t in ok if t["family"] == fam]
            fp, fchosen, _ = selection.nested(fam_trials, outer, len(y), classes, "best")
            s = measure.scores(y, fp, classes)
            best_plain = max(fam_trials, key=lambda t: t["loso_uar"])
            families[fam] = {
                "uar": s["uar"], "wa": s["wa"], "macro_f1": s["macro_f1"], "configs": len(fam_trials),
                "trial_s": sum(t.get("seconds") or 0.0 for t in fam_trials),
                "chosen_per_fold": [c["members"][0]["params"] for c in fchosen],
                "best_config_plain_cv": {"params": json.loads(best_plain["params"]), "uar": best_plain["loso_uar"]},
                "per_class_recall": {c: v["recall"] for c, v in s["per_class"].items()},
            }  # fmt: skip
        result["families"] = families
        result["predicted"] = pred.tolist()
        result["proba"] = proba
        return result

    metrics = block("raw")
    predicted = metrics.pop("predicted"), metrics.pop("proba")
    metrics["protocol"] = {
        **folds.describe_protocol(outer, inner, groups),
        "outer_folds": len(outer),
        "groups": settings.groups,
        "selection": settings.describe_selection(),
        "selection_rule": settings.selection,
        "search": settings.search,
        "speaker_norm": False,
    }
    if settings.groups == "corpus":
        metrics["protocol"]["outer"] = folds.describe_corpus_folds(outer, data.corpus)
    metrics["classes"] = classes
    metrics["class_set"] = settings.class_set
    metrics["groups"] = sorted(set(groups.tolist()))
    metrics["corpora"] = data.corpora
    metrics["excluded_labels"] = data.excluded
    metrics["feature_set"] = data.feature_set
    metrics["trials"] = {"ok": sum(t["status"] == "ok" for t in trials), "failed": sum(t["status"] != "ok" for t in trials)}
    metrics["_predicted"] = {"raw": predicted}  # per variant: what predictions.parquet holds for the shipped one
    notes = {
        "speaker_norm": ("speaker_normalised", "each speaker's features z-scored with that speaker's own unlabelled "
                                               "audio; a separate protocol"),
        "corpus_norm": ("corpus_normalised", "each corpus z-scored with the statistics of its training rows; a corpus "
                                             "with none (held out, or a test set) with its own unlabelled audio; "
                                             "a separate protocol"),
    }  # fmt: skip
    for variant in settings.variants[1:]:
        key, note = notes[variant]
        b = block(variant)
        metrics["_predicted"][variant] = b.pop("predicted"), b.pop("proba")
        metrics[key] = {**b, "note": note}
    return metrics


def fit_final(trials: list[dict], data: FeatureTable, variant: str, rule: str, top_k: int = 5,
              margin: float | None = None) -> dict[str, Any]:  # fmt: skip
    """The shipped model: the members selection ``rule`` picks by plain grouped-CV UAR, refitted on all data."""
    ok = selection.pick(sorted((t for t in trials if t["status"] == "ok" and t["variant"] == variant),
                               key=lambda t: (-t["loso_uar"], t["trial"])), rule, top_k, margin,
                        score=lambda t: t["loso_uar"])  # fmt: skip
    X = as_model_input(normalisation.normalise(data.X, normalisation.VARIANTS[variant], data.groups, data.corpus))
    members = [
        {"family": t["family"], "params": json.loads(t["params"]), "cv_uar": t["loso_uar"],
         "model": classical.fit(t["family"], json.loads(t["params"]), X, data.y)}
        for t in ok
    ]  # fmt: skip
    return {"variant": variant, "members": members}


def as_model_input(X: np.ndarray) -> np.ndarray:
    """Audio features as float32; text and fusion inputs (object arrays) as they are."""
    return X if X.dtype == object else X.astype(np.float32)


def final_proba(final: dict[str, Any], X: np.ndarray) -> np.ndarray:
    return np.mean([m["model"].predict_proba(X) for m in final["members"]], axis=0)


def score_test(finals: dict[str, dict], data: FeatureTable, test: FeatureTable) -> dict[str, Any]:
    """Each variant's shipped model on a test set it never saw, per corpus; test labels are read only here.

    Normalisation follows the variant: speakers by their own rows; a test corpus
    that is also a training corpus by its training statistics, else by its own.
    """
    n = len(data.X)
    out: dict[str, Any] = {"n": int(len(test.y)), "excluded_labels": test.excluded,
                           "corpora": sorted(set(test.corpus.tolist()))}  # fmt: skip
    for variant, final in finals.items():
        how = normalisation.VARIANTS[variant]
        if how == "corpus":
            Xt = normalisation.corpus_normalise(np.vstack([data.X, test.X]),
                                                np.concatenate([data.corpus, test.corpus]), np.arange(n))[n:]  # fmt: skip
        else:
            Xt = normalisation.normalise(test.X, how, test.groups, test.corpus)
        pred = np.asarray(data.classes)[np.argmax(final_proba(final, as_model_input(Xt)), axis=1)]
        out[variant] = runs.test_set_figures(test, pred, data.classes)
    return out


def write_run(out: Path, trials: list[dict], metrics: dict, data: FeatureTable, final: dict, settings: TuneSettings,
              outer: Folds) -> None:  # fmt: skip
    """The run dir: the evaluation of the nested predictions (``runs``), the trials, and the shipped bundle."""
    from seremo.report import tune_report

    # the nested predictions of the variant the bundle holds, so `seremo ensemble` judges the model it ships
    predicted, nested_proba = metrics.pop("_predicted")[final["variant"]]
    members = [{k: m[k] for k in ("family", "params", "cv_uar")} for m in final["members"]]
    metrics["final_model"] = {**members[0], "variant": final["variant"], "members": members}
    write_trials(out, trials)
    oof = runs.OutOfFold(data.ids, data.groups, data.y, np.asarray(predicted), outer, nested_proba, data.classes,
                         data.corpus)  # fmt: skip
    runs.write_evaluation(out, metrics, oof, f"nested {metrics['protocol']['outer']}: UAR {metrics['uar']:.3f}",
                          tune_report(metrics, data))  # fmt: skip
    how = normalisation.VARIANTS[final["variant"]]
    save_bundle(out / "model", final, members, metrics, data, settings)
    X = as_model_input(normalisation.normalise(data.X, how, data.groups, data.corpus))
    runs.write_model_predictions(out, data.ids, final_proba(final, X), data.classes)


def write_trials(out: Path, trials: list[dict]) -> None:
    """trials.parquet: every configuration's inner scores per outer fold and its plain grouped-CV UAR."""
    pq.write_table(
        pa.table(
            {
                "trial": [t["trial"] for t in trials],
                "variant": [t["variant"] for t in trials],
                "family": [t["family"] for t in trials],
                "params": [t["params"] for t in trials],
                "status": [t["status"] for t in trials],
                "error": [t["error"] for t in trials],
                "seconds": pa.array([t.get("seconds") for t in trials], pa.float64()),
                "inner_uar_mean": [float(np.mean(t["inner_uar"])) if t["inner_uar"] else None for t in trials],
                "inner_uar_per_fold": [t["inner_uar"] for t in trials],
                "plain_cv_uar": [t.get("loso_uar") for t in trials],
            }
        ),
        out / "trials.parquet",
    )


def save_bundle(path: Path, final: dict, members: list[dict], metrics: dict, data: FeatureTable,
                settings: TuneSettings) -> None:  # fmt: skip
    """``model/``: the shipped members (skops), with the nested figures of the variant they are."""
    how = normalisation.VARIANTS[final["variant"]]
    shipped = metrics if final["variant"] == "raw" else metrics[
        {"speaker": "speaker_normalised", "corpus": "corpus_normalised"}[how]]  # fmt: skip
    meta_metrics = {"nested_uar": shipped["uar"], "nested_wa": shipped["wa"], "nested_macro_f1": shipped["macro_f1"],
                    "plain_cv_uar": members[0]["cv_uar"], "protocol": metrics["protocol"]["outer"]}  # fmt: skip
    if "test" in metrics:
        meta_metrics["test_uar"] = {name: t[final["variant"]]["uar"] for name, t in metrics["test"].items()}
    training = {"corpora": data.corpora, "utterances": int(len(data.y)), "groups": data.n_groups,
                "class_set": settings.class_set, "normalisation": how, "channel": data.channel}  # fmt: skip
    bundle.save_tuned(path, [m["model"] for m in final["members"]], members, data.feature_set,
                      training, meta_metrics, normalisation=how, inputs=data.inputs,
                      training_ids=data.ids.tolist())  # fmt: skip


# --------------------------------------------------------------------------- the stage


def run_stage(features_dir: str, out: str, settings: TuneSettings, address: str | None) -> Outcome:
    """``seremo tune``: the nested search, its table by family and where the report is."""
    from seremo.report import outer_protocol, variants_lines

    metrics = tune_run(features_dir, out, settings, address=address)
    fams = sorted(metrics["families"].items(), key=lambda kv: -kv[1]["uar"])
    text = [
        format_table(["family", "nested UAR", "WA", "macro-F1", "configs", "trials s"],
                     [[f, v["uar"], v["wa"], v["macro_f1"], v["configs"], round(v.get("trial_s", 0.0))] for f, v in fams]),
        "",
        f"nested UAR {metrics['uar']:.3f}  WA {metrics['wa']:.3f}  macro-F1 {metrics['macro_f1']:.3f}  "
        f"({outer_protocol(metrics)}, {metrics['wall_s']:.0f} s; trials s: each family's trials' own time, "
        f"on {metrics['cores']:g} cores)",
        "ensembles of the families (nested UAR): " + "  ".join(
            f"{rule.replace('_', ' ')} {v['uar']:.3f}" for rule, v in metrics["ensembles"].items()
        ) + f"  (single best configuration {metrics['single_best_uar']:.3f})",
        *variants_lines(metrics),
        f"report: {out}/report.md",
        f"model:  {out}/model",
    ]  # fmt: skip
    return Outcome({"uar": metrics["uar"], "wa": metrics["wa"], "macro_f1": metrics["macro_f1"]}, "\n".join(text))
