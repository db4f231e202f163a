"""compact8: eight prosodic statistics, a small baseline that trains in seconds.

signal mean |y| and std, RMS mean and std, silence ratio (frames under 40 % of
the mean RMS), harmonic ratio (energy share of the harmonic part after a
median-filter HPSS), and the max and std of the normalised autocorrelation of
the centre-clipped signal over the pitch lag range.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import scipy.ndimage

from seremo.features.base import FeatureSet
from seremo.features.dsp import Analysis

NAMES = [
    "sig_mean", "sig_std", "rms_mean", "rms_std",
    "silence_ratio", "harmonic_ratio", "autocorr_max", "autocorr_std",
]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Compact8(FeatureSet):
    name: ClassVar[str] = "compact8"
    kind: ClassVar[str] = "vector"
    version: ClassVar[str] = "1"

    silence_threshold: float = 0.4
    hpss_kernel: int = 17
    fmin: float = 60.0
    fmax: float = 500.0

    def compute(self, y: np.ndarray, sr: int) -> np.ndarray:
        a = Analysis(y, sr)
        rms = a.rms
        silence = float(np.mean(rms <= self.silence_threshold * rms.mean()))
        # Harmonic/percussive split by median filtering the magnitude along time / frequency.
        mag = np.sqrt(a.power)
        k = self.hpss_kernel
        harm = scipy.ndimage.median_filter(mag, size=(k, 1), mode="nearest")
        perc = scipy.ndimage.median_filter(mag, size=(1, k), mode="nearest")
        mask = harm**2 / (harm**2 + perc**2 + 1e-10)
        harmonic_ratio = float((mask * a.power).sum() / (a.power.sum() + 1e-10))
        # Centre clipping keeps the periodic peaks; autocorrelation over the pitch range.
        clip = 0.45 * float(np.mean(np.abs(y)))
        c = np.sign(y) * np.maximum(np.abs(y) - clip, 0.0)
        n = 1 << int(np.ceil(np.log2(2 * len(c))))
        spec = np.fft.rfft(c, n)
        r = np.fft.irfft(spec.real**2 + spec.imag**2, n)[: len(c)]
        lo, hi = int(sr / self.fmax), min(int(sr / self.fmin), len(r) - 1)
        r = r / r[0] if r[0] > 0 else np.zeros_like(r)
        band = r[lo : hi + 1] if hi > lo else np.zeros(1)
        return np.array(
            [np.mean(np.abs(y)), np.std(y), rms.mean(), rms.std(), silence, harmonic_ratio,
             band.max(), band.std()],
            dtype=np.float32,
        )  # fmt: skip

    def feature_names(self) -> list[str]:
        return list(NAMES)
