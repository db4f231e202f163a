"""seremo, version 1: the default set until version 2 (kept so that bundles trained on it still score).

Select it with ``--features seremo@1``. It names speakers better than it
generalises across corpora (see ``benchmarks/feature_groups.py``): static MFCC
and log-mel levels carry speaker and channel as much as emotion.

Built to beat eGeMAPS on accuracy at many times its speed: one framing and one
FFT feed every spectral descriptor (``dsp.Analysis``), pitch is a vectorised
YIN (no probabilistic YIN, no HPSS), and functionals are computed on whole
(frames, descriptors) matrices at once.

Groups of features (statistics over time):
- cepstra: MFCC 1..n over speech frames and over voiced frames; delta-MFCC spread;
- spectra: log energy in octave bands, centroid, spread, roll-off, flatness,
  entropy, flux, zero-crossing rate, over speech frames;
- log-mel band means and spreads (the long-term spectrum);
- prosody: F0 in semitones over voiced frames (level, range, slope, skew), F0
  and energy deltas, voicing strength, loudness contour statistics;
- voice quality: jitter- and shimmer-like frame-to-frame variation;
- rhythm: voiced share, voiced segments per second, their mean/std length,
  mean pause length, speech share.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from seremo.features.base import FeatureSet, functionals
from seremo.features.dsp import Analysis, deltas

SPREAD = ("mean", "std", "p10", "p50", "p90", "skew")
PROSODY = ("mean", "std", "p10", "p50", "p90", "range", "slope", "skew")
BANDS_HZ = (0.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0)


def _runs(mask: np.ndarray) -> np.ndarray:
    """Lengths (in frames) of the runs of True in a boolean vector."""
    if not mask.any():
        return np.zeros(0)
    padded = np.r_[False, mask, False].astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return (edges[1::2] - edges[::2]).astype(np.float64)


@dataclasses.dataclass(frozen=True)
class SeremoFunctionalsV1(FeatureSet):
    name: ClassVar[str] = "seremo"
    kind: ClassVar[str] = "vector"
    version: ClassVar[str] = "1"

    n_mfcc: int = 13
    n_mels: int = 40
    n_fft: int = 512
    hop_s: float = 0.010
    fmin: float = 60.0
    fmax: float = 500.0
    speech_db: float = 35.0  # frames within this many dB of the loudest count as speech
    floor_db: float | None = None  # spectral floor below the strongest bin (robust to line noise)

    def _vector(self, y: np.ndarray, sr: int) -> tuple[np.ndarray, list[str]]:
        a = Analysis(
            y, sr, n_fft=self.n_fft, n_mels=self.n_mels, hop_s=self.hop_s, fmin=self.fmin, fmax=self.fmax,
            floor_db=self.floor_db,
        )
        hop_s = a.hop / sr
        energy = a.log_energy
        speech = energy > energy.max() - self.speech_db
        f0, voicing = a.pitch
        n = len(energy)
        voiced = f0 > 0
        semitone = 12.0 * np.log2(np.maximum(f0[voiced], 1.0) / 27.5)

        mfcc = a.mfcc(self.n_mfcc + 1)[:, 1:]
        dmfcc = deltas(mfcc)
        spec = a.spectral
        spectral = np.column_stack(
            [a.band_energies(BANDS_HZ), a.zcr] + [spec[k] for k in sorted(spec)]
        )
        spectral_names = [f"band{i}" for i in range(len(BANDS_HZ) - 1)] + ["zcr"] + sorted(spec)

        parts: list[tuple[np.ndarray, list[str]]] = [
            functionals(mfcc[speech], "mfcc", SPREAD),
            functionals(mfcc[voiced], "mfcc_voiced", ("mean", "std")),
            functionals(dmfcc[speech], "dmfcc", ("std", "p10", "p90")),
            functionals(spectral[speech], [f"{s}" for s in spectral_names], SPREAD),
            functionals(a.log_mel[speech], "logmel", ("mean", "std")),
            functionals(semitone, ["f0_st"], PROSODY),
            functionals(deltas(semitone) if len(semitone) else semitone, ["df0_st"], ("std", "p10", "p90")),
            functionals(energy[speech], ["energy_db"], PROSODY),
            functionals(deltas(energy)[speech], ["denergy_db"], ("std", "p10", "p90")),
            functionals(voicing[speech], ["voicing"], ("mean", "std", "p90")),
        ]

        # voice quality: frame-to-frame variation inside voiced runs
        both = voiced[1:] & voiced[:-1]
        jitter = (
            float(np.mean(np.abs(np.diff(f0))[both]) / max(np.mean(f0[voiced]), 1.0)) if both.any() else 0.0
        )
        shimmer = float(np.mean(np.abs(np.diff(energy))[both])) if both.any() else 0.0
        # rhythm
        vruns, pruns = _runs(voiced), _runs(~speech)
        dur = n * hop_s
        rhythm = np.array(
            [
                voiced.mean() if n else 0.0,
                speech.mean() if n else 0.0,
                len(vruns) / max(dur, 1e-3),
                vruns.mean() * hop_s if len(vruns) else 0.0,
                vruns.std() * hop_s if len(vruns) else 0.0,
                pruns.mean() * hop_s if len(pruns) else 0.0,
                jitter,
                shimmer,
            ],
            dtype=np.float32,
        )
        rhythm_names = [
            "voiced_share", "speech_share", "voiced_runs_per_s", "voiced_run_mean_s",
            "voiced_run_std_s", "pause_mean_s", "jitter", "shimmer_db",
        ]  # fmt: skip
        parts.append((rhythm, rhythm_names))
        return np.concatenate([p[0] for p in parts]), [nm for p in parts for nm in p[1]]

    def compute(self, y: np.ndarray, sr: int) -> np.ndarray:
        return self._vector(y, sr)[0]

    def feature_names(self) -> list[str]:
        rng = np.random.default_rng(0)
        return self._vector(rng.standard_normal(self.sample_rate).astype(np.float32) * 0.1, self.sample_rate)[1]
