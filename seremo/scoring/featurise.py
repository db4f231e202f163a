"""Stage 1 of ``seremo score``, in CPU tasks: stream-decode, segment and featurise, one row per input.

An input that fails (decode, or features) becomes its error row, so one bad file
never sinks an archive.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from seremo import audio
from seremo.errors import AudioError
from seremo.features import FeatureSet

log = logging.getLogger(__name__)

SEGMENT_TYPE = pa.struct(
    [
        ("channel", pa.int32()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("features", pa.list_(pa.float32())),
        ("shape", pa.list_(pa.int32())),
        ("utterance_id", pa.string()),  # manifest-row scoring (text and fusion bundles); null otherwise
        ("text", pa.string()),
    ]
)


def _per_input(keys: list[str], segments_of: Any) -> pa.Table:
    """One row per input: ``segments_of(i, key) -> (segments, duration_s, channels)``; an input that fails
    becomes its error row (decode, or features), so one bad file never sinks an archive."""
    rows: dict[str, list] = {k: [] for k in ("path", "duration_s", "channels", "segments", "error", "message", "stage")}
    for i, key in enumerate(keys):
        kind = message = stage = None
        try:
            segs, duration, channels = segments_of(i, key)
        except AudioError as exc:
            segs, duration, channels, kind, message, stage = [], None, None, exc.kind, exc.reason, "decode"
        except Exception as exc:  # a feature bug must not sink the job: it becomes an error row
            log.exception("%s: scoring failed", key)
            segs, duration, channels, kind, message, stage = [], None, None, type(exc).__name__, str(exc), "features"
        for name, value in (("path", key), ("duration_s", duration), ("channels", channels), ("segments", segs),
                            ("error", kind), ("message", message), ("stage", stage)):  # fmt: skip
            rows[name].append(value)
    return pa.table({
        "path": pa.array(rows["path"], pa.string()), "duration_s": pa.array(rows["duration_s"], pa.float64()),
        "channels": pa.array(rows["channels"], pa.int32()), "segments": pa.array(rows["segments"], pa.list_(SEGMENT_TYPE)),
        "error": pa.array(rows["error"], pa.string()), "message": pa.array(rows["message"], pa.string()),
        "stage": pa.array(rows["stage"], pa.string()),
    })  # fmt: skip


def _features(feature_set: FeatureSet, y: np.ndarray, settings: dict[str, Any]) -> np.ndarray:
    """A segment's features, or (``defer``: a model-backed set scored on an actor pool) its audio, which
    the :class:`Predictor` actor runs through the model it loaded, in batches."""
    return np.asarray(y, np.float32) if settings.get("defer") else feature_set.extract(y, feature_set.sample_rate)


def featurize_files(batch: pa.Table, feature_set: FeatureSet, settings: dict[str, Any]) -> pa.Table:
    """Stream-decode, segment and extract features for each file of the batch (one row per file)."""
    from seremo.segment import FileSegmenter, SegmentSettings

    seg_settings = SegmentSettings(**settings["segment"])

    def segments_of(_: int, path: str) -> tuple[list[dict], float, int]:
        if not audio.is_audio_path(path):
            raise AudioError(path, "unsupported", f"not an audio file (extension {Path(path).suffix or 'none'})")
        segmenter = FileSegmenter(path, seg_settings, sr=feature_set.sample_rate, channels=settings["channels"])
        segs = []
        for seg in segmenter:
            x = _features(feature_set, seg.audio, settings)
            segs.append({"channel": seg.channel, "start_s": seg.start_s, "end_s": seg.end_s,
                         "features": x.ravel(), "shape": list(x.shape)})  # fmt: skip
        return segs, segmenter.duration_s, segmenter.n_channels

    return _per_input(batch.column("path").to_pylist(), segments_of)


def featurize_rows(batch: pa.Table, feature_set: FeatureSet, settings: dict[str, Any]) -> pa.Table:
    """Manifest-row scoring (text and fusion bundles): each row of an input is one segment, with its
    transcript and, for an ``audio+text`` bundle, the features of its span (one row per input, as
    ``featurize_files`` gives). A text bundle reads no audio, whatever its feature set."""
    import json

    reads_audio = settings.get("inputs") == "audio+text"

    listed = batch.column("rows").to_pylist()

    def segments_of(i: int, key: str) -> tuple[list[dict], float | None, int | None]:
        rows = json.loads(listed[i])
        segs = [{"channel": 0, "start_s": r["start_s"], "end_s": r["end_s"], "features": [], "shape": [0],
                 "utterance_id": r["utterance_id"], "text": r["transcript"]} for r in rows]  # fmt: skip
        if reads_audio:  # the file decoded once, each row's span cut from the stream as it passes
            sr = feature_set.sample_rate
            for j, y in audio.spans(key, [(r["start_s"], r["end_s"]) for r in rows], sr=sr):
                x = _features(feature_set, y, settings)
                start = rows[j]["start_s"] or 0.0
                segs[j].update(features=x.ravel(), shape=list(x.shape), start_s=start, end_s=start + len(y) / sr)
        ends = [sg["end_s"] for sg in segs if sg["end_s"] is not None]
        return segs, (max(ends) if ends else None), (1 if reads_audio else None)

    return _per_input(batch.column("path").to_pylist(), segments_of)

