"""SAVEE, Surrey Audio-Visual Expressed Emotion (Haq & Jackson, 2009).

Two layouts are read: the release's ``AudioData/<speaker>/<code>NN.wav`` and
the flat ``<speaker>_<code>NN.wav`` found in common re-packagings. Speakers
are DC, JE, JK and KL, all male. Emotion codes are one or two letters (a, d,
f, h, n, sa, su), so ``sa01`` is sadness and ``su01`` surprise. Transcripts
(TIMIT sentences) are not in the file names and are left null. Speakers are
groups.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from seremo.corpora._common import known, named_files, require_dir, table, utterance_row
from seremo.errors import CorpusError

NAME = "savee"
PATTERN = re.compile(r"^(?:([A-Za-z]{2})_)?([A-Za-z]{1,2}?)(\d{2})\.wav$", re.IGNORECASE)
SPEAKERS = ("DC", "JE", "JK", "KL")

EMOTIONS = {
    "a": "angry",
    "d": "disgust",
    "f": "fearful",
    "h": "happy",
    "n": "neutral",
    "sa": "sad",
    "su": "surprised",
}


def prepare(root: str | Path) -> pa.Table:
    """Manifest of every SAVEE utterance under ``root``, either layout; speakers are the CV groups."""
    root = require_dir(root, NAME)
    rows = []
    naming = ("SAVEE naming AudioData/<speaker>/<code>NN.wav or <speaker>_<code>NN.wav "
              "(e.g. AudioData/DC/sa01.wav, DC_sa01.wav)")  # fmt: skip
    for path, m in named_files(root, PATTERN, naming):
        prefix, code, number = m.groups()
        speaker = (prefix or path.parent.name).upper()
        if speaker not in SPEAKERS:
            where = f"file name prefix {prefix!r}" if prefix else f"folder {path.parent.name!r}"
            raise CorpusError(path, f"unknown SAVEE speaker from {where} (known: {' '.join(SPEAKERS)})")
        code = code.lower()
        label = known(path, EMOTIONS, code, "SAVEE emotion code")
        rows.append(utterance_row(NAME, path, f"{speaker}_{code}{number}", speaker, label, gender="m",
                                  source_label=code))  # fmt: skip
    return table(rows, root, NAME, "AudioData/DC/sa01.wav or DC_sa01.wav")
