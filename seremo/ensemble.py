"""``seremo ensemble RUN_DIR RUN_DIR ... --out RUN_DIR``: a decision-level ensemble of finished runs.

Nothing is refitted. Each member run (``seremo tune`` or ``seremo train``) left its
out-of-fold predictions (``predictions.parquet``: each row's class probabilities
from the model that did not train on it, and the outer fold that held it out), so
the ensemble is evaluated under the very folds its members were: members whose
rows, labels, classes or folds differ are refused in one line. The ``weighted``
rule's weights for a fold are each member's UAR above chance on the *other*
folds' rows: that fold's labels never shape its weights (the other folds'
predictions come from models that did see it, a small bias for a few scalar
weights); the shipped weights use every row.

The run dir holds ``metrics.json`` (every rule and every member, nested),
``report.md``, ``predictions.parquet`` (the shipped rule's, so an ensemble can be a
member again) and ``model/``: an ensemble bundle with each member bundle copied
whole, every file checksummed, loaded without executing code. Members may take
different inputs (an audio run and a text run: decision-level fusion); the bundle
then takes ``audio+text`` and gives each member its part (``bundle.ensemble_input``).
Members that read audio through different feature sets or normalisations are
evaluated all the same, but a bundle extracts one feature set per segment, so the
run says in one line that it writes no ``model/``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from seremo import bundle, measure, outputs, runs, storage, vote
from seremo.errors import ConfigError, SeremoError
from seremo.outcome import Outcome, format_table

log = logging.getLogger(__name__)

DEFAULT_RULE = "weighted"


@dataclass
class Member:
    run: str
    model: bundle.Bundle
    ids: np.ndarray
    groups: np.ndarray
    labels: np.ndarray
    folds: np.ndarray  # 1-based outer fold per row
    proba: np.ndarray  # rows x classes, in ``model.classes`` order


def read_member(run: str) -> Member:
    """A finished run's bundle and out-of-fold predictions, rows sorted by utterance id."""
    try:
        model = bundle.load(storage.join(run, "model"))
    except bundle.BundleError as exc:
        raise SeremoError(f"{run}: has no usable model/ ({exc}); ensemble members are finished tune or train runs "
                          "with a shipped model") from None  # fmt: skip
    path = storage.join(run, measure.PREDICTIONS)
    if not storage.is_file(path):
        raise SeremoError(f"{run}: has no {measure.PREDICTIONS}; ensemble members are finished tune or train runs")
    try:
        table = storage.read_parquet(path)
    except pa.ArrowInvalid as exc:
        raise SeremoError(f"{path}: is not a readable Parquet table ({exc}); re-run that run") from None
    need = ["utterance_id", "group", "label", "fold", *(f"p_{c}" for c in model.classes)]
    missing = [c for c in need if c not in table.column_names]
    if missing:
        raise SeremoError(f"{run}/{measure.PREDICTIONS}: lacks {', '.join(missing)} (a run of an older seremo, or "
                          "other classes than its model's); re-run it with this seremo")  # fmt: skip
    order = np.argsort(np.asarray(table.column("utterance_id").to_pylist()), kind="stable")
    proba = np.column_stack([table.column(f"p_{c}").to_numpy() for c in model.classes]).astype(np.float32)
    column = {c: np.asarray(table.column(c).to_pylist())[order] for c in ("utterance_id", "group", "label")}
    return Member(run, model, column["utterance_id"], column["group"], column["label"],
                  table.column("fold").to_numpy()[order], proba[order])  # fmt: skip


def _run_key(run: str) -> str:
    """One name per run dir: a local path resolved (``manifest.normalise_path``), a URI without its trailing ``/``."""
    from seremo.manifest import normalise_path

    return run.rstrip("/") if storage.is_uri(run) else normalise_path(run)


def check_distinct_runs(run_dirs: list[str]) -> None:
    """One run given twice would be one model counted as two members (its vote doubled): refused in one line."""
    seen: dict[str, str] = {}
    for run in run_dirs:
        key = _run_key(run)
        if key in seen:
            raise ConfigError(f"{run}: given twice (as {seen[key]} too); one run is one member: list each run once")
        seen[key] = run


def check_distinct_models(members: list[Member]) -> None:
    """Two run dirs holding the same bundle (a copied run) are one model twice: refused in one line."""
    seen: dict[str, str] = {}
    for m in members:
        if m.model.model_id in seen:
            raise ConfigError(f"{m.run}: holds the same model as {seen[m.model.model_id]} ({m.model.model_id}); "
                              "one model is one member: list each model once")  # fmt: skip
        seen[m.model.model_id] = m.run


def check_compatible(members: list[Member]) -> None:
    """Same classes, rows, labels, folds and model input, or one line naming the first member that differs."""
    if len(members) < 2:
        raise ConfigError("an ensemble needs at least 2 member runs")
    first = members[0]
    for m in members[1:]:
        if m.model.classes != first.model.classes:
            raise SeremoError(f"{m.run}: predicts {', '.join(m.model.classes)}, but {first.run} predicts "
                              f"{', '.join(first.model.classes)}; ensemble members must share their classes")  # fmt: skip
        if len(m.ids) != len(first.ids) or not np.array_equal(m.ids, first.ids):
            extra = sorted(set(m.ids.tolist()) ^ set(first.ids.tolist()))
            raise SeremoError(f"{m.run}: was evaluated on other utterances than {first.run} ({len(m.ids)} vs "
                              f"{len(first.ids)} rows; e.g. {extra[:1]}); members must share their data")  # fmt: skip
        if not np.array_equal(m.labels, first.labels):
            raise SeremoError(f"{m.run}: labels differ from {first.run}'s on the same utterances "
                              "(another class set?); members must share their labels")  # fmt: skip
        if _partition(m) != _partition(first):
            raise SeremoError(f"{m.run}: its outer folds differ from {first.run}'s ({len(set(m.folds.tolist()))} vs "
                              f"{len(set(first.folds.tolist()))} folds, or other groups in them); an ensemble is "
                              "evaluated under its members' folds: run them with as many folds (tune: outer_folds, train: "
                              "folds)")  # fmt: skip


def no_bundle(members: list[Member]) -> str | None:
    """None when one bundle can score for all members (``bundle.ensemble_input``), else why not."""
    try:
        bundle.ensemble_input([m.model.meta for m in members])
    except ValueError as exc:
        return str(exc)
    return None


def _partition(m: Member) -> set[frozenset]:
    return {frozenset(m.ids[m.folds == f].tolist()) for f in np.unique(m.folds)}


def fold_weights(members: list[Member], n_classes: int) -> dict[int, np.ndarray]:
    """Per outer fold, the weighted rule's weights from each member's UAR on the other folds' rows."""
    y, folds = members[0].labels, members[0].folds
    classes = np.asarray(members[0].model.classes)
    out = {}
    for f in np.unique(folds).tolist():
        train = folds != f
        uar = [measure.uar(y[train], classes[m.proba[train].argmax(axis=1)]) for m in members]
        out[int(f)] = vote.weights_from_uar(uar, n_classes)
    return out


def nested_proba(members: list[Member], rule: str) -> np.ndarray:
    """Each row's ensemble probabilities, with weights fitted without that row's fold."""
    classes = members[0].model.classes
    folds = members[0].folds
    proba = np.zeros_like(members[0].proba)
    weights = fold_weights(members, len(classes)) if rule == "weighted" else {}
    for f in np.unique(folds).tolist():
        rows = folds == f
        proba[rows] = vote.combine([m.proba[rows] for m in members], rule, weights.get(int(f)))
    return proba


def build(run_dirs: list[str], out: str, rule: str = DEFAULT_RULE) -> dict[str, Any]:
    """Evaluate every rule on the members' folds, write the run dir with ``rule``'s bundle; metrics.json's content."""
    if rule not in vote.RULES:
        raise ConfigError(f"--rule {rule!r}: choose one of {', '.join(vote.RULES)}")
    started = time.perf_counter()
    check_distinct_runs(run_dirs)
    members = [read_member(r) for r in run_dirs]
    check_distinct_models(members)
    check_compatible(members)
    first = members[0]
    classes = first.model.classes
    y = first.labels
    named = np.asarray(classes)
    metrics: dict[str, Any] = {"rule": rule, "members": [], "rules": {}, "classes": classes,
                               "n": int(len(y)), "folds": len(np.unique(first.folds))}  # fmt: skip
    for m in members:
        s = measure.scores(y, named[m.proba.argmax(axis=1)], classes)
        metrics["members"].append({"run": m.run, "model": m.model.meta.model_name, "model_id": m.model.model_id,
                                   **{k: s[k] for k in ("uar", "wa", "macro_f1", "weighted_f1")}})  # fmt: skip
    shipped_proba = None
    for r in vote.RULES:
        proba = nested_proba(members, r)
        s = measure.scores(y, named[proba.argmax(axis=1)], classes)
        metrics["rules"][r] = {k: s[k] for k in ("uar", "wa", "macro_f1", "weighted_f1")}
        if r == rule:
            shipped_proba = proba
            metrics.update({k: s[k] for k in ("uar", "wa", "macro_f1", "weighted_f1", "per_class", "confusion")})
    weights = None
    if rule == "weighted":  # the shipped weights: every row's out-of-fold prediction
        uar = [measure.uar(y, named[m.proba.argmax(axis=1)]) for m in members]
        weights = vote.weights_from_uar(uar, len(classes)).round(6).tolist()
    metrics["weights"] = weights
    metrics["protocol"] = {"outer": f"the members' {metrics['folds']} outer folds (out-of-fold predictions)",
                           "weights": "per fold, each member's UAR above chance on the other folds' rows"}  # fmt: skip
    why = no_bundle(members)
    metrics["bundle"] = None if why else "model"
    if why:  # evaluated all the same: the figures need no features, only the members' predictions
        metrics["no_bundle"] = (f"no model/: {why}; a bundle extracts one feature set per segment: retrain "
                                "them on one (the figures above need no features and stand)")  # fmt: skip
        log.warning("%s", metrics["no_bundle"])
    metrics["wall_s"] = time.perf_counter() - started
    outputs.check_out(out, run_dirs, what="member run")
    with outputs.run_dir(out, "ensemble", {"rule": rule}) as run:
        _write_run(run.local, members, metrics, shipped_proba, weights, rule)
    return metrics


def _write_run(out: Path, members: list[Member], metrics: dict, proba: np.ndarray, weights: list | None,
               rule: str) -> None:  # fmt: skip
    """The run dir: the evaluation of the nested ensemble predictions (``runs``) and the ensemble bundle."""
    first = members[0]
    classes = first.model.classes
    predicted = np.asarray(classes)[proba.argmax(axis=1)]
    folds = [(np.flatnonzero(first.folds != f), np.flatnonzero(first.folds == f)) for f in np.unique(first.folds)]
    oof = runs.OutOfFold(first.ids, first.groups, first.labels, predicted, folds, proba, classes)
    runs.write_evaluation(out, metrics, oof, f"{rule} ensemble of {len(members)}: UAR {metrics['uar']:.3f}",
                          report_text(metrics))  # fmt: skip
    if metrics["bundle"] is None:
        return
    training = dict(first.model.meta.training)
    bundle.save_ensemble(out / "model", [m.model for m in members], rule, weights, [m.run for m in members], training,
                         {"nested_uar": metrics["uar"], "nested_wa": metrics["wa"], "nested_macro_f1": metrics["macro_f1"],
                          "protocol": metrics["protocol"]["outer"]})  # fmt: skip


def report_text(metrics: dict) -> str:
    rows = [[m["run"], m["model"], round(m["uar"], 3), round(m["wa"], 3), round(m["weighted_f1"], 3)]
            for m in metrics["members"]]  # fmt: skip
    rules = [[r.replace("_", " ") + (" (shipped)" if r == metrics["rule"] else ""), round(v["uar"], 3),
              round(v["wa"], 3), round(v["weighted_f1"], 3)] for r, v in metrics["rules"].items()]  # fmt: skip
    return "\n".join([
        f"# Ensemble of {len(rows)} runs ({metrics['rule']})", "",
        f"Evaluated on {metrics['n']} utterances under {metrics['protocol']['outer']}; weighted rule: "
        f"{metrics['protocol']['weights']}.", "",
        "## Members", "", format_table(["run", "model", "UAR", "WA", "weighted F1"], rows), "",
        "## Rules", "", format_table(["rule", "UAR", "WA", "weighted F1"], rules), "",
        f"Shipped weights: {metrics['weights']}" if metrics["weights"] else "",
        metrics.get("no_bundle") or "", "",
    ])  # fmt: skip


def run_stage(run_dirs: list[str], out: str, rule: str) -> Outcome:
    """``seremo ensemble``: the members' and the rules' nested figures, and where the bundle is."""
    metrics = build(run_dirs, out, rule)
    text = report_text(metrics).split("## Members", 1)[1].strip()
    text += f"\nensemble ({rule}) nested UAR {metrics['uar']:.3f}  WA {metrics['wa']:.3f}"
    text += f"\nmodel:  {out}/model" if metrics["bundle"] else ""
    return Outcome({"uar": metrics["uar"], "wa": metrics["wa"]}, text)
