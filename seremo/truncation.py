"""Containers cut short: a header that promises more sample bytes than the file holds.

libsndfile reads a WAV, RF64, W64, AIFF/AIFC, 8SVX, CAF or AU file whose sample chunk
runs past the end of the file as a shorter file, without a word, so a copy cut short
would pass as a clip. :mod:`seremo.audio` calls ``check_bytes`` / ``check_file`` before
decoding; a shortfall is an ``AudioError`` of kind ``truncated``.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import BinaryIO, Literal

from seremo.errors import AudioError

_UNSET_SIZES = frozenset({0, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF})  # left unset by streaming writers
_MAX_CHUNKS = 1024  # a walk that finds no data chunk by then gives up (the decoder decides)
_W64_RIFF = b"riff\x2e\x91\xcf\x11\xa5\xd6\x28\xdb\x04\xc1\x00\x00"
_W64_WAVE = b"wave\xf3\xac\xd3\x11\x8c\xd1\x00\xc0\x4f\x8e\xdb\x8a"


@dataclass(frozen=True)
class _Chunks:
    """How a chunked container lays out its header: enough to find its sample chunk without reading samples."""

    start: int  # offset of the first chunk header
    id_len: int  # 4 (RIFF, IFF, CAF) or 16 (Sony Wave64 GUIDs)
    size_len: int  # 4 or 8 bytes
    order: Literal["little", "big"]
    data: bytes  # the sample chunk's id (the first bytes of its GUID for W64)
    align: int  # bodies are padded to 2 (RIFF, IFF), 8 (W64) or not at all (CAF)
    counts_header: bool = False  # W64 sizes count the chunk's own header


_RIFF = _Chunks(12, 4, 4, "little", b"data", 2)
_AIFF = _Chunks(12, 4, 4, "big", b"SSND", 2)
_SVX = _Chunks(12, 4, 4, "big", b"BODY", 2)
_CAF = _Chunks(8, 4, 8, "big", b"data", 1)
_W64 = _Chunks(40, 16, 8, "little", b"data", 8, counts_header=True)


def _layout(head: bytes) -> _Chunks | None:
    """The chunk layout of a container whose header states its sample bytes, by its magic; else None."""
    kind, form = head[:4], head[8:12]
    if kind in (b"RIFF", b"RF64") and form == b"WAVE":
        return _RIFF
    if kind == b"FORM" and form in (b"AIFF", b"AIFC"):
        return _AIFF
    if kind == b"FORM" and form in (b"8SVX", b"16SV"):
        return _SVX
    if kind == b"caff":
        return _CAF
    if head[:16] == _W64_RIFF and head[24:40] == _W64_WAVE:
        return _W64
    return None


def _au_shortfall(head: bytes, size: int) -> tuple[int, int] | None:
    """Sun AU (``.snd``): a fixed header giving the data offset and size (0xFFFFFFFF: unknown)."""
    if len(head) < 12:
        return None
    offset, declared = int.from_bytes(head[4:8], "big"), int.from_bytes(head[8:12], "big")
    held = size - offset
    return None if declared in _UNSET_SIZES or held >= declared else (declared, held)


def shortfall(f: BinaryIO, size: int) -> tuple[int, int] | None:
    """``(declared, held)`` sample bytes of a container cut short, else None.

    libsndfile reads a WAV, RF64, W64, AIFF/AIFC, 8SVX or AU file whose sample
    chunk runs past the end of the file as a shorter file, without a warning, so
    a copy cut short would pass as a clip. One walk over the chunk headers (seeking
    over each body, padded as the format says) to the sample chunk, never reading
    samples; the layouts differ only in the fields of :class:`_Chunks`. Anything
    else, or chunks that lead nowhere, gives None: the decoder then says what is
    wrong with it.
    """
    head = f.read(40)
    if head[:4] == b".snd":
        return _au_shortfall(head, size)
    layout = _layout(head)
    if layout is None:
        return None
    header_len = layout.id_len + layout.size_len
    ds64_data: int | None = None  # RF64: the real data size, when the chunk says 0xFFFFFFFF
    pos = layout.start
    for _ in range(_MAX_CHUNKS):
        f.seek(pos)
        header = f.read(header_len)
        if len(header) < header_len:
            return None
        chunk, n = header[: layout.id_len], int.from_bytes(header[layout.id_len :], layout.order)
        body = n - header_len if layout.counts_header and n not in _UNSET_SIZES else n
        if chunk == b"ds64" and head[:4] == b"RF64":
            sizes = f.read(16)  # riff size, data size (64-bit each)
            if len(sizes) == 16:
                ds64_data = int.from_bytes(sizes[8:], "little")
        elif chunk.startswith(layout.data):
            declared = ds64_data if n == 0xFFFFFFFF and ds64_data is not None else body
            held = size - (pos + header_len)
            if declared in _UNSET_SIZES or declared < 0 or held >= declared:
                return None
            return declared, held
        if body < 0:
            return None
        pos += header_len + body + (-body % layout.align)
    return None


def _truncated(name: str, found: tuple[int, int]) -> AudioError:
    declared, held = found
    return AudioError(
        name,
        "truncated",
        f"the header promises {declared} bytes of samples but the file holds {max(held, 0)} "
        "(cut short?)",
    )


def check_bytes(data: bytes, name: str) -> None:
    """Raise ``truncated`` for container bytes cut short; other content passes."""
    found = shortfall(io.BytesIO(data), len(data))
    if found is not None:
        raise _truncated(name, found)


def check_file(path: str, name: str) -> None:
    """Raise ``truncated`` for a local container cut short, reading its chunk headers only."""
    try:
        with open(path, "rb") as f:
            found = shortfall(f, os.fstat(f.fileno()).st_size)
    except OSError:
        return  # not readable as a plain file: the decoder gives the precise error
    if found is not None:
        raise _truncated(name, found)
