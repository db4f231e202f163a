"""lld_stats: librosa low-level descriptors summarised by mean, std, min and max.

MFCC (and their deltas), log-mel bands, pitch (YIN), spectral contrast,
flatness, zero-crossing rate, chroma and harmonic energy (from an HPSS of the
magnitude spectrogram). One STFT feeds every spectral descriptor.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import librosa
import numpy as np

from seremo.features.base import FeatureSet, functionals
from seremo.features.dsp import EPS, chroma_filterbank, dct_matrix, deltas, mel_filterbank

STATS = ("mean", "std", "min", "max")


@dataclasses.dataclass(frozen=True)
class LLDStats(FeatureSet):
    name: ClassVar[str] = "lld_stats"
    kind: ClassVar[str] = "vector"
    version: ClassVar[str] = "1"

    n_fft: int = 512
    hop_length: int = 160
    n_mfcc: int = 20
    n_mels: int = 40
    fmin: float = 60.0
    fmax: float = 500.0
    hpss_kernel: int = 31

    def _parts(self, y: np.ndarray, sr: int) -> list[tuple[str, np.ndarray]]:
        stft = librosa.stft(y, n_fft=self.n_fft, hop_length=self.hop_length)
        mag = np.abs(stft)
        power = mag**2
        mel = mel_filterbank(sr, self.n_fft, self.n_mels, 0.0, sr / 2) @ power
        logmel = np.log(mel + EPS)
        mfcc = (logmel.T @ dct_matrix(self.n_mels, self.n_mfcc)).T
        f0 = librosa.yin(
            y, fmin=self.fmin, fmax=self.fmax, sr=sr, frame_length=2 * int(np.ceil(sr / self.fmin)),
            hop_length=self.hop_length,
        )  # fmt: skip
        contrast = librosa.feature.spectral_contrast(S=mag, sr=sr, n_bands=6, fmin=100.0)
        flatness = librosa.feature.spectral_flatness(S=mag)
        zcr = librosa.feature.zero_crossing_rate(y, frame_length=self.n_fft, hop_length=self.hop_length)
        chroma_raw = chroma_filterbank(sr, self.n_fft) @ power
        chroma = chroma_raw / (chroma_raw.max(axis=0, keepdims=True) + EPS)
        harmonic, _ = librosa.decompose.hpss(mag, kernel_size=self.hpss_kernel)
        harm_energy = np.log(np.sum(harmonic**2, axis=0) + EPS)[None, :]
        return [
            ("mfcc", mfcc), ("dmfcc", deltas(mfcc.T).T), ("logmel", logmel), ("f0", f0[None, :]),
            ("contrast", contrast), ("flatness", flatness), ("zcr", zcr), ("chroma", chroma),
            ("harm", harm_energy),
        ]  # fmt: skip

    def compute(self, y: np.ndarray, sr: int) -> np.ndarray:
        return np.concatenate([functionals(x.T, name, STATS)[0] for name, x in self._parts(y, sr)])
