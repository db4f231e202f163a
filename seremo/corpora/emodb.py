"""EmoDB, the Berlin Database of Emotional Speech (Burkhardt et al., 2005).

Files are ``SSTTTEV.wav``: speaker ``SS``, text ``TTT`` (a01..b10), emotion
letter ``E`` (German initials) and version ``V``. Speakers are groups.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from seremo.corpora._common import known, named_files, require_dir, table, utterance_row

NAME = "emodb"
PATTERN = re.compile(r"^(\d{2})([ab]\d{2})([A-Za-z])([a-z])\.wav$", re.IGNORECASE)

EMOTIONS = {
    "W": "angry",  # Wut
    "L": "bored",  # Langeweile
    "E": "disgust",  # Ekel
    "A": "fearful",  # Angst
    "F": "happy",  # Freude
    "T": "sad",  # Trauer
    "N": "neutral",
}
GENDER = {
    "03": "m", "08": "f", "09": "f", "10": "m", "11": "m",
    "12": "m", "13": "f", "14": "f", "15": "m", "16": "f",
}  # fmt: skip
TEXTS = {
    "a01": "Der Lappen liegt auf dem Eisschrank.",
    "a02": "Das will sie am Mittwoch abgeben.",
    "a04": "Heute abend könnte ich es ihm sagen.",
    "a05": "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.",
    "a07": "In sieben Stunden wird es soweit sein.",
    "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
    "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
    "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.",
    "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
    "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
}


def prepare(root: str | Path) -> pa.Table:
    """Manifest of every EmoDB utterance under ``root``; speakers are the CV groups."""
    root = require_dir(root, NAME)
    rows = []
    for path, m in named_files(root, PATTERN, "EmoDB naming SSTTTEV.wav (e.g. 03a01Fa.wav)"):
        speaker, text, emotion, _version = m.groups()
        label = known(path, EMOTIONS, emotion.upper(), "EmoDB emotion letter", sep="")
        rows.append(utterance_row(NAME, path, path.stem, speaker, label, transcript=TEXTS.get(text.lower()),
                                  gender=GENDER.get(speaker), source_label=emotion.upper()))  # fmt: skip
    return table(rows, root, NAME, "03a01Fa.wav")
