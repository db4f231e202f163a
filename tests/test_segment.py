"""Streaming segmentation of long recordings (seremo.segment) and audio.stream.

The call recordings are built from real EmoDB speech: a 2.5-minute 8 kHz mu-law
stereo WAV with different utterances on each channel, the ground truth being
where every utterance file was placed.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from seremo import audio
from seremo.errors import AudioError, ConfigError
from seremo.segment import (
    MIX_CHANNEL,
    SPLIT_HORIZON,
    FileSegmenter,
    Segment,
    SegmentSettings,
    segment_file,
)
from seremo.simulate import hold_music

SR = 8000  # the recordings' rate, as on a telephone line
FEAT_SR = 16000  # the rate segments are asked for
TOTAL_S = 150.0
TOL_S = 0.3
LONG_SILENCE = {0: (60.0, 75.0), 1: (100.0, 112.0)}  # a long pause on each channel
LONG_UTTERANCES = ("08b03Tc", "08b02Tc", "16a05Tb")  # 9.0 s; 7.7 + 6.8 s back to back


def _speech(path: Path) -> np.ndarray:
    y, rate = audio.load(path, sr=SR)
    assert rate == SR
    return y


def _merge(intervals: list[tuple[float, float]], gap: float) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for s, e in sorted(intervals):
        if out and s - out[-1][1] < gap:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


@pytest.fixture(scope="module")
def call(emodb_wavs, tmp_path_factory) -> tuple[Path, list[tuple[int, float, float]]]:
    """A stereo 8 kHz mu-law call of real speech and its truth: (channel, start_s, end_s)."""
    by_id = {p.stem: p for p in emodb_wavs}
    if not all(u in by_id for u in LONG_UTTERANCES):
        pytest.skip("EmoDB lacks the long utterances this test places")
    rng = np.random.default_rng(0)
    pool = [p for p in emodb_wavs if p.stem not in LONG_UTTERANCES]
    pool = [pool[i] for i in rng.permutation(len(pool))]
    # the long turns are placed first on their channel: runs over max_s that must be split
    first = {0: [_speech(by_id["08b03Tc"])],
             1: [np.concatenate([_speech(by_id["08b02Tc"]), _speech(by_id["16a05Tb"])])]}  # fmt: skip
    y = np.zeros((2, int(TOTAL_S * SR)), np.float32)
    truth = []
    for ch, t in ((0, 0.7), (1, 1.9)):
        while True:
            x = first[ch].pop() if first[ch] else _speech(pool.pop())
            silence_start, silence_end = LONG_SILENCE[ch]
            if t < silence_end and t + len(x) / SR > silence_start:
                t = silence_end  # keep the long pause empty
            if t + len(x) / SR > TOTAL_S - 0.5:
                break
            i = int(round(t * SR))
            y[ch, i : i + len(x)] = x
            truth.append((ch, t, t + len(x) / SR))
            t += len(x) / SR + rng.uniform(1.0, 2.5)
    y += rng.normal(0.0, 1e-4, y.shape).astype(np.float32)  # a faint hiss in the pauses
    path = tmp_path_factory.mktemp("call") / "call.wav"
    sf.write(str(path), y.T, SR, subtype="ULAW")
    return path, truth


def _match(segs: list[Segment], truth: list[tuple[int, float, float]]) -> np.ndarray:
    """(start error, end error, pieces) per true utterance, from the union of the
    segments overlapping it on its channel; NaN errors where none does."""
    rows = []
    for ch, s, e in truth:
        hits = [g for g in segs if g.channel == ch and g.end_s > s and g.start_s < e]
        if hits:
            rows.append((min(g.start_s for g in hits) - s, max(g.end_s for g in hits) - e, len(hits)))
        else:
            rows.append((np.nan, np.nan, 0))
    return np.array(rows, dtype=float)


def _check_against_truth(segs: list[Segment], truth, settings: SegmentSettings, min_ok: float = 0.8):
    errors = _match(segs, truth)
    detected = errors[:, 2] > 0
    ok = detected & (np.abs(errors[:, 0]) <= TOL_S) & (np.abs(errors[:, 1]) <= TOL_S)
    assert detected.mean() >= 0.95, f"{(~detected).sum()} of {len(truth)} utterances missed"
    assert ok.mean() >= min_ok, f"only {ok.mean():.0%} within {TOL_S} s: {np.round(errors, 2).tolist()}"
    for g in segs:  # nothing outside speech: no segment in a pause, none bridging two utterances
        inside = [(s, e) for ch, s, e in truth if ch == g.channel and g.end_s > s and g.start_s < e]
        assert len(inside) == 1, (g.channel, g.start_s, g.end_s, inside)
        assert g.start_s >= inside[0][0] - TOL_S and g.end_s <= inside[0][1] + TOL_S
    return errors


def _check_shape(segs: list[Segment], settings: SegmentSettings, sr: int, duration: float):
    by_channel: dict[int, list[Segment]] = {}
    for g in segs:
        by_channel.setdefault(g.channel, []).append(g)
        assert g.audio.dtype == np.float32 and g.audio.ndim == 1
        assert abs(len(g.audio) - (g.end_s - g.start_s) * sr) <= 1
        assert 0.0 <= g.start_s < g.end_s <= duration + 1e-9
        assert g.end_s - g.start_s <= settings.max_s + 1e-6
    for chan_segs in by_channel.values():  # time order, no overlap
        for a, b in zip(chan_segs, chan_segs[1:], strict=False):
            assert a.end_s <= b.start_s + 1e-9


# --------------------------------------------------------------------------- (a) real speech


def test_vad_finds_every_utterance_on_its_channel(call):
    path, truth = call
    settings = SegmentSettings()
    segmenter = FileSegmenter(path, settings, sr=FEAT_SR, channels="split")
    assert segmenter.duration_s is None and segmenter.n_channels is None
    segs = list(segmenter)
    assert segmenter.n_channels == 2 and segmenter.n_segments == len(segs)
    assert segmenter.duration_s == pytest.approx(TOTAL_S, abs=1e-6)
    _check_shape(segs, settings, FEAT_SR, TOTAL_S)
    errors = _check_against_truth(segs, truth, settings)
    assert np.nanmax(np.abs(errors[:, :2])) < 0.5
    assert {g.channel for g in segs} == {0, 1}
    for ch, (s, e) in LONG_SILENCE.items():
        assert not [g for g in segs if g.channel == ch and g.end_s > s + TOL_S and g.start_s < e - TOL_S]
    # the long turns were split into near-equal pieces of at most max_s
    long_rows = [i for i, (ch, s, e) in enumerate(truth) if e - s > settings.max_s]
    assert len(long_rows) == 2 and all(errors[i, 2] >= 2 for i in long_rows)
    # the audio is the file's own, resampled
    whole, _ = audio.load(path, sr=FEAT_SR, channel="all")
    g = segs[len(segs) // 2]
    i0 = int(round(g.start_s * FEAT_SR))
    np.testing.assert_array_equal(g.audio, whole[g.channel, i0 : i0 + len(g.audio)])


def test_split_pieces_are_near_equal_and_contiguous(call):
    path, truth = call
    settings = SegmentSettings()
    segs = list(segment_file(path, settings, sr=FEAT_SR, channels="split"))
    for ch, s, e in truth:
        if e - s <= settings.max_s:
            continue
        pieces = [g for g in segs if g.channel == ch and g.end_s > s and g.start_s < e]
        run = [p for p in pieces if p.end_s - p.start_s > settings.max_s / 2 - 1e-6]
        lengths = [p.end_s - p.start_s for p in run]
        assert len(run) >= 2 and max(lengths) - min(lengths) < 1e-6  # near-equal pieces
        for a, b in zip(run, run[1:], strict=False):
            assert b.start_s == pytest.approx(a.end_s, abs=1e-9)  # one run, cut without a gap


def test_mix_mode_segments_the_channel_mean(call):
    path, truth = call
    settings = SegmentSettings()
    segmenter = FileSegmenter(path, settings, sr=FEAT_SR, channels="mix")
    segs = list(segmenter)
    assert segmenter.n_channels == 2 and {g.channel for g in segs} == {MIX_CHANNEL}
    _check_shape(segs, settings, FEAT_SR, TOTAL_S)
    # the speech of either channel, utterances closer than the merge gap joined
    spans = _merge([(s, e) for _, s, e in truth], settings.merge_gap_s + 2 * settings.pad_s)
    _check_against_truth(segs, [(MIX_CHANNEL, s, e) for s, e in spans], settings)
    whole, _ = audio.load(path, sr=FEAT_SR, channel="mix")
    g = segs[1]
    i0 = int(round(g.start_s * FEAT_SR))
    np.testing.assert_allclose(g.audio, whole[i0 : i0 + len(g.audio)], atol=1e-6)


# --------------------------------------------------------------------------- (b) streaming


def _same_segments(a: list[Segment], b: list[Segment]) -> None:
    # the order is guaranteed per channel; how channels interleave depends on the blocks
    a, b = (sorted(s, key=lambda g: (g.channel, g.start_s)) for s in (a, b))
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.channel == y.channel
        assert abs(x.start_s - y.start_s) <= 0.01 and abs(x.end_s - y.end_s) <= 0.01  # one frame
        assert abs(len(x.audio) - len(y.audio)) <= 160


@pytest.mark.parametrize("mode", ["vad", "fixed"])
def test_block_size_does_not_change_the_segments(call, mode):
    path, _ = call
    ref = list(segment_file(path, SegmentSettings(mode=mode, block_s=60.0), sr=FEAT_SR, channels="split"))
    assert ref
    for block_s in (7.0, 2.3):
        got = list(segment_file(path, SegmentSettings(mode=mode, block_s=block_s), sr=FEAT_SR, channels="split"))
        _same_segments(ref, got)


@pytest.mark.parametrize("sr", [None, SR, 16000, 22050])
def test_stream_blocks_concatenate_to_load(call, sr):
    path, _ = call
    ref, rate = audio.load(path, sr=sr, channel="all")
    rate_out = sr or SR
    assert rate == rate_out
    offsets, blocks = zip(*audio.stream(path, block_s=3.7, sr=sr), strict=True)
    got = np.concatenate(blocks, axis=1)
    assert got.dtype == np.float32 and got.shape == ref.shape  # same length, exactly
    lengths = np.cumsum([0] + [b.shape[1] for b in blocks])[:-1]
    np.testing.assert_allclose(offsets, lengths / rate_out, atol=1e-12)
    # about block_s each (the resampler hands its output over in slightly uneven chunks)
    assert all(b.shape[1] <= 1.05 * 3.7 * rate_out for b in blocks)
    edge = rate_out // 10
    np.testing.assert_allclose(got[:, edge:-edge], ref[:, edge:-edge], atol=1e-5)


def test_stream_from_bytes_and_uri(call):
    path, _ = call
    ref, _ = audio.load(path, channel="all")
    for src, kwargs in ((path.read_bytes(), {"name": "call.wav"}), (path.as_uri(), {})):
        got = np.concatenate([b for _, b in audio.stream(src, block_s=20.0, **kwargs)], axis=1)
        np.testing.assert_array_equal(got, ref)


# --------------------------------------------------------------------------- (c) other formats


def _encode_mp3(path: Path, y: np.ndarray, sr: int) -> Path | None:
    import av

    try:
        av.Codec("libmp3lame", "w")
    except Exception:  # not built into this FFmpeg
        return None
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libmp3lame", rate=sr, layout="stereo")
        for i in range(0, y.shape[1], 1152 * 50):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(y[:, i : i + 1152 * 50]), format="fltp",
                                               layout="stereo")  # fmt: skip
            frame.sample_rate = sr
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def test_flac_and_mp3_segment_like_the_wav(call, tmp_path):
    path, truth = call
    settings = SegmentSettings()
    ref = list(segment_file(path, settings, sr=FEAT_SR, channels="split"))
    y, _ = audio.load(path, channel="all")
    flac = tmp_path / "call.flac"
    sf.write(str(flac), y.T, SR, subtype="PCM_16", format="FLAC")
    copies = [flac]
    mp3 = _encode_mp3(tmp_path / "call.mp3", y, SR)
    if mp3 is not None:
        copies.append(mp3)
    for copy in copies:
        segmenter = FileSegmenter(copy, settings, sr=FEAT_SR, channels="split")
        segs = list(segmenter)
        assert abs(len(segs) - len(ref)) <= 1, copy.name
        assert segmenter.n_channels == 2
        assert segmenter.duration_s == pytest.approx(TOTAL_S, abs=0.1)
        _check_against_truth(segs, truth, settings)
        # and decoded in blocks like the whole file
        whole, _ = audio.load(copy, channel="all")
        got = np.concatenate([b for _, b in audio.stream(copy, block_s=9.0)], axis=1)
        assert got.shape == whole.shape
        np.testing.assert_allclose(got, whole, atol=1e-6)
    if mp3 is None:
        pytest.skip("this FFmpeg build has no MP3 encoder (the FLAC copy passed)")


# --------------------------------------------------------------------------- (d) fixed mode, edges, errors


def _noise_file(path: Path, seconds: float, channels: int = 2, sr: int = SR, amp: float = 0.1) -> Path:
    rng = np.random.default_rng(3)
    y = (amp * rng.standard_normal((channels, int(round(seconds * sr))))).astype(np.float32)
    sf.write(str(path), y.T, sr, subtype="PCM_16")
    return path


@pytest.mark.parametrize(
    ("seconds", "window_s", "hop_s", "expected"),
    [
        (10.2, 3.0, 1.5, [(0, 3), (1.5, 4.5), (3, 6), (4.5, 7.5), (6, 9), (7.5, 10.2)]),
        (9.2, 3.0, 3.0, [(0, 3), (3, 6), (6, 9)]),  # the 0.2 s left over is under min_s
        (9.0, 3.0, 3.0, [(0, 3), (3, 6), (6, 9)]),  # the last window ends on the file's end
        (2.0, 3.0, 1.5, [(0, 2)]),  # shorter than one window
    ],
)
def test_fixed_windows(tmp_path, seconds, window_s, hop_s, expected):
    path = _noise_file(tmp_path / "n.wav", seconds)
    settings = SegmentSettings(mode="fixed", window_s=window_s, hop_s=hop_s, block_s=1.1)
    segmenter = FileSegmenter(path, settings, sr=FEAT_SR, channels="split")
    segs = list(segmenter)
    assert segmenter.duration_s == pytest.approx(seconds)
    for ch in (0, 1):
        got = [(g.start_s, g.end_s) for g in segs if g.channel == ch]
        np.testing.assert_allclose(got, expected, atol=1e-9)
        for g in (g for g in segs if g.channel == ch):
            assert len(g.audio) == int(round(g.end_s * FEAT_SR)) - int(round(g.start_s * FEAT_SR))
    mixed = list(segment_file(path, settings, sr=FEAT_SR, channels="mix"))
    assert [(g.start_s, g.end_s) for g in mixed] == [(g.start_s, g.end_s) for g in segs if g.channel == 0]


def test_digital_silence_has_no_speech(tmp_path):
    path = tmp_path / "zeros.wav"
    sf.write(str(path), np.zeros((20 * SR, 2), np.float32), SR, subtype="ULAW")
    segmenter = FileSegmenter(path, SegmentSettings(block_s=7.0), sr=FEAT_SR, channels="split")
    assert list(segmenter) == []
    assert segmenter.duration_s == pytest.approx(20.0) and segmenter.n_channels == 2


def test_a_file_shorter_than_min_s_has_no_segments(emodb_wavs, tmp_path):
    by_id = {p.stem: p for p in emodb_wavs}
    if "03a01Fa" not in by_id:
        pytest.skip("EmoDB lacks 03a01Fa")
    y = _speech(by_id["03a01Fa"])  # speech from 0.1 s to 1.75 s
    path = tmp_path / "short.wav"
    sf.write(str(path), y[int(0.5 * SR) : int(0.8 * SR)], SR, subtype="PCM_16")  # 0.3 s of speech
    for mode in ("vad", "fixed"):
        segmenter = FileSegmenter(path, SegmentSettings(mode=mode), sr=FEAT_SR, channels="split")
        assert list(segmenter) == []
        assert segmenter.duration_s == pytest.approx(0.3) and segmenter.n_channels == 1
    # a second of the same speech is one segment, padding clipped to the file
    path = tmp_path / "second.wav"
    sf.write(str(path), y[int(0.2 * SR) : int(1.2 * SR)], SR, subtype="PCM_16")
    (g,) = segment_file(path, SegmentSettings(), sr=FEAT_SR, channels="split")
    assert g.start_s == 0.0 and g.end_s == pytest.approx(1.0) and len(g.audio) == FEAT_SR


def test_a_monologue_is_cut_into_bounded_pieces(tmp_path):
    """50 s of speech-like noise without a pause: max_s pieces, then near-equal ones."""
    sr = SR
    rng = np.random.default_rng(5)
    t = np.arange(50 * sr) / sr
    y = (0.1 * (1.2 + np.sin(2 * np.pi * 3 * t)) * rng.standard_normal(len(t))).astype(np.float32)
    y = np.concatenate([np.zeros(sr, np.float32), y, np.zeros(sr, np.float32)])
    path = tmp_path / "monologue.wav"
    sf.write(str(path), y, sr, subtype="PCM_16")
    settings = SegmentSettings()
    for block_s in (60.0, 3.0):
        segs = list(segment_file(path, SegmentSettings(block_s=block_s), sr=FEAT_SR, channels="split"))
        lengths = [g.end_s - g.start_s for g in segs]
        assert segs[0].start_s == pytest.approx(1.0, abs=0.2) and segs[-1].end_s == pytest.approx(51.0, abs=0.2)
        assert all(b.start_s == pytest.approx(a.end_s) for a, b in zip(segs, segs[1:], strict=False))
        # max_s pieces come off the front while more than SPLIT_HORIZON * max_s is left ...
        k = next(i for i in range(len(lengths)) if sum(lengths[i:]) <= SPLIT_HORIZON * settings.max_s + 0.1)
        assert k >= 3 and lengths[:k] == pytest.approx([settings.max_s] * k)
        # ... and the rest is cut into as few equal pieces of at most max_s as will do
        tail = lengths[k:]
        assert len(tail) == int(np.ceil(sum(tail) / settings.max_s)) >= 2
        assert max(tail) <= settings.max_s and max(tail) - min(tail) < 1e-6


def _raises(path, *kinds: str) -> AudioError:
    with pytest.raises(AudioError) as err:
        list(segment_file(path, SegmentSettings(), sr=FEAT_SR, channels="split"))
    assert err.value.kind in kinds, err.value
    assert err.value.path == str(path) and "0x" not in err.value.reason
    return err.value


def test_errors(tmp_path):
    _raises(tmp_path / "nope.wav", "missing")
    _raises(tmp_path / "nope.mp3", "missing")
    (tmp_path / "zero.wav").write_bytes(b"")
    _raises(tmp_path / "zero.wav", "empty")
    (tmp_path / "zero.mp3").write_bytes(b"")
    _raises(tmp_path / "zero.mp3", "empty")
    hollow = tmp_path / "hollow.wav"
    sf.write(str(hollow), np.zeros((0, 2), np.float32), SR, subtype="ULAW")
    assert hollow.stat().st_size > 0
    _raises(hollow, "empty")
    (tmp_path / "notes.wav").write_bytes(b"utterance_id,label\n03a01Fa,happiness\n" * 20)
    _raises(tmp_path / "notes.wav", "unsupported")
    (tmp_path / "noise.mp3").write_bytes(np.random.default_rng(1).integers(0, 256, 4096, np.uint8).tobytes())
    _raises(tmp_path / "noise.mp3", "unsupported", "corrupt")
    (tmp_path / "folder.wav").mkdir()
    _raises(tmp_path / "folder.wav", "unsupported")
    with pytest.raises(AudioError) as err:
        list(audio.stream(tmp_path / "nope.flac"))
    assert err.value.kind == "missing"


def test_bad_settings_are_config_errors():
    for bad in ({"mode": "energy"}, {"max_s": 0}, {"min_s": -1}, {"min_s": 9.0, "max_s": 8.0},
                {"hop_s": float("nan")}):  # fmt: skip
        with pytest.raises(ConfigError):
            SegmentSettings(**bad)
    with pytest.raises(ConfigError):
        FileSegmenter("x.wav", SegmentSettings(), sr=16000, channels="left")


# --------------------------------------------------------------------------- (e) memory


def test_memory_stays_bounded_on_a_30_minute_call(emodb_wavs, tmp_path):
    """Peak Python allocations while segmenting 30 min of 8 kHz stereo: a few blocks."""
    rng = np.random.default_rng(7)
    minute = np.zeros((2, 60 * SR), np.float32)  # one minute of conversation, repeated
    for ch, t in ((0, 0.5), (1, 2.5)):
        for p in (emodb_wavs[i] for i in rng.choice(len(emodb_wavs), 30, replace=False)):
            x = _speech(p)
            if t + len(x) / SR > 59.5:
                break
            i = int(round(t * SR))
            minute[ch, i : i + len(x)] = x
            t += len(x) / SR + rng.uniform(2.0, 4.0)
    minutes = 30
    path = tmp_path / "long.wav"
    with sf.SoundFile(str(path), "w", samplerate=SR, channels=2, subtype="ULAW") as f:
        for _ in range(minutes):
            f.write((minute + rng.normal(0, 1e-4, minute.shape).astype(np.float32)).T)
    decoded_bytes = minutes * 60 * SR * 2 * 4  # float32, both channels
    tracemalloc.start()
    try:
        segmenter = FileSegmenter(path, SegmentSettings(), sr=SR, channels="split")
        count = speech = 0.0
        for g in segmenter:
            count += 1
            speech += g.end_s - g.start_s
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert segmenter.duration_s == pytest.approx(minutes * 60.0)
    assert count >= minutes * 10 and 0.2 * minutes * 60 < speech < 2 * minutes * 60
    assert peak < 0.25 * decoded_bytes, f"peak {peak / 2**20:.1f} MiB for {decoded_bytes / 2**20:.0f} MiB decoded"


# --------------------------------------------------------------------------- silero


def test_silero_finds_every_utterance_on_its_channel(call):
    path, truth = call
    settings = SegmentSettings(mode="silero")
    segs = list(FileSegmenter(path, settings, sr=FEAT_SR, channels="split"))
    _check_shape(segs, settings, FEAT_SR, TOTAL_S)
    _check_against_truth(segs, truth, settings, min_ok=0.7)
    for ch, (s, e) in LONG_SILENCE.items():
        assert not [g for g in segs if g.channel == ch and g.end_s > s + TOL_S and g.start_s < e - TOL_S]


def test_silero_does_not_depend_on_the_block_size(call):
    path, _ = call
    ref = list(segment_file(path, SegmentSettings(mode="silero", block_s=60.0), sr=8000, channels="split"))
    got = list(segment_file(path, SegmentSettings(mode="silero", block_s=7.0), sr=8000, channels="split"))
    assert ref
    _same_segments(ref, got)


def test_silero_leaves_hold_music_out_where_the_energy_vad_takes_it(emodb_wavs, tmp_path):
    """Speech, then 12 s of hold music, then speech: the energy rule calls the music speech, Silero does not."""
    rng = np.random.default_rng(1)
    speech = [audio.load(p, sr=16000)[0] for p in emodb_wavs[:4]]
    music = hold_music(12.0, 16000, rng)
    gap = np.zeros(16000, np.float32)
    y = np.concatenate([gap, speech[0], gap, speech[1], gap, music, gap, speech[2], gap, speech[3], gap])
    y += rng.normal(0, 3e-4, len(y)).astype(np.float32)
    m0 = (len(gap) * 3 + len(speech[0]) + len(speech[1])) / 16000
    m1 = m0 + 12.0
    path = tmp_path / "hold.wav"
    sf.write(str(path), y, 16000)

    def music_time(mode: str) -> float:
        segs = segment_file(path, SegmentSettings(mode=mode), sr=16000, channels="split")
        return sum(max(0.0, min(g.end_s, m1) - max(g.start_s, m0)) for g in segs)

    assert music_time("vad") > 6.0  # the energy rule: most of the music is "speech"
    assert music_time("silero") < 1.5
    spoken = list(segment_file(path, SegmentSettings(mode="silero"), sr=16000, channels="split"))
    assert len([g for g in spoken if g.end_s <= m0 + TOL_S or g.start_s >= m1 - TOL_S]) >= 4  # the speech is kept


def test_silero_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="speech_prob"):
        SegmentSettings(mode="silero", speech_prob=1.5)
    sf.write(str(tmp_path / "a.wav"), np.zeros(22050, np.float32), 22050)
    with pytest.raises(ConfigError, match="8000 or 16000"):
        list(segment_file(tmp_path / "a.wav", SegmentSettings(mode="silero"), sr=22050))
