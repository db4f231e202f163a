"""Leakage and honesty: one clip is one utterance, a bundle knows its training rows, a member counts once."""

from __future__ import annotations

import logging
import wave
from pathlib import Path

import numpy as np

from seremo.cli import main


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
