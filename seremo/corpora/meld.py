"""MELD transcripts (Poria et al., ACL 2019): utterances of *Friends* with emotions, text only.

The release's ``<split>_sent_emo.csv`` files (``train``, ``dev``, ``test``) hold one
utterance a row: ``Utterance`` (the transcript, UTF-8, some characters mis-encoded
as released), ``Speaker`` (a character's name, as given), ``Emotion`` (7 labels),
``Dialogue_ID`` / ``Utterance_ID`` (numbered within the split) and the utterance's
times in its episode. The audio is not part of this corpus here, so every row is
a text-only row (no ``path``; see ``seremo.manifest``). The dialogue is the group:
turns of one conversation share context and never straddle a train/test fold.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa

from seremo.corpora._common import require_dir, table
from seremo.errors import ConfigError, CorpusError

NAME = "meld"
SPLITS = ("train", "dev", "test")
EMOTIONS = {
    "neutral": "neutral",
    "joy": "happy",
    "surprise": "surprised",
    "anger": "angry",
    "sadness": "sad",
    "disgust": "disgust",
    "fear": "fearful",
}
COLUMNS = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")


def prepare(root: str | Path, *, split: str = "train") -> pa.Table:
    """Text-only manifest rows of one official split (``--opt split=train|dev|test``)."""
    if split not in SPLITS:
        raise ConfigError(f"meld: split must be one of {', '.join(SPLITS)}, not {split!r}")
    root = require_dir(root, NAME)
    path = root / f"{split}_sent_emo.csv"
    if not path.is_file():
        raise CorpusError(path, f"MELD's {split} split is not there (expected {split}_sent_emo.csv in {root})")
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise CorpusError(path, f"lacks MELD column(s) {', '.join(missing)}; is it a MELD *_sent_emo.csv?")
            rows = [_row(record, split, path, n) for n, record in enumerate(reader, start=2)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CorpusError(path, f"is not a readable UTF-8 CSV ({type(exc).__name__}: {exc})") from None
    return table(rows, root, NAME, f"{split}_sent_emo.csv")


def _row(record: dict[str, str], split: str, path: Path, line: int) -> dict[str, object]:
    emotion = record["Emotion"].strip().lower()
    label = EMOTIONS.get(emotion)
    if label is None:
        raise CorpusError(path, f"line {line}: unknown MELD emotion {record['Emotion']!r} (known: {' '.join(EMOTIONS)})")
    text = " ".join(record["Utterance"].split())
    if not text:
        raise CorpusError(path, f"line {line}: the utterance is empty")
    dialogue, utterance = record["Dialogue_ID"].strip(), record["Utterance_ID"].strip()
    if not (dialogue.isdigit() and utterance.isdigit()):
        raise CorpusError(path, f"line {line}: Dialogue_ID/Utterance_ID must be numbers, not {dialogue!r}/{utterance!r}")
    speaker = " ".join(record["Speaker"].split()) or "unknown"
    return {
        "utterance_id": f"meld/{split}/dia{dialogue}_utt{utterance}",
        "path": None,
        "corpus": NAME,
        "speaker": f"meld/{speaker}",
        "group": f"meld/{split}/dia{dialogue}",
        "label": label,
        "transcript": text,
        "source_label": emotion,
    }
