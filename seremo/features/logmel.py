"""logmel: log-mel spectrogram images for CNNs, (n_mels, frames), 10 ms hop."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from seremo.features.base import FeatureSet
from seremo.features.dsp import Analysis


@dataclasses.dataclass(frozen=True)
class LogMel(FeatureSet):
    name: ClassVar[str] = "logmel"
    kind: ClassVar[str] = "image"
    version: ClassVar[str] = "1"

    n_mels: int = 64
    n_fft: int = 512
    hop_s: float = 0.010

    def compute(self, y: np.ndarray, sr: int) -> np.ndarray:
        a = Analysis(y, sr, n_fft=self.n_fft, n_mels=self.n_mels, hop_s=self.hop_s)
        return np.log(a.mel + 1e-6).T
