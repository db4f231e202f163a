"""EMOVO, nEMO and URDU loaders on trees in their real naming; several corpora in one manifest."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from seremo import audio
from seremo.cli import main
from seremo.corpora import prepare_corpora, prepare_corpus
from seremo.errors import ConfigError, CorpusError

_rng = np.random.default_rng(1)


def wav(path: Path, seconds: float = 0.2, sr: int = 16000, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (int(seconds * sr), channels) if channels > 1 else int(seconds * sr)
    sf.write(path, (_rng.standard_normal(shape) * 0.01).astype(np.float32), sr, subtype="PCM_16")
    return path


def rows_by_id(t) -> dict[str, dict]:
    return {r["utterance_id"]: r for r in t.to_pylist()}


# --------------------------------------------------------------------------- EMOVO


def test_emovo_release_48k_stereo_and_16k_mono_both_load(tmp_path: Path) -> None:
    wav(tmp_path / "EMOVO" / "f1" / "rab-f1-b2.wav", sr=48000, channels=2)  # the release
    wav(tmp_path / "EMOVO" / "m3" / "gio-m3-n5.wav", sr=16000)  # the shared copy
    wav(tmp_path / "EMOVO" / "m3" / "pau-m3-l4.wav", sr=48000)
    (tmp_path / "EMOVO" / "documents").mkdir()
    (tmp_path / "EMOVO" / "documents" / "readme.txt").write_text("EMOVO\n")
    rows = rows_by_id(prepare_corpus("emovo", tmp_path).table)
    assert set(rows) == {"emovo/rab-f1-b2", "emovo/gio-m3-n5", "emovo/pau-m3-l4"}
    r = rows["emovo/rab-f1-b2"]
    assert (r["label"], r["speaker"], r["group"], r["gender"], r["source_label"]) == (
        "angry", "emovo/f1", "emovo/f1", "f", "rab")  # fmt: skip
    assert rows["emovo/gio-m3-n5"]["label"] == "happy" and rows["emovo/pau-m3-l4"]["label"] == "fearful"
    assert r["duration_s"] == pytest.approx(0.2, abs=1e-3)
    y, sr = audio.load(r["path"], sr=16000)
    assert sr == 16000 and y.ndim == 1 and len(y) == pytest.approx(3200, abs=2)


@pytest.mark.parametrize(
    "name, needle",
    [
        ("f1/rab_f1_b2.wav", "does not follow EMOVO naming"),
        ("f1/xyz-f1-b2.wav", "unknown EMOVO emotion code 'xyz'"),
        ("f1/rab-f1-q9.wav", "does not follow EMOVO naming"),
        ("f1/rab-f1-n9.wav", "unknown EMOVO sentence code 'n9'"),
        ("m2/rab-f1-b2.wav", "lies in speaker folder 'm2'"),
    ],
)
def test_emovo_malformed_tree_names_the_file(tmp_path: Path, name: str, needle: str) -> None:
    wav(tmp_path / "f2" / "neu-f2-d1.wav")
    bad = wav(tmp_path / name)
    with pytest.raises(CorpusError, match=needle) as exc:
        prepare_corpus("emovo", tmp_path)
    assert str(bad) in str(exc.value) and "\n" not in str(exc.value)


def test_emovo_real_corpus(emovo_root: Path) -> None:
    t = prepare_corpus("emovo", emovo_root).table
    assert t.num_rows == 588
    assert len(set(t.column("speaker").to_pylist())) == 6
    assert Counter(t.column("label").to_pylist()) == {
        lab: 84 for lab in ("angry", "disgust", "fearful", "happy", "neutral", "sad", "surprised")
    }


# --------------------------------------------------------------------------- nEMO

NEMO_TSV = (
    "file_id\temotion\traw_text\tnormalized_text\tspeaker_id\tgender\tage\n"
    "SB0_anger_0\tanger\tChcę iść do domu.\tchcę iść do domu\t SB0\tmale\t24\n"
    "SB0_neutral_1.wav\tneutral\tJutro będzie padać.\tjutro będzie padać\tSB0\tmale\t24\n"
    "MR1_happiness_2\thappiness\tWygraliśmy!\twygraliśmy\t  MR1\tfemale\t31\n"
    "MR1_surprised_3\tsurprised\tNaprawdę?\tnaprawdę\tMR1\tfemale\t31\n"
)


def nemo_tree(root: Path, tsv: str = NEMO_TSV) -> Path:
    for line in tsv.splitlines()[1:]:
        wav(root / "samples" / (line.split("\t")[0].removesuffix(".wav") + ".wav"))
    (root / "data.tsv").write_text(tsv, encoding="utf-8")
    return root


def test_nemo_transcripts_gender_and_spaced_speaker_ids(tmp_path: Path) -> None:
    rows = rows_by_id(prepare_corpus("nemo", nemo_tree(tmp_path)).table)
    assert set(rows) == {"nemo/SB0_anger_0", "nemo/SB0_neutral_1", "nemo/MR1_happiness_2", "nemo/MR1_surprised_3"}
    r = rows["nemo/SB0_anger_0"]
    assert (r["label"], r["speaker"], r["group"], r["gender"], r["transcript"]) == (
        "angry", "nemo/SB0", "nemo/SB0", "m", "Chcę iść do domu.")  # fmt: skip
    r = rows["nemo/MR1_happiness_2"]
    assert (r["label"], r["speaker"], r["gender"], r["transcript"]) == ("happy", "nemo/MR1", "f", "Wygraliśmy!")
    assert rows["nemo/MR1_surprised_3"]["label"] == "surprised"
    assert rows["nemo/SB0_neutral_1"]["path"].endswith("samples/SB0_neutral_1.wav")


def test_nemo_listed_but_missing_audio_is_an_errors_row(tmp_path: Path) -> None:
    nemo_tree(tmp_path)
    (tmp_path / "samples" / "MR1_surprised_3.wav").unlink()
    p = prepare_corpus("nemo", tmp_path)
    assert p.table.num_rows == 3
    assert p.errors.column("utterance_id").to_pylist() == ["nemo/MR1_surprised_3"]


@pytest.mark.parametrize(
    "damage, where, needle",
    [
        (lambda r: wav(r / "samples" / "SB0_fear_9.wav"), "samples/SB0_fear_9.wav", "has no row in data.tsv"),
        (lambda r: (r / "data.tsv").unlink(), "data.tsv", "data.tsv is missing"),
        (lambda r: (r / "data.tsv").write_text(NEMO_TSV.replace("\tanger\tChcę", "\tfear\tChcę")),
         "data.tsv", "line 2: file_id 'SB0_anger_0' names emotion 'anger' but the row says 'fear'"),
        (lambda r: (r / "data.tsv").write_text(NEMO_TSV.replace("\t SB0\t", "\tXX9\t")),
         "data.tsv", "names speaker 'SB0' but the row says 'XX9'"),
        (lambda r: (r / "data.tsv").write_text(NEMO_TSV.replace("happiness\tWygr", "bliss\tWygr")),
         "data.tsv", "unknown nEMO emotion 'bliss'"),
        (lambda r: (r / "data.tsv").write_text("id\tlabel\n"), "data.tsv", "lacks column(s) file_id, emotion"),
    ],
)
def test_nemo_malformed_tree_names_the_file(tmp_path: Path, damage, where: str, needle: str) -> None:
    nemo_tree(tmp_path)
    damage(tmp_path)
    with pytest.raises(CorpusError, match=None) as exc:
        prepare_corpus("nemo", tmp_path)
    msg = str(exc.value)
    assert str(tmp_path / where) in msg and needle in msg and "\n" not in msg


# --------------------------------------------------------------------------- URDU


def test_urdu_tree_in_release_naming(tmp_path: Path) -> None:
    for name in ("Angry/SM1_F1_A01.wav", "Happy/SF3_F12_H07.wav", "Neutral/SM27_F2_N03.wav", "Sad/SF11_F5_S10.wav"):
        wav(tmp_path / name)
    rows = rows_by_id(prepare_corpus("urdu", tmp_path).table)
    assert set(rows) == {"urdu/SM1_F1_A01", "urdu/SF3_F12_H07", "urdu/SM27_F2_N03", "urdu/SF11_F5_S10"}
    r = rows["urdu/SF3_F12_H07"]
    assert (r["label"], r["speaker"], r["group"], r["gender"], r["source_label"]) == (
        "happy", "urdu/SF3", "urdu/SF3", "f", "H")  # fmt: skip
    assert rows["urdu/SM27_F2_N03"]["label"] == "neutral" and rows["urdu/SF11_F5_S10"]["label"] == "sad"
    assert rows["urdu/SM1_F1_A01"]["gender"] == "m"


@pytest.mark.parametrize(
    "name, needle",
    [
        ("Angry/SM1-F1-A01.wav", "does not follow URDU naming"),
        ("Angry/SM1_F1_H01.wav", "emotion letter 'H' disagrees with its folder 'Angry'"),
        ("Bored/SM1_F1_A01.wav", "is not in an emotion folder"),
        ("Sad/SX1_F1_S01.wav", "does not follow URDU naming"),
    ],
)
def test_urdu_malformed_tree_names_the_file(tmp_path: Path, name: str, needle: str) -> None:
    wav(tmp_path / "Neutral" / "SF1_F1_N01.wav")
    bad = wav(tmp_path / name)
    with pytest.raises(CorpusError, match=needle) as exc:
        prepare_corpus("urdu", tmp_path)
    assert str(bad) in str(exc.value)


# --------------------------------------------------------------------------- several corpora


def test_emodb_and_emovo_in_one_call(emodb_root: Path, emovo_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "both.parquet"
    assert main(["prepare", "emodb", str(emodb_root), "emovo", str(emovo_root), "--out", str(out)]) == 0
    t = pq.read_table(out)
    assert t.num_rows == 1123
    assert len(set(t.column("speaker").to_pylist())) == 16
    assert Counter(t.column("corpus").to_pylist()) == {"emodb": 535, "emovo": 588}
    printed = capsys.readouterr().out
    assert re.search(r"emodb\s+535\s+10\s", printed) and re.search(r"emovo\s+588\s+6\s", printed)
    assert re.search(r"surprised\s+84\s+6\s", printed)  # per label: rows, speakers, hours

    out7 = tmp_path / "shared7.parquet"
    assert main(["prepare", "emodb", str(emodb_root), "emovo", str(emovo_root), "--out", str(out7),
                 "--class-set", "shared7"]) == 0  # fmt: skip
    t7 = pq.read_table(out7)
    assert t7.num_rows == 1123 - 81  # EmoDB's boredom is not among the shared seven
    assert "bored" in capsys.readouterr().out


def test_several_corpora_namespace_speakers_kept_as_written(tmp_path: Path) -> None:
    """Two user folders both have a speaker 'spk1': in one manifest they stay two groups."""
    for corpus in ("callsA", "callsB"):
        wav(tmp_path / corpus / "angry" / "spk1" / "a.wav")
        wav(tmp_path / corpus / "sad" / "spk1" / "b.wav")
    p = prepare_corpora([("folder", tmp_path / "callsA", {}), ("folder", tmp_path / "callsB", {})])
    assert sorted(set(p.table.column("group").to_pylist())) == ["callsA/spk1", "callsB/spk1"]
    assert sorted(set(p.table.column("speaker").to_pylist())) == ["callsA/spk1", "callsB/spk1"]
    with pytest.raises(ConfigError, match="prepare each corpus once"):
        prepare_corpora([("folder", tmp_path / "callsA", {}), ("folder", tmp_path / "callsA", {})])


def test_prepare_pairs_and_per_corpus_options(tmp_path: Path, capsys) -> None:
    assert main(["prepare", "emovo", str(tmp_path), "emodb", "--out", str(tmp_path / "m.parquet")]) == 2
    assert "CORPUS ROOT pairs" in capsys.readouterr().err
    wav(tmp_path / "u" / "angry" / "x_s1.wav")
    wav(tmp_path / "u" / "sad" / "y_s2.wav")
    nemo_tree(tmp_path / "n")
    out = tmp_path / "m.parquet"
    assert main(["prepare", "folder", str(tmp_path / "u"), "nemo", str(tmp_path / "n"), "--out", str(out),
                 "--opt", r"folder.speaker_regex=_(s\d)"]) == 0  # fmt: skip
    groups = set(pq.read_table(out).column("group").to_pylist())
    assert {"u/s1", "u/s2", "nemo/SB0", "nemo/MR1"} == groups
    assert main(["prepare", "nemo", str(tmp_path / "n"), "--out", str(out), "--opt", "emodb.x=1"]) == 2
    assert "'emodb' is not a corpus of this prepare" in capsys.readouterr().err
