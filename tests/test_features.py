"""seremo.features: shapes, determinism, edge cases, the registry, and that the
features mean something, on real EmoDB audio.

Six EmoDB clips (three male, three female speakers; six emotions) feed the shape
and determinism checks; the pitch and arousal checks read a few more files but
only run the cheap frame analysis (``dsp.Analysis``) on them.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import librosa
import numpy as np
import pytest
from conftest import HAVE_OPENSMILE, feature_set_params

from seremo import audio, features
from seremo.errors import ConfigError
from seremo.features.base import functionals
from seremo.features.dsp import Analysis

SR = 16000
# text: tests/test_text_models.py; the model-backed sets (ssl, ssl_seq): tests/test_ssl.py
NAMES = [n for n, cls in features.FEATURE_SETS.items() if cls.reads_audio and not cls.batched]
VECTOR_SETS = [n for n, cls in features.FEATURE_SETS.items() if cls.kind == "vector" and not cls.batched]

# speaker, sex, emotion: W anger, N neutral, L boredom, F happiness, T sadness, A fear
CLIPS = ["03a01Wa", "08a01Na", "10a02Lb", "13a02Fa", "15a02Ta", "16a04Ab"]
MALE = ("03", "10", "11", "12", "15")
FEMALE = ("08", "09", "13", "14", "16")

# Fixed documented dimensions; vector sets without one are checked for consistency.
FIXED_DIM = {"compact8": 8, "egemaps": 88}
MFCC_SEQ_DIM = 32
LOGMEL_BANDS = 64


def _quiet(fs: features.FeatureSet, y: np.ndarray, sr: int = SR) -> np.ndarray:
    """extract() with openSMILE's 'Segment too short' warning on tiny clips silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Segment too short")
        return fs.extract(y, sr)


def _expected_frames(n_samples: int) -> int:
    """10 ms hop, centred frames: one per hop plus one (clips padded to 50 ms first)."""
    return 1 + max(n_samples, int(0.05 * SR)) // (SR // 100)


def _median_f0(y: np.ndarray) -> float:
    f0, _ = Analysis(y, SR).pitch
    voiced = f0[f0 > 0]
    assert len(voiced) > 10, "too few voiced frames to judge"
    return float(np.median(voiced))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def wav_dir(emodb_root: Path) -> Path:
    return emodb_root / "wav"


@pytest.fixture(scope="module")
def clips(wav_dir: Path) -> dict[str, np.ndarray]:
    out = {}
    for stem in CLIPS:
        y, sr = audio.load(wav_dir / f"{stem}.wav")
        assert sr == SR and y.dtype == np.float32 and y.ndim == 1
        out[stem] = y
    return out


@pytest.fixture(scope="module")
def extracted(clips: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """{set name: {clip: features}}, computed once for the module."""
    return {
        name: {stem: features.get(name).extract(y, SR) for stem, y in clips.items()}
        for name in NAMES
        if name != "egemaps" or HAVE_OPENSMILE
    }


@pytest.fixture(scope="module")
def seremo_names() -> list[str]:
    return features.get("seremo").feature_names()


# --------------------------------------------------------------------------- 1. shapes


@pytest.mark.parametrize("name", feature_set_params(NAMES))
def test_shape_dtype_finite_on_real_speech(name, clips, extracted):
    cls = features.FEATURE_SETS[name]
    outs = extracted[name]
    for stem, out in outs.items():
        y = clips[stem]
        assert out.dtype == np.float32, (name, stem)
        assert np.isfinite(out).all(), (name, stem)
        assert np.any(out != 0), (name, stem)
        if cls.kind == "vector":
            assert out.ndim == 1, (name, stem, out.shape)
        elif name == "mfcc_seq":
            assert cls.kind == "sequence"
            assert out.shape[1] == MFCC_SEQ_DIM
            assert abs(out.shape[0] - (len(y) / (SR / 100) + 1)) <= 1, (stem, out.shape, len(y))
            assert out.shape[0] == _expected_frames(len(y))
        elif name == "logmel":
            assert cls.kind == "image"
            assert out.shape == (LOGMEL_BANDS, _expected_frames(len(y)))
        else:  # a new set: at least the documented kinds
            assert cls.kind in ("sequence", "image")
    if cls.kind == "vector":
        dims = {out.shape for out in outs.values()}
        assert len(dims) == 1, f"{name} gives different lengths per clip: {dims}"
        if name in FIXED_DIM:
            assert dims == {(FIXED_DIM[name],)}


def test_logmel_and_mfcc_seq_share_the_frame_grid(extracted):
    for stem in CLIPS:
        assert extracted["logmel"][stem].shape[1] == extracted["mfcc_seq"][stem].shape[0], stem


def test_sequence_columns_hold_what_the_docstring_says(clips, extracted):
    """mfcc_seq columns: F0/100, voicing, ZCR, 12 MFCC, log energy/10, then their deltas."""
    y = clips["08a01Na"]
    seq = extracted["mfcc_seq"]["08a01Na"]
    a = Analysis(y, SR, n_mels=26)
    f0, voicing = a.pitch
    np.testing.assert_allclose(seq[:, 0], f0 / 100.0, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(seq[:, 1], voicing, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(seq[:, 15], a.log_energy / 10.0, rtol=1e-5, atol=1e-5)
    # deltas of a column are ~ its local slope: their sum telescopes to ~0 over a clip
    assert np.all(np.abs(seq[:, 16:].mean(axis=0)) < np.abs(seq[:, :16]).mean(axis=0) + 1e-3)


# --------------------------------------------------------------------------- 2. determinism


@pytest.mark.parametrize("name", feature_set_params(NAMES))
def test_deterministic_bytes(name, clips, extracted):
    stem = "13a02Fa"
    y = clips[stem]
    before = y.copy()
    first = extracted[name][stem]
    again = features.get(name).extract(y, SR)
    fresh = features.get(name)  # a new instance, as a worker would build it
    third = fresh.extract(y.copy(), SR)
    np.testing.assert_array_equal(y, before)  # the input is never modified in place
    for out in (again, third):
        assert out.dtype == first.dtype and out.shape == first.shape
        assert np.array_equal(out, first)
        assert out.tobytes() == first.tobytes()


# --------------------------------------------------------------------------- 3. edge cases


def _edge_signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    t = np.arange(SR) / SR
    impulse = np.zeros(SR, np.float32)
    impulse[SR // 2] = 1.0
    return {
        "silence_1s": np.zeros(SR, np.float32),
        "one_sample": np.full(1, 0.3, np.float32),
        "10ms": (0.1 * rng.standard_normal(SR // 100)).astype(np.float32),
        "50ms": (0.1 * rng.standard_normal(SR // 20)).astype(np.float32),
        "dc_offset": np.full(SR, 0.5, np.float32),
        "clipped_square": np.sign(np.sin(2 * np.pi * 200.0 * t) + 1e-9).astype(np.float32),
        "white_noise": (0.1 * rng.standard_normal(SR)).astype(np.float32),
        "impulse": impulse,
    }


EDGE = _edge_signals()


@pytest.mark.parametrize("case", list(EDGE))
@pytest.mark.parametrize("name", feature_set_params(NAMES))
def test_edge_cases_finite_and_right_shape(name, case, extracted):
    y = EDGE[case]
    out = _quiet(features.get(name), y)
    assert out.dtype == np.float32
    assert np.isfinite(out).all(), (name, case)
    kind = features.FEATURE_SETS[name].kind
    if kind == "vector":
        normal = extracted[name][CLIPS[0]].shape
        assert out.shape == normal, (name, case, out.shape, normal)
    elif name == "mfcc_seq":
        assert out.ndim == 2 and out.shape[1] == MFCC_SEQ_DIM and out.shape[0] >= 1
        assert out.shape[0] == _expected_frames(len(y))
    elif name == "logmel":
        assert out.ndim == 2 and out.shape[0] == LOGMEL_BANDS and out.shape[1] >= 1
        assert out.shape[1] == _expected_frames(len(y))


@pytest.mark.parametrize("name", feature_set_params(NAMES))
def test_empty_signal_is_padded_not_an_error(name):
    out = _quiet(features.get(name), np.zeros(0, np.float32))
    assert np.isfinite(out).all() and out.size > 0, name


# --------------------------------------------------------------------------- 4. registry


def test_default_is_registered():
    assert features.DEFAULT == "whisper" and features.DEFAULT in features.FEATURE_SETS
    assert set(NAMES) == {"seremo", "compact8", "lld_stats", "mfcc_seq", "logmel", "egemaps"}
    assert set(features.FEATURE_SETS) == set(NAMES) | {"text", "ssl", "ssl_seq", "whisper", "whisper_seq"}
    assert not features.FEATURE_SETS["text"].reads_audio and features.FEATURE_SETS["ssl"].batched
    for name, cls in features.FEATURE_SETS.items():
        assert cls.name == name and cls.kind in ("vector", "sequence", "image", "text")


def test_unknown_set_names_the_choices():
    with pytest.raises(ConfigError) as err:
        features.get("nosuch")
    msg = str(err.value)
    assert "nosuch" in msg
    for name in NAMES:
        assert name in msg


def test_unknown_parameter_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        features.get("seremo", nosuch=1)
    msg = str(err.value)
    assert "nosuch" in msg and "n_mfcc" in msg and "speech_db" in msg


def test_cli_strings_are_coerced(clips):
    fs = features.get("logmel", n_mels="40")
    assert fs.n_mels == 40 and isinstance(fs.n_mels, int)
    out = fs.extract(clips["08a01Na"], SR)
    assert out.shape == (40, _expected_frames(len(clips["08a01Na"])))
    s = features.get("seremo", fmin="70", speech_db="30.5", sample_rate="16000")
    assert s.fmin == 70.0 and isinstance(s.fmin, float)
    assert s.speech_db == 30.5 and s.sample_rate == 16000 and isinstance(s.sample_rate, int)
    # non-strings pass through untouched
    assert features.get("logmel", n_mels=48).n_mels == 48


@pytest.mark.parametrize("bad", [{"n_mels": "forty"}, {"n_mels": "40.5"}, {"hop_s": "ten"}])
def test_uncoercible_string_is_a_config_error(bad):
    with pytest.raises(ConfigError) as err:
        features.get("logmel", **bad)
    assert next(iter(bad)) in str(err.value)


@pytest.mark.parametrize("name", feature_set_params(NAMES))
def test_wrong_rate_or_channels_is_a_value_error(name):
    fs = features.get(name)
    with pytest.raises(ValueError, match="16000 Hz"):
        fs.extract(np.zeros(8000, np.float32), 8000)
    with pytest.raises(ValueError, match="mono"):
        fs.extract(np.zeros((2, SR), np.float32), SR)


@pytest.mark.parametrize("name", feature_set_params(NAMES))
def test_description_round_trips(name):
    fs = features.get(name)
    desc = fs.describe()
    assert desc["name"] == name and desc["kind"] == fs.kind and desc["version"] == fs.version
    assert features.from_description(desc) == fs
    # as shard metadata stores it: through JSON
    assert features.from_description(json.loads(json.dumps(desc))) == fs
    bad = dict(desc, version=f"{fs.version}-old")
    with pytest.raises(ConfigError, match="version"):
        features.from_description(bad)
    with pytest.raises(ConfigError):
        features.from_description({k: v for k, v in desc.items() if k != "version"})


def test_older_versions_stay_readable_by_version():
    """Shards and bundles made with seremo@1 still load: NAME@VERSION picks that version."""
    old = features.get("seremo@1")
    assert old.version == "1" and old.name == "seremo" and features.get("seremo").version != "1"
    assert features.from_description(json.loads(json.dumps(old.describe()))) == old
    y = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
    assert old.extract(y, SR).shape == (len(old.feature_names()),)
    with pytest.raises(ConfigError, match="no version '9'.*seremo@1"):
        features.get("seremo@9")
    with pytest.raises(ConfigError, match="no version ''"):  # a bare "@" is a typo, not "the newest"
        features.get("seremo@")


def test_description_keeps_non_default_params():
    fs = features.get("logmel", n_mels=40, hop_s=0.02)
    back = features.from_description(json.loads(json.dumps(fs.describe())))
    assert back == fs and back.n_mels == 40 and back.hop_s == 0.02
    with pytest.raises(ConfigError):
        features.from_description({"name": "nosuch", "version": "1", "params": {}})


# --------------------------------------------------------------------------- 5. meaning


def test_default_feature_names_match_the_vector(extracted, seremo_names):
    vec = extracted["seremo"][CLIPS[0]]
    assert len(seremo_names) == len(vec)
    assert len(set(seremo_names)) == len(seremo_names)
    for expected in ("f0_rel_range", "energy_rel_p50", "hnr_mean", "h1h2_mean", "h1a3_mean", "jitter",
                     "shimmer_db", "alpha_voiced_mean", "hammarberg_unvoiced_mean", "dmfcc0_std",
                     "mfcc3_mean", "voiced_share"):  # fmt: skip
        assert expected in seremo_names, expected
    # no absolute levels that name the speaker or the microphone: no log-mel, no F0 or energy level,
    # no cepstral means beyond MFCC 1-4 (the spectral tilt)
    assert not [n for n in seremo_names if n.startswith(("logmel", "f0_st", "energy_db", "band"))]
    means = [re.fullmatch(r"mfcc(_voiced)?(\d+)_mean", n) for n in seremo_names]
    assert sorted({int(m.group(2)) for m in means if m}) == [0, 1, 2, 3]


def test_default_set_is_blind_to_gain(clips):
    """Version 2 describes the voice relative to itself: scaling the signal changes nothing."""
    fs = features.get("seremo")
    for stem in ("03a01Wa", "08a01Na"):
        y = clips[stem]
        base, quiet = fs.extract(y, SR), fs.extract(0.25 * y, SR)
        np.testing.assert_allclose(quiet, base, rtol=2e-3, atol=2e-3, err_msg=stem)


def _vibrato_tone(f0: float, seconds: float = 1.0, depth_st: float = 2.0, noise: float = 0.0) -> np.ndarray:
    """A harmonic tone whose F0 swings +-depth_st semitones at 5 Hz, with optional white noise."""
    t = np.arange(int(SR * seconds)) / SR
    inst = f0 * 2 ** (depth_st * np.sin(2 * np.pi * 5 * t) / 12)
    phase = 2 * np.pi * np.cumsum(inst) / SR
    y = sum(0.3 / k * np.sin(k * phase) for k in range(1, 6))
    return (y + noise * np.random.default_rng(0).standard_normal(len(t))).astype(np.float32)


def test_relative_f0_ignores_the_voice_s_register(seremo_names):
    """The same melody an octave apart (a low and a high voice) gives the same relative F0."""
    fs = features.get("seremo")
    low, high = fs.extract(_vibrato_tone(120.0), SR), fs.extract(_vibrato_tone(240.0), SR)
    for name in ("f0_rel_std", "f0_rel_range", "f0_rel_p10", "f0_rel_p90"):
        i = seremo_names.index(name)
        assert low[i] == pytest.approx(high[i], abs=0.15), name
    # a swing of +-2 semitones: a p10-p90 range between 2 and 4 semitones
    assert 2.0 < low[seremo_names.index("f0_rel_range")] < 4.0
    wide = fs.extract(_vibrato_tone(120.0, depth_st=4.0), SR)
    assert wide[seremo_names.index("f0_rel_range")] > 1.6 * low[seremo_names.index("f0_rel_range")]


def test_noise_lowers_the_harmonics_to_noise_ratio(seremo_names):
    fs = features.get("seremo")
    i = seremo_names.index("hnr_mean")
    clean = fs.extract(_vibrato_tone(150.0, depth_st=0.5), SR)[i]
    noisy = fs.extract(_vibrato_tone(150.0, depth_st=0.5, noise=0.1), SR)[i]
    assert clean > 15.0 and noisy < clean - 6.0, (clean, noisy)


def _pulses(f0: float, jitter: float, shimmer: float, seconds: float = 1.0) -> np.ndarray:
    """Glottal-like pulses (decaying 700 Hz resonance) with random period and amplitude perturbation."""
    rng = np.random.default_rng(1)
    y = np.zeros(int(SR * seconds), np.float32)
    ring = (np.exp(-np.arange(80) / 15.0) * np.sin(2 * np.pi * 700 * np.arange(80) / SR)).astype(np.float32)
    t = 0.0
    while t < len(y) - 100:
        amp = 0.5 * (1 + shimmer * rng.standard_normal())
        y[int(t) : int(t) + 80] += amp * ring
        t += SR / f0 * (1 + jitter * rng.standard_normal())
    return y


def test_jitter_and_shimmer_follow_period_and_amplitude_perturbation(seremo_names):
    fs = features.get("seremo")
    j, s = seremo_names.index("jitter"), seremo_names.index("shimmer_db")
    steady = fs.extract(_pulses(140.0, 0.0, 0.0), SR)
    jittery = fs.extract(_pulses(140.0, 0.01, 0.0), SR)
    shaky = fs.extract(_pulses(140.0, 0.0, 0.2), SR)
    # 1 % random period change: local jitter E|dT|/T = 0.01 * sqrt(2) * 0.798 = 0.0113; the steady
    # train's own is the rounding of its pulses to whole samples (about 0.005)
    assert steady[j] < 0.008 and jittery[j] == pytest.approx(0.0113, rel=0.3), (steady[j], jittery[j])
    assert steady[s] < 0.3 and shaky[s] > steady[s] + 0.8, (steady[s], shaky[s])


def test_h1_h2_follows_the_first_two_harmonics(seremo_names):
    """A breathy-like source (strong fundamental) has a higher H1-H2 than a pressed one."""
    t = np.arange(SR) / SR
    i = seremo_names.index("h1h2_mean")
    fs = features.get("seremo")

    def tone(a1: float, a2: float) -> np.ndarray:
        return (a1 * np.sin(2 * np.pi * 160 * t) + a2 * np.sin(2 * np.pi * 320 * t)
                + 0.05 * np.sin(2 * np.pi * 480 * t)).astype(np.float32)  # fmt: skip

    breathy, pressed = fs.extract(tone(0.4, 0.1), SR)[i], fs.extract(tone(0.2, 0.4), SR)[i]
    assert breathy == pytest.approx(20 * np.log10(4), abs=1.5) and pressed == pytest.approx(20 * np.log10(0.5), abs=1.5)


def test_formants_of_a_synthetic_vowel():
    """formants=True: LPC finds the resonances a pulse train was filtered through."""
    from scipy.signal import lfilter

    src = np.zeros(SR, np.float64)
    src[:: SR // 120] = 1.0
    y = src
    for fc, bw in ((700.0, 80.0), (1200.0, 100.0), (2500.0, 150.0)):
        r = np.exp(-np.pi * bw / SR)
        y = lfilter([1.0], [1.0, -2 * r * np.cos(2 * np.pi * fc / SR), r * r], y)
    y = (0.5 * y / np.abs(y).max()).astype(np.float32)
    fs = features.get("seremo", formants=True)
    names = fs.feature_names()
    vec = fs.extract(y, SR)
    assert len(names) == len(features.get("seremo").feature_names()) + 12
    for k, fc in enumerate((0.7, 1.2, 2.5), start=1):
        assert vec[names.index(f"F{k}_mean")] == pytest.approx(fc, rel=0.1), k


@pytest.mark.parametrize("spk", ["03", "16"])
def test_angry_voice_has_a_flatter_spectral_balance_than_sad_or_bored(spk, wav_dir, seremo_names):
    """Anger vs sadness/boredom of one speaker: more energy above 1 kHz in voiced speech (lower
    alpha ratio and Hammarberg index), and a wider F0 range, whatever the file's level."""
    fs = features.get("seremo")
    angry = np.mean([fs.extract(audio.load(p)[0], SR) for p in sorted(wav_dir.glob(f"{spk}???W?.wav"))], 0)
    calm = np.mean([fs.extract(audio.load(p)[0], SR) for p in
                    sorted(wav_dir.glob(f"{spk}???T?.wav")) + sorted(wav_dir.glob(f"{spk}???L?.wav"))], 0)  # fmt: skip
    for name in ("alpha_voiced_mean", "hammarberg_voiced_mean"):
        i = seremo_names.index(name)
        assert angry[i] < calm[i] - 3.0, (name, angry[i], calm[i])


@pytest.mark.parametrize("name", feature_set_params(VECTOR_SETS))
def test_feature_names_where_given_match(name, extracted):
    names = features.get(name).feature_names()
    if names is None:  # lld_stats documents no names
        return
    assert len(names) == len(extracted[name][CLIPS[0]])
    assert len(set(names)) == len(names)


def _harmonic_tone(f0: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return sum(0.3 / k * np.sin(2 * np.pi * f0 * k * t + k) for k in range(1, 6)).astype(np.float32)


@pytest.mark.parametrize("f0", [150.0, 220.0])
def test_yin_finds_a_harmonic_tone(f0):
    est, voicing = Analysis(_harmonic_tone(f0), SR).pitch
    voiced = est > 0
    assert voiced.mean() > 0.9
    assert np.all(np.abs(est[voiced] / f0 - 1) < 0.02), est[voiced]
    assert voicing[voiced].min() > 0.85


def test_yin_rejects_noise_silence_and_dc():
    rng = np.random.default_rng(7)
    for sig in (
        (0.1 * rng.standard_normal(SR)).astype(np.float32),
        np.zeros(SR, np.float32),
        np.full(SR, 0.5, np.float32),
        EDGE["impulse"],
    ):
        f0, voicing = Analysis(sig, SR).pitch
        assert (f0 > 0).mean() < 0.05
        assert np.all((voicing >= 0) & (voicing <= 1))


def test_yin_on_a_clipped_square_wave():
    f0, _ = Analysis(EDGE["clipped_square"], SR).pitch
    voiced = f0 > 0
    assert voiced.mean() > 0.9
    assert abs(np.median(f0[voiced]) / 200.0 - 1) < 0.02


def test_yin_ignores_gain_and_dc_offset(wav_dir):
    y, _ = audio.load(wav_dir / "03a01Nc.wav")
    f0, _ = Analysis(y, SR).pitch
    for variant in (0.05 * y, 0.5 * y + 0.2):
        g, _ = Analysis(variant.astype(np.float32), SR).pitch
        assert np.mean((g > 0) == (f0 > 0)) > 0.97
        both = (g > 0) & (f0 > 0)
        assert np.median(np.abs(g[both] / f0[both] - 1)) < 0.01


def test_median_f0_of_real_neutral_speech(wav_dir):
    """One neutral file per speaker: male 80-200 Hz, female 150-320 Hz."""
    medians = {}
    for spk in MALE + FEMALE:
        path = sorted(wav_dir.glob(f"{spk}???N?.wav"))[0]
        y, _ = audio.load(path)
        medians[spk] = _median_f0(y)
    for spk in MALE:
        assert 80 <= medians[spk] <= 200, (spk, medians[spk])
    for spk in FEMALE:
        assert 150 <= medians[spk] <= 320, (spk, medians[spk])
    assert np.mean([medians[s] for s in FEMALE]) > 1.4 * np.mean([medians[s] for s in MALE])


@pytest.mark.parametrize("stem, low, high", [("03a01Nc", 80, 200), ("08a01Na", 150, 320)])
def test_version_1_f0_feature_agrees_with_yin(stem, low, high, wav_dir):
    """The seremo@1 vector's f0_st_p50 (semitones re 27.5 Hz) is the YIN median."""
    y, _ = audio.load(wav_dir / f"{stem}.wav")
    v1 = features.get("seremo@1")
    vec = v1.extract(y, SR)
    hz = 27.5 * 2 ** (vec[v1.feature_names().index("f0_st_p50")] / 12)
    assert low <= hz <= high
    assert abs(hz / _median_f0(y) - 1) < 0.01


def _arousal_cues(paths: list[Path]) -> tuple[float, float]:
    """Mean over files of (median F0 in semitones, median spectral centroid in kHz of speech)."""
    f0s, cents = [], []
    for p in paths:
        y, _ = audio.load(p)
        a = Analysis(y, SR)
        f0, _ = a.pitch
        f0s.append(np.median(12 * np.log2(f0[f0 > 0] / 27.5)))
        speech = a.log_energy > a.log_energy.max() - 35
        cents.append(np.median(a.spectral["centroid"][speech]))
    return float(np.mean(f0s)), float(np.mean(cents))


@pytest.mark.parametrize("spk", ["03", "16"])
def test_angry_speech_has_higher_arousal_cues_than_sad_or_bored(spk, wav_dir):
    """Anger vs sadness/boredom of one speaker: higher pitch and a brighter spectrum.

    Not frame energy: EmoDB as released is peak-normalised per file (nearly every
    file peaks at full scale), and angry speech, peakier, then has the *lower*
    median frame energy for every speaker. Pitch and spectral balance survive that
    normalisation.
    """
    angry = sorted(wav_dir.glob(f"{spk}???W?.wav"))
    calm = sorted(wav_dir.glob(f"{spk}???T?.wav")) + sorted(wav_dir.glob(f"{spk}???L?.wav"))
    assert len(angry) >= 5 and len(calm) >= 5
    f0_w, cent_w = _arousal_cues(angry)
    f0_c, cent_c = _arousal_cues(calm)
    assert f0_w > f0_c + 3.0, (f0_w, f0_c)  # at least 3 semitones higher
    assert cent_w > 1.5 * cent_c, (cent_w, cent_c)


def test_version_1_energy_features_track_level(clips):
    """seremo@1: halving the amplitude lowers every energy_db level by 6.02 dB, leaves shape features."""
    fs = features.get("seremo@1")
    seremo_names = fs.feature_names()
    y = clips["08a01Na"]
    base = fs.extract(y, SR)
    quiet = fs.extract(0.5 * y, SR)
    shift = 20 * np.log10(0.5)
    for stat in ("mean", "p10", "p50", "p90"):
        i = seremo_names.index(f"energy_db_{stat}")
        assert quiet[i] - base[i] == pytest.approx(shift, abs=0.01), stat
    for name in ("energy_db_std", "energy_db_range", "f0_st_p50", "centroid_p50", "voiced_share"):
        i = seremo_names.index(name)
        assert quiet[i] == pytest.approx(base[i], rel=1e-3, abs=1e-3), name
    # speech is far louder than its pauses
    assert base[seremo_names.index("energy_db_range")] > 10.0


def test_logmel_puts_a_tone_in_its_band():
    t = np.arange(SR) / SR
    y = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    lm = features.get("logmel").extract(y, SR)
    profile = lm[:, 10:-10].mean(axis=1)
    centres = librosa.mel_frequencies(LOGMEL_BANDS + 2, fmin=0.0, fmax=SR / 2)[1:-1]
    assert abs(centres[profile.argmax()] - 1000.0) < 100.0
    far = profile[centres > 4000.0].max()
    assert (profile.max() - far) * 10 / np.log(10) > 60.0  # dB below the tone's band


def _tone_leakage_db(sample_rate: int, n_fft: int = 512) -> float:
    """How far (dB) the loudest mel band above 4 kHz lies under a 1 kHz tone's band."""
    t = np.arange(sample_rate) / sample_rate
    y = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    lm = features.get("logmel", sample_rate=sample_rate, n_fft=n_fft).extract(y, sample_rate)
    profile = lm[:, 10:-10].mean(axis=1)
    centres = librosa.mel_frequencies(LOGMEL_BANDS + 2, fmin=0.0, fmax=sample_rate / 2)[1:-1]
    return float((profile.max() - profile[centres > 4000.0].max()) * 10 / np.log(10))


def test_no_leakage_when_the_window_fits_the_fft():
    assert _tone_leakage_db(44100, n_fft=2048) > 60.0


# Regression: the FFT grows to hold the 25 ms window at high rates (frames were cropped).
def test_no_leakage_at_44k_with_default_fft():
    assert _tone_leakage_db(44100) > 60.0


# --------------------------------------------------------------------------- 6. functionals()


def test_functionals_known_values():
    x = np.arange(11, dtype=np.float64)  # 0..10, a ramp of slope 1 per frame
    which = ("mean", "std", "min", "max", "p10", "p50", "p90", "range", "skew", "slope")
    vals, names = functionals(x, ["ramp"], which)
    got = dict(zip(names, vals, strict=True))
    assert vals.dtype == np.float32 and len(vals) == len(which)
    assert names == [f"ramp_{w}" for w in which]
    assert got["ramp_mean"] == pytest.approx(5.0)
    assert got["ramp_std"] == pytest.approx(np.sqrt(10.0))  # population std of 0..10
    assert got["ramp_min"] == 0.0 and got["ramp_max"] == 10.0
    assert got["ramp_p10"] == pytest.approx(1.0)
    assert got["ramp_p50"] == pytest.approx(5.0)
    assert got["ramp_p90"] == pytest.approx(9.0)
    assert got["ramp_range"] == pytest.approx(8.0)
    assert got["ramp_skew"] == pytest.approx(0.0, abs=1e-6)
    assert got["ramp_slope"] == pytest.approx(1.0)


def test_functionals_columns_and_names():
    t = np.arange(50, dtype=np.float64)
    x = np.column_stack([3.0 - 0.5 * t, np.full(50, 2.0), np.r_[np.zeros(49), 49.0]])
    vals, names = functionals(x, "c", ("mean", "slope", "std", "skew"))
    got = dict(zip(names, vals, strict=True))
    assert names[:3] == ["c0_mean", "c1_mean", "c2_mean"]  # functional-major order
    assert got["c0_slope"] == pytest.approx(-0.5)
    assert got["c1_slope"] == pytest.approx(0.0) and got["c1_std"] == 0.0
    assert got["c1_skew"] == 0.0  # constant column: no division by zero
    assert got["c2_mean"] == pytest.approx(49.0 / 50)
    assert got["c2_skew"] > 5.0  # one outlier: strongly right-skewed
    one, _ = functionals(np.array([[4.0, -1.0]]), "s", ("mean", "std", "slope", "skew"))
    np.testing.assert_array_equal(one, [4.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])


def test_functionals_empty_input_gives_zeros():
    which = ("mean", "std", "p50", "slope", "skew")
    vals, names = functionals(np.zeros((0, 12)), "mfcc", which)
    assert vals.dtype == np.float32 and vals.shape == (12 * len(which),)
    assert not vals.any() and len(names) == len(vals)
    full, full_names = functionals(np.ones((5, 12)), "mfcc", which)
    assert names == full_names and full.shape == vals.shape
    one, one_names = functionals(np.zeros(0), ["f0_st"], which)
    assert one.shape == (len(which),) and not one.any()
    assert one_names == [f"f0_st_{w}" for w in which]


def test_functionals_rejects_unknown_names():
    with pytest.raises(ValueError, match="bogus"):
        functionals(np.ones(4), "x", ("mean", "bogus"))
