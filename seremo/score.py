"""``seremo score``: label every segment of every call in an audio archive, streaming.

Ray Data pipeline, one row per input file all the way:

    list inputs -> map_batches(featurize_files)   CPU tasks: stream-decode, per channel,
                                                  segment (VAD or windows), features
                -> map_batches(Predictor)         actor pool: the bundle loaded once per actor
                                                  (GPU actors for torch bundles with --gpu)
                -> ScoreSink                      segments/, per-file rows, error rows

Resumable: each write task commits its parts under a fresh key and writes a
``done`` marker last; a re-run skips every input named in a marker and deletes
parts without one (work that was in flight when a run was killed), so rows are
never duplicated or lost. Audio is streamed in blocks, never decoded whole.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field
from ray.data import Datasink
from ray.data.block import BlockAccessor

from seremo import audio, bundle
from seremo.errors import AudioError, ConfigError, SeremoError, errors_table
from seremo.features import FeatureSet
from seremo.runtime import ensure_ray

log = logging.getLogger(__name__)

NEGATIVE = ("angry", "frustrated", "sad", "fearful", "disgust")
PARTS = "_parts"


class ScoreSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels: Literal["split", "mix"] = "split"
    segment: dict[str, Any] = Field(default_factory=dict, description="seremo.segment.SegmentSettings fields")
    files_per_task: int = Field(4, ge=1)
    actors: int | None = Field(None, ge=1, description="predictor actors (default: 1, or GPUs with gpu)")
    gpu: bool = False


# --------------------------------------------------------------------------- inputs


def list_inputs(source: str) -> list[str]:
    """Every file of a directory (recursively), a glob's matches, or a manifest's ``path`` column."""
    p = Path(source)
    if p.is_dir():
        return sorted(str(f) for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
    if p.is_file() and p.suffix.lower() in (".parquet", ".csv"):
        table = pq.read_table(p) if p.suffix.lower() == ".parquet" else pyarrow.csv.read_csv(p)
        if "path" not in table.column_names:
            raise SeremoError(f"{source}: a manifest needs a `path` column")
        paths = [str(x) for x in table.column("path").to_pylist() if x]
        return [x if os.path.isabs(x) or "://" in x else str(p.parent / x) for x in paths]
    if p.is_file():
        return [str(p)]
    matches = sorted(glob.glob(source, recursive=True))
    if any(ch in source for ch in "*?[") and matches:
        return [m for m in matches if os.path.isfile(m)]
    raise SeremoError(f"{source}: no such directory, file, manifest or glob match")


# --------------------------------------------------------------------------- stage 1: CPU tasks

SEGMENT_TYPE = pa.struct(
    [
        ("channel", pa.int32()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("features", pa.list_(pa.float32())),
        ("shape", pa.list_(pa.int32())),
    ]
)


def featurize_files(batch: pa.Table, feature_set: FeatureSet, settings: dict[str, Any]) -> pa.Table:
    """Stream-decode, segment and extract features for each file of the batch (one row per file)."""
    from seremo.segment import FileSegmenter, SegmentSettings

    seg_settings = SegmentSettings(**settings["segment"])
    rows: dict[str, list] = {k: [] for k in ("path", "duration_s", "channels", "segments", "error", "message", "stage")}
    for path in batch.column("path").to_pylist():
        segs: list[dict] = []
        duration = channels = None
        kind = message = stage = None
        try:
            if not audio.is_audio_path(path):
                raise AudioError(path, "unsupported", f"not an audio file (extension {Path(path).suffix or 'none'})")
            segmenter = FileSegmenter(path, seg_settings, sr=feature_set.sample_rate, channels=settings["channels"])
            for seg in segmenter:
                x = feature_set.extract(seg.audio, feature_set.sample_rate)
                segs.append({"channel": seg.channel, "start_s": seg.start_s, "end_s": seg.end_s,
                             "features": x.ravel(), "shape": list(x.shape)})  # fmt: skip
            duration, channels = segmenter.duration_s, segmenter.n_channels
        except AudioError as exc:
            segs, kind, message, stage = [], exc.kind, exc.reason, "decode"
        except Exception as exc:  # one bad file must not sink an archive: it becomes an error row
            log.exception("%s: scoring failed", path)
            segs, kind, message, stage = [], type(exc).__name__, str(exc), "features"
        for key, value in (("path", path), ("duration_s", duration), ("channels", channels), ("segments", segs),
                           ("error", kind), ("message", message), ("stage", stage)):  # fmt: skip
            rows[key].append(value)
    return pa.table(
        {
            "path": pa.array(rows["path"], pa.string()),
            "duration_s": pa.array(rows["duration_s"], pa.float64()),
            "channels": pa.array(rows["channels"], pa.int32()),
            "segments": pa.array(rows["segments"], pa.list_(SEGMENT_TYPE)),
            "error": pa.array(rows["error"], pa.string()),
            "message": pa.array(rows["message"], pa.string()),
            "stage": pa.array(rows["stage"], pa.string()),
        }
    )


# --------------------------------------------------------------------------- stage 2: actors


class Predictor:
    """Loads the bundle once per actor; adds class probabilities to every segment."""

    def __init__(self, bundle_path: str, device: str | None = None):
        self.bundle = bundle.load(bundle_path)
        self.classes = self.bundle.classes
        if device and self.bundle.meta.model_kind == "torch":
            self.bundle.model.to(device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        segments = batch.column("segments").to_pylist()
        flat = [s for file_segs in segments for s in file_segs]
        if flat:
            arrays = [np.asarray(s["features"], np.float32).reshape(s["shape"]) for s in flat]
            X = np.stack(arrays) if arrays[0].ndim == 1 else arrays
            proba = self.bundle.predict_proba(X)
        else:
            proba = np.zeros((0, len(self.classes)), np.float32)
        out_segments, i = [], 0
        for file_segs in segments:
            out_segments.append(
                [{"channel": s["channel"], "start_s": s["start_s"], "end_s": s["end_s"],
                  "proba": proba[i + j].astype(np.float32).tolist()} for j, s in enumerate(file_segs)]
            )  # fmt: skip
            i += len(file_segs)
        seg_type = pa.list_(
            pa.struct([("channel", pa.int32()), ("start_s", pa.float64()), ("end_s", pa.float64()),
                       ("proba", pa.list_(pa.float32()))])
        )  # fmt: skip
        return batch.drop_columns(["segments"]).append_column("segments", pa.array(out_segments, seg_type))


# --------------------------------------------------------------------------- stage 3: the sink


def file_summary(path: str, duration: float, channels: int, segs: list[dict], classes: list[str]) -> dict[str, Any]:
    """One files.parquet row: speech time, label shares (by speech time), dominant label, worst moment."""
    speech = sum(s["end_s"] - s["start_s"] for s in segs)
    share = dict.fromkeys(classes, 0.0)
    for s in segs:
        share[classes[int(np.argmax(s["proba"]))]] += s["end_s"] - s["start_s"]
    row: dict[str, Any] = {
        "path": path, "duration_s": duration, "channels": channels, "speech_s": speech, "segments": len(segs),
        **{f"share_{c}": (share[c] / speech if speech else 0.0) for c in classes},
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
    """Writes each task's segments, file rows and error rows, then its ``done`` marker."""

    def __init__(self, out: str, classes: list[str], model_id: str):
        self.out = out
        self.classes = classes
        self.model_id = model_id

    def get_name(self) -> str:
        return "WriteScores"

    def write(self, blocks: Iterable[Any], ctx: Any) -> dict[str, Any]:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return {"files": 0, "errors": 0, "segments": 0, "seconds": 0.0}
        table = pa.concat_tables(tables, promote_options="default")
        key = f"{ctx.task_idx:05d}-{uuid.uuid4().hex[:12]}"
        seg_rows: dict[str, list] = {k: [] for k in ("path", "channel", "start_s", "end_s", "label", "confidence", "model_id")}
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
                for name, value in (("path", row["path"]), ("channel", s["channel"]), ("start_s", s["start_s"]),
                                    ("end_s", s["end_s"]), ("label", self.classes[k]),
                                    ("confidence", float(s["proba"][k])), ("model_id", self.model_id)):  # fmt: skip
                    seg_rows[name].append(value)
                probs.append(s["proba"])
            file_rows.append(file_summary(row["path"], row["duration_s"], row["channels"], segs, self.classes))
        p = np.asarray(probs, np.float32).reshape(-1, len(self.classes))
        segments = pa.table({**seg_rows, **{f"p_{c}": p[:, i] for i, c in enumerate(self.classes)}})
        parts = Path(self.out) / PARTS
        _atomic_write(segments, Path(self.out) / "segments" / f"part-{key}.parquet")
        _atomic_write(pa.Table.from_pylist(file_rows) if file_rows else _empty_files(self.classes), parts / "files" / f"{key}.parquet")
        _atomic_write(errors_table(error_rows), parts / "errors" / f"{key}.parquet")
        _atomic_write(pa.table({"path": table.column("path")}), parts / "done" / f"{key}.parquet")  # the commit
        return {"files": len(file_rows), "errors": len(error_rows), "segments": segments.num_rows,
                "seconds": float(sum(r["duration_s"] for r in file_rows))}  # fmt: skip

    def on_write_complete(self, write_result: Any) -> None:
        self.returns = list(write_result.write_returns)


def _empty_files(classes: list[str]) -> pa.Table:
    row = file_summary("", 0.0, 0, [], classes)
    return pa.Table.from_pylist([row]).slice(0, 0)


def _atomic_write(table: pa.Table, path: Path) -> None:
    """Write then rename, so a killed task never leaves a half-written part behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- driver


def _claim(out: Path, identity: dict[str, Any]) -> None:
    """Resume only a run of the same model and settings: rows of two models must never mix."""
    path = out / PARTS / "run.json"
    if path.is_file():
        before = json.loads(path.read_text())
        if before != identity:
            what = "another model" if before.get("model") != identity["model"] else "other channel/segment settings"
            raise SeremoError(f"{out}: holds scores made with {what} ({before.get('model')}); "
                              "score into a new --out, or delete it to start afresh")  # fmt: skip
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(identity, indent=2))


def _resume_state(out: Path) -> set[str]:
    """Inputs finished by an earlier run; parts of unfinished tasks are removed."""
    done_dir = out / PARTS / "done"
    keys = {p.stem for p in done_dir.glob("*.parquet")} if done_dir.is_dir() else set()
    done = set()
    for key in keys:
        done.update(pq.read_table(done_dir / f"{key}.parquet").column("path").to_pylist())
    for sub in ("segments", f"{PARTS}/files", f"{PARTS}/errors"):
        d = out / sub
        for f in d.glob("*") if d.is_dir() else []:
            stem = f.name.removeprefix("part-").removesuffix(".parquet")
            if f.name.startswith(".") or stem not in keys:
                f.unlink()  # in flight when a run was killed: redone below
    return done


def _owners(out: Path) -> dict[str, str]:
    """input path -> the committed task key that owns it (the smallest key, if several do).

    Two committed tasks can hold the same input when a killed run's workers
    outlive its driver and finish a task while the re-run redoes it; keeping
    exactly one owner per input is what guarantees no row is ever duplicated.
    """
    owners: dict[str, str] = {}
    for marker in sorted((out / PARTS / "done").glob("*.parquet")):
        for path in pq.read_table(marker).column("path").to_pylist():
            owners.setdefault(path, marker.stem)
    return owners


def _consolidate(out: Path, classes: list[str]) -> tuple[pa.Table, pa.Table]:
    owners = _owners(out)

    def owned(table: pa.Table, key: str) -> pa.Table:
        keep = [owners.get(p) == key for p in table.column("path").to_pylist()]
        return table if all(keep) else table.filter(pa.array(keep, pa.bool_()))

    for part in sorted((out / "segments").glob("part-*.parquet")):
        key = part.stem.removeprefix("part-")
        table = pq.read_table(part)
        mine = owned(table, key)
        if mine.num_rows != table.num_rows:  # rows of an input another task owns: drop them in place
            _atomic_write(mine, part)

    def gather(sub: str, empty: pa.Table) -> pa.Table:
        tables = [owned(pq.read_table(f), f.stem) for f in sorted((out / PARTS / sub).glob("*.parquet"))]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return empty
        return pa.concat_tables(tables, promote_options="default").sort_by("path")

    files = gather("files", _empty_files(classes))
    errors = gather("errors", errors_table([]))
    pq.write_table(files, out / "files.parquet")
    pq.write_table(errors, out / "errors.parquet")
    return files, errors


def score(source: str, model: str, out: str, settings: ScoreSettings, address: str | None = None) -> dict[str, Any]:
    """Score every input of ``source`` with the bundle at ``model`` into ``out``."""
    import ray

    from seremo.segment import SegmentSettings

    try:  # a bad option is one line now, not an error row for every file in the workers
        SegmentSettings(**settings.segment)
    except TypeError as exc:
        raise ConfigError(f"segment settings: {exc}") from None
    b = bundle.load(model)
    fs = b.feature_set
    model_id = f"{b.meta.model_name}:{b.meta.files[sorted(b.meta.files)[0]][:12]}"
    inputs = list_inputs(source)
    if not inputs:
        raise SeremoError(f"{source}: holds no files to score")
    out_path = Path(out).absolute()
    out_path.mkdir(parents=True, exist_ok=True)
    # What decides the rows (not how the work is spread: files per task, actors, GPU).
    _claim(out_path, {"model": model_id, "channels": settings.channels,
                      "segment": dataclasses.asdict(SegmentSettings(**settings.segment))})  # fmt: skip
    done = _resume_state(out_path)
    todo = [p for p in inputs if p not in done]
    if done:
        print(f"resuming: {len(inputs) - len(todo)} of {len(inputs)} inputs already scored", flush=True)
    ensure_ray(address)
    started = time.perf_counter()
    returns: list[dict] = []
    if todo:
        n_actors = settings.actors or (int(ray.cluster_resources().get("GPU", 1)) if settings.gpu else 1)
        ds = ray.data.from_items([{"path": p} for p in todo], override_num_blocks=max(1, len(todo) // settings.files_per_task))
        ds = ds.map_batches(
            featurize_files,
            fn_kwargs={"feature_set": fs, "settings": settings.model_dump()},
            batch_format="pyarrow",
            batch_size=settings.files_per_task,
            num_cpus=1,
        ).map_batches(
            Predictor,
            fn_constructor_kwargs={"bundle_path": str(Path(model).absolute()), "device": "cuda" if settings.gpu else None},
            batch_format="pyarrow",
            batch_size=None,
            compute=ray.data.ActorPoolStrategy(size=n_actors),
            num_cpus=0 if settings.gpu else 0.5,
            num_gpus=1 if settings.gpu else 0,
        )
        sink = ScoreSink(str(out_path), b.classes, model_id)
        ds.write_datasink(sink)
        returns = sink.returns
    wall = time.perf_counter() - started
    files, errors = _consolidate(out_path, b.classes)
    n_segments = sum(pq.read_metadata(f).num_rows for f in (out_path / "segments").glob("*.parquet"))
    audio_s = float(pc.sum(files.column("duration_s")).as_py() or 0.0) if files.num_rows else 0.0
    this_run_s = sum(r["seconds"] for r in returns)
    summary = {
        "inputs": len(inputs), "files": files.num_rows, "errors": errors.num_rows, "segments": n_segments,
        "audio_hours": audio_s / 3600, "scored_this_run": len(todo), "wall_s": wall,
        "x_realtime": (this_run_s / wall) if wall > 0 and this_run_s else None,
        "cpus": ray.cluster_resources().get("CPU"), "model": model_id, "classes": b.classes,
        "settings": settings.model_dump(),
    }  # fmt: skip
    if files.num_rows + errors.num_rows != len(inputs):
        raise SeremoError(f"{out}: {len(inputs)} inputs but {files.num_rows} files + {errors.num_rows} errors")
    (out_path / "score.json").write_text(json.dumps(summary, indent=2))
    return summary
