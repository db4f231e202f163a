"""Cut long recordings into speech segments, streaming, one channel at a time.

``seremo score`` labels call-centre archives: recordings of minutes to hours,
often 8 kHz mu-law stereo with the agent and the customer on separate
channels. This module turns one such file into :class:`Segment` s (channel,
start, end and the mono audio at the feature rate) while holding only about
one decoded block per channel in memory, whatever the file's length::

    segmenter = FileSegmenter(path, SegmentSettings(), sr=16000, channels="split")
    for seg in segmenter:                       # Segments, in time order per channel
        ...
    segmenter.duration_s, segmenter.n_channels  # known once iteration has ended

``segment_file(...)`` is the same as ``iter(FileSegmenter(...))`` when the
per-file numbers are not needed. Decoding and resampling go through
:func:`seremo.audio.stream`; its ``AudioError`` s (missing, empty, corrupt,
unsupported) pass through unchanged.

Channels: ``"split"`` segments every channel on its own (``Segment.channel`` is
its index, 0 for the first); ``"mix"`` segments the mean of all channels and
reports ``channel = MIX_CHANNEL`` (-1), mono files included.

Modes (:class:`SegmentSettings`):

``"vad"``
    Energy voice-activity detection. Frames of 25 ms every 10 ms get the dB of
    their RMS (dBFS). A frame is speech when it lies ``threshold_db`` above the
    noise floor and above ``ABS_FLOOR_DB`` (-55 dBFS), so digital silence is
    never speech. The noise floor is the ``noise_percentile`` (10th) percentile
    of the frame energies over the last ``noise_window_s`` (30 s) of the
    channel, re-estimated every ``NOISE_TILE_S`` (5 s) of frames on a grid
    fixed from the start of the file; it therefore does not depend on how the
    file is cut into decoding blocks, and neither do the segments. Speech runs
    separated by pauses shorter than ``merge_gap_s`` are joined, runs shorter
    than ``min_s`` dropped, the rest widened by ``pad_s`` on each side (clipped
    to the file) and runs longer than ``max_s`` split into near-equal pieces
    no longer than ``max_s``: a run of up to ``SPLIT_HORIZON * max_s`` (24 s by
    default) is cut into ``ceil(length / max_s)`` equal pieces; a longer one
    (a monologue without a pause) first sheds ``max_s`` pieces from its front
    until that much is left, which bounds the memory it takes.
``"silero"``
    The same runs as ``"vad"`` (merging, ``min_s``, padding, splitting at
    ``max_s``), but a window is speech when Silero VAD (a small neural model,
    MIT licence, weights inside the ``silero-vad`` wheel, so offline) gives it
    a speech probability above ``speech_prob``, instead of the energy rule:
    music, tones and steady noise that the energy rule takes for speech stay
    out. Windows are 32 ms (512 samples at 16 kHz, 256 at 8 kHz; other rates
    are refused), and the model's state runs on across decoding blocks, so the
    segments do not depend on ``block_s`` either. It costs far more CPU than the
    energy rule (README, "Segmentation").
``"fixed"``
    Windows of ``window_s`` every ``hop_s`` regardless of content; the window
    that reaches the end of the file is the last one and is kept, clipped, if
    it lasts at least ``min_s``.

Streaming: every channel keeps the audio from the earliest sample a segment
still to come can need (the open speech run, at most ``SPLIT_HORIZON * max_s``
plus the pause that could still join it, the undecided noise tile and the
current block). Segments are decided only once no later audio can change them,
so one that spans a block edge comes out once and whole, and any ``block_s``
gives the same segments.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from seremo import audio
from seremo.errors import AudioError, ConfigError

FRAME_S = 0.025  # energy frames: 25 ms ...
FRAME_HOP_S = 0.010  # ... every 10 ms
FRAME_CHUNK = 1000  # frame energies are computed this many frames (10 s) at a time
ABS_FLOOR_DB = -55.0  # never speech below this (dBFS of the frame RMS)
SILENCE_DB = -120.0  # the dB given to an all-zero frame
NOISE_TILE_S = 5.0  # the noise floor is re-estimated for every tile of this many seconds
SPLIT_HORIZON = 3  # runs up to this many max_s split evenly; longer ones shed max_s pieces first
MIX_CHANNEL = -1  # Segment.channel of the channel mean (channels="mix")


@dataclass(frozen=True)
class SegmentSettings:
    """How a recording is cut into segments (see the module docstring)."""

    mode: Literal["vad", "silero", "fixed"] = "vad"
    min_s: float = 0.5  # vad: drop speech runs shorter than this; fixed: drop a shorter last window
    max_s: float = 8.0  # vad: split longer runs into near-equal pieces of at most this
    merge_gap_s: float = 0.35  # vad: join speech separated by shorter pauses
    pad_s: float = 0.05  # vad: widen each run by this on both sides, clipped to the audio
    threshold_db: float = 15.0  # vad: speech lies this far above the noise floor
    window_s: float = 3.0  # fixed: window length
    hop_s: float = 1.5  # fixed: window step
    block_s: float = 60.0  # seconds decoded at a time
    noise_window_s: float = 30.0  # vad: the noise floor looks back this far
    noise_percentile: float = 10.0  # vad: ... and takes this percentile of the frame energies
    speech_prob: float = 0.5  # silero: a window is speech above this probability

    def identity(self) -> dict:
        """The fields that decide the segments, as a score output records them to resume only like runs.

        ``speech_prob`` counts only in silero mode, so outputs scored before that mode existed resume.
        """
        fields = dataclasses.asdict(self)
        if self.mode != "silero":
            del fields["speech_prob"]
        return fields

    def __post_init__(self):
        if self.mode not in ("vad", "silero", "fixed"):
            raise ConfigError(f"segment mode must be 'vad', 'silero' or 'fixed', not {self.mode!r}")
        if not 0 < self.speech_prob < 1:
            raise ConfigError(f"segment speech_prob must lie in (0, 1), not {self.speech_prob!r}")
        positive = ("max_s", "window_s", "hop_s", "block_s", "noise_window_s")
        for field in positive:
            value = getattr(self, field)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"segment {field} must be a positive number, not {value!r}")
        for field in ("min_s", "merge_gap_s", "pad_s"):
            value = getattr(self, field)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"segment {field} must be a number >= 0, not {value!r}")
        if not (isinstance(self.threshold_db, (int, float)) and math.isfinite(self.threshold_db)):
            raise ConfigError(f"segment threshold_db must be a number, not {self.threshold_db!r}")
        if not 0 <= self.noise_percentile <= 100:
            raise ConfigError(f"segment noise_percentile must lie in [0, 100], not {self.noise_percentile!r}")
        if self.min_s > self.max_s:
            raise ConfigError(f"segment min_s ({self.min_s}) must not exceed max_s ({self.max_s})")


@dataclass
class Segment:
    """One stretch of one channel: times in seconds from the start of the file."""

    channel: int  # the channel index, or MIX_CHANNEL (-1) for the mean of all channels
    start_s: float
    end_s: float
    audio: np.ndarray  # mono float32 at the rate asked for

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


# --------------------------------------------------------------------------- one channel


class _Channel:
    """Streaming segmentation of one mono signal: feed blocks, then finish."""

    def __init__(self, channel: int, settings: SegmentSettings, sr: int):
        self.channel, self.s, self.sr = channel, settings, sr
        self.buf = np.zeros(0, np.float32)  # audio from global sample buf0 on
        self.buf0 = 0
        self.n = 0  # samples received
        self.queue: deque[tuple[float, float]] = deque()  # decided pieces (start_s, end_s) awaiting audio

    # audio buffer

    def _append(self, x: np.ndarray, keep_from: int) -> None:
        keep_from = max(self.buf0, min(keep_from, self.n))
        kept = self.buf[keep_from - self.buf0 :].copy()  # let the old buffer go before growing
        self.buf = kept
        self.buf = np.concatenate([kept, x])
        self.buf0 = keep_from
        self.n += len(x)

    def _cut(self, start_s: float, end_s: float) -> Segment:
        i0 = max(int(round(start_s * self.sr)), 0)
        i1 = min(int(round(end_s * self.sr)), self.n)
        assert i0 >= self.buf0, "segment audio was dropped from the buffer too early"
        y = self.buf[i0 - self.buf0 : i1 - self.buf0].copy()
        return Segment(self.channel, float(start_s), float(end_s), y)

    def _ready(self, duration_s: float | None) -> list[Segment]:
        """Queued pieces whose audio has arrived (all of them once the duration is known)."""
        out = []
        while self.queue:
            start, end = self.queue[0]
            if duration_s is None:
                if int(round(end * self.sr)) > self.n:
                    break
            else:
                end = min(end, duration_s)
            self.queue.popleft()
            if end > start:
                out.append(self._cut(start, end))
        return out

    def feed(self, x: np.ndarray) -> list[Segment]:
        raise NotImplementedError

    def finish(self) -> list[Segment]:
        raise NotImplementedError


class _Fixed(_Channel):
    """Windows of window_s every hop_s."""

    def __init__(self, channel: int, settings: SegmentSettings, sr: int):
        super().__init__(channel, settings, sr)
        self.k = 0  # the next window
        self.last_end = -1  # end sample of the last window decided

    def _bounds(self, k: int) -> tuple[float, float]:
        start = k * self.s.hop_s
        return start, start + self.s.window_s

    def feed(self, x: np.ndarray) -> list[Segment]:
        self._append(x, int(self._bounds(self.k)[0] * self.sr))
        while True:
            start, end = self._bounds(self.k)
            if int(round(end * self.sr)) > self.n:  # a full window needs more audio
                break
            self.queue.append((start, end))
            self.last_end = int(round(end * self.sr))
            self.k += 1
        return [seg for seg in self._ready(None) if seg.duration_s >= self.s.min_s - 1e-9]

    def finish(self) -> list[Segment]:
        duration = self.n / self.sr
        while self.last_end < self.n:  # until a window has reached the end of the file
            start, end = self._bounds(self.k)
            if int(round(start * self.sr)) >= self.n:
                break
            self.queue.append((start, min(end, duration)))
            self.last_end = int(round(end * self.sr))
            self.k += 1
        return [seg for seg in self._ready(duration) if seg.duration_s >= self.s.min_s - 1e-9]


class _Vad(_Channel):
    """Energy VAD with a tiled noise floor; see the module docstring for the rules."""

    def __init__(self, channel: int, settings: SegmentSettings, sr: int, frame: tuple[int, int] | None = None):
        super().__init__(channel, settings, sr)
        self.flen, self.hop = frame or (max(1, int(round(FRAME_S * sr))), max(1, int(round(FRAME_HOP_S * sr))))
        self.hop_s = self.hop / sr
        self.tile = max(1, int(round(NOISE_TILE_S / self.hop_s)))  # frames per noise tile
        self.window = max(self.tile, int(round(settings.noise_window_s / self.hop_s)))
        self.merge_frames = settings.merge_gap_s / self.hop_s
        self.db = np.zeros(0, np.float64)  # frame dB from frame db0 on
        self.db0 = 0
        self.nf = 0  # frames computed
        self.decided = 0  # frames classified (a multiple of tile until the end)
        self.run: list | None = None  # the open run: [first frame, end frame, start of its next piece (s)]

    def _t(self, k: int) -> float:
        """Seconds of frame boundary k: a frame stands for the hop around its centre."""
        return (k * self.hop + (self.flen - self.hop) / 2) / self.sr

    # frame energies

    def _frames(self) -> None:
        n_new = (self.n - self.flen) // self.hop + 1 - self.nf if self.n >= self.flen else 0
        if n_new <= 0:
            return
        energy = np.empty(n_new, np.float64)
        for i in range(0, n_new, FRAME_CHUNK):  # bounded float64 temporaries, same sums
            m = min(FRAME_CHUNK, n_new - i)
            a = (self.nf + i) * self.hop - self.buf0
            span = self.buf[a : a + (m - 1) * self.hop + self.flen].astype(np.float64)
            span *= span
            windows = np.lib.stride_tricks.sliding_window_view(span, self.flen)[:: self.hop]
            energy[i : i + m] = windows.sum(axis=1) / self.flen
        with np.errstate(divide="ignore"):
            db = np.maximum(10.0 * np.log10(energy), SILENCE_DB)
        keep = max(0, self.decided - self.window - self.db0)  # no later floor looks back further
        self.db = np.concatenate([self.db[keep:], db])
        self.db0 += keep
        self.nf += n_new

    # decisions

    def _speech(self, end: int) -> np.ndarray:
        """Which of the frames decided..end are speech: above the floor of the window ending at end."""
        lo = max(0, end - self.window)
        window = self.db[lo - self.db0 : end - self.db0]
        floor = float(np.percentile(window, self.s.noise_percentile))
        threshold = max(floor + self.s.threshold_db, ABS_FLOOR_DB)
        return self.db[self.decided - self.db0 : end - self.db0] > threshold

    def _decide(self, end: int) -> None:
        """Classify frames decided..end and grow, merge and close speech runs."""
        speech = self._speech(end)
        edges = np.diff(np.concatenate([[0], speech.astype(np.int8), [0]]))
        starts = np.flatnonzero(edges == 1) + self.decided
        ends = np.flatnonzero(edges == -1) + self.decided
        for r0, r1 in zip(starts.tolist(), ends.tolist(), strict=True):
            if self.run is not None and r0 - self.run[1] < self.merge_frames:
                self.run[1] = r1
            else:
                self._close()
                self.run = [r0, r1, max(0.0, self._t(r0) - self.s.pad_s)]
            self._shed()
        self.decided = end
        if self.run is not None and end - self.run[1] >= self.merge_frames:
            self._close()  # no later speech can join it any more

    def _shed(self) -> None:
        """Cut max_s pieces off the front of a run known to outlast SPLIT_HORIZON * max_s."""
        run, max_s = self.run, self.s.max_s
        while self._t(run[1]) - run[2] > SPLIT_HORIZON * max_s:
            self.queue.append((run[2], run[2] + max_s))
            run[2] += max_s

    def _close(self) -> None:
        """The open run is complete: queue it as near-equal pieces of at most max_s."""
        run, self.run = self.run, None
        if run is None:
            return
        r0, r1, start = run
        if self._t(r1) - self._t(r0) < self.s.min_s:
            return
        end = self._t(r1) + self.s.pad_s  # clipped to the file when it is cut
        pieces = max(1, math.ceil((end - start) / self.s.max_s - 1e-9))
        step = (end - start) / pieces
        for i in range(pieces):
            self.queue.append((start + i * step, end if i == pieces - 1 else start + (i + 1) * step))

    def _keep_from(self) -> int:
        """The earliest sample that the frames and segments still to come can need."""
        t = self._t(self.decided) - self.s.pad_s  # a run yet to start
        if self.run is not None:
            t = min(t, self.run[2])
        if self.queue:
            t = min(t, self.queue[0][0])
        return min(self.nf * self.hop, int(math.floor(t * self.sr)) - 1)

    def feed(self, x: np.ndarray) -> list[Segment]:
        self._append(x, self._keep_from())
        self._frames()
        while self.nf - self.decided >= self.tile:
            self._decide(self.decided + self.tile)
        return self._ready(None)

    def finish(self) -> list[Segment]:
        if self.nf > self.decided:
            self._decide(self.nf)
        self._close()
        return self._ready(self.n / self.sr)


class _Silero(_Vad):
    """Silero VAD's speech probability per 32 ms window in place of the energy rule."""

    def __init__(self, channel: int, settings: SegmentSettings, sr: int):
        if sr not in (8000, 16000):
            raise ConfigError(f"segment mode 'silero' runs at 8000 or 16000 Hz, not {sr}")
        window = 512 if sr == 16000 else 256
        super().__init__(channel, settings, sr, frame=(window, window))
        self.model = _silero_model()

    def _frames(self) -> None:
        import torch

        n_new = self.n // self.hop - self.nf
        if n_new <= 0:
            return
        a = self.nf * self.hop - self.buf0
        windows = torch.from_numpy(np.ascontiguousarray(self.buf[a : a + n_new * self.hop])).view(n_new, self.hop)
        with torch.inference_mode():
            prob = np.array([float(self.model(w.unsqueeze(0), self.sr)) for w in windows], np.float64)
        keep = max(0, self.decided - self.db0)  # a decision never looks back
        self.db = np.concatenate([self.db[keep:], prob])
        self.db0 += keep
        self.nf += n_new

    def _speech(self, end: int) -> np.ndarray:
        return self.db[self.decided - self.db0 : end - self.db0] > self.s.speech_prob


_SILERO = None


def _silero_model():
    """A fresh stateful copy of Silero VAD per channel (the weights load once per process)."""
    import copy

    global _SILERO
    if _SILERO is None:
        try:
            from silero_vad import load_silero_vad
        except ImportError:
            raise ConfigError("segment mode 'silero' needs the silero-vad package: pip install silero-vad") from None
        _SILERO = load_silero_vad()
    model = copy.deepcopy(_SILERO)
    model.reset_states()
    return model


# --------------------------------------------------------------------------- files


class FileSegmenter:
    """The segments of one file, streamed; ``duration_s``/``n_channels`` once it is read.

    Iterating decodes the file block by block (``settings.block_s``) at ``sr``
    and yields :class:`Segment` s in time order per channel (sorted by start
    within what each block completes). ``duration_s`` (seconds at ``sr``) and
    ``n_channels`` (the file's channel count, also with ``channels="mix"``)
    are None until the last segment has been yielded; ``n_segments`` counts
    what was yielded. Each iteration reads the file anew.
    """

    def __init__(
        self,
        path: audio.Source,
        settings: SegmentSettings | None = None,
        *,
        sr: int,
        channels: Literal["split", "mix"] = "split",
        name: str | None = None,
    ):
        if channels not in ("split", "mix"):
            raise ConfigError(f"channels must be 'split' or 'mix', not {channels!r}")
        if not (isinstance(sr, (int, np.integer)) and sr > 0):
            raise ConfigError(f"sr must be a positive integer, not {sr!r}")
        self.path, self.name = path, name
        self.settings = settings if settings is not None else SegmentSettings()
        self.sr, self.channels = int(sr), channels
        self.duration_s: float | None = None
        self.n_channels: int | None = None
        self.n_segments = 0

    def _trackers(self, n_channels: int) -> list[_Channel]:
        kind = {"vad": _Vad, "silero": _Silero, "fixed": _Fixed}[self.settings.mode]
        ids = [MIX_CHANNEL] if self.channels == "mix" else list(range(n_channels))
        return [kind(c, self.settings, self.sr) for c in ids]

    def __iter__(self) -> Iterator[Segment]:
        self.duration_s = self.n_channels = None
        self.n_segments = 0
        trackers: list[_Channel] = []
        n_channels = 0
        name = self.name if self.name is not None else audio.source_name(self.path, None)
        for _, block in audio.stream(self.path, block_s=self.settings.block_s, sr=self.sr, name=name):
            if not trackers:
                n_channels = block.shape[0]
                trackers = self._trackers(n_channels)
            elif block.shape[0] != n_channels:
                raise AudioError(name, "corrupt", f"channel count changes from {n_channels} to {block.shape[0]}")
            rows = [block[0] if n_channels == 1 else block.mean(axis=0)] if self.channels == "mix" else block
            found = [seg for tracker, x in zip(trackers, rows, strict=True) for seg in tracker.feed(x)]
            del block, rows  # the trackers keep what they need: free it before the next block
            yield from self._emit(found)
        found = [seg for tracker in trackers for seg in tracker.finish()]
        self.n_channels = n_channels
        self.duration_s = trackers[0].n / self.sr if trackers else 0.0
        yield from self._emit(found)

    def _emit(self, found: list[Segment]) -> Iterator[Segment]:
        found.sort(key=lambda seg: (seg.start_s, seg.channel))
        for seg in found:
            self.n_segments += 1
            yield seg


def segment_file(
    path: audio.Source,
    settings: SegmentSettings | None = None,
    *,
    sr: int,
    channels: Literal["split", "mix"] = "split",
) -> Iterator[Segment]:
    """The segments of ``path``, streamed; see :class:`FileSegmenter` for the file's numbers."""
    return iter(FileSegmenter(path, settings, sr=sr, channels=channels))


__all__ = ["MIX_CHANNEL", "FileSegmenter", "Segment", "SegmentSettings", "segment_file"]
