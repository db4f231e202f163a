"""Shared signal processing for the feature sets, written for speed.

One framing and one FFT feed every spectral descriptor; filterbanks, windows and
DCT matrices are built once per process (``lru_cache``). Everything is plain
vectorised numpy over (frames, bins) matrices, so a clip costs a few dozen
numpy calls whatever its length. Pitch is YIN (de Cheveigné & Kawahara, 2002)
computed for all frames at once through FFT autocorrelation, which also gives
a per-frame voicing strength (1 - the CMNDF minimum).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import scipy.fft
import soxr

EPS = 1e-10


def pad_to(y: np.ndarray, n: int) -> np.ndarray:
    """Zero-pad ``y`` to at least ``n`` samples (short clips still give one frame)."""
    return y if len(y) >= n else np.pad(y, (0, n - len(y)))


def frames(y: np.ndarray, frame_length: int, hop: int) -> np.ndarray:
    """(n_frames, frame_length) view of ``y``, centred like librosa (reflect-free zero pad)."""
    y = np.pad(y, (frame_length // 2, frame_length // 2))
    y = pad_to(y, frame_length)
    n = 1 + (len(y) - frame_length) // hop
    return np.lib.stride_tricks.sliding_window_view(y, frame_length)[::hop][:n]


@lru_cache(maxsize=32)
def hann(n: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


@lru_cache(maxsize=32)
def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_mels, n_fft//2+1) Slaney-normalised mel filters, as librosa builds them."""
    import librosa

    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).astype(
        np.float32
    )


@lru_cache(maxsize=32)
def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_in, n_out) orthonormal DCT-II, so that ``logmel @ D`` gives MFCCs."""
    k = np.arange(n_out)[None, :]
    n = np.arange(n_in)[:, None]
    d = np.cos(np.pi / n_in * (n + 0.5) * k) * np.sqrt(2.0 / n_in)
    d[:, 0] /= np.sqrt(2.0)
    return d.astype(np.float32)


@lru_cache(maxsize=32)
def chroma_filterbank(sr: int, n_fft: int) -> np.ndarray:
    import librosa

    return librosa.filters.chroma(sr=sr, n_fft=n_fft).astype(np.float32)


def deltas(x: np.ndarray, width: int = 2) -> np.ndarray:
    """Regression deltas along axis 0 (time), edges padded by repetition."""
    if len(x) == 0:
        return x
    padded = np.pad(x, [(width, width)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    num = sum(k * (padded[width + k : width + k + len(x)] - padded[width - k : width - k + len(x)])
              for k in range(1, width + 1))
    return num / (2 * sum(k * k for k in range(1, width + 1)))


@dataclass
class Analysis:
    """Everything frame-level about one clip, computed lazily and at most once.

    ``hop`` is 10 ms and the analysis window 25 ms (in an FFT of ``n_fft``);
    pitch uses a longer window so that two periods of ``fmin`` fit.
    """

    y: np.ndarray
    sr: int
    n_fft: int = 512
    win_s: float = 0.025
    hop_s: float = 0.010
    n_mels: int = 40
    fmin: float = 60.0
    fmax: float = 500.0
    yin_threshold: float = 0.15
    pitch_sr: int = 8000  # YIN runs on a copy at this rate: F0 < fmax needs no more
    floor_db: float | None = None  # spectral floor this far below the clip's strongest bin

    def __post_init__(self) -> None:
        self.y = np.asarray(self.y, dtype=np.float32)
        self.hop = int(round(self.hop_s * self.sr))
        self.win = int(round(self.win_s * self.sr))
        # The FFT must hold the whole window (else scipy crops frames): round up to a power of 2.
        self.n_fft = max(self.n_fft, 1 << (self.win - 1).bit_length())

    @cached_property
    def frames(self) -> np.ndarray:
        return frames(self.y, self.win, self.hop)

    @cached_property
    def power(self) -> np.ndarray:
        """(T, n_fft//2+1) power spectrum of Hann-windowed frames."""
        spec = scipy.fft.rfft(self.frames * hann(self.win), n=self.n_fft, axis=1)
        power = (spec.real**2 + spec.imag**2).astype(np.float32)
        if self.floor_db is not None:
            # Near-silence then looks the same whether it is digital zero, line noise or
            # mu-law quantisation: features stop depending on how quiet the quiet parts are.
            power += np.float32(power.max() * 10 ** (-self.floor_db / 10) + EPS)
        return power

    @cached_property
    def freqs(self) -> np.ndarray:
        return np.fft.rfftfreq(self.n_fft, 1.0 / self.sr).astype(np.float32)

    @cached_property
    def mel(self) -> np.ndarray:
        """(T, n_mels) mel energies."""
        fb = mel_filterbank(self.sr, self.n_fft, self.n_mels, 0.0, self.sr / 2)
        return self.power @ fb.T

    @cached_property
    def log_mel(self) -> np.ndarray:
        return np.log(self.mel + EPS)

    def mfcc(self, n: int) -> np.ndarray:
        """(T, n) MFCCs (c0 included) from the log-mel energies."""
        return self.log_mel @ dct_matrix(self.n_mels, n)

    @cached_property
    def rms(self) -> np.ndarray:
        f = self.frames
        return np.sqrt(np.mean(f * f, axis=1) + EPS)

    @cached_property
    def log_energy(self) -> np.ndarray:
        """Frame energy in dB."""
        return 20.0 * np.log10(self.rms + EPS)

    @cached_property
    def zcr(self) -> np.ndarray:
        s = np.signbit(self.frames)
        return np.mean(s[:, 1:] != s[:, :-1], axis=1).astype(np.float32)

    # ---- spectral shape, all from ``power``
    @cached_property
    def spectral(self) -> dict[str, np.ndarray]:
        p, f = self.power, self.freqs
        total = p.sum(axis=1) + EPS
        norm = p / total[:, None]
        centroid = norm @ f
        spread = np.sqrt(np.maximum(norm @ (f * f) - centroid**2, 0.0))
        cum = np.cumsum(norm, axis=1)
        rolloff = f[np.minimum((cum < 0.85).sum(axis=1), len(f) - 1)]
        logp = np.log(p + EPS)
        flatness = np.exp(logp.mean(axis=1)) / (p.mean(axis=1) + EPS)
        entropy = -(norm * np.log(norm + EPS)).sum(axis=1) / np.log(p.shape[1])
        mag = np.sqrt(p)
        flux = np.r_[0.0, np.sqrt(np.sum(np.diff(mag / (mag.sum(axis=1, keepdims=True) + EPS), axis=0) ** 2, axis=1))]
        return {
            "centroid": centroid / 1000.0,  # kHz keeps scales comparable
            "spread": spread / 1000.0,
            "rolloff": rolloff / 1000.0,
            "flatness": flatness,
            "entropy": entropy,
            "flux": flux.astype(np.float32),
        }

    def band_energies(self, edges_hz: tuple[float, ...]) -> np.ndarray:
        """(T, len(edges)-1) log energy in each band."""
        f = self.freqs
        cols = [
            self.power[:, (f >= lo) & (f < hi)].sum(axis=1)
            for lo, hi in zip(edges_hz[:-1], edges_hz[1:], strict=True)
        ]
        return np.log(np.stack(cols, axis=1) + EPS)

    # ---- pitch
    @cached_property
    def pitch_signal(self) -> np.ndarray:
        """The clip at ``min(sr, pitch_sr)``: what YIN (and voice-quality measures) read."""
        sr = min(self.sr, self.pitch_sr)
        return self.y if sr == self.sr else soxr.resample(self.y, self.sr, sr, quality="MQ")

    @cached_property
    def pitch(self) -> tuple[np.ndarray, np.ndarray]:
        """(f0 in Hz with 0 where unvoiced, voicing strength in [0, 1]) per frame."""
        sr = min(self.sr, self.pitch_sr)
        y = self.pitch_signal
        hop = int(round(self.hop_s * sr))
        f0, voicing = yin(y, sr, hop, self.fmin, self.fmax, self.yin_threshold)
        n = len(self.frames)  # resampling may round the length: align to the spectral frames
        if len(f0) < n:
            f0, voicing = np.pad(f0, (0, n - len(f0))), np.pad(voicing, (0, n - len(voicing)))
        return f0[:n], voicing[:n]


def yin(
    y: np.ndarray,
    sr: int,
    hop: int,
    fmin: float,
    fmax: float,
    threshold: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised YIN over all frames: (f0 Hz, 0 when unvoiced; voicing strength).

    Frames are centred like ``Analysis.frames`` so both have the same count.
    """
    tau_max = int(np.ceil(sr / fmin))
    tau_min = max(int(np.floor(sr / fmax)), 2)
    w = 2 * tau_max  # two periods of fmin
    fr = frames(np.asarray(y, np.float32), w, hop)
    # Frames are centred on the hop grid: pad for equal counts with the spectral frames.
    # linear (not circular) autocorrelation for every lag up to tau_max needs n_fft >= w + tau_max
    n_fft = 1 << int(np.ceil(np.log2(w + tau_max + 1)))
    spec = scipy.fft.rfft(fr, n=n_fft, axis=1)
    acf = scipy.fft.irfft(spec.real**2 + spec.imag**2, n=n_fft, axis=1)[:, : tau_max + 1]
    # d(tau) = E[0:w-tau] + E[tau:w] - 2 r(tau), energies from cumulative sums
    sq = np.concatenate(
        [np.zeros((len(fr), 1), np.float32), np.cumsum(fr * fr, axis=1, dtype=np.float32)], axis=1
    )
    taus = np.arange(tau_max + 1)
    e_head = sq[:, w - taus]
    e_tail = sq[:, w : w + 1] - sq[:, taus]
    d = np.maximum(e_head + e_tail - 2 * acf, 0.0)
    d[:, 0] = 0.0
    cum = np.cumsum(d[:, 1:], axis=1)
    cmndf = np.ones_like(d, dtype=np.float32)
    cmndf[:, 1:] = d[:, 1:] * taus[1:] / np.maximum(cum, EPS)
    region = cmndf[:, tau_min : tau_max + 1]
    below = region < threshold
    # first dip under the threshold, walked down to its local minimum; else the global minimum
    first = np.where(below.any(axis=1), below.argmax(axis=1), region.argmin(axis=1))
    idx = first.copy()
    rows = np.arange(len(region))
    for _ in range(region.shape[1]):
        nxt = np.minimum(idx + 1, region.shape[1] - 1)
        step = (region[rows, nxt] < region[rows, idx]) & (nxt != idx)
        if not step.any():
            break
        idx = np.where(step, nxt, idx)
    best = region[rows, idx]
    # parabolic interpolation around the minimum
    left = region[rows, np.maximum(idx - 1, 0)]
    right = region[rows, np.minimum(idx + 1, region.shape[1] - 1)]
    denom = left - 2 * best + right
    shift = np.where(np.abs(denom) > EPS, 0.5 * (left - right) / np.where(denom == 0, 1, denom), 0.0)
    shift = np.clip(shift, -1, 1)
    period = tau_min + idx + shift
    voicing = np.clip(1.0 - best, 0.0, 1.0)
    energy = sq[:, -1] / w
    voiced = (best < threshold) & (energy > 1e-7)
    f0 = np.where(voiced, sr / np.maximum(period, 1.0), 0.0)
    return f0.astype(np.float32), np.where(energy > 1e-7, voicing, 0.0).astype(np.float32)
