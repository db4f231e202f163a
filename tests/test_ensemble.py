"""``seremo ensemble``: decision-level ensembles of finished runs, evaluated on the members' folds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import assert_failed_reruns_keep

from seremo import bundle, classical, ensemble, features, measure, vote
from seremo.cli import main
from seremo.errors import SeremoError
from seremo.folds import group_folds

CLASSES = ["angry", "happy", "sad"]


def _data(seed: int = 0, n_groups: int = 6, per_group: int = 12):
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"spk{i}" for i in range(n_groups)], per_group)
    y = np.tile(CLASSES, n_groups * per_group // 3)
    X = rng.normal(size=(len(y), 6)).astype(np.float32)
    X[:, 0] += (y == "angry") * 1.5
    X[:, 1] += (y == "happy") * 1.5
    ids = np.asarray([f"u{i:03d}" for i in range(len(y))])
    return X, y, groups, ids


def fake_run(root: Path, name: str, family: str, params: dict, cols: list[int], n_folds: int = 3,
             fs: str = "compact8") -> Path:  # fmt: skip
    """A run dir as tune leaves it: out-of-fold predictions (fold + p_<class>) and a bundle fitted on all rows."""
    X, y, groups, ids = _data()
    X = X[:, cols]
    folds = group_folds(groups, n_folds)
    proba = np.zeros((len(y), len(CLASSES)), np.float32)
    for tr, te in folds:
        proba[te] = classical.fit(family, params, X[tr], y[tr]).predict_proba(X[te])
    run = root / name
    run.mkdir(parents=True)
    predicted = np.asarray(CLASSES)[proba.argmax(axis=1)]
    pq.write_table(measure.oof_table(ids, groups, y, predicted, folds, proba, CLASSES), run / measure.PREDICTIONS)
    model = classical.fit(family, params, X, y)
    bundle.save_tuned(run / "model", [model], [{"family": family, "params": params, "cv_uar": 0.5}],
                      features.get(fs).describe(), {"corpora": ["synthetic"]}, {})  # fmt: skip
    return run


@pytest.fixture()
def runs(tmp_path: Path) -> list[Path]:
    # two members that see different dimensions: each knows one class well, together they know more
    return [fake_run(tmp_path, "a", "logreg", {"C": 1.0}, [0, 2, 3, 4, 5, 1]),
            fake_run(tmp_path, "b", "naive_bayes", {"alpha": 1.0}, [1, 2, 3, 4, 5, 0])]  # fmt: skip


def test_rules_are_evaluated_on_the_members_folds_with_weights_from_training_folds_only(runs, tmp_path):
    members = [ensemble.read_member(str(r)) for r in runs]
    weights = ensemble.fold_weights(members, 3)
    assert set(weights) == {1, 2, 3} and all(np.isclose(w.sum(), 1) for w in weights.values())
    # fold 1's weights must not move when fold 1's own predictions change (they are its test rows)
    spoiled = [ensemble.Member(**{**m.__dict__, "proba": m.proba.copy()}) for m in members]
    spoiled[0].proba[spoiled[0].folds == 1] = np.eye(3, dtype=np.float32)[0]  # member a now says angry on fold 1
    again = ensemble.fold_weights(spoiled, 3)
    assert np.allclose(again[1], weights[1]) and not np.allclose(again[2], weights[2])
    for rule in vote.RULES:  # every rule is the members' out-of-fold rows combined, fold by fold
        proba = ensemble.nested_proba(members, rule)
        f1 = members[0].folds == 1
        expected = vote.combine([m.proba[f1] for m in members], rule, weights[1] if rule == "weighted" else None)
        assert np.allclose(proba[f1], expected)


def test_ensemble_cli_writes_a_bundle_that_round_trips_beside_other_files_twice(runs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ens"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    for _ in range(2):  # a re-run replaces what the first wrote, and only that
        assert main(["ensemble", *map(str, runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "weighted (shipped)" in printed and "nested UAR" in printed
    assert (out / "mine.txt").read_text() == "keep"
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["rules"]) == set(vote.RULES) and len(metrics["members"]) == 2
    assert metrics["uar"] == metrics["rules"]["weighted"]["uar"] and len(metrics["weights"]) == 2
    model = bundle.load(out / "model")
    assert model.meta.model_kind == "ensemble" and model.meta.params["rule"] == "weighted"
    X, *_ = _data()
    a, b = (bundle.load(r / "model") for r in runs)
    expected = vote.combine([a.predict_proba(X), b.predict_proba(X)], "weighted", metrics["weights"])
    assert np.allclose(model.predict_proba(X), expected, atol=1e-6)  # the shipped rule and weights, not a mean
    oof = pq.read_table(out / measure.PREDICTIONS)
    assert oof.num_rows == 72 and {"fold", "p_angry", "group"} <= set(oof.column_names)
    # the ensemble's run dir is itself a member a later ensemble can take
    assert ensemble.read_member(str(out)).proba.shape == (72, 3)
    # an ensemble starts no Ray work: it is interrupted as it writes
    assert_failed_reruns_keep(out, ["ensemble", *map(str, runs), "--out", str(out)], 1, monkeypatch, capsys,
                              interrupt=(ensemble, "_write_run"))  # fmt: skip


def test_ensemble_bundle_refuses_tampering_in_one_line(runs, tmp_path):
    out = tmp_path / "ens"
    ensemble.build([str(r) for r in runs], str(out), "weighted")
    meta_path = out / "model" / "bundle.json"
    meta = json.loads(meta_path.read_text())
    meta["params"]["weights"] = [0.0, 1.0]  # silently trust member b only
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(bundle.BundleError, match="does not match its own checksum") as info:
        bundle.load(out / "model")
    assert len(str(info.value).splitlines()) == 1
    meta["params"]["weights"] = [0.0, 0.0]  # resealed, so only the weights' own check can catch it
    meta_path.write_text(json.dumps(meta))
    bundle.write_meta(out / "model", meta)
    with pytest.raises(bundle.BundleError, match="is not a valid ensemble"):
        bundle.load(out / "model")
    meta["params"]["weights"] = [0.5, 0.5]
    meta["normalisation"] = "speaker"  # resealed: the audio members were not evaluated so
    bundle.write_meta(out / "model", meta)
    with pytest.raises(bundle.BundleError, match="its members do not take the ensemble's input") as info:
        bundle.load(out / "model")
    assert len(str(info.value).splitlines()) == 1
    ensemble.build([str(r) for r in runs], str(out), "weighted")  # rebuilt
    member = out / "model" / "members" / "1" / "model.skops"
    member.write_bytes(member.read_bytes() + b"\0")
    with pytest.raises(bundle.BundleError, match="does not match its checksum") as info:
        bundle.load(out / "model")
    assert len(str(info.value).splitlines()) == 1


def test_members_that_do_not_share_classes_rows_or_folds_are_refused(runs, tmp_path):
    other_folds = fake_run(tmp_path, "c", "logreg", {"C": 0.1}, [0, 1, 2, 3, 4, 5], n_folds=2)
    with pytest.raises(SeremoError, match="its outer folds differ") as info:
        ensemble.build([str(runs[0]), str(other_folds)], str(tmp_path / "x"))
    assert len(str(info.value).splitlines()) == 1
    # another feature set: evaluated all the same (decision-level fusion), but no bundle to score one input with
    other_set = fake_run(tmp_path, "d", "logreg", {"C": 0.1}, [0, 1, 2, 3, 4, 5], fs="lld_stats")
    mixed = ensemble.build([str(runs[0]), str(other_set)], str(tmp_path / "mixed"))
    assert mixed["bundle"] is None and "must share the feature set" in mixed["no_bundle"]
    assert set(mixed["rules"]) == set(vote.RULES) and not (tmp_path / "mixed" / "model").exists()
    assert "must share the feature set" in (tmp_path / "mixed" / "report.md").read_text()
    fewer = tmp_path / "e"
    fake_run(tmp_path, "e", "logreg", {"C": 0.1}, [0, 1, 2, 3, 4, 5])
    table = pq.read_table(fewer / measure.PREDICTIONS)
    pq.write_table(table.slice(0, 60), fewer / measure.PREDICTIONS)
    with pytest.raises(SeremoError, match="was evaluated on other utterances"):
        ensemble.build([str(runs[0]), str(fewer)], str(tmp_path / "x"))
    old = tmp_path / "f"
    fake_run(tmp_path, "f", "logreg", {"C": 0.1}, [0, 1, 2, 3, 4, 5])
    pq.write_table(pq.read_table(old / measure.PREDICTIONS).drop_columns(["fold"]), old / measure.PREDICTIONS)
    with pytest.raises(SeremoError, match="lacks fold"):
        ensemble.build([str(runs[0]), str(old)], str(tmp_path / "x"))
    with pytest.raises(SeremoError, match="at least 2 member runs"):
        ensemble.build([str(runs[0])], str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()  # every refusal comes before anything is written


def test_an_audio_text_input_gives_each_member_its_part():
    """``input_view`` undoes ``join_inputs`` for vector rows (pipelines) and (audio, words) pairs (deep models)."""
    matrix, texts = np.arange(6, dtype=np.float32).reshape(2, 3), ["so good", "awful"]
    rows = bundle.join_inputs(matrix, texts)
    assert rows.dtype == object and rows.shape == (2, 4)
    assert np.array_equal(bundle.input_view(rows, "audio+text", "audio"), matrix)
    assert bundle.input_view(rows, "audio+text", "text").tolist() == texts
    frames = [np.zeros((5, 2), np.float32), np.ones((9, 2), np.float32)]
    pairs = bundle.join_inputs(frames, texts)
    audio = bundle.input_view(pairs, "audio+text", "audio")
    assert all(a is b for a, b in zip(audio, frames, strict=True))
    assert bundle.input_view(pairs, "audio+text", "text").tolist() == texts
    assert bundle.input_view(pairs, "audio+text", "audio+text") is pairs
