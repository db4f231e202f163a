"""Audio + text fusion end to end on a corpus in IEMOCAP's layout where each modality alone is informative.

The audio is real emotional speech (EmoDB's angry, happy, sad and neutral takes,
two speakers per "session"); the transcripts are written so that the words carry
valence only (angry and sad say negative things, happy and neutral do not), while
the voice carries arousal above all. So text alone cannot tell angry from sad,
audio alone confuses some of each arousal pair, and a fused model sees both.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from seremo import bundle, manifest, tune
from seremo.cli import main
from seremo.corpora import prepare_corpus

# EmoDB speaker -> (IEMOCAP session, gender letter); EmoDB emotion letter -> IEMOCAP code
SESSIONS = {"03": (1, "M"), "08": (1, "F"), "09": (2, "F"), "10": (2, "M"), "11": (3, "M"), "13": (3, "F"),
            "12": (4, "M"), "14": (4, "F"), "15": (5, "M"), "16": (5, "F")}  # fmt: skip
CODES = {"W": "ang", "F": "hap", "T": "sad", "N": "neu"}
NEGATIVE = ["I can't stand this any more", "this is terrible", "why does everything go wrong",
            "I hate how this turned out", "it is awful, all of it", "nothing works and I am done"]  # fmt: skip
OTHER = ["that sounds good", "thanks, that is fine", "we can do it tomorrow", "see you then",
         "okay that works for me", "the meeting is at ten"]  # fmt: skip
PER_SPEAKER_AND_CLASS = 4


def _summary(start: float, end: float, uid: str, code: str) -> str:
    return f"[{start:.4f} - {end:.4f}]\t{uid}\t{code}\t[2.5000, 2.5000, 2.5000]\nC-E2:\tNeutral;\t()\n\n"


@pytest.fixture(scope="module")
def iemocap_tree(emodb_wavs, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("iemocap")
    rng = np.random.default_rng(7)
    taken: dict[tuple[str, str], int] = {}
    dialogs: dict[int, list[tuple[str, float, str, str, Path]]] = {}
    for wav in emodb_wavs:
        spk, emo = wav.stem[:2], wav.stem[5]
        if emo not in CODES or taken.get((spk, emo), 0) >= PER_SPEAKER_AND_CLASS:
            continue
        taken[(spk, emo)] = taken.get((spk, emo), 0) + 1
        session, gender = SESSIONS[spk]
        code = CODES[emo]
        pool = NEGATIVE if code in ("ang", "sad") else OTHER
        text = pool[int(rng.integers(len(pool)))]
        dialogs.setdefault(session, []).append((gender, sf.info(str(wav)).duration, code, text, wav))
    for session, utts in dialogs.items():
        dialog = f"Ses{session:02d}F_impro01"
        base = root / f"Session{session}"
        emo, lines, clock = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"], [], 0.0
        counters = {"F": 0, "M": 0}
        for gender, seconds, code, text, wav in utts:
            uid = f"{dialog}_{gender}{counters[gender]:03d}"
            counters[gender] += 1
            emo.append(_summary(clock, clock + seconds, uid, code))
            lines.append(f"{uid} [{clock:08.4f}-{clock + seconds:08.4f}]: {text}")
            target = base / "sentences" / "wav" / dialog / f"{uid}.wav"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(wav, target)
            clock += seconds + 0.5
        (base / "dialog" / "EmoEvaluation").mkdir(parents=True)
        (base / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text("".join(emo))
        (base / "dialog" / "transcriptions").mkdir(parents=True)
        (base / "dialog" / "transcriptions" / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def fusion_features(iemocap_tree, ray_session, tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("fusion")
    m = str(root / "iemocap.parquet")
    manifest.write(prepare_corpus("iemocap", iemocap_tree).table, m)
    feats = str(root / "seremo")
    assert main(["extract", m, "--out", feats]) == 0  # the default audio set; its shards carry the transcripts
    return m, feats


def _tune(feats: str, out: Path, inputs: str, models: dict) -> dict:
    settings = tune.settings_from_dict({"inputs": inputs, "models": models, "inner_folds": 2}, "test")
    return tune.tune_run(feats, str(out), settings)


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
    assert late["rules"]["weighted"]["uar"] > max(uar["audio"], uar["text"]) and late["bundle"] is None
    fused = bundle.load(tmp_path / "audio+text" / "model")
    assert fused.meta.inputs == "audio+text" and fused.meta.feature_set.name == "seremo"
    # a second fused run, another family, on the same folds: a decision-level ensemble of the two
    _tune(feats, tmp_path / "nb", "audio+text", {"naive_bayes": {"alpha": [0.3]}})
    assert main(["ensemble", str(tmp_path / "audio+text"), str(tmp_path / "nb"), "--out", str(tmp_path / "ens")]) == 0
    ens = json.loads((tmp_path / "ens" / "metrics.json").read_text())
    assert {r["model"] for r in ens["members"]} == {"logreg", "naive_bayes"} and ens["n"] == n
    assert bundle.load(tmp_path / "ens" / "model").meta.inputs == "audio+text"
    # evaluate: the fused bundle on the manifest (extracted on the fly; every row accounted for)
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "audio+text" / "model"), m, "--out", str(tmp_path / "eval")]) == 0
    judged = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert judged["n"] + sum(judged["excluded_labels"].values()) == n
    assert judged["uar"] > uar["audio+text"]  # it trained on these rows: better than its nested estimate
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
    agree = np.mean([labels[u] == p for u, p in zip(judged_rows.column("utterance_id").to_pylist(),
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
