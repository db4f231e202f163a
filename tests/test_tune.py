"""Nested speaker-independent tuning: folds, leakage, metrics, an end-to-end run, bundles."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from sklearn.preprocessing import StandardScaler

from seremo import bundle, classical, measure, normalisation
from seremo.cli import main
from seremo.errors import ConfigError, SeremoError
from seremo.folds import group_folds, plan_nested
from seremo.tune import (
    TuneSettings,
    load_settings,
    run_config,
    settings_from_dict,
    tune_run,
)

GROUPS = np.repeat([f"s{i}" for i in range(6)], 10)


@pytest.mark.parametrize("n_folds", [None, 2, 3])
def test_grouped_folds_never_share_a_group(n_folds):
    folds = group_folds(GROUPS, n_folds)
    assert len(folds) == (6 if n_folds is None else n_folds)
    covered = np.concatenate([te for _, te in folds])
    assert sorted(covered) == list(range(len(GROUPS)))  # every row tested exactly once
    for tr, te in folds:
        assert not set(GROUPS[tr]) & set(GROUPS[te])


def test_inner_folds_stay_inside_the_outer_training_set():
    outer, inner = plan_nested(GROUPS, None, 3)
    for (tr, te), folds in zip(outer, inner, strict=True):
        for a, b in folds:
            assert not set(GROUPS[tr][a]) & set(GROUPS[tr][b])
            assert not set(GROUPS[tr][a]) & set(GROUPS[te]) and not set(GROUPS[tr][b]) & set(GROUPS[te])


def test_too_few_groups_is_a_clear_error():
    with pytest.raises(SeremoError, match="at least 2 groups"):
        group_folds(["a"] * 5)


class SpyScaler(StandardScaler):
    """Records which rows (by an id in column 0) every fit saw."""

    seen: list[set] = []

    def fit(self, X, y=None, sample_weight=None):
        SpyScaler.seen.append(set(np.asarray(X)[:, 0].astype(int).tolist()))
        return super().fit(X, y, sample_weight)


def test_scaling_is_fitted_on_training_folds_only(monkeypatch):
    """Every scaler fit must exclude the outer test speakers (and, inside, the inner test speakers)."""
    monkeypatch.setattr(classical, "StandardScaler", SpyScaler)
    SpyScaler.seen = []
    rng = np.random.default_rng(0)
    y = np.array(["a", "b"] * 30)
    X = np.column_stack([np.arange(60), rng.normal(size=(60, 3)) + (y == "a")[:, None]])
    outer, inner = plan_nested(GROUPS, None, 2)
    run_config("logreg", {"C": 1.0}, X, y, outer, inner)
    assert len(SpyScaler.seen) == len(outer) * (1 + 2)
    fits = iter(SpyScaler.seen)
    for (tr, te), folds in zip(outer, inner, strict=True):
        for a, b in folds:
            seen = next(fits)
            assert seen == set(tr[a].tolist())
            assert not seen & set(te.tolist()) and not seen & set(tr[b].tolist())
        assert next(fits) == set(tr.tolist())


def test_speaker_normalisation_uses_each_speakers_own_rows():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 4)) + np.repeat(np.arange(6), 10)[:, None] * 5
    Xn = normalisation.speaker_normalise(X, GROUPS)
    for g in np.unique(GROUPS):
        m = GROUPS == g
        assert np.allclose(Xn[m].mean(axis=0), 0, atol=1e-9) and np.allclose(Xn[m].std(axis=0), 1)
    # changing one speaker's audio changes only that speaker's normalised features
    X2 = X.copy()
    X2[GROUPS == "s0"] *= 3
    X2[GROUPS == "s0"] += 7
    same = GROUPS != "s0"
    assert np.array_equal(normalisation.speaker_normalise(X2, GROUPS)[same], Xn[same])


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(2)
    classes = ["angry", "happy", "neutral", "sad"]
    y_true = rng.choice(classes, 200, p=[0.4, 0.3, 0.2, 0.1])
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.choice(classes, 200))
    s = measure.scores(y_true, y_pred, classes)
    assert s["uar"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert s["wa"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert s["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert np.sum(s["confusion"]) == 200
    # a hand-checked case: recalls 1, 0.5 -> UAR 0.75; WA 2/3
    s = measure.scores(["a", "b", "b"], ["a", "b", "a"], ["a", "b"])
    assert (s["uar"], s["wa"]) == (0.75, pytest.approx(2 / 3))
    assert s["per_class"]["b"]["recall"] == 0.5 and s["per_class"]["a"]["precision"] == 0.5


def test_small_end_to_end_tune_on_emodb(small_run):
    m = json.loads((small_run / "metrics.json").read_text())
    assert m["protocol"]["outer"] == "leave-one-group-out"
    assert len(m["per_fold"]) == 10 and {f["n"] for f in m["per_fold"]} <= set(range(30, 80))
    assert set(m["families"]) == {"logreg", "naive_bayes"}
    assert m["uar"] > 0.5  # chance is 1/7; real features and a real model learn
    assert m["single_best_uar"] == m["uar"]  # selection: best is the single best configuration
    for fold in m["per_fold"]:
        (chosen,) = fold["chosen"]["members"]
        assert chosen["family"] in ("logreg", "naive_bayes") and "params" in chosen
    trials = pq.read_table(small_run / "trials.parquet").to_pandas()
    assert len(trials) == 3 and (trials["status"] == "ok").all()
    assert all(len(x) == 10 for x in trials["inner_uar_per_fold"])
    preds = pq.read_table(small_run / "predictions.parquet")
    assert preds.num_rows == 535
    # out-of-fold: each row's fold, and probabilities whose argmax is the nested prediction
    assert sorted(set(preds.column("fold").to_pylist())) == list(range(1, 11))
    proba = np.column_stack([preds.column(f"p_{c}").to_numpy() for c in m["classes"]])
    assert (np.asarray(m["classes"])[proba.argmax(axis=1)] == np.asarray(preds.column("predicted").to_pylist())).all()
    assert (small_run / "confusion_matrix.png").stat().st_size > 1000
    report = (small_run / "report.md").read_text()
    assert "nested" in report and "logreg" in report


def test_bundle_reproduces_predictions_in_a_fresh_process(small_run, emodb_features):
    code = (
        "import sys, numpy as np; from seremo import bundle, shards;"
        "b = bundle.load(sys.argv[1]); X = shards.read_features(sys.argv[2]).matrix();"
        "np.save(sys.argv[3], b.predict_proba(X))"
    )
    out = small_run / "fresh.npy"
    subprocess.run([sys.executable, "-c", code, str(small_run / "model"), emodb_features, str(out)], check=True)
    ref = pq.read_table(small_run / "model_predictions.parquet").to_pandas()
    b = bundle.load(small_run / "model")
    assert np.array_equal(np.load(out), ref[[f"p_{c}" for c in b.classes]].to_numpy())
    assert b.feature_set.name == "seremo" and b.meta.sample_rate == 16000


def _copy_bundle(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda d: (d / "model.skops").write_bytes((d / "model.skops").read_bytes()[:-10] + b"0" * 10), "checksum"),
        (lambda d: (d / "model.skops").unlink(), "missing"),
        (lambda d: (d / "bundle.json").unlink(), "not a model bundle"),
        (lambda d: (d / "bundle.json").write_text("{not json"), "not valid JSON"),
        (lambda d: _edit(d, lambda m: m.pop("classes")), "classes"),
        (lambda d: _edit(d, lambda m: m.update(format_version=99)), "format_version"),
        (lambda d: _edit(d, lambda m: m["feature_set"].update(version="0")), "version"),
    ],
)
def test_tampered_or_incomplete_bundle_fails_with_one_line(small_run, tmp_path, damage, needle):
    d = _copy_bundle(small_run / "model", tmp_path / "b")
    damage(d)
    with pytest.raises(SeremoError, match=needle) as info:
        bundle.load(d)
    assert "\n" not in str(info.value)


def _edit(d: Path, change) -> None:
    meta = json.loads((d / "bundle.json").read_text())
    change(meta)
    (d / "bundle.json").write_text(json.dumps(meta))


def test_tune_rejects_bad_feature_dirs(tmp_path, capsys, emodb_manifest, ray_session):
    assert main(["tune", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "empty" / "shards").mkdir(parents=True)
    assert main(["tune", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    assert "no feature shards" in capsys.readouterr().err
    # one speaker only: no speaker-independent evaluation possible
    from seremo import features, manifest
    from seremo.extract import extract

    t = manifest.read(emodb_manifest)
    one = t.filter(np.array([g == "emodb/03" for g in t.column("group").to_pylist()]))
    extract(one, features.get("compact8"), str(tmp_path / "one"))
    assert main(["tune", str(tmp_path / "one"), "--out", str(tmp_path / "r")]) == 2
    assert "at least 2 groups" in capsys.readouterr().err
    extract(t.slice(0, 8), features.get("mfcc_seq"), str(tmp_path / "seq"))
    with pytest.raises(SeremoError, match="tune needs a vector or text set"):
        tune_run(str(tmp_path / "seq"), str(tmp_path / "r"), TuneSettings())


def test_config_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="nosuch"):
        settings_from_dict({"nosuch": 1}, "x.yaml")
    with pytest.raises(ConfigError, match="inner_folds"):
        settings_from_dict({"inner_folds": "many"}, "x.yaml")
    with pytest.raises(ConfigError, match="unknown model family"):
        settings_from_dict({"models": {"deepnet": {}}}, "x.yaml")
    with pytest.raises(ConfigError, match="no hyperparameter"):
        settings_from_dict({"models": {"logreg": {"gamma": [1]}}}, "x.yaml")
    p = tmp_path / "t.yaml"
    p.write_text("tune:\n  models:\n    logreg: {C: [0.5]}\n  outer_folds: 5\n")
    s = load_settings(str(p))
    assert s.models == {"logreg": {"C": [0.5]}} and s.outer_folds == 5


def _three_classes(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each class raises its own feature: separable for every family, naive Bayes included."""
    rng = np.random.default_rng(seed)
    y = np.array(["a", "b", "c"] * 20)
    X = rng.normal(size=(60, 5))
    X[np.arange(60), np.searchsorted(["a", "b", "c"], y)] += 3.0
    return X.astype(np.float32), y


def test_every_family_fits_and_predicts_probabilities():
    X, y = _three_classes(3)
    for name, family in classical.FAMILIES.items():
        params = classical.grid(family)[0]
        model = classical.fit(name, params, X, y)
        p = model.predict_proba(X)
        assert p.shape == (60, 3) and np.allclose(p.sum(axis=1), 1, atol=1e-5), name
        assert balanced_accuracy_score(y, model.predict(X)) > 0.6, name


def test_every_family_round_trips_through_a_bundle(tmp_path):
    X, y = _three_classes(4)
    fs = {"name": "compact8", "kind": "vector", "version": "1", "params": {"sample_rate": 16000,
          "silence_threshold": 0.4, "hpss_kernel": 17, "fmin": 60.0, "fmax": 500.0}}  # fmt: skip
    for name, family in classical.FAMILIES.items():
        params = {**classical.grid(family)[0], "select_k": 3}
        model = classical.fit(name, params, X, y)
        meta = bundle.base_meta(model_kind="sklearn", model_name=name, params=params, feature_set=fs,
                                classes=list(model.classes_), training={}, metrics={})  # fmt: skip
        bundle.save_classical(tmp_path / name, model, meta)
        loaded = bundle.load(tmp_path / name)
        assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X)), name


def test_decision_level_combinations():
    """average is the soft vote; weighted leans to the member with the higher inner UAR; max_confidence
    takes, row by row, the probabilities of the member most sure of its top class."""
    from seremo.selection import combine

    a = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    b = np.array([[0.1, 0.1, 0.8], [0.4, 0.35, 0.25]])
    assert np.allclose(combine([a, b], "average", [0.5, 0.5], 3), (a + b) / 2)
    assert np.allclose(combine([a, b], "weighted", [0.6, 0.6], 3), (a + b) / 2)  # equal skill: the mean
    w = combine([a, b], "weighted", [0.9, 1 / 3], 3)  # b at chance keeps a token weight only
    assert np.allclose(w, a, atol=0.01) and np.allclose(w.sum(axis=1), 1)
    assert np.allclose(combine([a, b], "max_confidence", [0.5, 0.5], 3), [b[0], a[1]])
    with pytest.raises(ValueError, match="unknown combination"):
        combine([a], "median", [0.5], 3)


def test_tune_reports_the_decision_level_ensembles(small_run):
    m = json.loads((small_run / "metrics.json").read_text())
    assert set(m["ensembles"]) == {"average", "weighted", "max_confidence"}
    assert all(0.0 <= v["uar"] <= 1.0 for v in m["ensembles"].values())
    report = (small_run / "report.md").read_text()
    assert "| max confidence |" in report and "| single best configuration |" in report
