"""Cross-corpus protocols: leave-one-corpus-out folds, per-corpus normalisation, test sets, soft votes.

The leakage tests follow the spy-scaler test in test_tune.py: nothing of a held-out
corpus (its labels, or its statistics under a training-only option) reaches a fitted step.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from seremo import bundle, classical, features, measure, normalisation
from seremo.dataset import FeatureTable
from seremo.errors import ConfigError
from seremo.folds import plan_nested
from seremo.selection import nested, pick
from seremo.tune import (
    TuneSettings,
    fit_final,
    outer_units,
    run_config,
    variant_features,
)

# two corpora of 3 speakers each, 20 rows per speaker; corpus B is shifted and scaled (another channel)
CORPUS = np.repeat(["A", "B"], 60)
GROUPS = np.array([f"{c}/s{i // 20}" for i, c in enumerate(CORPUS)])
rng = np.random.default_rng(0)
Y = np.array(["angry", "sad"] * 60)
X = np.column_stack([np.arange(120.0), rng.normal(size=(120, 4)) + (Y == "angry")[:, None]])
X[CORPUS == "B", 1:] = X[CORPUS == "B", 1:] * 3 + 10
DATA = FeatureTable(X=X.astype(np.float32), y=Y, groups=GROUPS, corpus=CORPUS, ids=np.arange(120).astype(str),
                    classes=["angry", "sad"])  # fmt: skip


def loco():
    return plan_nested(outer_units(DATA, TuneSettings(groups="corpus")), None, 2, inner_groups=GROUPS)


def test_leave_one_corpus_out_holds_out_corpora_and_splits_inner_folds_by_speaker():
    outer, inner = loco()
    assert [sorted(set(CORPUS[te])) for _, te in outer] == [["A"], ["B"]]
    for (tr, te), folds in zip(outer, inner, strict=True):
        assert set(CORPUS[tr]).isdisjoint(CORPUS[te])
        for a, b in folds:  # inner folds: whole speakers of the training corpus
            assert set(GROUPS[tr][a]).isdisjoint(GROUPS[tr][b])
    one = replace(DATA, corpus=np.array(["A"] * 120))
    with pytest.raises(ConfigError, match="tune.groups: corpus holds out whole corpora, but the data has one"):
        outer_units(one, TuneSettings(groups="corpus"))


class SpyScaler(StandardScaler):
    seen: list[set] = []

    def fit(self, X, y=None, sample_weight=None):
        SpyScaler.seen.append(set(np.asarray(X)[:, 0].astype(int).tolist()))
        return super().fit(X, y, sample_weight)


def test_no_scaler_fit_sees_a_held_out_corpus(monkeypatch):
    monkeypatch.setattr(classical, "StandardScaler", SpyScaler)
    SpyScaler.seen = []
    outer, inner = loco()
    run_config("logreg", {"C": 1.0}, DATA.X, Y, outer, inner)
    fits = iter(SpyScaler.seen)
    for (tr, te), folds in zip(outer, inner, strict=True):
        held_out = set(te.tolist())
        for a, _b in folds:
            seen = next(fits)
            assert seen == set(tr[a].tolist()) and not seen & held_out
        seen = next(fits)
        assert seen == set(tr.tolist()) and not seen & held_out


@pytest.mark.parametrize("variant", ["raw", "corpus_norm", "speaker_norm"])
def test_held_out_labels_never_reach_a_fit(variant):
    """Shuffling the held-out corpus's labels leaves every prediction on it unchanged."""
    outer, inner = loco()
    Xv, prep = variant_features(variant, DATA)
    ref = run_config("logreg", {"C": 1.0}, Xv, Y, outer, inner, prep=prep)
    for _, te in outer:
        y2 = Y.copy()
        y2[te] = rng.permutation(y2[te])[::-1]
        again = run_config("logreg", {"C": 1.0}, Xv, y2, outer, inner, prep=prep)
        np.testing.assert_array_equal(ref["proba"][te], again["proba"][te])


def test_corpus_statistics_come_from_training_rows_only(monkeypatch):
    """Under corpus_norm, the held-out corpus's audio shifts only its own rows, never a training corpus's."""
    calls = []
    real = normalisation.corpus_normalise

    def spy(X, corpora, fitted=None):
        calls.append(np.asarray(fitted))
        return real(X, corpora, fitted)

    monkeypatch.setattr(normalisation, "corpus_normalise", spy)
    outer, inner = loco()
    Xv, prep = variant_features("corpus_norm", DATA)
    run_config("logreg", {"C": 1.0}, Xv, Y, outer, inner, prep=prep)
    trains = [tr for tr, _ in outer] + [tr[a] for (tr, _), folds in zip(outer, inner, strict=True) for a, _ in folds]
    assert len(calls) == len(trains)
    for fitted in calls:
        assert any(set(fitted.tolist()) == set(t.tolist()) for t in trains)
    # the held-out corpus B moves: training corpus A's normalised rows do not
    tr, te = outer[1]
    X2 = DATA.X.copy()
    X2[te, 1:] += 100
    a = real(DATA.X, CORPUS, tr)
    b = real(X2, CORPUS, tr)
    np.testing.assert_array_equal(a[tr], b[tr])
    # while B, with no training rows, is z-scored by its own (unlabelled) rows
    np.testing.assert_allclose(b[te].mean(axis=0)[1:], 0, atol=1e-9)


def test_per_corpus_normalisation_removes_a_channel_shift():
    outer, inner = loco()
    scores = {}
    for variant in ("raw", "corpus_norm"):
        Xv, prep = variant_features(variant, DATA)
        r = run_config("logreg", {"C": 1.0}, Xv[:, 1:], Y, outer, inner,
                       prep=None if prep is None else (lambda rows, p=prep: p(rows)[:, 1:]))  # fmt: skip
        scores[variant] = measure.uar(Y, r["predicted"])
    assert scores["corpus_norm"] > 0.7 > scores["raw"]


def _trials(outer, inner):
    trials = []
    for i, (fam, params) in enumerate([("logreg", {"C": 0.01}), ("logreg", {"C": 1.0}), ("naive_bayes", {"alpha": 1.0})]):
        r = run_config(fam, params, DATA.X[:, 1:], Y, outer, inner)
        trials.append({"trial": i, "family": fam, "params": json.dumps(params), "status": "ok", "variant": "raw",
                       "loso_uar": measure.uar(Y, r["predicted"]), **r})  # fmt: skip
    return trials


def test_soft_vote_averages_the_top_k_by_inner_score_only():
    outer, inner = plan_nested(GROUPS, None, 2)
    trials = _trials(outer, inner)
    pred, chosen, _ = nested(trials, outer, len(Y), DATA.classes, "top_k", 2)
    for f, (_, te) in enumerate(outer):
        ranked = sorted(trials, key=lambda t: (-t["inner_uar"][f], t["trial"]))[:2]
        assert [m["params"] for m in chosen[f]["members"]] == [json.loads(t["params"]) for t in ranked]
        mean = (ranked[0]["proba"][te] + ranked[1]["proba"][te]) / 2
        assert list(pred[te]) == list(np.asarray(DATA.classes)[mean.argmax(axis=1)])


def test_a_soft_vote_bundle_round_trips_and_a_damaged_member_is_refused(tmp_path):
    outer, inner = plan_nested(GROUPS, None, 2)
    trials = _trials(outer, inner)
    data = replace(DATA, X=DATA.X[:, 1:])
    final = fit_final(trials, data, "raw", "top_k", 2)
    fs = features.get("compact8").describe()
    members = [{k: m[k] for k in ("family", "params", "cv_uar")} for m in final["members"]]
    path = bundle.save_tuned(tmp_path / "model", [m["model"] for m in final["members"]], members, fs,
                             {"corpora": ["A", "B"]}, {"nested_uar": 0.5}, normalisation="speaker")  # fmt: skip
    b = bundle.load(path)
    assert b.meta.model_kind == "ensemble" and b.meta.normalisation == "speaker" and len(b.model.members) == 2
    expected = np.mean([m["model"].predict_proba(data.X) for m in final["members"]], axis=0)
    np.testing.assert_allclose(b.predict_proba(data.X), expected, rtol=1e-6)
    skops = path / "members" / "1" / "model.skops"
    skops.write_bytes(skops.read_bytes()[:-4] + b"0000")
    with pytest.raises(bundle.BundleError, match="checksum") as exc:
        bundle.load(path)
    assert "\n" not in str(exc.value)


def test_settings_name_the_variant_they_ship():
    with pytest.raises(ValueError, match="ship 'corpus_norm' needs corpus_norm: true"):
        TuneSettings(ship="corpus_norm")
    assert TuneSettings(corpus_norm=True, speaker_norm=True).variants == ["raw", "speaker_norm", "corpus_norm"]
    trials = [{"family": f, "trial": i} for i, f in enumerate(["svm", "svm", "logreg", "svm", "xgb", "logreg"])]
    assert [t["trial"] for t in pick(trials, "family_vote")] == [0, 2, 4]  # the best of each family, in rank order
    assert [t["trial"] for t in pick(trials, "top_k", 4)] == [0, 1, 2, 3]
    assert [t["trial"] for t in pick(trials, "best")] == [0]
    # vote_margin: a family whose best is more than the margin below the best family's leaves the vote
    uar = {0: 0.80, 1: 0.79, 2: 0.77, 3: 0.70, 4: 0.70, 5: 0.60}
    assert [t["trial"] for t in pick(trials, "family_vote", margin=0.05, score=lambda t: uar[t["trial"]])] == [0, 2]
    assert [t["trial"] for t in pick(trials, "family_vote", margin=0.1, score=lambda t: uar[t["trial"]])] == [0, 2, 4]
    assert TuneSettings().vote_margin == 0.05 and "within 0.05 of the best family" in TuneSettings().describe_selection()


def test_train_folds_hold_out_corpora_and_validate_on_training_speakers():
    from seremo.folds import plan_validated as train_folds
    from seremo.folds import split_validation
    from seremo.train import TrainSettings

    settings = TrainSettings(model="mlp", groups="corpus", val_fraction=0.34)
    folds = train_folds(GROUPS, settings, CORPUS)
    assert [sorted(set(CORPUS[te])) for _, te in folds] == [["A"], ["B"]]
    for k, (tr, _te) in enumerate(folds):
        fit, val = split_validation(GROUPS, tr, settings.val_fraction, k)
        assert set(CORPUS[fit]) == set(CORPUS[val]) == set(CORPUS[tr])  # validation: training-corpus speakers
        assert set(GROUPS[fit]).isdisjoint(GROUPS[val])
    with pytest.raises(ConfigError, match="train.groups: corpus holds out whole corpora, but the data has one"):
        train_folds(GROUPS[:60], settings, CORPUS[:60])
    with pytest.raises(ConfigError, match="train.folds: 3 folds asked for, but the data has 2 corpora"):
        train_folds(GROUPS, settings.model_copy(update={"folds": 3}).model_validate(
            {**settings.model_dump(), "folds": 3}), CORPUS)  # fmt: skip


def _recorpus(src: str, dst: Path, corpus_of, id_prefix: str = "") -> str:
    """A copy of a features dir whose rows belong to other corpora (a cheap stand-in for a second corpus);
    ``id_prefix`` gives them ids of their own, as another corpus's utterances have (a bundle's training rows
    are known by id, and evaluate judges only the others)."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    shutil.copytree(src, dst)
    for shard in (dst / "shards").glob("*.parquet"):
        t = pq.read_table(shard)
        corpus = pa.array([corpus_of(g) for g in t.column("group").to_pylist()], pa.string())
        t = t.set_column(t.column_names.index("corpus"), "corpus", corpus)
        ids = pa.array([id_prefix + u for u in t.column("utterance_id").to_pylist()], pa.string())
        t = t.set_column(t.column_names.index("utterance_id"), "utterance_id", ids)
        pq.write_table(t.replace_schema_metadata(pq.read_schema(shard).metadata), shard)
    return str(dst)


@pytest.mark.slow
def test_tune_leave_one_corpus_out_with_a_test_set_end_to_end(emodb_features, ray_session, tmp_path):
    from seremo.evaluate import evaluate_bundle
    from seremo.tune import tune_run

    two = _recorpus(emodb_features, tmp_path / "two", lambda g: "emodbA" if g < "emodb/12" else "emodbB")
    held = _recorpus(emodb_features, tmp_path / "held", lambda g: "elsewhere", id_prefix="elsewhere/")
    settings = TuneSettings(class_set="core4", groups="corpus", corpus_norm=True, ship="corpus_norm", inner_folds=2,
                            models={"logreg": {"C": [0.1]}, "naive_bayes": {"alpha": [1.0]}}, test=[held])  # fmt: skip
    m = tune_run(two, str(tmp_path / "run"), settings)
    assert m["protocol"]["outer"] == "leave-one-corpus-out (2 folds)"
    assert [f["held_out"] for f in m["per_fold"]] == [["emodbA"], ["emodbB"]]
    assert set(m["per_corpus"]) == set(m["corpus_normalised"]["per_corpus"]) == {"emodbA", "emodbB"}
    test = m["test"]["held"]
    assert test["n"] == 339 and test["excluded_labels"] == {"bored": 81, "disgust": 46, "fearful": 69}
    # the shipped bundle (corpus_norm) judged by `seremo evaluate`: the figure tune reported for the test set
    b = bundle.load(tmp_path / "run" / "model")
    assert b.meta.normalisation == "corpus" and b.meta.model_kind == "ensemble"
    ev = evaluate_bundle(str(tmp_path / "run" / "model"), held, str(tmp_path / "eval"))
    assert ev["uar"] == pytest.approx(test["corpus_norm"]["uar"], abs=1e-12) and ev["n"] == 339
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Test set `held`" in report and "per-corpus normalisation" in report


def test_a_test_sets_labels_and_audio_never_reach_the_shipped_model():
    """The models are fitted before a test set is read; its labels only score, its audio only normalises itself."""
    from seremo.tune import score_test

    outer, inner = loco()
    trials = _trials(outer, inner)
    for t in trials:
        t["variant"] = "corpus_norm"
    data = replace(DATA, X=DATA.X[:, 1:])
    final = fit_final(trials, data, "corpus_norm", "family_vote")
    test = FeatureTable(X=rng.normal(size=(40, 4)).astype(np.float32) * 5 + 3, y=np.array(["angry", "sad"] * 20),
                        groups=np.repeat(["T/s0", "T/s1"], 20), corpus=np.array(["T"] * 40),
                        ids=np.arange(40).astype(str), classes=DATA.classes)  # fmt: skip
    ref = score_test({"corpus_norm": final}, data, test)["corpus_norm"]
    shuffled = score_test({"corpus_norm": final}, data, replace(test, y=test.y[::-1].copy()))["corpus_norm"]
    # the same predictions (column sums of the confusion matrix), whatever the labels say
    assert np.sum(ref["confusion"], axis=0).tolist() == np.sum(shuffled["confusion"], axis=0).tolist()
    before = [m["model"].predict_proba(data.X[:5]) for m in final["members"]]
    score_test({"corpus_norm": final}, data, replace(test, X=test.X + 100))
    after = [m["model"].predict_proba(data.X[:5]) for m in final["members"]]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_a_rerun_removes_an_earlier_ensemble_bundle_and_nothing_else(tmp_path):
    from seremo import outputs

    outer, inner = plan_nested(GROUPS, None, 2)
    final = fit_final(_trials(outer, inner), replace(DATA, X=DATA.X[:, 1:]), "raw", "family_vote")
    members = [{k: m[k] for k in ("family", "params", "cv_uar")} for m in final["members"]]
    bundle.save_tuned(tmp_path / "model", [m["model"] for m in final["members"]], members,
                      features.get("compact8").describe(), {}, {})  # fmt: skip
    assert (tmp_path / "model" / "members" / "1" / "model.skops").is_file()
    (tmp_path / "model" / "members" / "mine.txt").write_text("not seremo's")
    outputs._remove_run_files(str(tmp_path), ("model",), outputs._earlier_bundle_files(str(tmp_path)))
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "model", "model/members", "model/members/mine.txt"]  # fmt: skip


@pytest.mark.parametrize("how", ["speaker", "corpus"])
def test_item_normalisation_matches_vectors_and_keeps_held_out_frames_out(how):
    """Sequences and images are z-scored over frames like vectors over rows; a held-out corpus's frames
    move only its own items."""
    outer, _ = loco()
    tr, te = outer[1]
    vectors = [x for x in DATA.X[:, 1:]]
    got = np.stack(normalisation.normalise_items(vectors, "vector", how, GROUPS, CORPUS, tr))
    want = normalisation.normalise(DATA.X[:, 1:], how, GROUPS, CORPUS, tr)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    seqs = [rng.normal(size=(5 + i % 7, 3)) * (1 + (c == "B") * 4) + (c == "B") * 10 for i, c in enumerate(CORPUS)]
    images = [s.T for s in seqs]  # (bands, time): statistics per band
    a = normalisation.normalise_items(seqs, "sequence", how, GROUPS, CORPUS, tr)
    b = normalisation.normalise_items(images, "image", how, GROUPS, CORPUS, tr)
    assert all(np.allclose(x, y.T) for x, y in zip(a, b, strict=True))
    moved = [s + 100 if i in set(te.tolist()) else s for i, s in enumerate(seqs)]
    c = normalisation.normalise_items(moved, "sequence", how, GROUPS, CORPUS, tr)
    assert all(np.array_equal(a[i], c[i]) for i in tr)  # training items do not see the held-out corpus
    frames = np.concatenate([a[i] for i in te])
    np.testing.assert_allclose(frames.mean(axis=0), 0, atol=1e-6)  # held out: its own statistics
