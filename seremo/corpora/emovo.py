"""EMOVO, Italian emotional speech (Costantini et al., LREC 2014).

Files are ``<speaker>/<emo>-<speaker>-<sentence>.wav`` (e.g. ``f1/rab-f1-b2.wav``):
six actors ``f1 f2 f3 m1 m2 m3`` (the letter is the gender), fourteen sentences
(``b1..b3`` nonsense, ``d1 d2`` short, ``l1..l4`` long, ``n1..n5`` normal) and
seven emotion codes in Italian. The release is 48 kHz and mostly stereo; the
copies in ``../shared`` are 16 kHz mono. Both load: audio is mixed and
resampled when it is read, never here. Speakers are groups.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from seremo.corpora._common import known, named_files, require_dir, table, utterance_row
from seremo.errors import CorpusError

NAME = "emovo"
PATTERN = re.compile(r"^([a-z]{3})-([fm][1-3])-([bdln]\d)\.wav$", re.IGNORECASE)
SPEAKERS = ("f1", "f2", "f3", "m1", "m2", "m3")
SENTENCES = ("b1", "b2", "b3", "d1", "d2", "l1", "l2", "l3", "l4", "n1", "n2", "n3", "n4", "n5")

EMOTIONS = {
    "dis": "disgust",  # disgusto
    "gio": "happy",  # gioia
    "neu": "neutral",  # neutrale
    "pau": "fearful",  # paura
    "rab": "angry",  # rabbia
    "sor": "surprised",  # sorpresa
    "tri": "sad",  # tristezza
}


def prepare(root: str | Path) -> pa.Table:
    """Manifest of every EMOVO utterance under ``root`` (the ``EMOVO`` folder or any folder above it)."""
    root = require_dir(root, NAME)
    rows = []
    naming = "EMOVO naming <speaker>/<emo>-<speaker>-<sentence>.wav (e.g. f1/rab-f1-b2.wav)"
    for path, m in named_files(root, PATTERN, naming):
        code, speaker, sentence = (g.lower() for g in m.groups())
        label = known(path, EMOTIONS, code, "EMOVO emotion code")
        if sentence not in SENTENCES:
            raise CorpusError(path, f"unknown EMOVO sentence code {sentence!r} (known: {' '.join(SENTENCES)})")
        folder = path.parent.name.lower()
        if folder in SPEAKERS and folder != speaker:
            raise CorpusError(path, f"names speaker {speaker!r} but lies in speaker folder {folder!r}")
        rows.append(utterance_row(NAME, path, f"{code}-{speaker}-{sentence}", speaker, label, gender=speaker[0],
                                  source_label=code))  # fmt: skip
    return table(rows, root, NAME, "f1/rab-f1-b2.wav")
