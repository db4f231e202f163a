"""seremo.audio: every format, encoding and channel layout, segments, resampling, errors.

Every file is written here, in tmp_path, from a known signal: a 440 Hz sine at 0.5
on channel 0 and a 1000 Hz sine at 0.3 on channel 1, so that decoded content,
channel order and frequencies can be checked, not only shapes.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from seremo import audio, truncation
from seremo.errors import AudioError

F0, A0 = 440.0, 0.5  # channel 0
F1, A1 = 1000.0, 0.3  # channel 1


# --------------------------------------------------------------------------- helpers


def signal(sr: int, seconds: float = 0.5, channels: int = 2) -> np.ndarray:
    """(channels, frames) float32: 440 Hz then 1000 Hz, then more tones for extra channels."""
    t = np.arange(int(round(sr * seconds))) / sr
    freqs = [F0, F1] + [200.0 + 300.0 * k for k in range(channels - 2)]
    amps = [A0, A1] + [0.2] * (channels - 2)
    rows = [
        a * np.sin(2 * np.pi * f * t)
        for f, a in zip(freqs[:channels], amps[:channels], strict=True)
    ]
    return np.stack(rows).astype(np.float32)


def peak_hz(x: np.ndarray, sr: int) -> float:
    """The dominant frequency of a 1-D signal (Hann window, rFFT)."""
    x = np.asarray(x, dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * sr / len(x))


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def write_sf(path: Path, y: np.ndarray, sr: int, subtype: str, fmt: str | None = None) -> Path:
    sf.write(str(path), y.T, sr, subtype=subtype, format=fmt)
    return path


def _encoder(*names: str) -> str | None:
    import av

    for name in names:
        try:
            av.Codec(name, "w")
        except Exception:  # not built into this FFmpeg
            continue
        return name
    return None


def encode_av(path: Path, y: np.ndarray, sr: int, codec: str, container: str | None = None) -> Path:
    """Encode (channels, frames) float32 with PyAV (FFmpeg)."""
    import av

    layout = "mono" if y.shape[0] == 1 else "stereo"
    with av.open(str(path), mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=sr, layout=layout)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(y, dtype=np.float32), format="fltp", layout=layout
        )
        frame.sample_rate = sr
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


MP3_CODEC = _encoder("libmp3lame", "mp3")
AAC_CODEC = _encoder("aac", "libfdk_aac")
needs_mp3 = pytest.mark.skipif(MP3_CODEC is None, reason="this FFmpeg build has no MP3 encoder")
needs_aac = pytest.mark.skipif(AAC_CODEC is None, reason="this FFmpeg build has no AAC encoder")


@pytest.fixture
def stereo_wav(tmp_path: Path) -> Path:
    """0.5 s of 16 kHz stereo float WAV (exact samples)."""
    return write_sf(tmp_path / "stereo.wav", signal(16000), 16000, "FLOAT")


@pytest.fixture
def mono_wav_1s(tmp_path: Path) -> Path:
    """1 s of 8 kHz mono 16-bit WAV with the 440 Hz tone."""
    return write_sf(tmp_path / "mono.wav", signal(8000, 1.0, channels=1), 8000, "PCM_16")


# --------------------------------------------------------------------------- lossless formats


@pytest.mark.parametrize(
    ("suffix", "fmt", "subtype", "atol"),
    [
        (".wav", "WAV", "PCM_U8", 1e-2),
        (".wav", "WAV", "PCM_16", 1e-4),
        (".wav", "WAV", "PCM_24", 1e-6),
        (".wav", "WAV", "PCM_32", 1e-6),
        (".wav", "WAV", "FLOAT", 1e-7),
        (".flac", "FLAC", "PCM_16", 1e-4),
        (".flac", "FLAC", "PCM_24", 1e-6),
        (".aiff", "AIFF", "PCM_16", 1e-4),
    ],
)
def test_lossless_decodes_exact_samples(tmp_path, suffix, fmt, subtype, atol):
    y = signal(16000)
    path = write_sf(tmp_path / f"x_{subtype}{suffix}", y, 16000, subtype, fmt)
    out, rate = audio.load(path, channel="all")
    assert rate == 16000
    assert out.dtype == np.float32 and out.shape == y.shape
    assert out.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(out, y, atol=atol)
    assert np.abs(out).max() <= 1.0


@pytest.mark.parametrize("subtype", ["ULAW", "ALAW"])
def test_telephone_wav_mu_law_and_a_law_at_8k(tmp_path, subtype):
    y = signal(8000)
    path = write_sf(tmp_path / f"tel_{subtype}.wav", y, 8000, subtype)
    out, rate = audio.load(path, channel="all")
    assert rate == 8000 and out.shape == y.shape and out.dtype == np.float32
    # 8-bit companding: about one quantisation step (1/32 near full scale, halved) of error
    np.testing.assert_allclose(out, y, atol=2e-2)
    assert corr(out[0], y[0]) > 0.999 and corr(out[1], y[1]) > 0.999
    i = audio.info(path)
    assert (i.sample_rate, i.channels, i.frames) == (8000, 2, y.shape[1])


def test_ogg_vorbis(tmp_path):
    y = signal(16000)
    path = write_sf(tmp_path / "x.ogg", y, 16000, "VORBIS", "OGG")
    out, rate = audio.load(path, channel="all")
    assert rate == 16000 and out.shape == y.shape
    assert corr(out[0], y[0]) > 0.99 and corr(out[1], y[1]) > 0.99
    assert peak_hz(out[0], rate) == pytest.approx(F0, abs=5)
    assert peak_hz(out[1], rate) == pytest.approx(F1, abs=5)


# --------------------------------------------------------------------------- lossy via FFmpeg


@needs_mp3
@pytest.mark.parametrize("sr", [16000, 44100])
def test_mp3_stereo_duration_and_frequencies(tmp_path, sr):
    y = signal(sr, 1.0)
    path = encode_av(tmp_path / "x.mp3", y, sr, MP3_CODEC)
    out, rate = audio.load(path, channel="all")
    assert rate == sr and out.shape[0] == 2 and out.dtype == np.float32
    assert abs(out.shape[1] / rate - 1.0) < 0.05
    assert peak_hz(out[0], rate) == pytest.approx(F0, abs=5)
    assert peak_hz(out[1], rate) == pytest.approx(F1, abs=5)
    assert np.all(np.isfinite(out)) and np.abs(out).max() <= 1.0
    # the picked channels and the mixdown agree with channel="all"
    np.testing.assert_allclose(audio.load(path, channel=1)[0], out[1])
    np.testing.assert_allclose(audio.load(path)[0], out.mean(axis=0), atol=1e-6)
    i = audio.info(path)
    assert (i.sample_rate, i.channels) == (sr, 2)
    assert abs(i.duration_s - 1.0) < 0.05


@needs_mp3
def test_mp3_mono_from_bytes_with_and_without_name(tmp_path):
    path = encode_av(tmp_path / "m.mp3", signal(16000, 1.0, channels=1), 16000, MP3_CODEC)
    data = path.read_bytes()
    for kwargs in ({"name": "call.mp3"}, {}):
        y, rate = audio.load(data, **kwargs)
        assert y.ndim == 1 and rate == 16000
        assert abs(len(y) / rate - 1.0) < 0.05
        assert peak_hz(y, rate) == pytest.approx(F0, abs=5)
    i = audio.info(data, name="call.mp3")
    assert (i.sample_rate, i.channels, i.format) == (16000, 1, "MP3")


@needs_aac
@pytest.mark.parametrize(("suffix", "container"), [(".m4a", "ipod"), (".mp4", "mp4")])
def test_aac_in_mp4_container(tmp_path, suffix, container):
    sr = 48000  # AAC frames are 1024 samples; at 48 kHz priming and padding stay < 50 ms
    y = signal(sr, 1.0)
    path = encode_av(tmp_path / f"x{suffix}", y, sr, AAC_CODEC, container)
    out, rate = audio.load(path, channel="all", name=None)
    assert rate == sr and out.shape[0] == 2
    assert abs(out.shape[1] / rate - 1.0) < 0.05
    assert peak_hz(out[0], rate) == pytest.approx(F0, abs=5)
    assert peak_hz(out[1], rate) == pytest.approx(F1, abs=5)
    # bytes named .m4a decode the same
    again, _ = audio.load(path.read_bytes(), name=f"clip{suffix}", channel="all")
    np.testing.assert_array_equal(again, out)
    # resampled straight to 16 kHz for features
    y16, r16 = audio.load(path, sr=16000, channel=0)
    assert r16 == 16000 and abs(len(y16) / 16000 - 1.0) < 0.05
    assert peak_hz(y16, r16) == pytest.approx(F0, abs=5)


def test_pcm_through_ffmpeg_matches_libsndfile(tmp_path):
    """The FFmpeg path (used for containers libsndfile cannot open) handles packed PCM."""
    y = signal(16000)
    buf = io.BytesIO()
    sf.write(buf, y.T, 16000, format="WAV", subtype="PCM_16")
    via_sf, _ = audio.load(buf.getvalue(), name="x.wav", channel="all")
    via_av, rate = audio.load(buf.getvalue(), name="x.mka", channel="all")  # .mka: AV path
    assert rate == 16000 and via_av.shape == y.shape
    np.testing.assert_allclose(via_av, via_sf, atol=1e-6)


def test_uppercase_extensions(tmp_path):
    y = signal(16000, channels=1)
    path = write_sf(tmp_path / "LOUD.WAV", y, 16000, "PCM_16")
    out, _ = audio.load(path)
    np.testing.assert_allclose(out, y[0], atol=1e-4)
    assert audio.is_audio_path(path)


# --------------------------------------------------------------------------- channels


def test_channel_selection_mix_all_and_index(stereo_wav):
    y = signal(16000)
    both, rate = audio.load(stereo_wav, channel="all")
    assert both.shape == (2, y.shape[1])
    left, _ = audio.load(stereo_wav, channel=0)
    right, _ = audio.load(stereo_wav, channel=1)
    last, _ = audio.load(stereo_wav, channel=-1)
    assert left.ndim == right.ndim == 1
    np.testing.assert_allclose(left, y[0], atol=1e-7)
    np.testing.assert_allclose(right, y[1], atol=1e-7)
    np.testing.assert_array_equal(last, right)
    assert peak_hz(left, rate) == pytest.approx(F0, abs=5)
    assert peak_hz(right, rate) == pytest.approx(F1, abs=5)
    mixed, _ = audio.load(stereo_wav)  # the default is "mix"
    assert mixed.ndim == 1
    np.testing.assert_allclose(mixed, y.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(mixed, (left + right) / 2, atol=1e-6)


def test_numpy_integer_channel(stereo_wav):
    right, _ = audio.load(stereo_wav, channel=np.int64(1))
    np.testing.assert_allclose(right, signal(16000)[1], atol=1e-7)


def test_many_channels(tmp_path):
    y = signal(16000, channels=6)
    path = write_sf(tmp_path / "six.wav", y, 16000, "PCM_24")
    out, rate = audio.load(path, channel="all")
    assert out.shape == (6, y.shape[1])
    np.testing.assert_allclose(out, y, atol=1e-6)
    fifth, _ = audio.load(path, channel=5)
    assert peak_hz(fifth, rate) == pytest.approx(1100.0, abs=5)  # 200 + 300 * 3
    assert audio.info(path).channels == 6
    np.testing.assert_allclose(audio.load(path)[0], y.mean(axis=0), atol=1e-6)


def test_mono_file_all_and_mix(mono_wav_1s):
    allc, _ = audio.load(mono_wav_1s, channel="all")
    mixed, _ = audio.load(mono_wav_1s, channel="mix")
    assert allc.shape == (1, 8000) and mixed.shape == (8000,)
    np.testing.assert_array_equal(allc[0], mixed)
    np.testing.assert_array_equal(audio.load(mono_wav_1s, channel=0)[0], mixed)


@pytest.mark.parametrize("channel", [2, 7, -3])
def test_channel_out_of_range(stereo_wav, channel):
    with pytest.raises(AudioError) as err:
        audio.load(stereo_wav, channel=channel)
    assert err.value.kind == "unsupported"
    assert err.value.path == str(stereo_wav)
    assert str(channel) in str(err.value)


@pytest.mark.parametrize("channel", ["left", 1.0, True, None])
def test_channel_of_wrong_type(stereo_wav, channel):
    with pytest.raises(ValueError, match="channel must be"):
        audio.load(stereo_wav, channel=channel)


def test_select_channel_directly():
    y = signal(8000)
    assert audio.select_channel(y, "all") is y
    np.testing.assert_allclose(audio.select_channel(y, "mix"), y.mean(axis=0))
    np.testing.assert_array_equal(audio.select_channel(y, 0), y[0])
    np.testing.assert_array_equal(audio.select_channel(y[:1], "mix"), y[0])
    with pytest.raises(AudioError) as err:
        audio.select_channel(y, 2, name="a.wav")
    assert (err.value.path, err.value.kind) == ("a.wav", "unsupported")


# --------------------------------------------------------------------------- resampling


@pytest.mark.parametrize(("sr_in", "sr_out"), [(16000, 8000), (8000, 16000), (44100, 16000)])
def test_resample_length_and_frequency(sr_in, sr_out):
    y = signal(sr_in, 1.0)
    out = audio.resample(y[0], sr_in, sr_out)
    assert out.dtype == np.float32 and out.ndim == 1
    assert len(out) == sr_out
    assert peak_hz(out, sr_out) == pytest.approx(F0, abs=2)
    # the interior matches the ideal sine at the new rate
    ideal = signal(sr_out, 1.0)[0]
    inner = slice(sr_out // 10, -sr_out // 10)
    np.testing.assert_allclose(out[inner], ideal[inner], atol=1e-2)


@pytest.mark.parametrize(("sr_in", "sr_out"), [(16000, 8000), (8000, 16000)])
def test_resample_keeps_channels_apart(sr_in, sr_out):
    y = signal(sr_in, 1.0)
    out = audio.resample(y, sr_in, sr_out)
    assert out.shape == (2, sr_out) and out.dtype == np.float32
    assert out.flags["C_CONTIGUOUS"]
    assert peak_hz(out[0], sr_out) == pytest.approx(F0, abs=2)
    assert peak_hz(out[1], sr_out) == pytest.approx(F1, abs=2)
    np.testing.assert_allclose(out[0], audio.resample(y[0], sr_in, sr_out), atol=1e-6)


def test_resample_same_rate_is_a_no_op():
    y = signal(16000)
    assert audio.resample(y, 16000, 16000) is y


def test_load_with_sr(mono_wav_1s, stereo_wav):
    up, rate = audio.load(mono_wav_1s, sr=16000)
    assert rate == 16000 and up.shape == (16000,) and up.dtype == np.float32
    assert peak_hz(up, rate) == pytest.approx(F0, abs=2)
    down, rate = audio.load(stereo_wav, sr=8000, channel="all")
    assert rate == 8000 and down.shape == (2, 4000)
    assert peak_hz(down[1], rate) == pytest.approx(F1, abs=5)
    same, rate = audio.load(mono_wav_1s, sr=8000)
    assert rate == 8000 and same.shape == (8000,)


# --------------------------------------------------------------------------- segments


@pytest.mark.parametrize(
    ("start_s", "end_s", "frames"),
    [
        (0.25, 0.75, 4000),
        (None, 0.5, 4000),
        (0.5, None, 4000),
        (0.0, 1.0, 8000),
        (-1.0, 0.1, 800),  # a negative start is the file's start
        (0.9, 5.0, 800),  # an end past the file is the file's end
    ],
)
def test_segment_lengths(mono_wav_1s, start_s, end_s, frames):
    y, rate = audio.load(mono_wav_1s, start_s=start_s, end_s=end_s)
    assert rate == 8000 and y.shape == (frames,)


def test_nan_segment_bounds_mean_no_bound(mono_wav_1s):
    """A null start_s/end_s read through pandas/numpy is NaN: the file's start/end."""
    nan = float("nan")
    assert audio.load(mono_wav_1s, start_s=nan, end_s=nan)[0].shape == (8000,)
    assert audio.load(mono_wav_1s, start_s=np.float64(0.5), end_s=nan)[0].shape == (4000,)
    assert audio.load(mono_wav_1s, start_s=nan, end_s=0.25)[0].shape == (2000,)


def test_segment_content_is_the_slice(mono_wav_1s):
    full, _ = audio.load(mono_wav_1s)
    seg, _ = audio.load(mono_wav_1s, start_s=0.25, end_s=0.5)
    np.testing.assert_array_equal(seg, full[2000:4000])
    both, _ = audio.load(mono_wav_1s, start_s=0.25, end_s=0.5, channel="all")
    assert both.shape == (1, 2000)


def test_segment_then_resample(stereo_wav):
    y, rate = audio.load(stereo_wav, start_s=0.1, end_s=0.3, sr=8000, channel="all")
    assert rate == 8000 and y.shape == (2, 1600)


@pytest.mark.parametrize(
    ("start_s", "end_s"), [(2.0, 3.0), (1.0, None), (0.8, 0.5), (0.5, 0.5), (0.0, -0.1)]
)
def test_segment_outside_the_file(mono_wav_1s, start_s, end_s):
    with pytest.raises(AudioError) as err:
        audio.load(mono_wav_1s, start_s=start_s, end_s=end_s)
    assert err.value.kind == "too_short"
    assert err.value.path == str(mono_wav_1s)


def test_min_duration(mono_wav_1s):
    y, _ = audio.load(mono_wav_1s, min_duration_s=1.0)
    assert len(y) == 8000
    with pytest.raises(AudioError) as err:
        audio.load(mono_wav_1s, min_duration_s=1.5)
    assert err.value.kind == "too_short" and err.value.path == str(mono_wav_1s)
    # measured on the segment, after resampling
    with pytest.raises(AudioError, match="too_short"):
        audio.load(mono_wav_1s, start_s=0.5, min_duration_s=0.6, sr=16000)
    y, rate = audio.load(mono_wav_1s, start_s=0.5, min_duration_s=0.5, sr=16000)
    assert (len(y), rate) == (8000, 16000)


# --------------------------------------------------------------------------- info


@pytest.mark.parametrize(
    ("suffix", "fmt", "subtype", "sr", "channels"),
    [
        (".wav", "WAV", "PCM_16", 16000, 2),
        (".wav", "WAV", "ULAW", 8000, 1),
        (".flac", "FLAC", "PCM_24", 22050, 2),
        (".ogg", "OGG", "VORBIS", 16000, 1),
    ],
)
def test_info_reads_the_header(tmp_path, suffix, fmt, subtype, sr, channels):
    y = signal(sr, 0.5, channels)
    path = write_sf(tmp_path / f"i{suffix}", y, sr, subtype, fmt)
    i = audio.info(path)
    assert (i.sample_rate, i.channels, i.frames) == (sr, channels, y.shape[1])
    assert i.duration_s == pytest.approx(y.shape[1] / sr)
    assert i.format == fmt
    # a str path, the bytes and a file:// URI say the same
    assert audio.info(str(path)).frames == i.frames
    from_bytes = audio.info(path.read_bytes(), name=path.name)
    assert (from_bytes.sample_rate, from_bytes.channels, from_bytes.frames) == (
        sr,
        channels,
        i.frames,
    )
    from_uri = audio.info(path.as_uri())
    assert (from_uri.sample_rate, from_uri.channels, from_uri.frames) == (sr, channels, i.frames)


def test_info_of_a_header_without_samples(tmp_path):
    path = write_sf(tmp_path / "hollow.wav", np.zeros((1, 0), np.float32), 16000, "PCM_16")
    i = audio.info(path)
    assert (i.sample_rate, i.frames, i.duration_s) == (16000, 0, 0.0)


# --------------------------------------------------------------------------- bytes and sources


def test_load_from_bytes(stereo_wav):
    data = stereo_wav.read_bytes()
    by_path, r1 = audio.load(stereo_wav, channel="all")
    by_bytes, r2 = audio.load(data, name="clip.wav", channel="all")
    unnamed, r3 = audio.load(data, channel="all")
    assert r1 == r2 == r3 == 16000
    np.testing.assert_array_equal(by_bytes, by_path)
    np.testing.assert_array_equal(unnamed, by_path)


def test_load_from_file_uri(stereo_wav):
    y, rate = audio.load(stereo_wav.as_uri(), channel="all")
    assert rate == 16000 and y.shape == (2, 8000)


def test_read_source(stereo_wav):
    data = stereo_wav.read_bytes()
    assert audio.read_source(stereo_wav) == data
    assert audio.read_source(str(stereo_wav)) == data
    assert audio.read_source(stereo_wav.as_uri()) == data
    assert audio.read_source(data) is data


def test_is_audio_path_and_exts():
    for ext in (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus", ".aiff"):
        assert ext in audio.AUDIO_EXTS
        assert audio.is_audio_path(f"a/b/c{ext}")
        assert audio.is_audio_path(Path(f"C{ext.upper()}"))
    for name in ("notes.txt", "image.png", "wav", "archive.wav.gz", "noext"):
        assert not audio.is_audio_path(name)


# --------------------------------------------------------------------------- errors


def _err(fn, *args, **kwargs) -> AudioError:
    with pytest.raises(AudioError) as err:
        fn(*args, **kwargs)
    assert err.value.kind in AudioError.KINDS
    assert "0x" not in err.value.reason  # no object addresses: errors.parquet stays reproducible
    return err.value


@pytest.mark.parametrize("name", ["nope.wav", "nope.mp3", "nope.flac"])
def test_missing_file(tmp_path, name):
    path = tmp_path / name
    for fn in (audio.load, audio.info, audio.read_source):
        e = _err(fn, path)
        assert (e.kind, e.path) == ("missing", str(path))
    e = _err(audio.load, path.as_uri())
    assert e.kind == "missing"


def test_a_path_below_a_file_is_missing(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    path = tmp_path / "file.txt" / "a.wav"
    for src in (path, path.as_uri()):
        for fn in (audio.load, audio.info, audio.read_source):
            assert _err(fn, src).kind == "missing"


def test_directory_is_unsupported(tmp_path):
    d = tmp_path / "folder.wav"
    d.mkdir()
    for src in (d, d.as_uri()):
        for fn in (audio.load, audio.info):
            assert _err(fn, src).kind == "unsupported"


@pytest.mark.parametrize("name", ["zero.wav", "zero.mp3", "zero.flac", "zero.m4a"])
def test_zero_byte_file_is_empty(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    for fn in (audio.load, audio.info, audio.read_source):
        e = _err(fn, path)
        assert (e.kind, e.path) == ("empty", str(path))
    assert _err(audio.load, b"", name=name).kind == "empty"


@pytest.mark.parametrize(
    ("suffix", "fmt", "subtype"), [(".wav", "WAV", "PCM_16"), (".ogg", "OGG", "VORBIS")]
)
def test_header_without_samples_is_empty(tmp_path, suffix, fmt, subtype):
    path = write_sf(tmp_path / f"hollow{suffix}", np.zeros((2, 0), np.float32), 16000, subtype, fmt)
    assert path.stat().st_size > 0
    e = _err(audio.load, path)
    assert (e.kind, e.path) == ("empty", str(path))
    assert _err(audio.load, path.read_bytes(), name=path.name).kind == "empty"


PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)
TEXT = b"utterance_id,label\n03a01Fa,happiness\n" * 20


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("notes.wav", TEXT),
        ("picture.wav", PNG),
        ("notes.mp3", TEXT),
        ("picture.m4a", PNG),
        ("notes.flac", TEXT),
        ("noise.wav", np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()),
        ("noise.mp3", np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()),
        ("riff.wav", b"RIFF\x24\x00\x00\x00WAVEjunk" + bytes(64)),
    ],
    ids=[
        "text-wav",
        "png-wav",
        "text-mp3",
        "png-m4a",
        "text-flac",
        "noise-wav",
        "noise-mp3",
        "riff-junk",
    ],
)
def test_non_audio_is_rejected(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    for fn in (audio.load, audio.info):
        e = _err(fn, path)
        assert e.kind in ("unsupported", "corrupt")
        assert e.path == str(path)
    e = _err(audio.load, data, name=name)
    assert e.kind in ("unsupported", "corrupt") and e.path == name
    assert _err(audio.load, data).path == "<bytes>"


def test_text_and_png_named_wav_are_unsupported(tmp_path):
    for name, data in (("a.wav", TEXT), ("b.wav", PNG)):
        path = tmp_path / name
        path.write_bytes(data)
        e = _err(audio.load, path)
        assert e.kind == "unsupported"
        assert str(path) in str(e) and "unsupported" in str(e)


def test_truncated_wav_header_is_rejected(tmp_path, stereo_wav):
    path = tmp_path / "cut.wav"
    path.write_bytes(stereo_wav.read_bytes()[:30])
    assert _err(audio.load, path).kind in ("unsupported", "corrupt")


def test_truncated_flac_is_corrupt(tmp_path):
    full = write_sf(tmp_path / "full.flac", signal(16000), 16000, "PCM_16", "FLAC")
    path = tmp_path / "cut.flac"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    e = _err(audio.load, path)
    assert (e.kind, e.path) == ("corrupt", str(path))


def test_nan_samples_are_corrupt(tmp_path):
    y = signal(8000)
    y[0, 10] = np.nan
    path = write_sf(tmp_path / "nan.wav", y, 8000, "FLOAT")
    assert _err(audio.load, path).kind == "corrupt"
    # a segment that avoids the bad sample is fine
    seg, _ = audio.load(path, start_s=0.1)
    assert np.all(np.isfinite(seg))


# --------------------------------------------------------------------------- real speech


def test_real_emodb_file(emodb_wavs):
    if not emodb_wavs:
        pytest.skip("the EmoDB wav folder holds no .wav files")
    path = emodb_wavs[0]
    y, rate = audio.load(path, sr=16000)
    assert rate == 16000 and y.ndim == 1 and y.dtype == np.float32
    assert len(y) > 16000 // 2  # EmoDB utterances last one to several seconds
    assert np.all(np.isfinite(y))
    assert np.abs(y).max() <= 1.0 and np.abs(y).max() > 0.01
    i = audio.info(path)
    assert i.sample_rate == 16000 and i.channels == 1
    assert i.duration_s == pytest.approx(len(y) / rate, abs=1e-3)
    y8, r8 = audio.load(path, sr=8000)
    assert r8 == 8000 and abs(len(y8) - len(y) / 2) <= 1


# --------------------------------------------------------------------------- truncated WAV


def _canonical_emodb(emodb_wavs: list[Path]) -> bytes:
    """A real EmoDB WAV with the 44-byte canonical header (fmt then data, nothing after)."""
    for path in emodb_wavs:
        data = path.read_bytes()
        if data[12:16] == b"fmt " and data[36:40] == b"data":
            assert int.from_bytes(data[40:44], "little") == len(data) - 44
            return data
    pytest.skip("no EmoDB WAV with a canonical 44-byte header")


def _truncated(fn, *args, **kwargs) -> AudioError:
    e = _err(fn, *args, **kwargs)
    assert e.kind == "truncated", e
    assert "header promises" in e.reason and "cut short" in e.reason
    return e


def _consume(source, **kwargs) -> list:
    return list(audio.stream(source, block_s=0.5, **kwargs))


def test_wav_with_its_data_cut_in_half_is_truncated(tmp_path, emodb_wavs):
    """libsndfile would read it as a shorter file; every entry point must say truncated instead."""
    data = _canonical_emodb(emodb_wavs)
    declared = len(data) - 44
    cut = data[: 44 + declared // 2]
    path = tmp_path / "half.wav"
    path.write_bytes(cut)
    e = _truncated(audio.load, path)
    assert e.path == str(path)
    assert f"promises {declared} bytes" in e.reason and f"holds {declared // 2}" in e.reason
    _truncated(audio.load, path, sr=8000)
    _truncated(audio.info, path)
    _truncated(_consume, path)
    _truncated(_consume, path, sr=8000)
    # bytes and URIs too, and by content: a WAV named .mp3, .flac or nothing is still a WAV
    _truncated(audio.load, cut, name="half.wav")
    _truncated(audio.load, cut)
    _truncated(audio.info, cut, name="half.wav")
    _truncated(_consume, cut, name="half.wav")
    _truncated(audio.load, path.as_uri())
    _truncated(audio.info, path.as_uri())
    _truncated(_consume, path.as_uri())
    for other in ("half.mp3", "half.flac", "half"):
        renamed = tmp_path / other
        renamed.write_bytes(cut)
        for fn in (audio.load, audio.info, _consume):
            _truncated(fn, renamed)


def test_wav_header_then_random_bytes_is_truncated(tmp_path, emodb_wavs):
    """A valid header followed by a little noise used to decode as a 0.05 s file."""
    data = _canonical_emodb(emodb_wavs)
    noise = np.random.default_rng(7).integers(0, 256, 800, dtype=np.uint8).tobytes()
    path = tmp_path / "stub.wav"
    path.write_bytes(data[:44] + noise)
    for fn in (audio.load, audio.info, _consume):
        e = _truncated(fn, path)
        assert "holds 800 " in e.reason


def test_wav_cut_by_one_byte_is_truncated(tmp_path, emodb_wavs):
    data = _canonical_emodb(emodb_wavs)
    path = tmp_path / "short.wav"
    path.write_bytes(data[:-1])
    for fn in (audio.load, audio.info, _consume):
        _truncated(fn, path)
    # one written by libsndfile too
    full = write_sf(tmp_path / "full.wav", signal(16000), 16000, "PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[:-1])
    for fn in (audio.load, audio.info, _consume):
        _truncated(fn, cut)


def _with_chunk_before_data(wav: bytes, chunk: bytes, body: bytes) -> bytes:
    """Insert a chunk (padded to even length) between fmt and data of a canonical WAV."""
    extra = chunk + len(body).to_bytes(4, "little") + body + b"\0" * (len(body) & 1)
    out = wav[:36] + extra + wav[36:]
    return out[:4] + (len(out) - 8).to_bytes(4, "little") + out[8:]


def test_complete_wavs_are_fine(tmp_path, emodb_wavs):
    data = _canonical_emodb(emodb_wavs)
    path = tmp_path / "whole.wav"
    path.write_bytes(data)
    y, rate = audio.load(path)
    assert rate == 16000 and len(y) == (len(data) - 44) // 2
    assert audio.info(path).frames == len(y)
    assert sum(b.shape[1] for _, b in _consume(path)) == len(y)
    # an odd-sized chunk before data is padded by one byte: the walk must step over the pad
    odd = tmp_path / "odd.wav"
    odd.write_bytes(_with_chunk_before_data(data, b"junk", b"abc"))
    y_odd, _ = audio.load(odd)
    np.testing.assert_array_equal(y_odd, y)
    assert audio.info(odd).frames == len(y)
    assert sum(b.shape[1] for _, b in _consume(odd)) == len(y)
    # ... and the same file cut short is still found
    cut = tmp_path / "odd-cut.wav"
    cut.write_bytes(odd.read_bytes()[:-100])
    for fn in (audio.load, audio.info, _consume):
        _truncated(fn, cut)
    # every real EmoDB file passes, those with a PAD chunk before data too
    for p in emodb_wavs[:40] + [p for p in emodb_wavs if p.read_bytes()[36:40] == b"PAD "][:5]:
        assert audio.info(p).frames > 0
    # chunks after data (LIST, as some writers add) are no samples
    tail = tmp_path / "tail.wav"
    body = data + b"LIST" + (4).to_bytes(4, "little") + b"INFO"
    tail.write_bytes(body[:4] + (len(body) - 8).to_bytes(4, "little") + body[8:])
    assert len(audio.load(tail)[0]) == len(y)


def test_wav_with_an_unset_data_size_is_not_truncated():
    """Streaming writers leave the data size 0 or 0xFFFFFFFF: not a promise the file breaks."""
    y = signal(8000, 0.25, 1)
    buf = io.BytesIO()
    sf.write(buf, y.T, 8000, subtype="PCM_16", format="WAV")
    data = buf.getvalue()
    assert data[36:40] == b"data"
    for unset in (0, 0xFFFFFFFF):
        patched = data[:40] + unset.to_bytes(4, "little") + data[44:]
        assert truncation.shortfall(io.BytesIO(patched), len(patched)) is None
    # 0xFFFFFFFF: libsndfile reads to the end of the file (0 it reads as no samples, as before)
    patched = data[:40] + (0xFFFFFFFF).to_bytes(4, "little") + data[44:]
    assert len(audio.load(patched, name="live.wav")[0]) == y.shape[1]
    # not a WAV, or chunks that lead nowhere: left to the decoder
    assert truncation.shortfall(io.BytesIO(PNG), len(PNG)) is None
    assert truncation.shortfall(io.BytesIO(data[:30]), 30) is None


def test_rf64_data_size_comes_from_ds64():
    """RF64 says 0xFFFFFFFF in the data chunk and the real size in ds64."""
    n = 1000
    ds64 = b"ds64" + (28).to_bytes(4, "little") + bytes(8) + n.to_bytes(8, "little") + bytes(12)
    fmt = b"fmt " + (16).to_bytes(4, "little") + bytes(16)
    head = b"RF64" + (0xFFFFFFFF).to_bytes(4, "little") + b"WAVE" + ds64 + fmt
    head += b"data" + (0xFFFFFFFF).to_bytes(4, "little")
    whole, cut = head + bytes(n), head + bytes(n // 2)
    assert truncation.shortfall(io.BytesIO(whole), len(whole)) is None
    assert truncation.shortfall(io.BytesIO(cut), len(cut)) == (n, n // 2)


def test_zero_frame_ulaw_wav_stays_empty(tmp_path):
    path = tmp_path / "nothing.wav"
    sf.write(str(path), np.zeros((0, 2), np.float32), 8000, subtype="ULAW")
    for fn in (audio.load, _consume):
        e = _err(fn, path)
        assert (e.kind, e.path) == ("empty", str(path))
    assert _err(audio.load, path.read_bytes(), name=path.name).kind == "empty"
    assert audio.info(path).frames == 0  # the header is read as before: 0 frames, no error


def test_truncated_wav_is_an_error_row_when_scoring_and_extracting(tmp_path, emodb_wavs):
    """The pipelines turn it into an error row with kind truncated, not features of half a file."""
    import pyarrow as pa

    from seremo import features, manifest, shards
    from seremo.extract import extract_batch
    from seremo.score import featurize_files

    data = _canonical_emodb(emodb_wavs)
    path = tmp_path / "half.wav"
    path.write_bytes(data[: 44 + (len(data) - 44) // 2])
    feature_set = features.get("seremo", sample_rate=8000)

    scored = featurize_files(pa.table({"path": [str(path)]}), feature_set, {"channels": "split", "segment": {}})
    row = scored.to_pylist()[0]
    assert (row["error"], row["stage"], row["segments"]) == ("truncated", "decode", [])
    assert "cut short" in row["message"]

    batch = manifest.from_rows(
        [{"utterance_id": "u1", "path": str(path), "corpus": "test", "speaker": "s1", "group": "s1"}]
    )
    out = extract_batch(batch, feature_set).to_pylist()[0]
    assert out["features"] is None and out["shape"] is None
    assert (out[shards.ERROR_KIND], out[shards.ERROR_STAGE]) == ("truncated", "decode")
    assert "cut short" in out[shards.ERROR_MESSAGE]


# --------------------------------------------------------------------------- spans of one file


def test_spans_of_a_file_are_loads_spans_decoded_once(emodb_wavs, tmp_path, monkeypatch):
    """Each row's span of a long file (rows in any order, overlapping, open-ended) equals ``load``'s
    span, and the file is streamed once for all of them (not decoded once per row)."""
    long = np.concatenate([audio.load(w)[0] for w in emodb_wavs[:6]])
    path = write_sf(tmp_path / "call.flac", long[None, :], 16000, "PCM_16")
    total = len(long) / 16000
    bounds = [(3.0, 4.5), (None, 1.0), (0.5, 2.0), (total - 1.0, None), (None, None), (3.2, 3.3)]
    opened = []
    real_stream = audio.stream
    monkeypatch.setattr(audio, "stream", lambda *a, **k: (opened.append(a[0]), real_stream(*a, **k))[1])
    got = dict(audio.spans(path, bounds, sr=16000, block_s=0.7))
    assert opened == [path] and sorted(got) == list(range(len(bounds)))
    for i, (start, end) in enumerate(bounds):
        ref, _ = audio.load(path, sr=16000, start_s=start, end_s=end)
        assert np.array_equal(got[i], ref), i
    with pytest.raises(AudioError, match="outside the file") as info:
        list(audio.spans(path, [(0.0, 1.0), (total + 5, None)], sr=16000))
    assert info.value.kind == "too_short"
