"""Training-only audio augmentation: additive noise at an SNR, speed perturbation, pitch shift, and a
simulated telephone line (``telephone_line``, what ``seremo extract --channel telephone`` trains on).

``seremo train`` makes ``copies`` augmented versions of every utterance once,
with a Ray Data pass (decode -> augment -> the run's own feature set), and adds
a copy to a fold's training data only when its source utterance is a training
utterance of that fold: validation and test speakers are never augmented, and
no copy of a test utterance ever reaches training.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
from typing import Any

import numpy as np
import pyarrow as pa
import soundfile as sf
import soxr

from seremo import audio
from seremo.errors import AudioError
from seremo.features import FeatureSet

log = logging.getLogger(__name__)


def add_noise(y: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White noise scaled so that signal power / noise power = ``snr_db``."""
    power = float(np.mean(y.astype(np.float64) ** 2))
    if power <= 0:
        return y
    noise = rng.standard_normal(len(y)) * np.sqrt(power / 10 ** (snr_db / 10))
    return (y + noise).astype(np.float32)


def change_speed(y: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Play ``factor`` times faster (tempo and pitch together, as Kaldi's speed perturbation)."""
    if factor == 1.0:
        return y
    return soxr.resample(y, sr * factor, sr, quality="HQ").astype(np.float32)


def shift_pitch(y: np.ndarray, sr: int, semitones: float) -> np.ndarray:
    """Shift pitch by ``semitones`` keeping the duration (librosa's phase vocoder + resampling)."""
    if semitones == 0:
        return y
    import librosa

    return librosa.effects.pitch_shift(y, sr=sr, n_steps=semitones, res_type="soxr_hq").astype(np.float32)


CHANNELS = ("as-is", "telephone")  # what `seremo extract --channel` takes


@functools.lru_cache(maxsize=1)
def _telephone_band() -> np.ndarray:
    from scipy.signal import butter

    return butter(4, [300, 3400], btype="bandpass", fs=8000, output="sos")  # the G.712 voice band


def telephone_line(y: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """``y`` as one random phone line delivers it, back at ``sr``: 8 kHz narrowband, band-passed to
    300-3400 Hz, a level between -30 and -14 dBFS, line noise (pink or white) 15-40 dB below the speech, and
    G.711 mu-law or A-law (libsndfile's codec), as call archives store audio.

    Why: a model trained on 16 kHz studio speech and scored on telephone calls sees another channel; training
    on the channel that is scored closes most of that gap (measured in benchmarks/telephone.py).
    """
    from scipy.signal import sosfilt

    x = soxr.resample(np.asarray(y, np.float32), sr, 8000, quality="HQ") if sr != 8000 else np.asarray(y, np.float32)
    x = sosfilt(_telephone_band(), x)
    rms = float(np.sqrt(np.mean(x**2))) if len(x) else 0.0
    if rms > 0:
        x = x * (10 ** (rng.uniform(-30, -14) / 20) / rms)
        noise = rng.standard_normal(len(x))
        if rng.random() < 0.5:  # pink: hum and chatter; white: the line's hiss
            spectrum = np.fft.rfft(noise)
            noise = np.fft.irfft(spectrum / np.sqrt(np.maximum(np.arange(len(spectrum)), 1)), len(x))
        noise *= 10 ** (rng.uniform(-40, -15) / 20) * float(np.sqrt(np.mean(x**2))) / max(float(np.sqrt(np.mean(noise**2))), 1e-12)
        x = x + noise
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(x, -1, 1), 8000, format="WAV", subtype="ULAW" if rng.random() < 0.5 else "ALAW")
    buffer.seek(0)
    x = sf.read(buffer, dtype="float32")[0]
    return (soxr.resample(x, 8000, sr, quality="HQ") if sr != 8000 else x).astype(np.float32)


def line_rng(utterance_id: str, seed: int = 0) -> np.random.Generator:
    """The same simulated line for the same utterance in every run (and on every worker)."""
    return np.random.default_rng([seed, int.from_bytes(hashlib.sha256(utterance_id.encode()).digest()[:8], "little")])


def augment(y: np.ndarray, sr: int, settings: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """One random augmentation of ``y`` from the enabled transforms."""
    if settings.get("speed"):
        y = change_speed(y, sr, float(rng.choice(settings["speed"])))
    if settings.get("pitch_semitones"):
        p = float(settings["pitch_semitones"])
        y = shift_pitch(y, sr, float(rng.uniform(-p, p)))
    if settings.get("noise_snr_db") is not None:
        y = add_noise(y, float(settings["noise_snr_db"]), rng)
    return y


def augment_batch(batch: pa.Table, feature_set: FeatureSet, settings: dict[str, Any], seed: int) -> pa.Table:
    """Ray Data UDF: ``copies`` augmented feature arrays per row (deterministic per row and copy).

    A row whose audio no longer decodes gives one row with ``error`` set instead.
    """
    out: dict[str, list] = {"source": [], "features": [], "shape": [], "error": []}
    for row in batch.to_pylist():
        try:
            y, sr = audio.load(row["path"], sr=feature_set.sample_rate, start_s=row.get("start_s"), end_s=row.get("end_s"))
        except AudioError as exc:
            for key, value in (("source", row["_index"]), ("features", None), ("shape", None),
                               ("error", f"{row['path']}: {exc.reason}")):  # fmt: skip
                out[key].append(value)
            continue
        for c in range(settings["copies"]):
            rng = np.random.default_rng([seed, int(row["_index"]), c])
            x = feature_set.extract(augment(y, sr, settings, rng), sr)
            for key, value in (("source", row["_index"]), ("features", x.ravel()), ("shape", list(x.shape)),
                               ("error", None)):  # fmt: skip
                out[key].append(value)
    return pa.table(
        {
            "source": pa.array(out["source"], pa.int64()),
            "features": pa.array(out["features"], pa.list_(pa.float32())),
            "shape": pa.array(out["shape"], pa.list_(pa.int32())),
            "error": pa.array(out["error"], pa.string()),
        }
    )


def augmented_copies(table: pa.Table, feature_set: FeatureSet, settings: dict[str, Any], seed: int,
                     batch_size: int = 16) -> tuple[list[np.ndarray], np.ndarray]:  # fmt: skip
    """Features of the augmented copies and, for each, the row index of its source utterance."""
    from seremo.runtime import dataset_of

    indexed = table.select(["path", "start_s", "end_s"]).append_column(
        "_index", pa.array(np.arange(table.num_rows), pa.int64())
    )
    blocks = [indexed.slice(i, batch_size) for i in range(0, indexed.num_rows, batch_size)]
    ds = dataset_of(blocks).map_batches(
        augment_batch,
        fn_kwargs={"feature_set": feature_set, "settings": settings, "seed": seed},
        batch_format="pyarrow",
        batch_size=batch_size,
    )
    items, sources, failures = [], [], []
    for out in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        for src, feats, shape, error in zip(
            out.column("source").to_pylist(), out.column("features").to_pylist(),
            out.column("shape").to_pylist(), out.column("error").to_pylist(), strict=True,
        ):  # fmt: skip
            if error is not None:
                failures.append(error)
                continue
            items.append(np.asarray(feats, np.float32).reshape(shape))
            sources.append(src)
    if failures:
        log.warning("augmentation left out %d utterance(s) whose audio no longer decodes: %s",
                    len(failures), "; ".join(sorted(failures)[:3]))  # fmt: skip
    order = np.lexsort((np.arange(len(sources)), np.asarray(sources)))
    return [items[i] for i in order], np.asarray(sources, np.int64)[order]
