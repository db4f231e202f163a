"""The text feature set and classical text / audio+text models, on MELD's real transcripts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from seremo import bundle, classical, dataset, features, manifest, shards, tune
from seremo.cli import main
from seremo.corpora import prepare_corpus
from seremo.errors import ConfigError, SeremoError
from seremo.folds import plan_nested


@pytest.fixture(scope="module")
def meld_dev_split(meld_root: Path, tmp_path_factory) -> tuple[str, str]:
    """MELD dev cut by dialogue into two manifests (dialogues 0-79 / 80-113): a training and a test side."""
    dev = prepare_corpus("meld", meld_root, split="dev").table
    dia = np.array([int(g.rsplit("dia", 1)[1]) for g in dev.column("group").to_pylist()])
    root = tmp_path_factory.mktemp("meld_split")
    paths = []
    for name, mask in (("fit", dia < 80), ("held", dia >= 80)):
        path = root / f"{name}.parquet"
        manifest.write(dev.filter(mask), str(path))
        paths.append(str(path))
    return paths[0], paths[1]


@pytest.fixture(scope="module")
def meld_text(meld_dev_split, ray_session, tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("meld_text")
    out = []
    for path in meld_dev_split:
        feats = root / Path(path).stem
        assert main(["extract", path, "--features", "text", "--out", str(feats)]) == 0
        out.append(str(feats))
    return out[0], out[1]


def test_text_set_carries_cleaned_transcripts_reads_no_audio_and_records_rows_without_one(
    ray_session, tmp_path: Path, capsys
) -> None:
    base = {"corpus": "c", "group": "g1", "speaker": "s1", "label": "happy"}
    rows = [
        {**base, "utterance_id": "u1", "path": None, "transcript": "  So   happy\ttoday! "},
        # an audio row whose file does not exist: the text set must not open it
        {**base, "utterance_id": "u2", "path": str(tmp_path / "absent.wav"), "transcript": "cafe\u0301 time"},
        {**base, "utterance_id": "u3", "path": str(tmp_path / "absent2.wav"), "transcript": None},
    ]
    m = tmp_path / "m.parquet"
    manifest.write(manifest.from_rows(rows), str(m))
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # seremo never touches what it did not write
    for _ in range(2):  # the second run finds the finished extraction and skips it
        assert main(["extract", str(m), "--features", "text", "--out", str(out)]) == 0
    assert (out / "notes.txt").read_text() == "mine"
    feats = shards.read_features(str(out))
    assert feats.kind == "text" and feats.feature_set["name"] == "text"
    got = dict(zip(feats.table.column("utterance_id").to_pylist(), feats.table.column("transcript").to_pylist(),
                   strict=True))  # fmt: skip
    assert got == {"u1": "So happy today!", "u2": "caf\u00e9 time"}  # whitespace collapsed, NFC
    assert all(s == [0] for s in feats.table.column("shape").to_pylist())
    errors = pq.read_table(out / shards.ERRORS).to_pylist()
    assert [(e["utterance_id"], e["error"], e["stage"]) for e in errors] == [("u3", "no_transcript", "extract")]


def test_tfidf_vocabulary_is_fitted_on_training_rows_only(monkeypatch) -> None:
    """Every fit inside the nested protocol (inner and outer) learns its words from its own rows alone."""
    groups = np.repeat([f"g{i}" for i in range(6)], 6)
    y = np.tile(["happy", "sad", "angry"], 12)
    # each group has its own word (twice, so min_df keeps it wherever that group is in the fit)
    X = np.asarray([f"{lab} words token{g} token{g}" for lab, g in zip(y, groups, strict=True)], dtype=object)
    outer, inner = plan_nested(groups, 3, 2)
    fits: list[tuple[set, set]] = []
    real_fit = classical.fit

    def recording_fit(family, params, Xf, yf):
        model = real_fit(family, params, Xf, yf)
        words = model.named_steps["vectorise"].transformer_list[0][1].vocabulary_
        fits.append(({w for t in Xf for w in t.split() if w.startswith("token")}, set(words)))
        return model

    monkeypatch.setattr(classical, "fit", recording_fit)
    result = tune.run_config("logreg", {"C": 1.0}, X, y, outer, inner)
    assert len(fits) == 3 * (2 + 1) and result["proba"].shape == (36, 3)
    for seen, vocab in fits:
        tokens = {w for w in vocab if w.startswith("token") and " " not in w}  # unigrams
        assert tokens == seen and len(seen) < 6  # the held-out groups' words are not in the vocabulary


@pytest.mark.slow
def test_tune_on_text_reports_the_official_split_and_ships_a_text_bundle(meld_text, meld_dev_split, tmp_path: Path,
                                                                        capsys) -> None:  # fmt: skip
    fit_dir, held_dir = meld_text
    settings = tune.settings_from_dict({"outer_folds": 2, "inner_folds": 2, "test": [held_dir],
                                        "models": {"logreg": {"C": [1.0]}, "naive_bayes": {"alpha": [0.3]}}}, "t")  # fmt: skip
    out = tmp_path / "run"
    metrics = tune.tune_run(fit_dir, str(out), settings)
    assert set(metrics["families"]) == {"logreg", "naive_bayes"} and metrics["feature_set"]["name"] == "text"
    held = metrics["test"]["held"]["raw"]
    n_held = pq.read_metadata(next((Path(held_dir) / "shards").glob("*.parquet"))).num_rows  # at least one shard
    assert held["n"] >= n_held and 0 < held["weighted_f1"] <= 1 and 0 < held["uar"] <= 1 and 0 < held["wa"] <= 1
    assert held["uar"] > 1 / len(metrics["classes"])  # words carry emotion: better than chance on unseen dialogues
    model = bundle.load(out / "model")
    assert model.meta.inputs == "text" and model.meta.feature_set.kind == "text"
    feats = shards.read_features(held_dir)
    text = np.asarray(feats.table.column("transcript").to_pylist(), dtype=object)
    proba = model.predict_proba(text)
    assert proba.shape == (len(text), len(model.classes)) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    predictions = pq.read_table(out / "model_predictions.parquet")
    assert predictions.num_rows == pc.count_distinct(predictions.column("utterance_id")).as_py()
    assert json.loads((out / "metrics.json").read_text())["test"]["held"]["raw"]["weighted_f1"] == held["weighted_f1"]
    # seremo score: the text bundle on the held-out manifest (text-only rows), row by row, every row accounted for
    scored = tmp_path / "scored"
    assert main(["score", meld_dev_split[1], "--model", str(out / "model"), "--out", str(scored)]) == 0
    segments = pq.read_table(scored / "segments")
    rows = manifest.read(meld_dev_split[1])
    assert segments.num_rows == rows.num_rows == pq.read_table(scored / "files.parquet").num_rows
    by_id = dict(zip(segments.column("utterance_id").to_pylist(), segments.column("label").to_pylist(), strict=True))
    expected = model.predict(np.asarray([" ".join(t.split()) for t in rows.column("transcript").to_pylist()], object))
    assert [by_id[u] for u in rows.column("utterance_id").to_pylist()] == expected.tolist()
    # a manifest without transcripts cannot be read by a text bundle: one line, nothing written
    no_text = tmp_path / "no_text.parquet"
    pq.write_table(rows.drop_columns(["transcript"]), no_text)
    capsys.readouterr()
    assert main(["score", str(no_text), "--model", str(out / "model"), "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no `transcript` column" in err, err
    assert not (tmp_path / "none").exists()


def test_text_inputs_are_refused_in_one_line_where_they_cannot_be_made(meld_text, emodb_manifest, tmp_path) -> None:
    table = manifest.read(emodb_manifest).slice(0, 12)
    table = table.set_column(table.column_names.index("transcript"), "transcript", pa.nulls(12, pa.string()))
    manifest.write(table, str(tmp_path / "m.parquet"))
    assert main(["extract", str(tmp_path / "m.parquet"), "--features", "compact8", "--out", str(tmp_path / "f")]) == 0
    with pytest.raises(SeremoError, match=r"12 of 12 rows have no transcript .*inputs 'text' needs one on every row"):
        dataset.load(str(tmp_path / "f"), None, inputs="text")
    with pytest.raises(ConfigError, match="the text feature set holds no audio features"):
        dataset.load(meld_text[0], None, inputs="audio+text")
    with pytest.raises(ConfigError, match="speaker_norm and corpus_norm normalise audio vectors"):
        tune.tune_run(meld_text[0], "/nonexistent/never-written",
                      tune.settings_from_dict({"speaker_norm": True}, "t"))  # fmt: skip


def test_fusion_pipeline_takes_audio_and_text_and_round_trips_as_a_bundle(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.tile(["angry", "happy", "sad"], 20)
    audio = rng.normal(size=(60, 5)).astype(np.float32) + (y == "angry")[:, None] * 2.0  # audio tells angry apart
    text = np.asarray(["so happy" if lab == "happy" else "so sad" if lab == "sad" else "well then" for lab in y],
                      dtype=object)  # text tells happy from sad  # fmt: skip
    X = classical.fusion_input(audio, text)
    assert classical.inputs_of(X) == "audio+text" and classical.inputs_of(text) == "text"
    model = classical.fit("logreg", {"C": 1.0}, X, y)
    assert np.mean(model.predict(X) == y) == 1.0  # neither modality alone separates all three classes
    for fam in ("logreg", "naive_bayes"):
        fitted = classical.fit(fam, {"C": 1.0} if fam == "logreg" else {"alpha": 0.1}, X, y)
        fs = features.get("seremo").describe()
        path = bundle.save_tuned(tmp_path / fam, [fitted], [{"family": fam, "params": {}, "cv_uar": 0.5}], fs,
                                 {}, {}, inputs="audio+text")  # fmt: skip
        loaded = bundle.load(path)
        assert loaded.meta.inputs == "audio+text"
        # vocabularies are saved with plain ints: numpy scalars made skops write one file per term (an hour for MELD)
        vectoriser = loaded.model.pipeline.named_steps["blocks"].named_transformers_["text"].transformer_list[0][1]
        assert vectoriser.vocabulary_ and all(type(i) is int for i in vectoriser.vocabulary_.values())
        assert np.allclose(loaded.predict_proba(X), fitted.predict_proba(X))


# --------------------------------------------------------------------------- the text BiLSTM (Ray Train)


def test_text_bilstm_learns_each_fold_vocabulary_from_its_training_rows_only(meld_text, monkeypatch, tmp_path):
    """Every TorchTrainer run (folds and final fit) gets word ids from a vocabulary of its own training rows."""
    from seremo import fitting, nets, train
    from seremo.settings import TrainSettings

    seen: list[tuple[set, set]] = []

    def recording_fit_one(name, data, data_ref, train_idx, val_idx, settings, ray_storage):
        fit_words = {w for i in train_idx for w in nets.tokens(texts[i])}
        seen.append((set(data.vocab[2:]), fit_words))
        model = nets.build(settings.model, data.in_dim, len(data.classes), **settings.arch)
        model.vocab = data.vocab
        history = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "val_uar": 0.5, "samples_per_s": 1.0, "restarts": 0}]
        return {"model": model.eval(), "history": history, "wall_s": 0.0}

    texts = dataset.load(meld_text[0], None, model="text_bilstm").items
    monkeypatch.setattr(fitting, "fit_one", recording_fit_one)
    settings = TrainSettings(model="text_bilstm", folds=3, workers=1, text={"min_count": 1})
    train.train_run(meld_text[0], str(tmp_path / "run"), settings)
    assert len(seen) == 4  # three folds and the final fit
    for vocab, fit_words in seen:
        assert vocab == fit_words  # min_count 1: exactly the training rows' words, none of the held-out rows' only
    assert len({frozenset(v) for v, _ in seen}) == 4  # each run its own vocabulary


@pytest.mark.slow
def test_text_bilstm_trains_on_ray_train_and_its_bundle_reads_transcripts(meld_text, tmp_path: Path) -> None:
    from seremo.settings import TrainSettings
    from seremo.train import train_run

    vectors = tmp_path / "vectors.txt"  # pretrained vectors in GloVe's format, for a few common words
    vectors.write_text("".join(f"{w} {' '.join(['0.5'] * 8)}\n" for w in ("you", "i", "the", "what", "oh")))
    settings = TrainSettings(model="text_bilstm", folds=2, epochs=1, batch_size=32, workers=1, test=[meld_text[1]],
                             arch={"embed": 8, "hidden": 8}, text={"vectors": str(vectors)})  # fmt: skip
    out = tmp_path / "run"
    metrics = train_run(meld_text[0], str(out), settings)
    assert len(metrics["per_fold"]) == 2 and metrics["feature_set"]["name"] == "text"
    held = metrics["test"]["held"]
    assert held["n"] > 0 and 0 <= held["weighted_f1"] <= 1 and 0 <= held["uar"] <= 1
    model = bundle.load(out / "model")
    assert model.meta.inputs == "text" and "vocab.json" in model.meta.files
    transcripts = shards.read_features(meld_text[1]).table.column("transcript").to_pylist()
    proba = model.predict_proba(np.asarray(transcripts, dtype=object))
    assert proba.shape == (len(transcripts), len(model.classes)) and np.allclose(proba.sum(axis=1), 1, atol=1e-4)
    oof = pq.read_table(out / "predictions.parquet")
    assert sorted(set(oof.column("fold").to_pylist())) == [1, 2]
    vocab = out / "model" / "vocab.json"  # the words are part of the bundle: an edit is refused in one line
    vocab.write_text(vocab.read_text().replace('"you"', '"yoo"'))
    with pytest.raises(bundle.BundleError, match="vocab.json: does not match its checksum"):
        bundle.load(out / "model")
