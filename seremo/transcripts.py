"""Transcript cleaning shared by the text feature set, tune, train and score (no audio stack imported)."""

from __future__ import annotations

import re
import unicodedata

_SPACE = re.compile(r"\s+")


def clean_transcript(text: str | None) -> str:
    """NFC, whitespace collapsed and trimmed: the one form every text model sees (training and scoring)."""
    return _SPACE.sub(" ", unicodedata.normalize("NFC", text or "")).strip()
