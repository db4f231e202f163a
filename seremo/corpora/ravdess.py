"""RAVDESS, the Ryerson Audio-Visual Database of Emotional Speech and Song (Livingstone & Russo, 2018).

Files are ``Actor_NN/MM-VV-EE-II-SS-RR-AA.wav``: modality ``MM`` (01 full AV,
02 video only, 03 audio only), vocal channel ``VV`` (01 speech, 02 song),
emotion ``EE`` (01..08), intensity ``II`` (01 normal, 02 strong), statement
``SS`` (01/02), repetition ``RR`` and actor ``AA`` (01..24; odd male, even
female). Only audio-only speech (``03-01-...``) is kept; song files and video
files (often ``.mp4``) are left out and counted as skipped. Actors are groups.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pyarrow as pa

from seremo.corpora._common import require_dir, table, walk
from seremo.errors import CorpusError

NAME = "ravdess"
PATTERN = re.compile(
    r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})\.(wav|mp4)$", re.IGNORECASE
)
ACTOR_DIR = re.compile(r"^Actor_(\d+)$", re.IGNORECASE)

EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
STATEMENTS = {
    "01": "Kids are talking by the door",
    "02": "Dogs are sitting by the door",
}
SKIP_SONG = "song (vocal channel 02)"
SKIP_VIDEO = "video (modality 01/02)"


def prepare(root: str | Path) -> pa.Table:
    """Manifest of every RAVDESS audio-only speech file under ``root``; actors are the CV groups."""
    root = require_dir(root, NAME)
    rows = []
    skipped: Counter = Counter()
    for path in walk(root, (".wav", ".mp4")):
        m = PATTERN.match(path.name)
        if not m:
            raise CorpusError(
                path,
                "does not follow RAVDESS naming MM-VV-EE-II-SS-RR-AA.wav (e.g. 03-01-05-01-02-01-12.wav)",
            )
        modality, channel, emotion, intensity, statement, repetition, actor, _ext = m.groups()
        if modality in ("01", "02"):
            skipped[SKIP_VIDEO] += 1
            continue
        if modality != "03":
            raise CorpusError(
                path, f"unknown RAVDESS modality {modality!r} (known: 01 AV, 02 video, 03 audio)"
            )
        if channel == "02":
            skipped[SKIP_SONG] += 1
            continue
        if channel != "01":
            raise CorpusError(
                path, f"unknown RAVDESS vocal channel {channel!r} (known: 01 speech, 02 song)"
            )
        label = EMOTIONS.get(emotion)
        if label is None:
            raise CorpusError(path, f"unknown RAVDESS emotion code {emotion!r} (known: 01..08)")
        if intensity not in ("01", "02"):
            raise CorpusError(
                path, f"unknown RAVDESS intensity {intensity!r} (known: 01 normal, 02 strong)"
            )
        if statement not in STATEMENTS:
            raise CorpusError(path, f"unknown RAVDESS statement {statement!r} (known: 01, 02)")
        if repetition not in ("01", "02"):
            raise CorpusError(path, f"unknown RAVDESS repetition {repetition!r} (known: 01, 02)")
        number = int(actor)
        if not 1 <= number <= 24:
            raise CorpusError(path, f"RAVDESS actor {actor!r} is outside 01..24")
        folder = ACTOR_DIR.match(path.parent.name)
        if folder and int(folder.group(1)) != number:
            raise CorpusError(path, f"names actor {actor} but lies in folder {path.parent.name}")
        rows.append(
            {
                "utterance_id": f"ravdess/{path.stem}",
                "path": str(path),
                "corpus": NAME,
                "speaker": f"ravdess/{actor}",
                "group": f"ravdess/{actor}",
                "label": label,
                "transcript": STATEMENTS[statement],
                "gender": "m" if number % 2 else "f",
                "source_label": emotion,
            }
        )
    if not rows and skipped:
        raise CorpusError(
            root,
            f"holds only RAVDESS song/video files ({sum(skipped.values())} left out); seremo uses the "
            "audio-only speech files 03-01-*.wav (Audio_Speech_Actors_01-24)",
        )
    return table(rows, root, NAME, "Actor_12/03-01-05-01-02-01-12.wav", skipped=skipped)
