"""Corpus loaders on small trees built with each corpus's documented names and layout."""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from seremo.corpora import prepare_corpus
from seremo.errors import ConfigError, CorpusError

SR = 16000
_rng = np.random.default_rng(0)


def wav(path: Path, seconds: float = 0.2, sr: int = SR) -> Path:
    """A tiny valid WAV of low noise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(
        path,
        (_rng.standard_normal(int(seconds * sr)) * 0.01).astype(np.float32),
        sr,
        subtype="PCM_16",
    )
    return path


def by_id(t: pa.Table) -> dict[str, dict]:
    return {r["utterance_id"]: r for r in t.to_pylist()}


# --------------------------------------------------------------------------- EmoDB (real data)


def test_emodb_real_corpus(emodb_root: Path) -> None:
    p = prepare_corpus("emodb", emodb_root)
    t = p.table
    assert t.num_rows == 535
    assert len(set(t.column("speaker").to_pylist())) == 10
    assert Counter(t.column("label").to_pylist()) == {
        "angry": 127, "bored": 81, "disgust": 46, "fearful": 69, "happy": 71, "neutral": 79, "sad": 62,
    }  # fmt: skip
    assert p.errors.num_rows == 0
    assert all(d > 0 for d in t.column("duration_s").to_pylist())


# --------------------------------------------------------------------------- RAVDESS


def _ravdess(root: Path) -> None:
    wav(root / "Actor_01" / "03-01-01-01-01-01-01.wav")
    wav(root / "Actor_01" / "03-01-05-02-02-01-01.wav")
    wav(root / "Actor_02" / "03-01-08-02-01-02-02.wav")
    wav(root / "Actor_02" / "03-01-02-01-02-02-02.wav")
    wav(root / "Actor_01" / "03-02-03-01-01-01-01.wav")  # song
    wav(root / "Actor_02" / "03-02-04-01-01-01-02.wav")  # song
    for name in ("01-01-05-01-01-01-01.mp4", "02-01-05-01-01-01-01.mp4"):  # video
        (root / "Actor_01" / name).write_bytes(b"not decoded: skipped by name")


def test_ravdess(tmp_path: Path) -> None:
    _ravdess(tmp_path)
    p = prepare_corpus("ravdess", tmp_path)
    rows = by_id(p.table)
    assert sorted(rows) == [
        "ravdess/03-01-01-01-01-01-01",
        "ravdess/03-01-02-01-02-02-02",
        "ravdess/03-01-05-02-02-01-01",
        "ravdess/03-01-08-02-01-02-02",
    ]
    r = rows["ravdess/03-01-05-02-02-01-01"]
    assert (r["label"], r["source_label"], r["speaker"], r["group"], r["gender"]) == (
        "angry", "05", "ravdess/01", "ravdess/01", "m",
    )  # fmt: skip
    assert r["transcript"] == "Dogs are sitting by the door"
    r = rows["ravdess/03-01-08-02-01-02-02"]
    assert (r["label"], r["speaker"], r["gender"]) == ("surprised", "ravdess/02", "f")
    assert r["transcript"] == "Kids are talking by the door"
    assert rows["ravdess/03-01-02-01-02-02-02"]["label"] == "calm"
    assert p.skipped == {"song (vocal channel 02)": 2, "video (modality 01/02)": 2}
    assert p.errors.num_rows == 0
    assert rows["ravdess/03-01-01-01-01-01-01"]["duration_s"] == pytest.approx(0.2)


def test_ravdess_bad_emotion_code(tmp_path: Path) -> None:
    _ravdess(tmp_path)
    wav(tmp_path / "Actor_03" / "03-01-09-01-01-01-03.wav")
    with pytest.raises(
        CorpusError, match=r"03-01-09-01-01-01-03\.wav: unknown RAVDESS emotion code '09'"
    ):
        prepare_corpus("ravdess", tmp_path)


def test_ravdess_bad_name(tmp_path: Path) -> None:
    _ravdess(tmp_path)
    wav(tmp_path / "Actor_03" / "03-01-01-01.wav")
    with pytest.raises(CorpusError, match=r"03-01-01-01\.wav: does not follow RAVDESS naming"):
        prepare_corpus("ravdess", tmp_path)


def test_ravdess_song_only(tmp_path: Path) -> None:
    wav(tmp_path / "Actor_01" / "03-02-01-01-01-01-01.wav")
    with pytest.raises(CorpusError, match=r"holds only RAVDESS song/video files \(1 left out\)"):
        prepare_corpus("ravdess", tmp_path)


# --------------------------------------------------------------------------- CREMA-D


def _cremad(root: Path, demographics: bool = True) -> None:
    for name in ("1001_DFA_ANG_XX", "1001_IEO_HAP_HI", "1002_TSI_NEU_XX", "1091_WSI_FEA_LO"):
        wav(root / "AudioWAV" / f"{name}.wav")
    if demographics:
        (root / "VideoDemographics.csv").write_text(
            "ActorID,Age,Sex,Race,Ethnicity\n"
            "1001,51,Male,Caucasian,Not Hispanic\n"
            "1002,21,Female,Caucasian,Not Hispanic\n"
            "1091,29,Female,Asian,Not Hispanic\n"
        )


def test_cremad(tmp_path: Path) -> None:
    _cremad(tmp_path)
    rows = by_id(prepare_corpus("cremad", tmp_path).table)
    assert len(rows) == 4
    r = rows["cremad/1001_DFA_ANG_XX"]
    assert (r["label"], r["source_label"], r["speaker"], r["group"], r["gender"]) == (
        "angry", "ANG", "cremad/1001", "cremad/1001", "m",
    )  # fmt: skip
    assert r["transcript"] == "Don't forget a jacket"
    assert rows["cremad/1001_IEO_HAP_HI"]["transcript"] == "It's eleven o'clock"
    assert rows["cremad/1002_TSI_NEU_XX"]["gender"] == "f"
    assert rows["cremad/1091_WSI_FEA_LO"]["label"] == "fearful"
    assert rows["cremad/1091_WSI_FEA_LO"]["transcript"] == "We'll stop in a couple of minutes"


def test_cremad_without_demographics(tmp_path: Path) -> None:
    _cremad(tmp_path, demographics=False)
    t = prepare_corpus("cremad", tmp_path).table
    assert t.column("gender").null_count == t.num_rows == 4


@pytest.mark.parametrize(
    "name, message",
    [
        ("1003_XYZ_ANG_XX", "unknown CREMA-D sentence code 'XYZ'"),
        ("1003_DFA_JOY_XX", "unknown CREMA-D emotion code 'JOY'"),
        ("1003-DFA-ANG-XX", "does not follow CREMA-D naming"),
    ],
)
def test_cremad_malformed(tmp_path: Path, name: str, message: str) -> None:
    _cremad(tmp_path, demographics=False)
    wav(tmp_path / "AudioWAV" / f"{name}.wav")
    with pytest.raises(CorpusError, match=rf"{name}\.wav: {message}"):
        prepare_corpus("cremad", tmp_path)


def test_cremad_actor_missing_from_demographics(tmp_path: Path) -> None:
    _cremad(tmp_path)
    wav(tmp_path / "AudioWAV" / "1050_ITS_SAD_XX.wav")
    with pytest.raises(CorpusError, match=r"VideoDemographics\.csv: has no row for actor 1050"):
        prepare_corpus("cremad", tmp_path)


# --------------------------------------------------------------------------- SAVEE


def test_savee_both_layouts(tmp_path: Path) -> None:
    for name in ("a01", "sa01", "su15", "n30"):
        wav(tmp_path / "AudioData" / "DC" / f"{name}.wav")
    (tmp_path / "AudioData" / "info.txt").write_text("SAVEE database\n")
    for name in ("KL_d03", "KL_sa02", "JE_su01", "JK_f10", "JK_h01"):
        wav(tmp_path / "ALL" / f"{name}.wav")
    rows = by_id(prepare_corpus("savee", tmp_path).table)
    assert len(rows) == 9
    assert rows["savee/DC_sa01"]["label"] == "sad"
    assert rows["savee/DC_su15"]["label"] == "surprised"
    assert rows["savee/DC_a01"]["label"] == "angry"
    assert rows["savee/DC_n30"]["label"] == "neutral"
    assert rows["savee/KL_sa02"]["label"] == "sad"
    assert rows["savee/JE_su01"]["label"] == "surprised"
    assert rows["savee/JK_f10"]["label"] == "fearful"
    r = rows["savee/KL_d03"]
    assert (r["label"], r["source_label"], r["speaker"], r["group"], r["gender"]) == (
        "disgust", "d", "savee/KL", "savee/KL", "m",
    )  # fmt: skip
    assert set(Counter(r["speaker"] for r in rows.values())) == {
        "savee/DC", "savee/KL", "savee/JE", "savee/JK",
    }  # fmt: skip


def test_savee_unknown_code(tmp_path: Path) -> None:
    wav(tmp_path / "AudioData" / "DC" / "a01.wav")
    wav(tmp_path / "AudioData" / "DC" / "sx01.wav")
    with pytest.raises(CorpusError, match=r"sx01\.wav: unknown SAVEE emotion code 'sx'"):
        prepare_corpus("savee", tmp_path)


def test_savee_unknown_speaker(tmp_path: Path) -> None:
    wav(tmp_path / "AudioData" / "DC" / "a01.wav")
    wav(tmp_path / "AudioData" / "ZZ" / "a01.wav")
    with pytest.raises(CorpusError, match=r"ZZ.a01\.wav: unknown SAVEE speaker from folder 'ZZ'"):
        prepare_corpus("savee", tmp_path)


# --------------------------------------------------------------------------- TESS


def _tess(root: Path) -> None:
    wav(root / "OAF_angry" / "OAF_back_angry.wav")
    wav(root / "OAF_Fear" / "OAF_back_fear.wav")
    wav(root / "OAF_Pleasant_surprise" / "OAF_dog_ps.wav")
    wav(root / "YAF_pleasant_surprised" / "YAF_dog_ps.wav")
    wav(root / "YAF_neutral" / "YAF_chain_neutral.wav")
    wav(root / "YAF_disgust" / "YAF_back_disgust.wav")
    wav(root / "OAF_Sad" / "OAF_bath_sad.wav")
    wav(root / "OAF_happy" / "OAF_bath_happy.wav")


def test_tess(tmp_path: Path) -> None:
    _tess(tmp_path)
    rows = by_id(prepare_corpus("tess", tmp_path).table)
    assert len(rows) == 8
    r = rows["tess/YAF_dog_ps"]
    assert (r["label"], r["source_label"], r["speaker"], r["group"], r["gender"]) == (
        "surprised", "ps", "tess/YAF", "tess/YAF", "f",
    )  # fmt: skip
    assert r["transcript"] == "Say the word dog"
    assert rows["tess/OAF_back_fear"]["label"] == "fearful"
    assert rows["tess/OAF_back_fear"]["speaker"] == "tess/OAF"
    assert Counter(prepare_corpus("tess", tmp_path, class_set="tess7").table.column("label").to_pylist()) == {
        "angry": 1, "fearful": 1, "surprised": 2, "neutral": 1, "disgust": 1, "sad": 1, "happy": 1,
    }  # fmt: skip


def test_tess_unknown_emotion(tmp_path: Path) -> None:
    _tess(tmp_path)
    wav(tmp_path / "OAF_bored" / "OAF_back_bored.wav")
    with pytest.raises(CorpusError, match=r"OAF_back_bored\.wav: unknown TESS emotion 'bored'"):
        prepare_corpus("tess", tmp_path)


def test_tess_second_copy(tmp_path: Path) -> None:
    _tess(tmp_path)
    _tess(tmp_path / "TESS Toronto emotional speech set data")
    with pytest.raises(CorpusError, match=r"\.wav: is the same TESS utterance as"):
        prepare_corpus("tess", tmp_path)


# --------------------------------------------------------------------------- IEMOCAP

EMO_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def _summary(start: float, end: float, uid: str, code: str) -> str:
    return (
        f"[{start:.4f} - {end:.4f}]\t{uid}\t{code}\t[2.5000, 2.5000, 2.5000]\n"
        "C-E2:\tNeutral;\t()\n"
        "C-E3:\tNeutral;\tFrustration;\t()\n"
        "C-F1:\tNeutral;\t(curious)\n"
        "A-E3:\tval 3; act 2; dom  2;\t()\n"
        "A-F1:\tval 3; act 2; dom  1;\t(mildly aggravated but staying polite)\n"
        "\n"
    )


# dialog -> [(utterance, start, end, code, text)]
IEMOCAP = {
    "Ses01F_impro01": [
        ("Ses01F_impro01_F000", 6.2901, 8.2357, "neu", "Excuse me."),
        ("Ses01F_impro01_M000", 8.5000, 9.1000, "exc", "Yeah."),
        ("Ses01F_impro01_F001", 9.2000, 9.9000, "xxx", "Is there a problem?"),
        ("Ses01F_impro01_M001", 10.0100, 11.3925, "fru", "Do you have your forms?"),
    ],
    "Ses01M_script01_1": [
        ("Ses01M_script01_1_M000", 1.0000, 2.0000, "ang", "What?"),
        ("Ses01M_script01_1_F000", 2.1000, 3.0000, "oth", "Nothing."),
    ],
    "Ses02F_impro02": [
        ("Ses02F_impro02_F000", 0.5000, 1.5000, "hap", "Great news."),
        ("Ses02F_impro02_M000", 1.6000, 2.4000, "sad", "I know."),
    ],
}


def _iemocap(root: Path) -> None:
    for dialog, utts in IEMOCAP.items():
        session = root / f"Session{int(dialog[3:5])}"
        emo = EMO_HEADER + "".join(_summary(s, e, u, c) for u, s, e, c, _ in utts)
        (session / "dialog" / "EmoEvaluation").mkdir(parents=True, exist_ok=True)
        (session / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text(emo)
        (session / "dialog" / "EmoEvaluation" / "Categorical").mkdir(exist_ok=True)
        (session / "dialog" / "EmoEvaluation" / "Categorical" / f"{dialog}_e2_cat.txt").write_text(
            f"{utts[0][0]} :Neutral state; ()\n"
        )
        lines = [f"{u} [{s:08.4f}-{e:08.4f}]: {text}" for u, s, e, _, text in utts]
        gender = dialog[5]
        lines.insert(1, f"{dialog}_{gender}XX0 [005.0000-005.5000]: [LAUGHTER]")
        (session / "dialog" / "transcriptions").mkdir(parents=True, exist_ok=True)
        (session / "dialog" / "transcriptions" / f"{dialog}.txt").write_text(
            "\n".join(lines) + "\n"
        )
        wav(session / "dialog" / "wav" / f"{dialog}.wav", seconds=12.0, sr=8000)
        for u, *_ in utts:
            wav(session / "sentences" / "wav" / dialog / f"{u}.wav", seconds=0.1)


def test_iemocap_sentences(tmp_path: Path) -> None:
    _iemocap(tmp_path)
    p = prepare_corpus("iemocap", tmp_path)
    rows = by_id(p.table)
    assert len(rows) == 8 and p.errors.num_rows == 0
    r = rows["iemocap/Ses01F_impro01_F000"]
    assert r["path"] == str(
        tmp_path / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_F000.wav"
    )
    assert (r["label"], r["source_label"], r["speaker"], r["group"], r["gender"]) == (
        "neutral", "neu", "iemocap/Ses01F", "iemocap/Session1", "f",
    )  # fmt: skip
    assert r["start_s"] is None and r["end_s"] is None
    assert r["duration_s"] == pytest.approx(8.2357 - 6.2901)
    assert r["transcript"] == "Excuse me."
    r = rows["iemocap/Ses01F_impro01_M001"]
    assert (r["label"], r["speaker"], r["gender"]) == ("frustrated", "iemocap/Ses01M", "m")
    assert r["transcript"] == "Do you have your forms?"
    # the male actor of session 1 leads script01_1 but his partner is still Ses01F
    assert rows["iemocap/Ses01M_script01_1_F000"]["speaker"] == "iemocap/Ses01F"
    assert rows["iemocap/Ses02F_impro02_M000"]["group"] == "iemocap/Session2"
    for uid, code in (("Ses01F_impro01_F001", "xxx"), ("Ses01M_script01_1_F000", "oth")):
        assert rows[f"iemocap/{uid}"]["label"] is None
        assert rows[f"iemocap/{uid}"]["source_label"] == code
    assert rows["iemocap/Ses01F_impro01_M000"]["label"] == "excited"


def test_iemocap_dialog_source(tmp_path: Path) -> None:
    _iemocap(tmp_path)
    p = prepare_corpus("iemocap", tmp_path, source="dialog")
    rows = by_id(p.table)
    assert len(rows) == 8 and p.errors.num_rows == 0
    r = rows["iemocap/Ses01F_impro01_M001"]
    assert r["path"] == str(tmp_path / "Session1" / "dialog" / "wav" / "Ses01F_impro01.wav")
    assert (r["start_s"], r["end_s"]) == (pytest.approx(10.01), pytest.approx(11.3925))
    assert r["duration_s"] == pytest.approx(11.3925 - 10.01)
    assert r["group"] == "iemocap/Session1"


def test_iemocap_class_set(tmp_path: Path) -> None:
    _iemocap(tmp_path)
    p = prepare_corpus("iemocap", tmp_path, class_set="iemocap4")
    rows = by_id(p.table)
    assert {k: v["label"] for k, v in rows.items()} == {
        "iemocap/Ses01F_impro01_F000": "neutral",
        "iemocap/Ses01F_impro01_M000": "happy",  # exc merged into happy
        "iemocap/Ses01M_script01_1_M000": "angry",
        "iemocap/Ses02F_impro02_F000": "happy",
        "iemocap/Ses02F_impro02_M000": "sad",
    }
    assert p.excluded == {None: 2, "frustrated": 1}


def test_iemocap_unknown_code(tmp_path: Path) -> None:
    _iemocap(tmp_path)
    emo = tmp_path / "Session2" / "dialog" / "EmoEvaluation" / "Ses02F_impro02.txt"
    emo.write_text(emo.read_text().replace("\tsad\t", "\tbor\t"))
    with pytest.raises(
        CorpusError, match=r"Ses02F_impro02\.txt: line 10: unknown IEMOCAP emotion code 'bor'"
    ):
        prepare_corpus("iemocap", tmp_path)


def test_iemocap_wav_without_entry(tmp_path: Path) -> None:
    _iemocap(tmp_path)
    wav(tmp_path / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_F009.wav")
    with pytest.raises(
        CorpusError, match=r"Ses01F_impro01_F009\.wav: has no entry in any EmoEvaluation file"
    ):
        prepare_corpus("iemocap", tmp_path)


def test_iemocap_entry_without_wav(tmp_path: Path) -> None:
    _iemocap(tmp_path)
    (
        tmp_path / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_M000.wav"
    ).unlink()
    with pytest.raises(
        CorpusError, match=r"Ses01F_impro01\.txt: line \d+: Ses01F_impro01_M000 has no wav"
    ):
        prepare_corpus("iemocap", tmp_path)
    (tmp_path / "Session2" / "dialog" / "wav" / "Ses02F_impro02.wav").unlink()
    with pytest.raises(CorpusError, match=r"Ses02F_impro02\.txt: dialog Ses02F_impro02 has no wav"):
        prepare_corpus("iemocap", tmp_path, source="dialog")


def test_iemocap_unknown_source(tmp_path: Path) -> None:
    _iemocap(tmp_path)
    with pytest.raises(ConfigError, match="unknown source 'words'"):
        prepare_corpus("iemocap", tmp_path, source="words")


# --------------------------------------------------------------------------- table (user manifest)


def test_table_csv(tmp_path: Path) -> None:
    wav(tmp_path / "audio" / "a.wav")
    wav(tmp_path / "audio" / "b.wav", seconds=1.0)
    other = wav(tmp_path.parent / f"{tmp_path.name}_elsewhere" / "c.wav")
    manifest = tmp_path / "mydata.csv"
    manifest.write_text(
        "path,label,speaker,gender,transcript,start_s,end_s,group\n"
        "audio/a.wav,anger,spk1,Male,hello,,,\n"
        "audio/b.wav,Happiness,spk2,female,,0.2,0.6,g2\n"
        f"{other},neutral,spk1,,,,,\n"
    )
    p = prepare_corpus("table", manifest)
    rows = by_id(p.table)
    assert p.errors.num_rows == 0
    a = rows["mydata/audio/a"]
    assert a["path"] == str(tmp_path / "audio" / "a.wav")
    assert (a["label"], a["source_label"], a["speaker"], a["group"], a["gender"], a["corpus"]) == (
        "angry", "anger", "spk1", "spk1", "m", "mydata",
    )  # fmt: skip
    assert a["transcript"] == "hello"
    b = rows["mydata/audio/b@0.200-0.600"]
    assert (b["label"], b["group"], b["gender"]) == ("happy", "g2", "f")
    assert (b["start_s"], b["end_s"], b["duration_s"]) == (0.2, 0.6, pytest.approx(0.4))
    assert any(r["path"] == str(other) and r["label"] == "neutral" for r in rows.values())


def test_table_parquet(tmp_path: Path) -> None:
    wav(tmp_path / "x.wav")
    wav(tmp_path / "y.wav")
    manifest = tmp_path / "m.parquet"
    pq.write_table(
        pa.table(
            {
                "utterance_id": ["u1", "u2"],
                "path": ["x.wav", str(tmp_path / "y.wav")],
                "label": ["sad", "fear"],
                "speaker": ["s1", "s2"],
                "corpus": ["mine", None],
            }
        ),
        manifest,
    )
    rows = by_id(prepare_corpus("parquet", manifest).table)
    assert rows["u1"]["path"] == str(tmp_path / "x.wav") and rows["u1"]["corpus"] == "mine"
    assert (rows["u2"]["label"], rows["u2"]["corpus"], rows["u2"]["speaker"]) == (
        "fearful",
        "m",
        "s2",
    )


@pytest.mark.parametrize(
    "body, message",
    [
        (
            "path,label,speaker\na.wav,angry,s1\nb.wav,grumpy,s1\n",
            r"m\.csv: line 3: unknown label 'grumpy'",
        ),
        (
            "path,label\na.wav,angry\n",
            r"m\.csv: lacks required column\(s\) speaker; it has: path, label",
        ),
        ("path,label,speaker\na.wav,angry,s1\nb.wav,sad,\n", r"m\.csv: line 3: empty speaker"),
    ],
)
def test_table_malformed(tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "m.csv").write_text(body)
    with pytest.raises(CorpusError, match=message):
        prepare_corpus("csv", tmp_path / "m.csv")


# --------------------------------------------------------------------------- folder per label


def test_folder_speaker_folders(tmp_path: Path) -> None:
    root = tmp_path / "calls"
    wav(root / "Anger" / "alice" / "001.wav")
    wav(root / "neutral" / "bob" / "002.wav")
    wav(root / "happy" / "alice" / "003.flac")
    (root / "happy" / "alice" / "notes.txt").write_text("not audio")
    rows = by_id(prepare_corpus("folder", root).table)
    assert sorted(rows) == [
        "calls/Anger/alice/001",
        "calls/happy/alice/003",
        "calls/neutral/bob/002",
    ]
    r = rows["calls/Anger/alice/001"]
    assert (r["label"], r["source_label"], r["speaker"], r["group"], r["corpus"]) == (
        "angry", "Anger", "alice", "alice", "calls",
    )  # fmt: skip


def test_folder_speaker_regex(tmp_path: Path) -> None:
    wav(tmp_path / "sad" / "spk07_a.wav")
    wav(tmp_path / "angry" / "spk09_b.wav")
    t = prepare_corpus("folder", tmp_path, speaker_regex=r"^(spk\d+)_").table
    assert sorted(zip(t.column("label").to_pylist(), t.column("speaker").to_pylist(), strict=True)) == [
        ("angry", "spk09"), ("sad", "spk07"),
    ]  # fmt: skip
    wav(tmp_path / "sad" / "nobody.wav")
    with pytest.raises(CorpusError, match=r"nobody\.wav: file name does not match speaker_regex"):
        prepare_corpus("folder", tmp_path, speaker_regex=r"^(spk\d+)_")


def test_folder_without_speakers_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    wav(tmp_path / "sad" / "a.wav")
    wav(tmp_path / "angry" / "b.wav")
    with caplog.at_level(logging.WARNING, logger="seremo.corpora.folder"):
        t = prepare_corpus("folder", tmp_path).table
    assert set(t.column("speaker").to_pylist()) == {"unknown"}
    assert "speaker-independent evaluation is impossible" in caplog.text
    assert "--opt speaker_regex=" in caplog.text


def test_folder_unknown_label(tmp_path: Path) -> None:
    wav(tmp_path / "sad" / "a.wav")
    wav(tmp_path / "grumpy" / "b.wav")
    with pytest.raises(
        CorpusError, match=r"grumpy: label folder 'grumpy' is not an emotion; .*neutral calm happy"
    ):
        prepare_corpus("folder", tmp_path)


# --------------------------------------------------------------------------- unreadable audio


def test_corrupt_and_empty_files_become_errors(tmp_path: Path) -> None:
    wav(tmp_path / "AudioData" / "DC" / "a01.wav")
    wav(tmp_path / "AudioData" / "DC" / "h01.wav")
    (tmp_path / "AudioData" / "DC" / "d01.wav").write_bytes(np.random.default_rng(1).bytes(4000))
    (tmp_path / "AudioData" / "DC" / "n01.wav").write_bytes(b"")
    p = prepare_corpus("savee", tmp_path)
    assert sorted(p.table.column("utterance_id").to_pylist()) == ["savee/DC_a01", "savee/DC_h01"]
    assert p.errors.column_names == ["path", "utterance_id", "stage", "error", "message"]
    errs = {r["utterance_id"]: r for r in p.errors.to_pylist()}
    assert set(errs) == {"savee/DC_d01", "savee/DC_n01"}
    assert errs["savee/DC_d01"]["error"] in ("unsupported", "corrupt")
    assert errs["savee/DC_n01"]["error"] == "empty"
    assert errs["savee/DC_n01"]["path"].endswith("n01.wav")
    assert all(r["stage"] == "prepare" for r in errs.values())


# --------------------------------------------------------------------------- one name per file


def _clean(path: str) -> bool:
    """Absolute, with no '.' or '..' component, and resolved (no symlink on the way)."""
    parts = Path(path).parts
    return Path(path).is_absolute() and "." not in parts and ".." not in parts and path == os.path.realpath(path)


def test_paths_are_the_same_whatever_the_root_is_called(
    emodb_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A root typed with '..', relative or through a symlink names every file as the clean root does."""
    clean = prepare_corpus("emodb", emodb_root).table
    paths = clean.column("path").to_pylist()
    assert all(_clean(p) for p in paths)
    dotted = Path(f"{emodb_root}/wav/../wav/../../{emodb_root.name}")
    assert ".." in dotted.parts and dotted.is_dir()
    link = tmp_path / "emodb-link"
    link.symlink_to(emodb_root, target_is_directory=True)
    monkeypatch.chdir(emodb_root / "wav")
    for root in (dotted, str(dotted), "../wav/..", link, f"{link}/wav/.."):
        t = prepare_corpus("emodb", root).table
        assert t.column("path").to_pylist() == paths, root
        assert t.column("utterance_id").to_pylist() == clean.column("utterance_id").to_pylist()


def test_user_manifest_paths_are_absolute_and_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths resolve against the manifest's folder, not the working directory; '..' goes."""
    a = wav(tmp_path / "audio" / "a.wav")
    b = wav(tmp_path / "audio" / "b.wav")
    c = wav(tmp_path / "more" / "c.wav")
    (tmp_path / "lists").mkdir()
    manifest = tmp_path / "lists" / "m.csv"
    manifest.write_text(
        "utterance_id,path,label,speaker\n"
        "a,../audio/a.wav,angry,s1\n"
        "a-again,./../more/../audio/a.wav,angry,s1\n"
        "b,../audio//b.wav,sad,s2\n"
        f"c,{tmp_path}/lists/../more/./c.wav,neutral,s2\n"
    )
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for root in (manifest, Path("../lists/m.csv"), f"{tmp_path}/audio/../lists/m.csv"):
        p = prepare_corpus("csv", root)
        assert p.errors.num_rows == 0
        rows = by_id(p.table)
        assert {k: r["path"] for k, r in rows.items()} == {
            "a": str(a), "a-again": str(a), "b": str(b), "c": str(c),
        }  # fmt: skip
        assert all(_clean(r["path"]) for r in rows.values())


def test_user_manifest_in_a_symlinked_folder(tmp_path: Path) -> None:
    """'..' next to a symlinked folder means what the OS makes of it: the target's parent."""
    a = wav(tmp_path / "deep" / "audio" / "a.wav")
    (tmp_path / "deep" / "lists").mkdir()
    (tmp_path / "deep" / "lists" / "m.csv").write_text("path,label,speaker\n../audio/a.wav,sad,s1\n")
    (tmp_path / "lists-link").symlink_to(tmp_path / "deep" / "lists", target_is_directory=True)
    p = prepare_corpus("csv", tmp_path / "lists-link" / "m.csv")
    assert p.errors.num_rows == 0 and p.table.column("path").to_pylist() == [str(a)]


def test_normalise_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from seremo import manifest

    monkeypatch.chdir(tmp_path)
    assert manifest.normalise_path("x/../y.wav") == str(tmp_path / "y.wav")  # need not exist
    assert manifest.normalise_path(Path("/a/b/../c.wav")) == "/a/c.wav"
    assert manifest.normalise_path("~/a.wav") == os.path.join(os.path.realpath(os.path.expanduser("~")), "a.wav")
    for uri in ("s3://bucket/x/../y.wav", "file:///a/../b.wav", "gs://b/./c.wav"):
        assert manifest.normalise_path(uri) == uri
    t = manifest.from_rows(
        [
            {"utterance_id": "u1", "path": "/a/./b/../c.wav", "corpus": "k", "speaker": "s", "group": "s"},
            {"utterance_id": "u2", "path": "s3://bucket/x/../y.wav", "corpus": "k", "speaker": "s", "group": "s"},
        ]
    )
    assert t.column("path").to_pylist() == ["/a/c.wav", "s3://bucket/x/../y.wav"]
