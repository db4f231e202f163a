"""Text-only manifest rows (MELD's transcripts): read whole, and refused in one line where audio is read."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seremo import manifest
from seremo.cli import main
from seremo.corpora import prepare_corpus
from seremo.errors import ConfigError, CorpusError, SeremoError
from seremo.score import list_inputs

# The README of ../shared/corpora/meld: train counts per emotion, dev size.
TRAIN = {"neutral": 4710, "happy": 1743, "surprised": 1205, "angry": 1109, "sad": 683, "disgust": 271, "fearful": 268}


def test_meld_splits_are_text_only_rows_grouped_by_dialogue(meld_root: Path) -> None:
    train = prepare_corpus("meld", meld_root).table
    assert train.num_rows == 9989 and Counter(train.column("label").to_pylist()) == TRAIN
    assert train.column("path").null_count == train.num_rows  # no audio: every row is text-only
    assert train.column("duration_s").null_count == train.num_rows
    rows = train.to_pylist()
    assert all(r["transcript"] and r["transcript"] == " ".join(r["transcript"].split()) for r in rows)
    first = rows[0]
    assert first["utterance_id"] == "meld/train/dia0_utt0" and first["group"] == "meld/train/dia0"
    assert first["speaker"] == "meld/Chandler" and first["source_label"] == "neutral"
    assert first["transcript"].startswith("also I was the point person on my company’s transition")
    assert len(set(train.column("group").to_pylist())) == 1038  # dialogues
    dev = prepare_corpus("meld", meld_root, split="dev").table
    assert dev.num_rows == 1109 and not set(dev.column("utterance_id").to_pylist()) & set(train.column("utterance_id").to_pylist())


def test_meld_bad_split_or_missing_file_is_one_line(meld_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="split must be one of train, dev, test"):
        prepare_corpus("meld", meld_root, split="validation")
    with pytest.raises(CorpusError, match="test split is not there"):
        prepare_corpus("meld", meld_root, split="test")  # not shipped in ../shared
    (tmp_path / "train_sent_emo.csv").write_text("Sr No.,Utterance,Speaker\n1,hi,Ross\n")
    with pytest.raises(CorpusError, match="lacks MELD column"):
        prepare_corpus("meld", tmp_path)
    (tmp_path / "train_sent_emo.csv").write_text(
        "Utterance,Speaker,Emotion,Dialogue_ID,Utterance_ID\nhi,Ross,joy,0,0\nwhat?,Rachel,confusion,0,1\n")
    with pytest.raises(CorpusError, match="line 3: unknown MELD emotion 'confusion'"):
        prepare_corpus("meld", tmp_path)
    (tmp_path / "train_sent_emo.csv").write_bytes(b"Utterance,Speaker,Emotion,Dialogue_ID,Utterance_ID\n\xff\xfe,Ross,joy,0,0\n")
    with pytest.raises(CorpusError, match="not a readable UTF-8 CSV"):
        prepare_corpus("meld", tmp_path)


def test_a_row_needs_audio_or_text() -> None:
    base = {"corpus": "c", "speaker": "s", "group": "g"}
    ok = manifest.from_rows([{**base, "utterance_id": "a", "path": None, "transcript": "well"}])
    assert manifest.text_only(ok).to_pylist() == [True]
    for text in (None, "   "):
        with pytest.raises(CorpusError, match="'b' has neither an audio path nor a transcript"):
            manifest.from_rows([{**base, "utterance_id": "b", "path": None, "transcript": text}])


def test_audio_stages_refuse_text_only_rows_in_one_line(meld_root: Path, tmp_path: Path, capsys) -> None:
    m = tmp_path / "meld.parquet"
    assert main(["prepare", "meld", str(meld_root), "--opt", "split=dev", "--out", str(m)]) == 0
    out = capsys.readouterr().out
    assert "text-only" in out and "1109" in out
    assert manifest.read(str(m)).column("path").null_count == 1109  # the contract survives a round trip
    features = tmp_path / "features"
    assert main(["extract", str(m), "--out", str(features)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1109 of 1109 rows are text-only" in err and "seremo extract" in err, err
    assert not features.exists()  # refused before anything was written
    mixed = tmp_path / "mixed.parquet"  # a scoring manifest with one audio row and one text-only row
    pq.write_table(pa.table({"path": [str(tmp_path / "a.wav"), None]}), mixed)
    with pytest.raises(SeremoError, match="1 of 2 rows have no audio path") as info:
        list_inputs(str(mixed))  # what `seremo score MANIFEST` lists; never a silent skip of the row
    assert len(str(info.value).splitlines()) == 1


def test_the_default_protocol_scales_with_the_number_of_groups() -> None:
    """Leave-one-group-out for a speaker corpus; ten grouped folds for a thousand dialogues."""
    from seremo.folds import group_folds

    for n_groups, folds in ((10, 10), (24, 24), (30, 30), (31, 10), (1038, 10)):
        groups = [f"g{i % n_groups}" for i in range(3 * n_groups)]
        got = group_folds(groups)
        assert len(got) == folds, n_groups
        held_out = [set(np.asarray(groups)[te]) for _, te in got]
        assert sorted(g for s in held_out for g in s) == sorted(set(groups))  # each group tested exactly once
