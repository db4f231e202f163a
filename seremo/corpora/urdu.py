"""URDU, Urdu emotional speech from talk shows (Latif et al., 2018): natural, not acted.

Files are ``<Emotion>/SGX_FXX_EYY.wav`` with folders ``Angry Happy Neutral Sad``:
``SGX`` is the speaker (``G`` its gender, M or F, then a number), ``FXX`` the
speaker's file number and ``EYY`` the emotion letter (A H N S, which must agree
with the folder) and a number. Speakers are groups.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from seremo.corpora._common import named_files, require_dir, table, utterance_row
from seremo.errors import CorpusError

NAME = "urdu"
PATTERN = re.compile(r"^(S([MF])\d+)_(F\d+)_([AHNS])(\d+)\.wav$", re.IGNORECASE)

EMOTIONS = {"A": "angry", "H": "happy", "N": "neutral", "S": "sad"}
FOLDERS = {"angry": "A", "happy": "H", "neutral": "N", "sad": "S"}


def prepare(root: str | Path) -> pa.Table:
    """Manifest of every URDU utterance under ``root``; speakers are the CV groups."""
    root = require_dir(root, NAME)
    rows = []
    for path, m in named_files(root, PATTERN, "URDU naming <Emotion>/SGX_FXX_EYY.wav (e.g. Angry/SM1_F1_A01.wav)"):
        speaker, gender, file_no, letter, number = m.groups()
        speaker, letter = speaker.upper(), letter.upper()
        folder = FOLDERS.get(path.parent.name.lower())
        if folder is None:
            raise CorpusError(path, f"is not in an emotion folder (expected one of: {', '.join(f.title() for f in FOLDERS)})")
        if folder != letter:
            raise CorpusError(path, f"emotion letter {letter!r} disagrees with its folder {path.parent.name!r}")
        rows.append(utterance_row(NAME, path, f"{speaker}_{file_no.upper()}_{letter}{number}", speaker, EMOTIONS[letter],
                                  gender=gender.lower(), source_label=letter))  # fmt: skip
    return table(rows, root, NAME, "Angry/SM1_F1_A01.wav")
