"""Training-only augmentation: each transform does what it says, and copies stay in training folds."""

from __future__ import annotations

import numpy as np
import pytest

from seremo import audio, augment
from seremo.errors import ConfigError
from seremo.features.dsp import Analysis
from seremo.train import load_settings, training_indices


@pytest.fixture(scope="module")
def speech(emodb_wavs):
    y, sr = audio.load(emodb_wavs[0])
    return y, sr


def test_noise_reaches_the_requested_snr(speech):
    y, _ = speech
    for snr in (0.0, 10.0, 20.0):
        noisy = augment.add_noise(y, snr, np.random.default_rng(0))
        noise = noisy.astype(np.float64) - y
        measured = 10 * np.log10(np.mean(y.astype(np.float64) ** 2) / np.mean(noise**2))
        assert measured == pytest.approx(snr, abs=0.2)


def test_speed_changes_duration_by_the_factor(speech):
    y, sr = speech
    for factor in (0.9, 1.1):
        assert len(augment.change_speed(y, sr, factor)) == pytest.approx(len(y) / factor, rel=0.002)


def test_pitch_shift_keeps_duration_and_moves_f0(speech):
    y, sr = speech
    up = augment.shift_pitch(y, sr, 2.0)
    assert len(up) == len(y)

    def median_f0(x):
        f0, _ = Analysis(x, sr).pitch
        return np.median(f0[f0 > 0])

    ratio = median_f0(up) / median_f0(y)
    assert ratio == pytest.approx(2 ** (2 / 12), rel=0.04)


def test_copies_only_join_their_sources_training_fold():
    n = 10
    aug_src = np.array([0, 0, 3, 5, 7, 9])  # two copies of row 0, one each of 3, 5, 7, 9
    fit = np.array([0, 1, 3, 4])
    idx = training_indices(fit, aug_src, n)
    copies = idx[idx >= n] - n
    assert sorted(aug_src[copies].tolist()) == [0, 0, 3]
    assert set(idx[idx < n].tolist()) == set(fit.tolist())


def test_augment_settings_need_a_transform():
    with pytest.raises(ConfigError, match="copies > 0 needs"):
        load_settings(None, augment={"copies": 2})
    s = load_settings(None, augment={"copies": 1, "noise_snr_db": 15})
    assert s.augment.copies == 1


def test_augmented_copies_through_ray_data(emodb_manifest, ray_session):
    from seremo import features, manifest
    from seremo.augment import augmented_copies

    table = manifest.read(emodb_manifest).slice(0, 6)
    fs = features.get("mfcc_seq")
    items, sources = augmented_copies(table, fs, {"copies": 2, "noise_snr_db": 10.0, "speed": [0.9, 1.1],
                                                  "pitch_semitones": None}, seed=0)  # fmt: skip
    assert sorted(sources.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert all(x.ndim == 2 and x.shape[1] == 32 and np.isfinite(x).all() for x in items)
    again, _ = augmented_copies(table, fs, {"copies": 2, "noise_snr_db": 10.0, "speed": [0.9, 1.1],
                                            "pitch_semitones": None}, seed=0)  # fmt: skip
    assert all(np.array_equal(a, b) for a, b in zip(items, again, strict=True))  # deterministic


def test_telephone_line_is_narrowband_g711_and_the_same_per_utterance(speech):
    """8 kHz narrowband (nothing above 3.4 kHz worth the name, little below 300 Hz), the length kept, a level
    in the telephone range; the same utterance id gives the same line, another id another line."""
    import librosa

    y, sr = speech
    line = augment.telephone_line(y, sr, augment.line_rng("03a01Fa"))
    assert line.dtype == np.float32 and len(line) == len(y)
    np.testing.assert_array_equal(line, augment.telephone_line(y, sr, augment.line_rng("03a01Fa")))
    assert not np.allclose(line, augment.telephone_line(y, sr, augment.line_rng("03a01Fb")))
    power = np.abs(librosa.stft(line, n_fft=512)) ** 2
    freqs = librosa.fft_frequencies(sr=sr, n_fft=512)
    clean = np.abs(librosa.stft(y, n_fft=512)) ** 2
    assert power[freqs > 4000].sum() / power.sum() < 1e-4 < clean[freqs > 4000].sum() / clean.sum()
    assert power[freqs < 150].sum() / power.sum() < 0.02
    level = 20 * np.log10(np.sqrt(np.mean(line**2)))
    assert -32 < level < -12


def test_extract_on_the_telephone_channel(emodb_manifest, ray_session, tmp_path):
    """``seremo extract --channel telephone``: other features than as-is for the same rows, the channel in the
    summary and in the extraction's identity (the same folder with the other channel is refused, not mixed)."""
    import json

    from seremo import manifest
    from seremo.cli import main
    from seremo.shards import read_features

    subset = tmp_path / "subset.parquet"
    manifest.write(manifest.read(emodb_manifest).slice(0, 12), str(subset))
    outs = {}
    for channel in ("as-is", "telephone"):
        outs[channel] = tmp_path / channel
        assert main(["extract", str(subset), "--features", "compact8", "--out", str(outs[channel]),
                     "--channel", channel]) == 0  # fmt: skip
        assert json.loads((outs[channel] / "extract.json").read_text())["channel"] == channel
    a, b = (read_features(str(outs[c])).matrix() for c in ("as-is", "telephone"))
    assert a.shape == b.shape and not np.allclose(a, b)
    assert main(["extract", str(subset), "--features", "compact8", "--out", str(outs["telephone"])]) == 2  # neither mixed nor replaced
    assert main(["extract", str(subset), "--features", "compact8", "--out", str(outs["as-is"]), "--channel", "phone"]) == 2
