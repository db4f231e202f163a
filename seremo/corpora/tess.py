"""TESS, the Toronto Emotional Speech Set (Dupuis & Pichora-Fuller, 2010).

Files are ``<speaker>_<word>_<emotion>.wav`` in per-emotion folders (e.g.
``OAF_angry/OAF_back_angry.wav``, ``YAF_pleasant_surprised/YAF_dog_ps.wav``).
Speakers are OAF and YAF, both female; emotions angry, disgust, fear, happy,
neutral, ps (pleasant surprise) and sad. Folder names vary in case between
releases (``OAF_Fear``), so the label comes from the file name, read without
regard to case. The carrier phrase gives the transcript "Say the word
<word>". The same utterance found twice (some downloads nest a second copy of
the corpus) is an error naming both files. Speakers are groups.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from seremo.corpora._common import known, named_files, require_dir, table, utterance_row
from seremo.errors import CorpusError

NAME = "tess"
PATTERN = re.compile(r"^([A-Za-z]{3})_([A-Za-z']+)_([A-Za-z]+)\.wav$", re.IGNORECASE)
SPEAKERS = ("OAF", "YAF")

EMOTIONS = {
    "angry": "angry",
    "disgust": "disgust",
    "fear": "fearful",
    "happy": "happy",
    "neutral": "neutral",
    "ps": "surprised",
    "sad": "sad",
}


def prepare(root: str | Path) -> pa.Table:
    """Manifest of every TESS utterance under ``root``; speakers are the CV groups."""
    root = require_dir(root, NAME)
    rows = []
    seen: dict[str, Path] = {}
    naming = "TESS naming <speaker>_<word>_<emotion>.wav (e.g. OAF_back_angry.wav)"
    for path, m in named_files(root, PATTERN, naming):
        speaker, word, emotion = m.groups()
        speaker, word, emotion = speaker.upper(), word.lower(), emotion.lower()
        if speaker not in SPEAKERS:
            raise CorpusError(path, f"unknown TESS speaker {speaker!r} (known: {' '.join(SPEAKERS)})")
        label = known(path, EMOTIONS, emotion, "TESS emotion")
        uid = f"{speaker}_{word}_{emotion}"
        if uid in seen:
            raise CorpusError(path, f"is the same TESS utterance as {seen[uid]}; point the root at one copy of the corpus")
        seen[uid] = path
        rows.append(utterance_row(NAME, path, uid, speaker, label, transcript=f"Say the word {word}", gender="f",
                                  source_label=emotion))  # fmt: skip
    return table(rows, root, NAME, "OAF_angry/OAF_back_angry.wav")
