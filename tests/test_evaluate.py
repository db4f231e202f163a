"""``seremo evaluate``: a bundle on labelled data it never saw, judged exactly as scikit-learn would."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import assert_failed_reruns_keep
from sklearn.metrics import balanced_accuracy_score, f1_score

from seremo import bundle, classical, features, manifest, normalisation, shards
from seremo.cli import main
from seremo.labels import get_class_set

TRAIN_SPEAKERS = {"emodb/03", "emodb/08", "emodb/09", "emodb/10", "emodb/11"}


def _bundle(feats: shards.Features, out: Path, class_set: str | None, how: str = "none",
            feature_set: dict | None = None) -> Path:  # fmt: skip
    """A logistic regression trained on five EmoDB speakers (no Ray), saved as a bundle."""
    t = feats.table
    groups = np.asarray(t.column("group").to_pylist())
    labels = t.column("label").to_pylist()
    mapped = np.asarray([get_class_set(class_set).map(lab) if class_set else lab for lab in labels], dtype=object)
    keep = np.isin(groups, list(TRAIN_SPEAKERS)) & (mapped != None)  # noqa: E711
    X = feats.matrix()
    X = normalisation.normalise(X, how, groups, np.asarray(t.column("corpus").to_pylist()))
    model = classical.fit("logreg", {"C": 0.1}, X[keep].astype(np.float32), mapped[keep].astype(str))
    members = [{"family": "logreg", "params": {"C": 0.1}, "cv_uar": 0.0}]
    return bundle.save_tuned(out, [model], members, feature_set or feats.feature_set,
                             {"corpora": ["emodb"], "utterances": int(keep.sum()), "class_set": class_set},
                             {}, normalisation=how)  # fmt: skip


@pytest.mark.parametrize("class_set, how", [(None, "none"), ("core4", "speaker")])
def test_uar_is_exactly_scikit_learns_from_the_bundles_probabilities(
    emodb_features, tmp_path, capsys, class_set, how
):
    feats = shards.read_features(emodb_features)
    model = _bundle(feats, tmp_path / "model", class_set, how)
    out = tmp_path / "eval"
    assert main(["evaluate", str(model), emodb_features, "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())

    # by hand: the bundle's own probabilities, labels mapped the same way, scikit-learn's metrics
    b = bundle.load(model)
    t = feats.table
    labels = [get_class_set(class_set).map(x) if class_set else x for x in t.column("label").to_pylist()]
    keep = np.array([lab in b.classes for lab in labels])
    X = feats.matrix()[keep]
    if how == "speaker":
        X = normalisation.speaker_normalise(X, np.asarray(t.column("group").to_pylist())[keep])
    pred = np.asarray(b.classes)[b.predict_proba(X.astype(np.float32)).argmax(axis=1)]
    y = np.asarray(labels, dtype=object)[keep].astype(str)
    assert m["uar"] == balanced_accuracy_score(y, pred)
    assert m["weighted_f1"] == pytest.approx(f1_score(y, pred, average="weighted"), abs=1e-12)
    assert m["n"] == int(keep.sum()) and m["normalisation"] == how
    excluded = {"bored": 81, "disgust": 46, "fearful": 69} if class_set else {}
    assert m["excluded_labels"] == excluded and m["n"] + sum(excluded.values()) == 535
    preds = pq.read_table(out / "predictions.parquet").to_pandas()
    assert len(preds) == m["n"] and list(preds["predicted"]) == list(pred)
    assert (out / "confusion_matrix.png").stat().st_size > 1000 and "UAR" in (out / "report.md").read_text()
    assert f"UAR {m['uar']:.3f}" in capsys.readouterr().out


def test_a_mismatched_feature_set_is_refused_in_one_line(emodb_features, tmp_path, capsys):
    feats = shards.read_features(emodb_features)
    other = features.get("seremo", n_mfcc=20).describe()  # the same set with other parameters
    model = _bundle(feats, tmp_path / "model", None, feature_set={**other})
    assert main(["evaluate", str(model), emodb_features, "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the bundle was trained on seremo v" in err[0] and '"n_mfcc": 20' in err[0]
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_a_manifest_is_extracted_on_the_fly_into_a_folder_holding_other_things_twice(
    emodb_features, emodb_manifest, tmp_path, capsys, monkeypatch
):
    feats = shards.read_features(emodb_features)
    model = _bundle(feats, tmp_path / "model", "core4")
    small = tmp_path / "unseen.parquet"
    t = manifest.read(emodb_manifest)
    manifest.write(t.filter(np.isin(t.column("speaker").to_numpy(zero_copy_only=False), ["emodb/16"])), str(small))
    out = tmp_path / "eval"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for _ in range(2):
        assert main(["evaluate", str(model), str(small), "--out", str(out)]) == 0
        m = json.loads((out / "metrics.json").read_text())
        assert m["n"] + sum(m["excluded_labels"].values()) == 71  # speaker 16's utterances, every one accounted for
        assert shards.read_features(str(out / "features")).table.num_rows == 71
    assert (out / "notes.txt").read_text() == "mine"
    assert_failed_reruns_keep(out, ["evaluate", str(model), str(small), "--out", str(out)], 2, monkeypatch, capsys)
    # judged again on a features dir: the earlier run's extraction goes with the rest of it, nothing stale stays
    assert main(["evaluate", str(model), emodb_features, "--out", str(out)]) == 0
    assert not (out / "features").exists() and (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "metrics.json").read_text())["data"] == emodb_features
    other = _bundle(feats, tmp_path / "model2", None)
    assert main(["evaluate", str(other), str(small), "--out", str(out)]) == 2
    assert "holds a `seremo evaluate` run of model_id" in capsys.readouterr().err


def test_score_normalises_each_call_channel_by_its_own_segments(emodb_features, tmp_path):
    """A bundle of a per-speaker variant: each channel of each file is one speaker when scoring."""
    import pyarrow as pa

    from seremo.score import SEGMENT_TYPE, Predictor

    feats = shards.read_features(emodb_features)
    model = _bundle(feats, tmp_path / "model", "core4", "speaker")
    X = feats.matrix()[:12]
    channels = [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 1]
    files = [[{"channel": c, "start_s": float(i), "end_s": i + 1.0, "features": X[i].tolist(), "shape": [X.shape[1]]}
              for i, c in enumerate(channels) if (i < 6) == first] for first in (True, False)]  # fmt: skip
    batch = pa.table({"path": ["a.wav", "b.wav"], "segments": pa.array(files, pa.list_(SEGMENT_TYPE))})
    out = Predictor(str(model))(batch).column("segments").to_pylist()
    got = np.asarray([s["proba"] for f in out for s in f])
    keys = [f"{'ab'[i >= 6]}{c}" for i, c in enumerate(channels)]
    b = bundle.load(model)
    expected = b.predict_proba(normalisation.speaker_normalise(X, keys).astype(np.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(expected, b.predict_proba(X))  # the normalisation is not a no-op
