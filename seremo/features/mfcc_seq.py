"""mfcc_seq: frame sequences for recurrent models.

Per 10 ms frame: F0 (Hz, 0 when unvoiced), voicing strength, zero-crossing
rate, 12 MFCC (c1..c12), log energy, and the first derivative of all 16:
shape (frames, 32).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from seremo.features.base import FeatureSet
from seremo.features.dsp import Analysis, deltas


@dataclasses.dataclass(frozen=True)
class MFCCSeq(FeatureSet):
    name: ClassVar[str] = "mfcc_seq"
    kind: ClassVar[str] = "sequence"
    version: ClassVar[str] = "1"

    n_mfcc: int = 12
    n_mels: int = 26
    hop_s: float = 0.010
    fmin: float = 60.0
    fmax: float = 500.0

    def compute(self, y: np.ndarray, sr: int) -> np.ndarray:
        a = Analysis(y, sr, n_mels=self.n_mels, hop_s=self.hop_s, fmin=self.fmin, fmax=self.fmax)
        f0, voicing = a.pitch
        mfcc = a.mfcc(self.n_mfcc + 1)[:, 1:]
        base = np.column_stack([f0 / 100.0, voicing, a.zcr, mfcc, a.log_energy / 10.0])
        return np.concatenate([base, deltas(base)], axis=1)
