"""Audio + text fusion end to end on a corpus in IEMOCAP's layout where each modality alone is informative.

The tree is ``simulate.iemocap_like_tree``: real emotional speech (EmoDB's angry, happy,
sad and neutral takes, two speakers per "session") with transcripts that carry valence
only, so text alone cannot tell angry from sad, audio alone confuses some of each
arousal pair, and a fused model sees both.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from seremo import bundle, manifest, shards, tune, vote
from seremo.cli import main
from seremo.corpora import prepare_corpus
from seremo.simulate import iemocap_like_tree


@pytest.fixture(scope="module")
def iemocap_tree(emodb_wavs, tmp_path_factory) -> Path:
    return iemocap_like_tree(emodb_wavs, tmp_path_factory.mktemp("iemocap"))


@pytest.fixture(scope="module")
def fusion_features(iemocap_tree, ray_session, tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("fusion")
    m = str(root / "iemocap.parquet")
    manifest.write(prepare_corpus("iemocap", iemocap_tree).table, m)
    feats = str(root / "seremo")
    assert main(["extract", m, "--features", "seremo", "--out", feats]) == 0  # its shards carry the transcripts
    return m, feats


def _as_new_recordings(m: str, out: Path) -> str:
    """The manifest's rows under new ids: a stand-in for recordings a bundle trained on these rows never saw
    (``seremo evaluate`` refuses a bundle's own training rows by id)."""
    import pyarrow as pa

    t = manifest.read(m)
    ids = pa.array([f"again/{u}" for u in t.column("utterance_id").to_pylist()], pa.string())
    manifest.write(t.set_column(t.column_names.index("utterance_id"), "utterance_id", ids), str(out))
    return str(out)


def _tune(feats: str, out: Path, inputs: str, models: dict) -> dict:
    settings = tune.settings_from_dict({"inputs": inputs, "models": models, "inner_folds": 2}, "test")
    return tune.tune_run(feats, str(out), settings)


@pytest.mark.slow
def test_fused_model_beats_each_modality_and_runs_through_ensemble_and_evaluate(iemocap_tree, fusion_features,
                                                                                tmp_path, capsys):  # fmt: skip
    m, feats = fusion_features
    table = manifest.read(m)
    n = len(list(iemocap_tree.rglob("*.wav")))
    assert n > 150 and table.num_rows == n and table.column("transcript").null_count == 0
    assert len(set(table.column("group").to_pylist())) == 5  # sessions: leave-one-session-out
    logreg = {"logreg": {"C": [1.0]}}
    uar = {inputs: _tune(feats, tmp_path / inputs, inputs, logreg)["uar"] for inputs in ("audio", "text", "audio+text")}
    assert uar["text"] < 0.6  # words tell valence only: angry/sad and happy/neutral stay confused
    assert uar["audio+text"] > max(uar["audio"], uar["text"]) + 0.05, uar
    # decision-level fusion of the audio run and the text run: the same folds, evaluated without refitting
    assert main(["ensemble", str(tmp_path / "audio"), str(tmp_path / "text"), "--out", str(tmp_path / "late")]) == 0
    late = json.loads((tmp_path / "late" / "metrics.json").read_text())
    assert late["rules"]["weighted"]["uar"] > max(uar["audio"], uar["text"]) and late["bundle"] == "model"
    # its bundle takes audio+text and gives each member its part: the audio run's vectors, the text run's words
    late_bundle = bundle.load(tmp_path / "late" / "model")
    assert late_bundle.meta.inputs == "audio+text" and [m.meta.inputs for m in late_bundle.model.members] == ["audio", "text"]
    feats_table = shards.read_features(feats)
    rows = feats_table.model_input("audio+text", feats)
    alone = [bundle.load(tmp_path / name / "model").predict_proba(feats_table.model_input(name, feats))
             for name in ("audio", "text")]  # fmt: skip
    expected = vote.combine(alone, "weighted", late_bundle.meta.params["weights"])
    assert np.allclose(late_bundle.predict_proba(rows), expected, atol=1e-6)
    assert main(["score", m, "--model", str(tmp_path / "late" / "model"), "--out", str(tmp_path / "late_scored")]) == 0
    late_segments = pq.read_table(tmp_path / "late_scored" / "segments")
    assert late_segments.num_rows == n and pq.read_table(tmp_path / "late_scored" / "errors.parquet").num_rows == 0
    by_id = dict(zip(feats_table.table.column("utterance_id").to_pylist(),
                     np.asarray(late_bundle.classes)[expected.argmax(axis=1)], strict=True))  # fmt: skip
    assert all(by_id[u] == lab for u, lab in zip(late_segments.column("utterance_id").to_pylist(),
                                                 late_segments.column("label").to_pylist(), strict=True))  # fmt: skip
    fused = bundle.load(tmp_path / "audio+text" / "model")
    assert fused.meta.inputs == "audio+text" and fused.meta.feature_set.name == "seremo"
    # a second fused run, another family, on the same folds: a decision-level ensemble of the two
    _tune(feats, tmp_path / "nb", "audio+text", {"naive_bayes": {"alpha": [0.3]}})
    assert main(["ensemble", str(tmp_path / "audio+text"), str(tmp_path / "nb"), "--out", str(tmp_path / "ens")]) == 0
    ens = json.loads((tmp_path / "ens" / "metrics.json").read_text())
    assert {r["model"] for r in ens["members"]} == {"logreg", "naive_bayes"} and ens["n"] == n
    assert bundle.load(tmp_path / "ens" / "model").meta.inputs == "audio+text"
    # evaluate: the fused bundle on its own training manifest is refused (no row is unseen); on the same
    # recordings under new ids (a stand-in for new data) it extracts on the fly and accounts for every row
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "audio+text" / "model"), m, "--out", str(tmp_path / "own")]) == 2
    assert f"all {n} rows are training rows" in capsys.readouterr().err
    again = _as_new_recordings(m, tmp_path / "again.parquet")
    assert main(["evaluate", str(tmp_path / "audio+text" / "model"), again, "--out", str(tmp_path / "eval")]) == 0
    judged = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert judged["n"] + sum(judged["excluded_labels"].values()) == n and judged["overlap"] == {"rows": 0, "of": n}
    # score: the fused bundle on the manifest, row by row; every row is a segment, labelled once
    scored = tmp_path / "scored"
    assert main(["score", m, "--model", str(tmp_path / "audio+text" / "model"), "--out", str(scored)]) == 0
    segments = pq.read_table(scored / "segments")
    assert segments.num_rows == n and sorted(segments.column("utterance_id").to_pylist()) == sorted(
        table.column("utterance_id").to_pylist())
    files = pq.read_table(scored / "files.parquet")
    assert files.num_rows == n and pq.read_table(scored / "errors.parquet").num_rows == 0  # one file per row here
    # the job's labels are the bundle's own predictions on the same rows
    labels = dict(zip(segments.column("utterance_id").to_pylist(), segments.column("label").to_pylist(), strict=True))
    judged_rows = pq.read_table(tmp_path / "eval" / "predictions.parquet")
    agree = np.mean([labels[u.removeprefix("again/")] == p for u, p in zip(judged_rows.column("utterance_id").to_pylist(),
                                                     judged_rows.column("predicted").to_pylist(), strict=True)])  # fmt: skip
    assert agree == 1.0
    # the text-only bundle (tuned on the same shards' transcripts) reads no audio: a CSV manifest whose rows point
    # at no file, with spans on some rows and none on others, an id with leading zeros and a text-only row
    rows = table.slice(0, 6).to_pylist()
    csv_rows = [{"utterance_id": f"00{i}", "path": str(tmp_path / "gone.wav") if i < 5 else "",
                 "start_s": "0.0" if i % 2 else "", "end_s": "1.5" if i % 2 else "", "transcript": r["transcript"]}
                for i, r in enumerate(rows)]  # fmt: skip
    csv = tmp_path / "rows.csv"
    csv.write_text("utterance_id,path,start_s,end_s,transcript\n" + "".join(
        f"{r['utterance_id']},{r['path']},{r['start_s']},{r['end_s']},\"{r['transcript']}\"\n" for r in csv_rows))
    text_scored = tmp_path / "text_scored"
    assert main(["score", str(csv), "--model", str(tmp_path / "text" / "model"), "--out", str(text_scored),
                 "--files-per-task", "1"]) == 0  # fmt: skip
    seg = pq.read_table(text_scored / "segments")
    assert sorted(seg.column("utterance_id").to_pylist()) == [f"00{i}" for i in range(6)]
    assert pq.read_table(text_scored / "errors.parquet").num_rows == 0  # no audio was opened
    assert (text_scored / "report.md").exists() and "nan" not in (text_scored / "report.json").read_text().lower()
    # an audio folder has no transcripts: refused in one line, before any work
    capsys.readouterr()
    assert main(["score", str(iemocap_tree), "--model", str(tmp_path / "audio+text" / "model"),
                 "--out", str(tmp_path / "folder")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "scores a manifest's rows" in err, err
    assert not (tmp_path / "folder").exists()


# --------------------------------------------------------------------------- deep fusion (Ray Train)


@pytest.fixture(scope="module")
def fusion_sequences(fusion_features, tmp_path_factory) -> str:
    """The tree's MFCC frame sequences; their shards carry the transcripts, as every audio set's do."""
    out = tmp_path_factory.mktemp("fusion_seq") / "mfcc_seq"
    assert main(["extract", fusion_features[0], "--features", "mfcc_seq", "--out", str(out)]) == 0
    return str(out)


def test_deep_fusion_learns_each_fold_vocabulary_from_its_training_rows_only(fusion_sequences, monkeypatch, tmp_path):
    """Every TorchTrainer run of a fusion model gets word ids from a vocabulary of its own training rows."""
    from seremo import dataset, fitting, nets, train
    from seremo.settings import TrainSettings

    seen: list[tuple[set, set, int]] = []

    def recording_fit_one(name, data, data_ref, train_idx, val_idx, settings, ray_storage):
        fit_words = {w for i in train_idx for w in nets.tokens(texts[i])}
        seen.append((set(data.vocab[2:]), fit_words, data.in_dim[1]))
        model = nets.build(settings.model, data.in_dim, len(data.classes), **settings.arch)
        model.vocab = data.vocab
        history = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "val_uar": 0.5, "samples_per_s": 1.0, "restarts": 0}]
        return {"model": model.eval(), "history": history, "wall_s": 0.0}

    loaded = dataset.load(fusion_sequences, None, model="fusion_bilstm")
    texts = [t for _, t in loaded.items]
    assert loaded.kind == "sequence+text" and loaded.items[0][0].ndim == 2  # (frames, transcript) pairs
    monkeypatch.setattr(fitting, "fit_one", recording_fit_one)
    train.train_run(fusion_sequences, str(tmp_path / "run"), TrainSettings(model="fusion_bilstm", folds=5, workers=1,
                                                                           text={"min_count": 1}))  # fmt: skip
    assert len(seen) == 6  # five folds and the final fit
    for vocab, fit_words, size in seen:
        assert vocab == fit_words and size == len(vocab) + 2  # exactly the training rows' words (and pad, unknown)


@pytest.mark.slow
def test_deep_fusion_trains_on_ray_train_and_scores_the_manifest_rows(fusion_features, fusion_sequences, tmp_path,
                                                                      capsys):  # fmt: skip
    """fusion_bilstm through train, evaluate and score. Its accuracy on this tree, beside each modality's
    model, is measured by benchmarks/fusion_tree.py (25 epochs, five folds); here it trains briefly."""
    from seremo.settings import TrainSettings
    from seremo.train import train_run

    m, _ = fusion_features
    n = manifest.read(m).num_rows
    arch = {"hidden": 16, "layers": 1, "embed": 8, "text_hidden": 8}
    settings = TrainSettings(model="fusion_bilstm", folds=2, epochs=1, workers=1, batch_size=16,
                             text={"min_count": 1}, arch=arch)  # fmt: skip
    out = tmp_path / "deep"
    metrics = train_run(fusion_sequences, str(out), settings)
    assert metrics["n"] == n and len(metrics["per_fold"]) == 2 and 0 <= metrics["uar"] <= 1
    oof = pq.read_table(out / "predictions.parquet")  # out-of-fold probabilities: ensemble-ready
    assert oof.num_rows == n and sorted(set(oof.column("fold").to_pylist())) == [1, 2]
    fused = bundle.load(out / "model")
    assert fused.meta.inputs == "audio+text" and fused.meta.feature_set.name == "mfcc_seq"
    assert fused.meta.params["in_dim"][1] == len(json.loads((out / "model" / "vocab.json").read_text()))
    # evaluate on the manifest (extracted on the fly) and score its rows: the same labels, every row once
    again = _as_new_recordings(m, tmp_path / "again.parquet")  # its own rows would be refused: no row unseen
    assert main(["evaluate", str(out / "model"), again, "--out", str(tmp_path / "eval")]) == 0
    judged = pq.read_table(tmp_path / "eval" / "predictions.parquet")
    assert judged.num_rows == n
    scored = tmp_path / "scored"
    assert main(["score", m, "--model", str(out / "model"), "--out", str(scored)]) == 0
    segments = pq.read_table(scored / "segments")
    assert segments.num_rows == n and pq.read_table(scored / "errors.parquet").num_rows == 0
    labels = dict(zip(segments.column("utterance_id").to_pylist(), segments.column("label").to_pylist(), strict=True))
    assert all(labels[u.removeprefix("again/")] == p for u, p in zip(judged.column("utterance_id").to_pylist(),
                                                                     judged.column("predicted").to_pylist(), strict=True))  # fmt: skip
    # an audio-only archive (a folder) gives the bundle no transcripts: one line, before any work
    capsys.readouterr()
    assert main(["score", str(Path(m).parent), "--model", str(out / "model"), "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "scores a manifest's rows" in err, err
