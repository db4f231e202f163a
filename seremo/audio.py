"""Decode audio into float32 arrays: any format, encoding and channel count.

WAV/FLAC/OGG/AIFF (8/16/24/32-bit PCM, float, mu-law and A-law telephone WAV)
go through libsndfile (``soundfile``); MP3, M4A/AAC, Opus and other containers
through FFmpeg (``av``). Resampling uses soxr. Every failure is an
``AudioError`` with the path and a kind (missing, empty, corrupt, unsupported,
too_short, truncated) so that pipelines can turn it into an ``errors.parquet`` row.
A container cut short (WAV, RF64, W64, AIFF/AIFC, 8SVX, CAF, AU: its header
promises more sample bytes than the file holds) is ``truncated``: libsndfile
would read it as a shorter file without a word.

Sources may be local paths, pyarrow filesystem URIs (``s3://...``) or bytes
already read (as Ray Data's ``read_binary_files`` gives them).

About 500 lines: whole-file loading and block streaming share the two decoders and
their error vocabulary; the container check is :mod:`seremo.truncation`.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import soundfile as sf
import soxr

from seremo import truncation
from seremo.errors import AudioError

log = logging.getLogger(__name__)

SOUNDFILE_EXTS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".au", ".w64", ".rf64", ".caf"}
)
AV_EXTS = frozenset({".mp3", ".m4a", ".aac", ".mp4", ".opus", ".webm", ".wma", ".mka"})
AUDIO_EXTS = SOUNDFILE_EXTS | AV_EXTS

Source = str | os.PathLike | bytes
Channel = int | Literal["mix", "all"]


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says, read without decoding the samples."""

    sample_rate: int
    channels: int
    frames: int
    format: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def is_audio_path(path: str | os.PathLike) -> bool:
    """True when the extension is one seremo decodes."""
    return os.path.splitext(str(path))[1].lower() in AUDIO_EXTS


def source_name(source: Source, name: str | None) -> str:
    if name is not None:
        return name
    return "<bytes>" if isinstance(source, bytes) else os.fspath(source)


def _read_bytes(source: Source, name: str) -> bytes:
    """All bytes of a source; URIs go through pyarrow's filesystems."""
    if isinstance(source, bytes):
        data = source
    elif "://" in (path := os.fspath(source)):
        data = _read_uri(path, name)
    else:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:  # a/b.wav where a is a file, a broken symlink: missing
            raise _unreachable(path, name, exc) from None
    if not data:
        raise AudioError(name, "empty", "file has 0 bytes")
    return data


def _read_uri(uri: str, name: str) -> bytes:
    """An object's bytes through pyarrow; its filesystems say what went wrong in words."""
    from pyarrow import fs

    try:
        filesystem, inner = fs.FileSystem.from_uri(uri)
        with filesystem.open_input_stream(inner) as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        raise AudioError(name, "missing", "no such file") from None
    except IsADirectoryError:
        raise AudioError(name, "unsupported", "is a directory, not an audio file") from None
    except OSError as exc:
        msg = str(exc).lower()
        if any(s in msg for s in ("not found", "does not exist", "not a directory")):
            raise AudioError(name, "missing", "no such file") from None
        if "is a directory" in msg:
            raise AudioError(name, "unsupported", "is a directory, not an audio file") from None
        raise AudioError(name, "corrupt", f"cannot be read ({exc})") from None


def _ext(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def _unreachable(path: str, name: str, exc: OSError) -> AudioError:
    """The AudioError for a local path that cannot be opened: a broken symlink says it is one."""
    if exc.errno == errno.ELOOP:
        return AudioError(name, "missing", "a symlink loop: its links never reach a file")
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        if os.path.islink(path):
            target = os.readlink(path)
            return AudioError(name, "missing", f"a dangling symlink: it points to {target}, which is not there")
        return AudioError(name, "missing", "no such file")
    if isinstance(exc, IsADirectoryError):
        return AudioError(name, "unsupported", "is a directory, not an audio file")
    return AudioError(name, "corrupt", f"cannot be read ({exc})")


def _check_local(path: str, name: str) -> None:
    """Raise ``missing``, ``unsupported`` or ``empty`` for a local path that holds no bytes to decode."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _unreachable(path, name, exc) from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioError(name, "unsupported", "is a directory, not an audio file")
    if st.st_size == 0 and stat.S_ISREG(st.st_mode):
        raise AudioError(name, "empty", "file has 0 bytes")


# --------------------------------------------------------------------------- decoders


def _sf_decode(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """(channels, frames) float32 and the rate, via libsndfile."""
    try:
        y, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except sf.LibsndfileError as exc:
        # error_string leaves out "Error opening <_io.BytesIO object at 0x...>", which
        # would make the errors.parquet message differ from run to run
        raise _SfFailed(exc.error_string or str(exc)) from None
    except (RuntimeError, ValueError, TypeError) as exc:
        raise _SfFailed(str(exc)) from None
    return np.ascontiguousarray(y.T), int(sr)


class _SfFailed(Exception):
    pass


def _av_frames(data: bytes, name: str) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (channels, n) float32 blocks at the native rate, via FFmpeg."""
    import av

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise AudioError(name, "unsupported", f"not a recognised audio format ({exc})") from None
    with container:
        if not container.streams.audio:
            raise AudioError(name, "unsupported", "the container has no audio stream")
        stream = container.streams.audio[0]
        try:
            for frame in container.decode(stream):
                arr = frame.to_ndarray()
                fmt = frame.format
                if not fmt.is_planar:  # interleaved: (1, n*ch) -> (ch, n)
                    arr = arr.reshape(-1, frame.layout.nb_channels).T
                arr = _to_float32(arr, fmt.name)
                yield arr, int(frame.sample_rate)
        except av.FFmpegError as exc:
            raise AudioError(name, "corrupt", f"decoding failed ({exc})") from None


def _to_float32(arr: np.ndarray, fmt: str) -> np.ndarray:
    if arr.dtype == np.float32:
        return arr
    if arr.dtype == np.float64:
        return arr.astype(np.float32)
    if arr.dtype == np.uint8:
        return (arr.astype(np.float32) - 128.0) / 128.0
    scale = float(np.iinfo(arr.dtype).max) + 1.0
    return arr.astype(np.float32) / scale


def _av_decode(data: bytes, name: str) -> tuple[np.ndarray, int]:
    blocks, rate = [], 0
    for block, block_rate in _av_frames(data, name):
        blocks.append(block)
        rate = block_rate
    if not blocks:
        raise AudioError(name, "empty", "the audio stream holds no samples")
    return np.concatenate(blocks, axis=1), rate


def _decode(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """Decode with libsndfile where it can, else FFmpeg; (channels, frames), rate."""
    truncation.check_bytes(data, name)  # by content, whatever the extension
    if _ext(name) not in AV_EXTS:
        try:
            return _sf_decode(data, name)
        except _SfFailed as exc:
            sf_error = str(exc)
        try:
            return _av_decode(data, name)
        except AudioError as exc:
            if exc.kind == "unsupported":
                raise AudioError(
                    name, "unsupported", f"not a recognised audio format ({sf_error})"
                ) from None
            raise
    return _av_decode(data, name)


# --------------------------------------------------------------------------- public API


def info(source: Source, name: str | None = None) -> AudioInfo:
    """Sample rate, channels and length, from the header where libsndfile can read it."""
    name = source_name(source, name)
    if not isinstance(source, bytes) and "://" not in os.fspath(source) and _ext(name) not in AV_EXTS:
        path = os.fspath(source)
        _check_local(path, name)
        if os.path.isfile(path):
            truncation.check_file(path, name)
        try:
            i = sf.info(path)
            return AudioInfo(int(i.samplerate), int(i.channels), int(i.frames), i.format)
        except (sf.LibsndfileError, RuntimeError):
            pass  # fall back to decoding below, which gives the precise error
    y, sr = _decode(_read_bytes(source, name), name)
    return AudioInfo(sr, y.shape[0], y.shape[1], _ext(name).lstrip(".").upper() or "UNKNOWN")


def resample(y: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample along the last axis with soxr (high quality); a no-op at equal rates."""
    if sr_in == sr_out:
        return y
    if y.ndim == 1:
        return soxr.resample(y, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)
    return np.ascontiguousarray(soxr.resample(y.T, sr_in, sr_out, quality="HQ").T, dtype=np.float32)


def select_channel(y: np.ndarray, channel: Channel, name: str = "<audio>") -> np.ndarray:
    """From (channels, frames): mix down (mean), pick one channel, or keep all."""
    if channel == "all":
        return y
    if channel == "mix":
        return y[0] if y.shape[0] == 1 else y.mean(axis=0)
    if isinstance(channel, (int, np.integer)) and not isinstance(channel, bool):
        channel = int(channel)  # numpy ints too, as read from a table or config
        if not -y.shape[0] <= channel < y.shape[0]:
            raise AudioError(
                name, "unsupported", f"has {y.shape[0]} channel(s); channel {channel} was asked for"
            )
        return y[channel]
    raise ValueError(f"channel must be 'mix', 'all' or an int, not {channel!r}")


def load(
    source: Source,
    *,
    sr: int | None = None,
    channel: Channel = "mix",
    start_s: float | None = None,
    end_s: float | None = None,
    min_duration_s: float = 0.0,
    name: str | None = None,
) -> tuple[np.ndarray, int]:
    """Decode ``source`` to float32 in [-1, 1].

    Returns ``(y, rate)``: ``y`` is 1-D for ``channel='mix'`` or an index and
    ``(channels, frames)`` for ``channel='all'``; ``rate`` is ``sr`` when given
    (resampled with soxr) else the file's own. ``start_s``/``end_s`` cut a
    segment; a result shorter than ``min_duration_s`` raises ``too_short``.
    """
    name = source_name(source, name)
    # a null start_s/end_s read through pandas or numpy arrives as NaN: no bound
    start_s = None if start_s is None or np.isnan(start_s) else start_s
    end_s = None if end_s is None or np.isnan(end_s) else end_s
    y, rate = _decode(_read_bytes(source, name), name)
    if y.shape[1] == 0:
        raise AudioError(name, "empty", "the file holds no samples")
    if start_s is not None or end_s is not None:
        total = y.shape[1] / rate
        a = 0 if start_s is None else int(round(max(start_s, 0.0) * rate))
        b = y.shape[1] if end_s is None else min(int(round(end_s * rate)), y.shape[1])
        if b <= a:
            raise AudioError(
                name, "too_short", f"segment {start_s}-{end_s} s lies outside the file's {total:.2f} s"
            )
        y = y[:, a:b]
    if not np.all(np.isfinite(y)):
        raise AudioError(name, "corrupt", "decoded samples contain NaN or infinity")
    y = select_channel(y, channel, name)
    if sr is not None and sr != rate:
        y, rate = resample(y, rate, sr), sr
    duration = y.shape[-1] / rate
    if duration < min_duration_s:
        raise AudioError(
            name, "too_short", f"{duration:.3f} s of audio, shorter than the {min_duration_s} s minimum"
        )
    return np.ascontiguousarray(y, dtype=np.float32), rate


def _sf_error(exc: Exception) -> str:
    # error_string leaves out "Error opening <_io.BytesIO object at 0x...>" (see _sf_decode)
    return (getattr(exc, "error_string", None) or str(exc)) if isinstance(exc, sf.LibsndfileError) else str(exc)


def _sf_blocks(f: sf.SoundFile, n: int, name: str) -> Iterator[tuple[np.ndarray, int]]:
    """(channels, <=n) float32 blocks read from an open SoundFile, closing it at the end."""
    with f:
        rate = int(f.samplerate)
        while True:
            try:
                y = f.read(n, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
                raise AudioError(name, "corrupt", f"decoding failed ({_sf_error(exc)})") from None
            if not len(y):
                return
            block = np.ascontiguousarray(y.T)
            del y  # hold one copy of the block while it is out, not two
            yield block, rate
            del block  # nor the last one while the next is read


def _av_blocks(data: bytes, block_s: float, name: str) -> Iterator[tuple[np.ndarray, int]]:
    """FFmpeg frames gathered into (channels, n) blocks of ``block_s`` at the native rate."""
    parts: list[np.ndarray] = []
    have = n = rate = 0
    try:
        for arr, frame_rate in _av_frames(data, name):
            if not rate:
                rate, n = frame_rate, max(1, int(round(block_s * frame_rate)))
            parts.append(arr)
            have += arr.shape[1]
            while have >= n:
                joined = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
                yield np.ascontiguousarray(joined[:, :n]), rate
                rest = joined[:, n:]
                parts, have = ([np.ascontiguousarray(rest)] if rest.shape[1] else []), rest.shape[1]
                del joined, rest
    except ValueError as exc:  # frames whose channel count changes midway
        raise AudioError(name, "corrupt", f"decoding failed ({exc})") from None
    if have:
        yield np.concatenate(parts, axis=1), rate


def _native_blocks(source: Source, block_s: float, name: str) -> Iterator[tuple[np.ndarray, int]]:
    """(channels, n) float32 blocks at the file's own rate: libsndfile where it can, else FFmpeg."""
    local = not isinstance(source, bytes) and "://" not in os.fspath(source)
    if _ext(name) in AV_EXTS:
        data = _read_bytes(source, name)
        truncation.check_bytes(data, name)  # a WAV named .mp3 is still checked
        yield from _av_blocks(data, block_s, name)
        return
    data = None
    if local:  # read from disk block by block, never whole
        target: str | io.BytesIO = os.fspath(source)
        _check_local(target, name)
        truncation.check_file(target, name)
    else:
        data = _read_bytes(source, name)
        truncation.check_bytes(data, name)
        target = io.BytesIO(data)
    try:
        f = sf.SoundFile(target)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        sf_error = _sf_error(exc)
    else:
        yield from _sf_blocks(f, max(1, int(round(block_s * f.samplerate))), name)
        return
    try:  # not a libsndfile format: FFmpeg may still know it
        yield from _av_blocks(data if data is not None else _read_bytes(source, name), block_s, name)
    except AudioError as exc:
        if exc.kind == "unsupported":
            raise AudioError(name, "unsupported", f"not a recognised audio format ({sf_error})") from None
        raise


def stream(
    source: Source,
    *,
    block_s: float = 60.0,
    sr: int | None = None,
    name: str | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """Decode ``source`` block by block: yield ``(offset_s, block)``, never the whole file.

    ``block`` is float32 ``(channels, n)`` holding about ``block_s`` seconds (the
    last shorter; when resampling, the first a little shorter and a short extra
    one at the end with what the filter still held); consecutive blocks are
    contiguous stretches of the file and ``offset_s`` is where ``block`` starts,
    in seconds from the start of the file (exact: output samples / rate).
    With ``sr`` every channel is resampled by one streaming soxr resampler, so
    the concatenated blocks equal ``load(source, sr=sr, channel="all")`` with
    no seams at block edges. libsndfile formats are read from local paths
    ``block_s`` at a time; FFmpeg formats, URIs and bytes decode from the
    bytes in memory (compressed or raw, never decoded whole). Errors are
    ``AudioError`` as for ``load`` (missing, empty, unsupported, corrupt, truncated),
    raised when iteration reaches them: opening problems on the first ``next``.
    """
    if not block_s > 0:
        raise ValueError(f"block_s must be positive, not {block_s!r}")
    name = source_name(source, name)
    resampler = None
    n_in = n_out = 0
    for block, rate in _native_blocks(source, block_s, name):
        n_in += block.shape[1]
        if not np.all(np.isfinite(block)):
            raise AudioError(name, "corrupt", "decoded samples contain NaN or infinity")
        if sr is not None and sr != rate:
            if resampler is None:
                channels = block.shape[0]
                resampler = soxr.ResampleStream(rate, sr, channels, dtype="float32", quality="HQ")
            block = np.ascontiguousarray(
                resampler.resample_chunk(np.ascontiguousarray(block.T), last=False).T, dtype=np.float32
            )
        if block.shape[1]:
            n = block.shape[1]
            yield n_out / (sr if resampler is not None else rate), block
            n_out += n
        del block  # the consumer may let go of it before the next one is decoded
    if n_in == 0:
        raise AudioError(name, "empty", "the file holds no samples")
    if resampler is not None:  # the samples still inside the filter: a short last block
        tail = resampler.resample_chunk(np.zeros((0, channels), np.float32), last=True)
        if len(tail):
            yield n_out / sr, np.ascontiguousarray(tail.T, dtype=np.float32)


def spans(
    source: Source,
    bounds: Sequence[tuple[float | None, float | None]],
    *,
    sr: int,
    block_s: float = 60.0,
    name: str | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """The channel mix of each ``(start_s, end_s)`` span of one file at ``sr``, decoding the file once.

    Yields ``(index into bounds, samples)`` as the stream passes each span's end (spans
    may overlap, and come in any order). Only the stretch from the earliest unfinished
    span's start is held, so a long call with many short rows (an ASR transcript's turns)
    is decoded once and never whole, where ``load`` per row would decode it once per row.
    A null bound is the file's start or end. A span that ends before it starts, or starts
    past the file's end, is ``AudioError`` ``too_short``, as ``load`` has it.
    """
    name = source_name(source, name)
    todo: list[tuple[int, int, float]] = []  # (index, first sample, end sample or inf)
    for i, (start_s, end_s) in enumerate(bounds):
        start_s = 0.0 if start_s is None or np.isnan(start_s) else max(float(start_s), 0.0)
        end = np.inf if end_s is None or np.isnan(end_s) else round(float(end_s) * sr)
        if end <= round(start_s * sr):
            raise AudioError(name, "too_short", f"segment {start_s}-{end_s} s is empty")
        todo.append((i, round(start_s * sr), end))
    todo.sort(key=lambda t: (t[2], t[1]))  # by end: the order the stream finishes them
    held, held_from, seen = np.zeros(0, np.float32), 0, 0  # samples [held_from, seen) of the mix

    def cut(a: int, b: int) -> np.ndarray:
        return held[a - held_from : b - held_from].copy()

    for _, block in stream(source, block_s=block_s, sr=sr, name=name):
        mono = block[0] if block.shape[0] == 1 else block.mean(axis=0)
        held, seen = np.concatenate([held, mono]), seen + len(mono)
        while todo and todo[0][2] <= seen:
            i, a, b = todo.pop(0)
            yield i, cut(a, int(b))
        keep_from = min([a for _, a, _ in todo] + [seen])
        if keep_from > held_from:
            held, held_from = held[keep_from - held_from :], keep_from
    for i, a, _ in todo:  # open-ended, or ending past the file: up to its end
        if a >= seen:
            raise AudioError(name, "too_short", f"segment from {a / sr:.3f} s lies outside the file's {seen / sr:.2f} s")
        yield i, cut(a, seen)


def read_source(source: Source, name: str | None = None) -> bytes:
    """The raw bytes of a path, URI or bytes, with AudioError for missing/empty."""
    return _read_bytes(source, source_name(source, name))


__all__ = [
    "AUDIO_EXTS",
    "AudioError",
    "AudioInfo",
    "info",
    "is_audio_path",
    "load",
    "read_source",
    "resample",
    "select_channel",
    "stream",
]

