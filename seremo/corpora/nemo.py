"""nEMO, Polish emotional speech (Christop, LREC-COLING 2024; CC BY-NC-SA 4.0).

The release is ``samples/<SPK>_<emotion>_<n>.wav`` plus ``data.tsv`` with the
columns ``file_id, emotion, raw_text, normalized_text, speaker_id, gender,
age`` (tab-separated; a comma-separated copy reads too). ``data.tsv`` is the
source of truth: its ``raw_text`` becomes the transcript and its ``gender``
the gender. Quirks kept here: speaker ids may carry leading spaces, and
``file_id`` may or may not end in ``.wav``. A WAV with no row in ``data.tsv``,
or a row whose name disagrees with its emotion or speaker, is an error naming
the file. A listed file missing from ``samples/`` is an errors row (as for
every corpus). Speakers are groups.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pyarrow as pa

from seremo.corpora._common import require_dir, table, walk
from seremo.errors import CorpusError
from seremo.labels import canonical

NAME = "nemo"
PATTERN = re.compile(r"^([A-Za-z]+\d*)_([a-z]+)_(\d+)$", re.IGNORECASE)
COLUMNS = ("file_id", "emotion", "raw_text", "normalized_text", "speaker_id", "gender", "age")
EMOTIONS = {
    "anger": "angry",
    "fear": "fearful",
    "happiness": "happy",
    "neutral": "neutral",
    "sadness": "sad",
    "surprised": "surprised",
}
GENDERS = {"male": "m", "m": "m", "female": "f", "f": "f"}


def _read_tsv(path: Path) -> list[dict[str, str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CorpusError(path, "nEMO's data.tsv is missing; point the root at the unpacked release") from None
    except UnicodeDecodeError as exc:
        raise CorpusError(path, f"is not UTF-8 text ({exc.reason})") from None
    lines = text.splitlines()
    if not lines:
        raise CorpusError(path, "is empty; expected a header " + ",".join(COLUMNS))
    delimiter = "\t" if "\t" in lines[0] else ","
    reader = csv.DictReader(lines, delimiter=delimiter)
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in ("file_id", "emotion", "speaker_id") if c not in header]
    if missing:
        raise CorpusError(path, f"lacks column(s) {', '.join(missing)} (expected: {', '.join(COLUMNS)})")
    rows = []
    for i, raw in enumerate(reader, start=2):
        if None in raw:
            raise CorpusError(path, f"line {i} has more fields than the header")
        rows.append({(k or "").strip(): (v or "").strip() for k, v in raw.items()} | {"_line": str(i)})
    return rows


def prepare(root: str | Path) -> pa.Table:
    """Manifest of every utterance ``data.tsv`` lists, with transcripts and gender; speakers are groups."""
    root = require_dir(root, NAME)
    tsv = root / "data.tsv"
    samples = root / "samples"
    listed: dict[str, dict[str, str]] = {}
    for row in _read_tsv(tsv):
        stem = row["file_id"].removesuffix(".wav")
        where = f"line {row['_line']}"
        m = PATTERN.match(stem)
        if not m:
            raise CorpusError(tsv, f"{where}: file_id {row['file_id']!r} does not follow <SPK>_<emotion>_<n>")
        if stem in listed:
            raise CorpusError(tsv, f"{where}: file_id {row['file_id']!r} is listed twice")
        speaker, name_emotion, _n = m.groups()
        emotion = row["emotion"].lower()
        if emotion not in EMOTIONS and canonical(emotion) is None:
            raise CorpusError(tsv, f"{where}: unknown nEMO emotion {row['emotion']!r} (known: {' '.join(EMOTIONS)})")
        if name_emotion.lower() != emotion:
            raise CorpusError(tsv, f"{where}: file_id {stem!r} names emotion {name_emotion!r} but the row says {emotion!r}")
        if row["speaker_id"] and row["speaker_id"] != speaker:
            raise CorpusError(tsv, f"{where}: file_id {stem!r} names speaker {speaker!r} but the row says "
                                   f"{row['speaker_id']!r}")  # fmt: skip
        listed[stem] = row | {"_speaker": speaker}
    on_disk = {p.stem: p for p in walk(samples)} if samples.is_dir() else {}
    for stem, path in on_disk.items():
        if stem not in listed:
            raise CorpusError(path, "has no row in data.tsv; nothing is guessed about an unlisted file")
    rows = []
    for stem, row in listed.items():
        speaker = row["_speaker"]
        emotion = row["emotion"].lower()
        rows.append(
            {
                "utterance_id": f"nemo/{stem}",
                "path": str(on_disk.get(stem, samples / f"{stem}.wav")),
                "corpus": NAME,
                "speaker": f"nemo/{speaker}",
                "group": f"nemo/{speaker}",
                "label": EMOTIONS.get(emotion) or canonical(emotion),
                "transcript": row.get("raw_text") or row.get("normalized_text") or None,
                "gender": GENDERS.get(row.get("gender", "").lower()),
                "source_label": emotion,
            }
        )
    return table(rows, root, NAME, "samples/SB0_anger_0.wav listed in data.tsv")
