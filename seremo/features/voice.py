"""Voice-quality measures over voiced frames and glottal periods, vectorised where it pays.

What eGeMAPS chose for a reason, computed our own way (and free to use):
harmonics-to-noise ratio from the normalised autocorrelation at the pitch
period; H1-H2 and H1-A3 from a long-window spectrum of each voiced frame;
formant frequencies and bandwidths from LPC roots (Levinson-Durbin over all
voiced frames at once, roots as eigenvalues of stacked companion matrices);
jitter and shimmer over pulses picked period by period along voiced runs.

All of them describe how the voice is produced rather than who is speaking or
what microphone was used, which is why they transfer across speakers and
corpora (``benchmarks/feature_groups.py``).
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.signal

from seremo.features.dsp import EPS, frames, hann

VOICE_SR = 8000  # F0 harmonics, F1-F3 and their amplitudes all lie below 4 kHz


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) frame indices of each run of True."""
    if not mask.any():
        return []
    edges = np.flatnonzero(np.diff(np.r_[False, mask, False].astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def periodicity(fr: np.ndarray, period: np.ndarray) -> np.ndarray:
    """HNR in dB per frame: the normalised correlation r of the frame's first half
    with itself one period later, as 10 log10(r / (1 - r)), within [-10, 30] dB."""
    half = fr.shape[1] // 2
    idx = np.arange(half)
    x0 = fr[:, :half].astype(np.float64)
    x1 = fr[np.arange(len(fr))[:, None], idx[None, :] + np.clip(period, 2, half)[:, None]].astype(np.float64)
    r = (x0 * x1).sum(1) / np.sqrt((x0 * x0).sum(1) * (x1 * x1).sum(1) + EPS)
    r = np.clip(r, 0.091, 0.999)  # -10 dB .. 30 dB
    return 10.0 * np.log10(r / (1.0 - r))


A3_BAND_HZ = (2000.0, 3500.0)  # where the third formant lies for adult voices


def harmonic_levels(fr: np.ndarray, f0: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """(H1-H2, H1-A3) in dB per frame: the strongest bin near F0 and near 2 F0, and
    the strongest in the third-formant region (``A3_BAND_HZ``: no formant tracking
    needed, and as good across corpora as A3 at a tracked F3 in our measurements)."""
    n_fft = 1 << int(np.ceil(np.log2(fr.shape[1])))
    spec = scipy.fft.rfft(fr * hann(fr.shape[1]), n=n_fft, axis=1)
    db = 10.0 * np.log10(spec.real**2 + spec.imag**2 + EPS)
    fq = np.fft.rfftfreq(n_fft, 1.0 / sr)[None, :]

    def peak(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return np.where((fq >= lo[:, None]) & (fq <= hi[:, None]), db, -300.0).max(axis=1)

    h1 = peak(0.8 * f0, 1.2 * f0)
    lo, hi = (np.full_like(f0, edge) for edge in A3_BAND_HZ)
    return h1 - peak(1.8 * f0, 2.2 * f0), h1 - peak(lo, hi)


def levinson(r: np.ndarray, order: int) -> np.ndarray:
    """LPC coefficients (n, order+1), a[:, 0] = 1, from autocorrelations (n, order+1)."""
    a = np.zeros((len(r), order + 1))
    a[:, 0] = 1.0
    err = r[:, 0].copy()
    for i in range(1, order + 1):
        k = -(r[:, i] + np.sum(a[:, 1:i] * r[:, i - 1 : 0 : -1], axis=1)) / np.maximum(err, EPS)
        a[:, 1:i] = a[:, 1:i] + k[:, None] * a[:, i - 1 : 0 : -1]
        a[:, i] = k
        err = err * (1.0 - k * k)
    return a


def formants(fr: np.ndarray, sr: int, order: int = 10, n: int = 3) -> np.ndarray:
    """(frames, 2n): the first ``n`` formant frequencies then bandwidths in Hz, NaN where missing.

    ``fr`` are pre-emphasised frames; roots outside 90 Hz .. sr/2 - 50 Hz or
    wider than 600 Hz are not formants.
    """
    if not len(fr):
        return np.zeros((0, 2 * n))
    win = fr * np.hamming(fr.shape[1])
    n_fft = 1 << int(np.ceil(np.log2(2 * fr.shape[1])))
    spec = scipy.fft.rfft(win, n=n_fft, axis=1)
    r = scipy.fft.irfft(spec.real**2 + spec.imag**2, n=n_fft, axis=1)[:, : order + 1].astype(np.float64)
    r[:, 0] *= 1.0 + 1e-4  # a little white noise keeps the recursion stable on silence
    a = levinson(r, order)
    companion = np.zeros((len(a), order, order))
    companion[:, 0, :] = -a[:, 1:]
    companion[:, np.arange(1, order), np.arange(order - 1)] = 1.0
    roots = np.linalg.eigvals(companion)
    freq = np.angle(roots) * sr / (2 * np.pi)
    bw = -np.log(np.abs(roots) + EPS) * sr / np.pi
    ok = (freq > 90.0) & (freq < sr / 2 - 50.0) & (bw < 600.0)
    order_idx = np.argsort(np.where(ok, freq, np.inf), axis=1)[:, :n]
    valid = np.take_along_axis(ok, order_idx, 1)
    f = np.where(valid, np.take_along_axis(freq, order_idx, 1), np.nan)
    b = np.where(valid, np.take_along_axis(bw, order_idx, 1), np.nan)
    return np.column_stack([f, b])


def perturbation(y: np.ndarray, sr: int, f0: np.ndarray, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """(jitter, shimmer): relative change between consecutive glottal periods, and the
    change of their peak amplitude in dB, along each voiced run of ``f0`` (frame rate
    ``hop``; 0 = unvoiced). Pulses are the signal's strongest peaks at least 0.7 of
    the run's median period apart; a period that strays over 20 % from the tracked
    one, or an amplitude step over 6 dB, is a slip of the picker and is dropped."""
    jitter, shimmer = [], []
    for a, b in runs(f0 > 0):
        if b - a < 4:
            continue
        seg = y[a * hop : min(b * hop, len(y))]
        periods = sr / f0[a:b]
        peaks, _ = scipy.signal.find_peaks(seg, distance=max(0.7 * float(np.median(periods)), 1.0))
        if len(peaks) < 4:
            continue
        span = np.diff(peaks).astype(np.float64)
        tracked = periods[np.minimum(peaks[1:] // hop, len(periods) - 1)]
        ok = np.abs(span / tracked - 1.0) < 0.2
        both = ok[1:] & ok[:-1]  # two consecutive trusted periods
        jitter.append(np.abs(np.diff(span))[both] / tracked[1:][both])
        amp = np.maximum(seg[peaks], 1e-6)
        step = np.abs(np.diff(20.0 * np.log10(amp)))[ok]
        shimmer.append(step[step < 6.0])
    j = np.concatenate(jitter) if jitter else np.zeros(0)
    s = np.concatenate(shimmer) if shimmer else np.zeros(0)
    return j, s


def voiced_frames(y8: np.ndarray, idx: np.ndarray, hop: int, fmin: float, sr: int = VOICE_SR) -> np.ndarray:
    """Frames of two periods of ``fmin`` at frame indices ``idx`` (the pitch tracker's grid)."""
    fr = frames(y8, 2 * int(np.ceil(sr / fmin)), hop)
    return fr[idx[idx < len(fr)]]
