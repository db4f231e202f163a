"""Leakage and honesty: one clip is one utterance, a bundle knows its training rows, a member counts once."""

from __future__ import annotations

import json
import logging
import shutil
import wave
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from sklearn.metrics import balanced_accuracy_score

from seremo import bundle, classical, features, measure, shards
from seremo.cli import main
from seremo.folds import group_folds

TRAIN_SPEAKERS = {"emodb/03", "emodb/08", "emodb/09", "emodb/10", "emodb/11"}


def _wav(path: Path, seconds: float = 0.5, sr: int = 16000) -> Path:
    """A short tone: real audio whose header prepare reads, without any corpus."""
    y = (np.sin(np.arange(int(seconds * sr)) * 0.05) * 8000).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(sr), w.writeframes(y.tobytes())
    return path


def test_one_clip_under_several_ids_is_refused_when_the_copies_disagree(tmp_path, capsys, caplog):
    _wav(tmp_path / "a.wav"), _wav(tmp_path / "b.wav", seconds=2.0)
    csv = tmp_path / "m.csv"
    head = "utterance_id,path,speaker,label,start_s,end_s\n"
    segments = "s1,b.wav,spk3,sad,0,1\ns2,b.wav,spk3,angry,1,2\n"  # one long file: two spans, two utterances
    # the defect: one clip, two ids, two speakers and two labels was accepted without a word
    csv.write_text(head + "x1,a.wav,spk1,angry,,\nx2,./a.wav,spk2,sad,,\n" + segments)
    assert main(["prepare", "csv", str(csv), "--out", str(tmp_path / "m.parquet")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 audio clip(s) appear under several utterance_ids" in err[0]
    assert "'x1'" in err[0] and "'x2'" in err[0] and "both sides of a fold" in err[0]
    assert not (tmp_path / "m.parquet").exists()
    # copies that agree (a corpus listing a clip twice) are kept, with a warning that counts them
    csv.write_text(head + "x1,a.wav,spk1,angry,,\nx2,a.wav,spk1,angry,0,\n" + segments)
    with caplog.at_level(logging.WARNING, logger="seremo.manifest"):
        assert main(["prepare", "csv", str(csv), "--out", str(tmp_path / "m.parquet")]) == 0
    warned = [r.getMessage() for r in caplog.records if "under several utterance_ids" in r.getMessage()]
    assert warned and "1 audio clip(s)" in warned[0] and "same speaker, group and label" in warned[0]


def test_evaluate_on_the_very_features_a_bundle_was_tuned_on_is_refused(small_run, emodb_features, tmp_path, capsys):
    # the bundle carries its training rows, hashed, listed and checksummed like its weights
    b = bundle.load(small_run / "model")
    ids = shards.read_features(emodb_features).table.column("utterance_id").to_pylist()
    assert bundle.TRAINING_IDS in b.meta.files and b.training_ids() == {bundle.id_hash(u) for u in ids}
    # the defect: `seremo evaluate RUN/model FEATS` printed UAR 1.000 as the figure on unseen data
    out = tmp_path / "eval"
    assert main(["evaluate", str(small_run / "model"), emodb_features, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "all 535 rows are training rows" in err[0] and "never saw" in err[0]
    assert not (out / "metrics.json").exists()


def _speaker_bundle(feats: shards.Features, out: Path, record_ids: bool) -> tuple[Path, np.ndarray]:
    """A logistic regression fitted on five EmoDB speakers (no Ray); which rows it trained on."""
    t = feats.table
    train = np.isin(np.asarray(t.column("group").to_pylist()), list(TRAIN_SPEAKERS))
    ids = np.asarray(t.column("utterance_id").to_pylist())
    model = classical.fit("logreg", {"C": 0.1}, feats.matrix()[train].astype(np.float32),
                          np.asarray(t.column("label").to_pylist())[train])  # fmt: skip
    bundle.save_tuned(out, [model], [{"family": "logreg", "params": {"C": 0.1}, "cv_uar": 0.0}], feats.feature_set,
                      {"corpora": ["emodb"], "utterances": int(train.sum())}, {},
                      training_ids=ids[train].tolist() if record_ids else None)  # fmt: skip
    return out, train


def test_evaluate_scores_only_the_unseen_rows_and_says_how_many_it_left_out(emodb_features, tmp_path, capsys):
    feats = shards.read_features(emodb_features)
    model, train = _speaker_bundle(feats, tmp_path / "model", record_ids=True)
    out = tmp_path / "eval"
    assert main(["evaluate", str(model), emodb_features, "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    seen = int(train.sum())
    assert m["overlap"] == {"rows": seen, "of": 535} and m["n"] == 535 - seen
    b = bundle.load(model)
    y = np.asarray(feats.table.column("label").to_pylist())[~train]
    pred = np.asarray(b.classes)[b.predict_proba(feats.matrix()[~train].astype(np.float32)).argmax(axis=1)]
    assert m["uar"] == balanced_accuracy_score(y, pred)  # the headline is the unseen speakers' alone
    assert f"{seen} of 535 rows are training rows of the bundle" in capsys.readouterr().out
    preds = pq.read_table(out / "predictions.parquet").to_pandas()
    assert len(preds) == 535 and int(preds["training_row"].sum()) == seen
    assert f"{seen} of 535 rows were training rows" in (out / "report.md").read_text()
    # a bundle from before training_ids.json: judged on every row, and metrics.json says nobody knows
    old, _ = _speaker_bundle(feats, tmp_path / "old", record_ids=False)
    assert bundle.TRAINING_IDS not in bundle.load(old).meta.files
    assert main(["evaluate", str(old), emodb_features, "--out", str(tmp_path / "eval_old")]) == 0
    m = json.loads((tmp_path / "eval_old" / "metrics.json").read_text())
    assert m["n"] == 535 and m["overlap"]["rows"] is None and "training rows unknown" in m["overlap"]["note"]
    assert "training rows unknown" in capsys.readouterr().out


def _run(root: Path, name: str, C: float) -> Path:
    """A run dir as tune leaves it (out-of-fold predictions, a bundle with its training rows), on synthetic rows."""
    rng = np.random.default_rng(0)
    y = np.tile(["angry", "happy", "sad"], 24)
    groups, ids = np.repeat([f"spk{i}" for i in range(6)], 12), np.asarray([f"u{i:03d}" for i in range(72)])
    X = rng.normal(size=(72, 4)).astype(np.float32) + (y == "angry")[:, None]
    folds = group_folds(groups, 3)
    proba = np.zeros((72, 3), np.float32)
    for tr, te in folds:
        proba[te] = classical.fit("logreg", {"C": C}, X[tr], y[tr]).predict_proba(X[te])
    run = root / name
    run.mkdir()
    pq.write_table(measure.oof_table(ids, groups, y, np.asarray(sorted(set(y)))[proba.argmax(axis=1)], folds, proba,
                                      sorted(set(y))), run / measure.PREDICTIONS)  # fmt: skip
    bundle.save_tuned(run / "model", [classical.fit("logreg", {"C": C}, X, y)],
                      [{"family": "logreg", "params": {"C": C}, "cv_uar": 0.5}], features.get("compact8").describe(),
                      {"corpora": ["synthetic"]}, {}, training_ids=ids.tolist())  # fmt: skip
    return run


def test_an_ensemble_refuses_one_member_given_twice(tmp_path, capsys):
    a, b = _run(tmp_path, "a", 1.0), _run(tmp_path, "b", 0.1)
    copy = Path(shutil.copytree(a, tmp_path / "copy_of_a"))
    out = tmp_path / "ens"
    # the defect: `seremo ensemble A A` counted one model as two members, weights 0.5/0.5
    for twice, needle in [([str(a), f"{tmp_path}/./a/"], "given twice"), ([str(a), str(copy)], "holds the same model")]:
        assert main(["ensemble", *twice, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0]
        assert not out.exists()  # refused before --out was touched
    # two distinct members: the ensemble bundle's training rows are its members'
    assert main(["ensemble", str(a), str(b), "--out", str(out)]) == 0
    ens = bundle.load(out / "model")
    assert ens.training_ids() == bundle.load(a / "model").training_ids() == {bundle.id_hash(f"u{i:03d}") for i in range(72)}
