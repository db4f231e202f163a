"""``seremo score``: label every segment of every call in an audio archive, streaming.

Ray Data pipeline, one row per input file all the way:

    list inputs -> map_batches(score_files)       CPU tasks: stream-decode, per channel,
                                                  segment (VAD or windows), features, and
                                                  predict with the driver's bundle, shipped
                                                  once per worker process (object store)
                -> ScoreSink                      segments/, per-file rows, error rows

With ``--gpu`` (or ``--actors N``) prediction is a stage of its own instead:
``map_batches(featurize_files)`` CPU tasks, then ``map_batches(Predictor)`` on an
actor pool that gets the bundle once per actor (GPU actors for torch bundles).
Fused is the default on CPUs: a separate actor holds CPU that featurization
needs (on 2 cores, an actor of 0.5 CPU left room for one featurizing task, not
two) and every segment's features cross Ray's object store in between.

Resumable: each write task stages its parts under ``_parts/`` with a fresh key
and commits a ``done`` marker last, only while its run holds the output's lease
(:mod:`seremo.outputs`); the driver publishes committed segments into
``segments/`` with exactly one owner per input, and a re-run skips every input a
commit names. Staged parts no commit owns (a killed or fenced run's) are removed
once the run is done, never while another run's worker may still write them. So
rows are never duplicated or lost, and nothing seremo did not write is touched.
Audio is streamed in blocks, never decoded whole.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv
from ray.data import Datasink
from ray.data.block import BlockAccessor

from seremo import audio, bundle, evaluate, outputs, score_report, storage
from seremo.errors import AudioError, ConfigError, SeremoError, check_failures, errors_table
from seremo.features import FeatureSet
from seremo.labels import NEGATIVE
from seremo.manifest import normalise_path
from seremo.progress import NewFiles, Progress
from seremo.runtime import check_shared_output, data_context, ensure_ray, items_per_task
from seremo.score_report import REPORT_FILES
from seremo.settings import ScoreSettings
from seremo.summary import Outcome, format_table

log = logging.getLogger(__name__)

PARTS = "_parts"


# --------------------------------------------------------------------------- inputs


def list_inputs(source: str) -> list[str]:
    """Every file of a directory (recursively), a glob's matches, or a manifest's ``path`` column.

    A symlink that leads nowhere (dangling, or a loop) is listed like a file: it
    is an input, and decoding it gives its error row (``missing``).

    Paths come back normalised (absolute, resolved) and de-duplicated, so that
    ``calls`` and ``$(pwd)/calls`` are the same input set and resume alike.
    """
    return sorted({normalise_path(p) for p in _listed(source)})


def _listed(source: str) -> list[str]:
    if storage.is_uri(source):
        if storage.is_dir(source):  # a prefix: every object under it
            return [p for p in storage.list_files(source, recursive=True) if not p.rsplit("/", 1)[-1].startswith(".")]
        if storage.is_file(source):
            return _manifest_paths(source) if _is_manifest(source) else [source]
        raise SeremoError(f"{source}: no such object, prefix or manifest in the bucket")
    p = Path(source)
    if p.is_dir():  # every name, broken symlinks too: they are inputs that fail, never left out
        return [f for f in storage.local_files(p) if not os.path.basename(f).startswith(".")]
    if p.is_file():
        return _manifest_paths(source) if _is_manifest(source) else [str(p)]
    matches = sorted(glob.glob(source, recursive=True))
    if any(ch in source for ch in "*?[") and matches:
        return [m for m in matches if not os.path.isdir(m)]
    raise SeremoError(f"{source}: no such directory, file, manifest or glob match")


def _is_manifest(source: str) -> bool:
    return source.lower().endswith((".parquet", ".csv"))


def _read_manifest(source: str) -> pa.Table:
    """A manifest (.parquet or .csv); one that is not a readable table is one line naming it."""
    try:
        if source.lower().endswith(".parquet"):
            return storage.read_parquet(source)
        fs, inner = storage.filesystem(source)
        text = {c: pa.string() for c in ("path", "utterance_id", "transcript", "speaker", "group", "corpus", "label")}
        with fs.open_input_stream(inner) as f:  # ids like 00123 and numeric transcripts stay text
            return pyarrow.csv.read_csv(f, convert_options=pyarrow.csv.ConvertOptions(column_types=text))
    except pa.ArrowInvalid as exc:
        first = (str(exc).strip().splitlines() or ["unreadable"])[0]
        raise SeremoError(f"{source}: is not a readable manifest ({first})") from None


def _resolve(source: str, path: str) -> str:
    """A manifest path as an input: relative paths are relative to the manifest's folder or prefix."""
    return path if os.path.isabs(path) or storage.is_uri(path) else storage.join(storage.parent(source), path)


def _manifest_paths(source: str) -> list[str]:
    """A manifest's ``path`` column; relative paths are relative to the manifest's folder or prefix."""
    table = _read_manifest(source)
    if "path" not in table.column_names:
        raise SeremoError(f"{source}: a manifest needs a `path` column")
    listed = table.column("path").to_pylist()
    empty = sum(1 for x in listed if x is None or not str(x).strip())
    if empty:  # text-only rows (a transcript corpus), or holes: never skipped in silence
        raise SeremoError(f"{source}: {empty} of {len(listed)} rows have no audio path (text-only rows?); "
                          "seremo score reads audio: give it the audio rows only")  # fmt: skip
    return [_resolve(source, str(x)) for x in listed]


TEXT_INPUT = "text:"  # the input key of a text-only manifest row: "text:<utterance_id>"


def manifest_rows(source: str, inputs: str) -> dict[str, list[dict[str, Any]]]:
    """For a text or fusion bundle: the manifest's rows, each one segment, grouped into inputs.

    An input is an audio file (its rows are segments of it, by ``start_s``/``end_s``;
    none: the whole file) or, for a text bundle, a text-only row on its own
    (``text:<utterance_id>``). Every row needs a transcript, and for ``audio+text``
    an audio path: rows that lack one are refused in one line, never skipped.
    """
    from seremo.text import clean_transcript

    if not _is_manifest(source):
        raise SeremoError(f"{source}: a {inputs} bundle scores a manifest's rows (path, transcript, optional "
                          "start_s/end_s); give it a manifest (.parquet or .csv), not a folder of audio")  # fmt: skip
    table = _read_manifest(source)
    if "transcript" not in table.column_names:
        raise SeremoError(f"{source}: has no `transcript` column; a {inputs} bundle needs one transcript per row "
                          "(from the corpus or your ASR)")  # fmt: skip
    n = table.num_rows
    column = lambda name: table.column(name).to_pylist() if name in table.column_names else [None] * n  # noqa: E731
    ids = [str(u) if u is not None else f"row{i + 1}" for i, u in enumerate(column("utterance_id"))]
    texts = [clean_transcript(t) for t in column("transcript")]
    paths = [str(p) if p is not None and str(p).strip() else None for p in column("path")]
    missing = [i for i, t in enumerate(texts) if not t]
    if missing:
        raise SeremoError(f"{source}: {len(missing)} of {n} rows have no transcript (e.g. {ids[missing[0]]!r}); a "
                          f"{inputs} bundle needs one on every row")  # fmt: skip
    no_audio = [i for i, p in enumerate(paths) if p is None]
    if inputs == "audio+text" and no_audio:
        raise SeremoError(f"{source}: {len(no_audio)} of {n} rows have no audio path (e.g. {ids[no_audio[0]]!r}); "
                          "an audio+text bundle needs the audio and the transcript of every row")  # fmt: skip
    if len(set(ids)) != n:
        raise SeremoError(f"{source}: utterance ids repeat; every row needs its own")
    grouped: dict[str, list[dict[str, Any]]] = {}
    for uid, text, path, start, end in zip(ids, texts, paths, column("start_s"), column("end_s"), strict=True):
        key = normalise_path(_resolve(source, path)) if path else TEXT_INPUT + uid
        grouped.setdefault(key, []).append({"utterance_id": uid, "transcript": text, "start_s": start, "end_s": end})
    return grouped


# --------------------------------------------------------------------------- stage 1: CPU tasks

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


# --------------------------------------------------------------------------- stage 2: actors


@dataclass(frozen=True)
class ShippedBundle:
    """The driver's loaded and verified bundle, handed to the workers through Ray's object store.

    Loading a bundle from disk runs skops' safe loader (and imports skops): 3.2 s per
    process for tune's 7-member ensemble on this machine, paid again by every worker
    process of the job. Unpickling what the driver already verified takes 0.04 s,
    and on a cluster the nodes fetch it from the object store instead of storage.
    ``refs`` holds the one ObjectRef in a list, so that Ray passes the reference
    through a task's arguments and the worker fetches it once (``load``).
    """

    model_id: str
    refs: list

    @classmethod
    def of(cls, b: bundle.Bundle) -> ShippedBundle:
        import ray

        return cls(b.model_id, [ray.put(b)])

    def load(self) -> bundle.Bundle:
        import ray

        return ray.get(self.refs[0])


class Predictor:
    """Adds class probabilities to every segment; built once per actor or worker process.

    ``model``: a bundle path or URI (loaded here), a loaded :class:`bundle.Bundle`,
    or a :class:`ShippedBundle` (what the job passes).
    """

    def __init__(self, model: str | bundle.Bundle | ShippedBundle, device: str | None = None, defer: bool = False):
        if isinstance(model, ShippedBundle):
            model = model.load()
        self.bundle = model if isinstance(model, bundle.Bundle) else bundle.load(model)
        self.classes = self.bundle.classes
        if device and self.bundle.meta.model_kind == "torch":
            self.bundle.model.to(device)
        # ``defer``: segments arrive as audio, and the bundle's model-backed feature set (ssl) runs here,
        # its model loaded once per actor, on the actor's device
        self.runner = self.bundle.feature_set.load(device or "cpu") if defer else None

    def featurize(self, batch: pa.Table) -> pa.Table:
        """The deferred features of every segment of the batch, the segments of all its files run together
        (sorted by length inside the set); a file with a segment that fails becomes an error row."""
        files = batch.column("segments").to_pylist()
        fs = self.bundle.feature_set
        where = [(f, j) for f, segs in enumerate(files) for j in range(len(segs))]
        done = fs.extract_many([np.asarray(files[f][j]["features"], np.float32) for f, j in where],
                               fs.sample_rate, self.runner)  # fmt: skip
        errors = batch.column("error").to_pylist()
        messages, stages = batch.column("message").to_pylist(), batch.column("stage").to_pylist()
        for (f, j), x in zip(where, done, strict=True):
            if isinstance(x, Exception):
                errors[f], messages[f], stages[f] = type(x).__name__, str(x), "features"
            else:
                files[f][j].update(features=x.ravel().tolist(), shape=list(x.shape))
        files = [[] if errors[f] else segs for f, segs in enumerate(files)]
        columns = {"segments": pa.array(files, batch.schema.field("segments").type), "error": pa.array(errors, pa.string()),
                   "message": pa.array(messages, pa.string()), "stage": pa.array(stages, pa.string())}  # fmt: skip
        for name, column in columns.items():
            batch = batch.set_column(batch.column_names.index(name), name, column)
        return batch

    def normalise(self, X: Any, segments: list[list[dict]]) -> Any:
        """As the bundle was evaluated: with a per-speaker or per-corpus variant, each channel of each
        file is one speaker (and the only audio of its kind), z-scored with its own segments."""
        if self.bundle.meta.normalisation == "none":
            return X
        channel = [f"{i}/{s['channel']}" for i, file_segs in enumerate(segments) for s in file_segs]
        if isinstance(X, np.ndarray):
            return evaluate.speaker_normalise(X, channel).astype(np.float32)
        return evaluate.normalise_items(X, self.bundle.meta.feature_set.kind, "speaker", channel, channel)

    def predict(self, file_segs: list[dict]) -> np.ndarray:
        """Class probabilities for one file's segments.

        One call per file: a file's figures then never depend on which other files
        shared its batch (BLAS sums a matrix in an order that depends on its shape).
        """
        if not file_segs:
            return np.zeros((0, len(self.classes)), np.float32)
        inputs = self.bundle.meta.inputs
        if inputs == "text":
            return self.bundle.predict_proba(np.asarray([s["text"] for s in file_segs], dtype=object))
        arrays = [np.asarray(s["features"], np.float32).reshape(s["shape"]) for s in file_segs]
        X = np.stack(arrays) if arrays[0].ndim == 1 else arrays
        X = self.normalise(X, [file_segs])
        if inputs == "audio+text":
            X = bundle.join_inputs(X, [s["text"] for s in file_segs])
        return self.bundle.predict_proba(X)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.runner is not None:
            batch = self.featurize(batch)
        out_segments = []
        for file_segs in batch.column("segments").to_pylist():
            proba = self.predict(file_segs)
            out_segments.append(
                [{"channel": s["channel"], "start_s": s["start_s"], "end_s": s["end_s"],
                  "utterance_id": s.get("utterance_id"), "proba": proba[j].astype(np.float32).tolist()}
                 for j, s in enumerate(file_segs)]
            )  # fmt: skip
        seg_type = pa.list_(
            pa.struct([("channel", pa.int32()), ("start_s", pa.float64()), ("end_s", pa.float64()),
                       ("utterance_id", pa.string()), ("proba", pa.list_(pa.float32()))])
        )  # fmt: skip
        return batch.drop_columns(["segments"]).append_column("segments", pa.array(out_segments, seg_type))


_PREDICTORS: dict[str, Predictor] = {}  # per worker process, by model id: a bundle arrives once, not per task


def score_files(batch: pa.Table, feature_set: FeatureSet, settings: dict[str, Any], model: ShippedBundle,
                by_row: bool = False) -> pa.Table:  # fmt: skip
    """Featurize and predict in one CPU task (the default without --gpu or --actors)."""
    if model.model_id not in _PREDICTORS:
        _PREDICTORS.clear()
        _PREDICTORS[model.model_id] = Predictor(model)
    featurize = featurize_rows if by_row else featurize_files
    return _PREDICTORS[model.model_id](featurize(batch, feature_set, settings))


# --------------------------------------------------------------------------- stage 3: the sink


def file_summary(path: str, duration: float, channels: int, segs: list[dict], classes: list[str]) -> dict[str, Any]:
    """One files.parquet row: speech time, label shares (by speech time), dominant label, worst moment.

    A segment without times (a text-only manifest row) weighs 1 in the shares and adds no speech time.
    """
    timed = [s["end_s"] is not None and s["start_s"] is not None for s in segs]
    speech = float(sum(s["end_s"] - s["start_s"] for s, t in zip(segs, timed, strict=True) if t))
    share = dict.fromkeys(classes, 0.0)
    for s, t in zip(segs, timed, strict=True):
        share[classes[int(np.argmax(s["proba"]))]] += (s["end_s"] - s["start_s"]) if t else 1.0
    weight = sum(share.values())
    row: dict[str, Any] = {
        "path": path, "duration_s": duration, "channels": channels, "speech_s": speech, "segments": len(segs),
        **{f"share_{c}": (share[c] / weight if weight else 0.0) for c in classes},
        "dominant_label": max(classes, key=lambda c: share[c]) if segs else None,
    }  # fmt: skip
    negative = [i for i, c in enumerate(classes) if c in NEGATIVE]
    worst = max(segs, key=lambda s: sum(s["proba"][i] for i in negative), default=None) if negative else None
    neg_p = [worst["proba"][i] for i in negative] if worst else []
    row.update(
        {
            "negative_start_s": worst["start_s"] if worst else None,
            "negative_end_s": worst["end_s"] if worst else None,
            "negative_channel": worst["channel"] if worst else None,
            "negative_label": classes[negative[int(np.argmax(neg_p))]] if worst else None,
            "negative_p": float(sum(neg_p)) if worst else None,
        }
    )
    return row


class ScoreSink(Datasink):
    """Stages each task's segments, file rows and error rows under ``_parts/``, then commits.

    The commit is the task's ``done`` marker, written last and only while this
    run still holds the output's lease: the workers of a killed run that wake
    up after another run took over never commit (and remove what they staged).
    Segments become visible in ``segments/`` only when the driver publishes the
    committed parts, so no reader ever sees a row twice.
    """

    def __init__(self, out: str, classes: list[str], model_id: str, token: str, by_row: bool = False):
        self.out = out
        self.classes = classes
        self.model_id = model_id
        self.token = token
        self.by_row = by_row  # manifest-row scoring: segments carry their utterance_id

    def get_name(self) -> str:
        return "WriteScores"

    def write(self, blocks: Iterable[Any], ctx: Any) -> dict[str, Any]:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return {"files": 0, "errors": 0, "internal": 0, "segments": 0, "seconds": 0.0}
        table = pa.concat_tables(tables, promote_options="default")
        key = f"{ctx.task_idx:05d}-{uuid.uuid4().hex[:12]}"
        names = ("path", *(("utterance_id",) if self.by_row else ()), "channel", "start_s", "end_s", "label",
                 "confidence", "model_id")  # fmt: skip
        seg_rows: dict[str, list] = {k: [] for k in names}
        probs: list[list[float]] = []
        file_rows, error_rows = [], []
        for row in table.to_pylist():
            if row["error"] is not None:
                error_rows.append({"path": row["path"], "utterance_id": None, "stage": row["stage"],
                                   "error": row["error"], "message": row["message"]})  # fmt: skip
                continue
            segs = row["segments"]
            for s in segs:
                k = int(np.argmax(s["proba"]))
                for name, value in (("path", row["path"]), ("utterance_id", s.get("utterance_id")),
                                    ("channel", s["channel"]), ("start_s", s["start_s"]), ("end_s", s["end_s"]),
                                    ("label", self.classes[k]), ("confidence", float(s["proba"][k])),
                                    ("model_id", self.model_id)):  # fmt: skip
                    if name in seg_rows:
                        seg_rows[name].append(value)
                probs.append(s["proba"])
            file_rows.append(file_summary(row["path"], row["duration_s"], row["channels"], segs, self.classes))
        p = np.asarray(probs, np.float32).reshape(-1, len(self.classes))
        types = {"path": pa.string(), "utterance_id": pa.string(), "channel": pa.int32(), "start_s": pa.float64(),
                 "end_s": pa.float64(), "label": pa.string(), "confidence": pa.float64(), "model_id": pa.string()}
        segments = pa.table({**{k: pa.array(v, types[k]) for k, v in seg_rows.items()},
                             **{f"p_{c}": p[:, i] for i, c in enumerate(self.classes)}})  # fmt: skip
        staged = [_part(self.out, sub, key) for sub in ("segments", "files", "errors")]
        storage.write_parquet(segments, staged[0])
        storage.write_parquet(pa.Table.from_pylist(file_rows) if file_rows else _empty_files(self.classes), staged[1])
        storage.write_parquet(errors_table(error_rows), staged[2])
        _pause_before_commit(table.column("path").to_pylist())
        if not outputs.holds(self.out, self.token):  # the fence: another run owns the output now
            log.warning("%s: this run no longer holds the output; task %s is not committed", self.out, key)
            for f in staged:
                storage.delete_file(f)
            return {"files": 0, "errors": 0, "internal": 0, "segments": 0, "seconds": 0.0, "fenced": 1}
        storage.write_parquet(pa.table({"path": table.column("path")}), _part(self.out, "done", key))  # the commit
        return {"files": len(file_rows), "errors": len(error_rows), "segments": segments.num_rows,
                "seconds": float(sum(r["duration_s"] or 0.0 for r in file_rows))}  # fmt: skip

    def on_write_complete(self, write_result: Any) -> None:
        self.returns = list(write_result.write_returns)


def _pause_before_commit(paths: list[str]) -> None:
    """Fault injection for the tests: ``SEREMO_TEST_STOP_BEFORE_COMMIT=<input path>`` makes the
    worker that staged that input stop itself (SIGSTOP) just before its commit, as a worker of a
    killed run that a scheduler froze would; the test resumes it later."""
    target = os.environ.get("SEREMO_TEST_STOP_BEFORE_COMMIT")
    if target and target in paths:
        import signal

        os.kill(os.getpid(), signal.SIGSTOP)


def _part(out: str, sub: str, key: str) -> str:
    """Where a task stages (or commits, for ``done``) its part ``sub``: a fresh key, never overwritten."""
    return storage.join(out, PARTS, sub, f"{key}.parquet")


def _published(out: str, key: str) -> str:
    return storage.join(out, "segments", f"part-{key}.parquet")


def _key(path: str) -> str:
    return path.rsplit("/", 1)[-1].removesuffix(".parquet")


def _empty_files(classes: list[str]) -> pa.Table:
    row = file_summary("", 0.0, 0, [], classes)
    return pa.Table.from_pylist([row]).slice(0, 0)


# --------------------------------------------------------------------------- driver

# What ``seremo score`` writes at the top of its --out (checked against a user's folder).
WRITES = ("segments", PARTS, "files.parquet", "errors.parquet", "score.json", *REPORT_FILES)


def input_fingerprint(inputs: list[str]) -> dict[str, Any]:
    """The identity of an input set: its size and a hash of its normalised paths."""
    digest = hashlib.sha256("\n".join(sorted(inputs)).encode()).hexdigest()
    return {"count": len(inputs), "sha256": digest}


def _check_identity(out: str, before: dict[str, Any], now: dict[str, Any]) -> None:
    """Resume only a run of the same model, settings and inputs: two runs' rows must never mix."""
    if before == now:
        return
    if before.get("model") != now["model"]:
        what = f"another model ({before.get('model')})"
    elif before.get("inputs") != now["inputs"]:
        what = f"another input set ({(before.get('inputs') or {}).get('count')} inputs, not these {now['inputs']['count']})"
    elif before.get("rows") != now.get("rows"):
        what = "other manifest rows (transcripts or spans changed)"
    else:
        what = f"other channel/segment settings ({before.get('channels')}, {before.get('segment')})"
    raise SeremoError(f"{out}: holds scores made with {what}; score into a new --out, or delete it to start afresh")


def _commits(out: str) -> dict[str, list[str]]:
    """Committed task key -> its input paths, for commits whose parts are all there."""
    commits = {}
    for marker in storage.list_files(storage.join(out, PARTS, "done"), ".parquet"):
        key = _key(marker)
        staged_or_published = storage.is_file(_part(out, "segments", key)) or storage.is_file(_published(out, key))
        if staged_or_published and storage.is_file(_part(out, "files", key)) and storage.is_file(_part(out, "errors", key)):
            commits[key] = storage.read_parquet(marker).column("path").to_pylist()
        else:
            log.warning("%s: commit %s lacks some of its parts; its inputs are scored again", out, key)
    return commits


def _owners(commits: dict[str, list[str]]) -> dict[str, str]:
    """input path -> the committed task key that owns it (the smallest key, if several do).

    Two committed tasks can hold the same input when a killed run's workers
    outlive its driver and finish a task while the re-run redoes it; keeping
    exactly one owner per input is what guarantees no row is ever duplicated.
    """
    owners: dict[str, str] = {}
    for key in sorted(commits):
        for path in commits[key]:
            owners.setdefault(path, key)
    return owners


def _consolidate(out: str, classes: list[str]) -> tuple[pa.Table, pa.Table]:
    """Publish committed segments (one owner per input) and gather files/errors tables."""
    commits = _commits(out)
    owners = _owners(commits)

    def owned(table: pa.Table, key: str) -> pa.Table:
        keep = [owners.get(p) == key for p in table.column("path").to_pylist()]
        return table if all(keep) else table.filter(pa.array(keep, pa.bool_()))

    for key in sorted(commits):
        staged, published = _part(out, "segments", key), _published(out, key)
        is_staged = storage.is_file(staged)
        table = storage.read_parquet(staged if is_staged else published)
        mine = owned(table, key)
        if is_staged or mine.num_rows != table.num_rows:
            storage.write_parquet(mine, published)
        if is_staged:
            storage.delete_file(staged)

    def gather(sub: str, empty: pa.Table) -> pa.Table:
        tables = [owned(storage.read_parquet(_part(out, sub, key)), key) for key in sorted(commits)]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return empty
        return pa.concat_tables(tables, promote_options="default").sort_by("path")

    files = gather("files", _empty_files(classes))
    errors = gather("errors", errors_table([]))
    storage.write_parquet(files, storage.join(out, "files.parquet"))
    storage.write_parquet(errors, storage.join(out, "errors.parquet"))
    _remove_uncommitted(out, set(commits))
    return files, errors


def _remove_uncommitted(out: str, committed: set[str]) -> None:
    """Staged parts no commit owns: work a killed or fenced run left behind (seremo's own, by key)."""
    done = {_key(p) for p in storage.list_files(storage.join(out, PARTS, "done"), ".parquet")} | committed
    for sub in ("segments", "files", "errors"):
        for f in storage.list_files(storage.join(out, PARTS, sub), ".parquet"):
            if _key(f) not in done:
                storage.delete_file(f)


def _segment_rows(out: str) -> int:
    return sum(storage.parquet_rows(_published(out, key)) for key in _commits(out))


def score(source: str, model: str, out: str, settings: ScoreSettings, address: str | None = None,
          out_is_shared: bool = False, afresh: bool = False) -> dict[str, Any]:  # fmt: skip
    """Score every input of ``source`` (a folder, prefix, glob or manifest) with the bundle at ``model`` into ``out``.

    ``out`` is a local path or a URI (s3://...); on a multi-node cluster a local
    ``out`` is refused unless ``out_is_shared`` (every node mounts it).
    """
    from seremo.segment import SegmentSettings

    try:  # a bad option is one line now, not an error row for every file in the workers
        SegmentSettings(**settings.segment)
    except TypeError as exc:
        raise ConfigError(f"segment settings: {exc}") from None
    b = bundle.load(model)
    if b.meta.normalisation == "speaker":
        log.warning("%s", SPEAKER_NORM_NOTE)
    if b.meta.inputs != "text":  # its features' model (ssl) here, as the bundle names it: one line, before any work
        b.feature_set.check_installed()
        b.feature_set.describe()
    rows = manifest_rows(source, b.meta.inputs) if b.meta.inputs != "audio" else None
    inputs = sorted(rows) if rows is not None else list_inputs(source)
    if not inputs:
        raise SeremoError(f"{source}: holds no files to score")
    out = out if storage.is_uri(out) else os.path.abspath(out)
    audio_inputs = [p for p in inputs if not p.startswith(TEXT_INPUT)]
    outputs.check_out(out, [source] if not storage.is_uri(source) and os.path.isdir(source) else [], audio_inputs)
    # What decides the rows (not how the work is spread: files per task, actors, GPU).
    identity = {"model": b.model_id, "channels": settings.channels,
                "segment": SegmentSettings(**settings.segment).identity(),
                "inputs": input_fingerprint(inputs)}  # fmt: skip
    if rows is not None:  # the manifest's rows are the segments: their spans and transcripts decide the rows
        import json

        identity.update(channels="mix", segment="manifest rows",
                        rows=hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest())
    before = outputs.check_owner(out, "score", WRITES)
    stale = before is not None and before != identity
    if stale and not afresh:
        _check_identity(out, before, identity)
    ensure_ray(address)  # a cluster that cannot be joined fails before anything is written
    check_shared_output(out, out_is_shared, "pass --out-is-shared")
    with outputs.Lease(out, "score") as lease:
        if stale:
            log.info("%s: settings or model changed since the last run; scoring afresh", out)
            _clear_own(out)
        outputs.record_owner(out, "score", identity)
        return _score(inputs, b, out, settings, lease.token, rows)


def _score(inputs: list[str], b: bundle.Bundle, out: str, settings: ScoreSettings, token: str,
           rows: dict[str, list[dict]] | None = None) -> dict[str, Any]:  # fmt: skip
    """Score ``inputs``: audio files segmented here, or (``rows``) manifest rows grouped by input."""
    import json

    import ray

    done = {p for paths in _commits(out).values() for p in paths}
    todo = [p for p in inputs if p not in done]
    if done:
        print(f"resuming: {len(inputs) - len(todo)} of {len(inputs)} inputs already scored", flush=True)
    started = time.perf_counter()
    returns: list[dict] = []
    if todo:
        with data_context(single_stage=_fused(settings)):
            # 48 calls on 2 CPUs: 3 files a task; with 4, one worker idled 1.9 s of a 22 s job at the end.
            per_task = settings.files_per_task or items_per_task(len(todo), most=16)
            items = [{"path": p} if rows is None else {"path": p, "rows": json.dumps(rows[p])} for p in todo]
            ds = ray.data.from_items(items, override_num_blocks=-(-len(todo) // per_task))
            ds = _predicted(ds, b, settings, per_task, by_row=rows is not None)
            sink = ScoreSink(out, b.classes, b.model_id, token, by_row=rows is not None)
            done_dir = storage.join(out, PARTS, "done")
            committed = NewFiles(lambda: storage.list_files(done_dir, ".parquet"), storage.parquet_rows).skip_existing()
            with Progress("score", len(todo), committed, "inputs"):
                ds.write_datasink(sink)
        returns = sink.returns
    wall = time.perf_counter() - started
    files, errors = _consolidate(out, b.classes)
    audio_s = float(pc.sum(files.column("duration_s")).as_py() or 0.0) if files.num_rows else 0.0
    this_run_s = sum(r["seconds"] for r in returns)
    summary = {
        "inputs": len(inputs), "files": files.num_rows, "errors": errors.num_rows, "segments": _segment_rows(out),
        "audio_hours": audio_s / 3600, "scored_this_run": len(todo), "wall_s": wall,
        "x_realtime": (this_run_s / wall) if wall > 0 and this_run_s else None,
        "cpus": ray.cluster_resources().get("CPU"), "model": b.model_id, "classes": b.classes,
        "normalisation": b.meta.normalisation, "settings": settings.model_dump(),
    }  # fmt: skip
    if files.num_rows + errors.num_rows != len(inputs):
        raise SeremoError(f"{out}: {len(inputs)} inputs but {files.num_rows} files + {errors.num_rows} errors")
    storage.write_json(storage.join(out, "score.json"), summary)
    _write_report(out, b.classes)
    check_failures(out, len(inputs), files.num_rows, errors.column("error").to_pylist(),
                   errors.column("message").to_pylist()[:1], settings.failure_budget)  # fmt: skip
    return summary


def _write_report(out: str, classes: list[str]) -> None:
    """The archive report, from the Parquet just written (it never slows the job itself)."""
    started = time.perf_counter()
    parts = [_published(out, key) for key in sorted(_commits(out))]  # committed parts only
    score_report.write(out, classes, parts)
    log.info("%s: report.md written in %.1f s", out, time.perf_counter() - started)


def _fused(settings: ScoreSettings) -> bool:
    return not settings.gpu and settings.actors is None


def _predicted(ds: Any, b: bundle.Bundle, settings: ScoreSettings, per_task: int, by_row: bool = False) -> Any:
    """The scoring stages: fused into the CPU tasks, or an actor pool (GPU, or --actors N)."""
    import ray

    # a model-backed feature set (ssl) runs on the actors, beside the bundle: the CPU tasks cut segments
    defer = b.feature_set.batched and not _fused(settings)
    cpu = {"feature_set": b.feature_set, "settings": {**settings.model_dump(), "inputs": b.meta.inputs, "defer": defer}}
    shipped = ShippedBundle.of(b)
    if _fused(settings):
        return ds.map_batches(score_files, fn_kwargs={**cpu, "model": shipped, "by_row": by_row},
                              batch_format="pyarrow", batch_size=per_task, num_cpus=1)  # fmt: skip
    n_actors = settings.actors or int(ray.cluster_resources().get("GPU", 1))
    return ds.map_batches(
        featurize_rows if by_row else featurize_files, fn_kwargs=cpu, batch_format="pyarrow", batch_size=per_task, num_cpus=1,
    ).map_batches(
        Predictor,
        fn_constructor_kwargs={"model": shipped, "device": "cuda" if settings.gpu else None, "defer": defer},
        batch_format="pyarrow",
        batch_size=None,
        compute=ray.data.ActorPoolStrategy(size=n_actors),
        num_cpus=0 if settings.gpu else 1 if defer else 0.5,
        num_gpus=1 if settings.gpu else 0,
    )


def _clear_own(out: str) -> None:
    """Remove what ``seremo score`` wrote into ``out``, for a run that holds its lease and starts afresh.

    Only seremo's own files go: the published parts of its commits, its staging
    prefix, its summaries and its marker; anything else in ``out`` stays.
    """
    for marker_file in storage.list_files(storage.join(out, PARTS, "done"), ".parquet"):
        storage.delete_file(_published(out, _key(marker_file)))
    for f in storage.list_files(storage.join(out, PARTS), recursive=True):
        storage.delete_file(f)
    for name in ("files.parquet", "errors.parquet", "score.json", *REPORT_FILES, outputs.MARKER):
        storage.delete_file(storage.join(out, name))
    for folder in (storage.join(out, PARTS, sub) for sub in ("segments", "files", "errors", "done")):
        storage.remove_empty_dir(folder)
    storage.remove_empty_dir(storage.join(out, PARTS))
    storage.remove_empty_dir(storage.join(out, "segments"))


# --------------------------------------------------------------------------- the stage


SPEAKER_NORM_NOTE = ("this bundle z-scores each channel of each file with that channel's own segments: right "
                     "where a channel holds minutes of varied speech; where a channel is mostly one emotion (one "
                     "side of a short call) it removes that emotion (benchmarks/speaker_norm.py: accuracy 0.88 "
                     "raw, 0.76 normalised); score short calls with a raw bundle")  # fmt: skip


def run_stage(source: str, model: str, out: str, settings: ScoreSettings, address: str | None,
              out_is_shared: bool = False, afresh: bool = False) -> Outcome:  # fmt: skip
    """``seremo score``: the summary table and where the outputs are (``afresh``: an output of other
    settings or another model is cleared, after every check, instead of refused)."""
    s = score(source, model, out, settings, address=address, out_is_shared=out_is_shared, afresh=afresh)
    table = format_table(
        ["inputs", "files", "errors", "segments", "audio h", "wall s", "x real-time"],
        [[s["inputs"], s["files"], s["errors"], s["segments"], round(s["audio_hours"], 3), round(s["wall_s"], 1),
          round(s["x_realtime"] or 0.0, 1)]],
    )  # fmt: skip
    where = (f"segments: {out}/segments   files: {out}/files.parquet   errors: {out}/errors.parquet\n"
             f"report:   {out}/report.md")
    if s.get("normalisation") == "speaker":
        where += f"\nnote:     {SPEAKER_NORM_NOTE}"
    return Outcome({k: s[k] for k in ("inputs", "files", "errors", "segments")}, f"{table}\n{where}")
