"""text: the transcript itself, for lexical models and audio + text fusion.

A text feature set reads no audio: its shards carry each row's transcript
(Unicode NFC, whitespace collapsed; nothing else changed, so the models'
vectorisers see what the user's ASR or corpus wrote) and an empty feature
vector. Vocabularies are never fitted here: TF-IDF and the text networks learn
theirs inside the training folds, so a held-out speaker's words never shape them.
A row without a transcript is an error row (``no_transcript``), not a skip.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from seremo.errors import TextError
from seremo.features.base import FeatureSet
from seremo.transcripts import clean_transcript


@dataclasses.dataclass(frozen=True)
class Text(FeatureSet):
    name: ClassVar[str] = "text"
    kind: ClassVar[str] = "text"
    version: ClassVar[str] = "1"
    reads_audio: ClassVar[bool] = False

    def transcript(self, row: dict) -> str:
        """The row's cleaned transcript; a row without one raises TextError."""
        text = clean_transcript(row.get("transcript"))
        if not text:
            raise TextError(row.get("path") or row.get("utterance_id"), "no_transcript",
                            "the row has no transcript; the text feature set needs one on every row")  # fmt: skip
        return text

    def compute(self, y: np.ndarray, sr: int) -> np.ndarray:
        raise TypeError("the text feature set reads transcripts, not audio")
