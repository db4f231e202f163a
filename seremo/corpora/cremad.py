"""CREMA-D, the Crowd-sourced Emotional Multimodal Actors Dataset (Cao et al., 2014).

Files are ``AudioWAV/AAAA_SSS_EMO_LV.wav``: actor ``AAAA`` (1001..1091),
sentence ``SSS`` (12 codes, e.g. IEO, DFA), emotion ``EMO`` (ANG DIS FEA HAP
NEU SAD) and level ``LV`` (LO MD HI, XX unspecified). Labels are the acted
(intended) emotions, not the crowd ratings. Gender comes from
``VideoDemographics.csv`` (ActorID,Age,Sex,Race,Ethnicity) when that file is
anywhere under the root, else it is null. Actors are groups.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pyarrow as pa

from seremo.corpora._common import known, named_files, require_dir, table, utterance_row
from seremo.errors import CorpusError

NAME = "cremad"
PATTERN = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})\.wav$", re.IGNORECASE)
DEMOGRAPHICS = "VideoDemographics.csv"

EMOTIONS = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fearful",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
LEVELS = ("LO", "MD", "HI", "XX")
SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
SEXES = {"male": "m", "female": "f"}


def _genders(root: Path) -> tuple[Path | None, dict[str, str]]:
    """Actor id -> "m"/"f" from the first VideoDemographics.csv under ``root`` (none: empty)."""
    found = sorted(p for p in root.rglob(DEMOGRAPHICS) if p.is_file())
    if not found:
        return None, {}
    path = found[0]
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            if "ActorID" not in columns or "Sex" not in columns:
                raise CorpusError(
                    path,
                    f"expected columns ActorID,Age,Sex,Race,Ethnicity; found {','.join(columns) or 'none'}",
                )
            genders = {}
            for raw in reader:
                row = {k.strip(): (v or "").strip() for k, v in raw.items() if isinstance(k, str)}
                sex = SEXES.get(row["Sex"].lower())
                if sex is None:
                    raise CorpusError(
                        path, f"line {reader.line_num}: Sex {row['Sex']!r} is not Male or Female"
                    )
                genders[row["ActorID"]] = sex
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CorpusError(path, f"cannot be read as a CSV file ({exc})") from None
    return path, genders


def prepare(root: str | Path) -> pa.Table:
    """Manifest of every CREMA-D utterance under ``root``; actors are the CV groups."""
    root = require_dir(root, NAME)
    demographics, genders = _genders(root)
    rows = []
    naming = "CREMA-D naming AAAA_SSS_EMO_LV.wav (e.g. 1001_DFA_ANG_XX.wav)"
    for path, m in named_files(root, PATTERN, naming):
        actor, sentence, emotion, level = (g.upper() for g in m.groups())
        if not 1001 <= int(actor) <= 1091:
            raise CorpusError(path, f"CREMA-D actor {actor} is outside 1001..1091")
        if sentence not in SENTENCES:
            raise CorpusError(
                path, f"unknown CREMA-D sentence code {sentence!r} (known: {' '.join(SENTENCES)})"
            )
        label = known(path, EMOTIONS, emotion, "CREMA-D emotion code")
        if level not in LEVELS:
            raise CorpusError(path, f"unknown CREMA-D level {level!r} (known: {' '.join(LEVELS)})")
        gender = None
        if demographics is not None:
            gender = genders.get(actor)
            if gender is None:
                raise CorpusError(
                    demographics, f"has no row for actor {actor} (needed by {path.name})"
                )
        rows.append(utterance_row(NAME, path, path.stem, actor, label, transcript=SENTENCES[sentence], gender=gender,
                                  source_label=emotion))  # fmt: skip
    return table(rows, root, NAME, "AudioWAV/1001_DFA_ANG_XX.wav")
