"""Stage 3 of ``seremo score``: the sink, and the driver's side of its commits.

Each write task stages its segments, file rows and error rows and commits them
with :mod:`seremo.commit` (``OUT/_parts/``); the driver publishes committed segments
into ``segments/part-KEY.parquet`` with exactly one owner per input, gathers
``files.parquet`` and ``errors.parquet``, and removes parts no commit names. A
re-run skips every input a commit names (resume), so rows are never duplicated
or lost, and nothing seremo did not write is touched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa

from seremo import commit, outputs, storage
from seremo.errors import errors_table
from seremo.labels import NEGATIVE
from seremo.scoring.report import REPORT_FILES

STAGED = ("segments", "files", "errors")  # the parts each write task stages
SEGMENTS = "segments"  # where committed segments are published


def staging(out: str, lease_at: str | None = None) -> commit.Staging:
    """The staging folder of a score output (``OUT/_parts``), fenced by the lease at ``lease_at`` (default ``out``)."""
    return commit.Staging(out, STAGED, lease_at)


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


class ScoreSink(commit.CommitSink):
    """Stages each task's segments, file rows and error rows under ``_parts/``, then commits.

    The commit (:mod:`seremo.commit`) is the task's ``done`` marker, written last and
    only while this run still holds the output's lease: the workers of a killed run
    that wake up after another run took over never commit (and remove what they staged).
    Segments become visible in ``segments/`` only when the driver publishes the
    committed parts, so no reader ever sees a row twice.
    """

    def __init__(self, out: str, classes: list[str], model_id: str, token: str, by_row: bool = False,
                 lease_at: str | None = None):  # fmt: skip
        super().__init__(staging(out, lease_at), token)  # ``lease_at``: the output, when ``out`` is its staging place
        self.out = out
        self.classes = classes
        self.model_id = model_id
        self.by_row = by_row  # manifest-row scoring: segments carry their utterance_id

    def get_name(self) -> str:
        return "WriteScores"

    def write(self, blocks: Iterable[Any], ctx: Any) -> dict[str, Any]:
        table = self.block_table(blocks)
        if table is None:
            return {"files": 0, "errors": 0, "internal": 0, "segments": 0, "seconds": 0.0}
        key = commit.new_key(ctx.task_idx)
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
        staged = [self.staging.part(sub, key) for sub in STAGED]
        storage.write_parquet(segments, staged[0])
        storage.write_parquet(pa.Table.from_pylist(file_rows) if file_rows else empty_files(self.classes), staged[1])
        storage.write_parquet(errors_table(error_rows), staged[2])
        if not self.staging.commit(key, pa.table({"path": table.column("path")}), self.token, staged):
            return {"files": 0, "errors": 0, "internal": 0, "segments": 0, "seconds": 0.0, "fenced": 1}
        return {"files": len(file_rows), "errors": len(error_rows), "segments": segments.num_rows,
                "seconds": float(sum(r["duration_s"] or 0.0 for r in file_rows))}  # fmt: skip

    def on_write_complete(self, write_result: Any) -> None:
        self.returns = list(write_result.write_returns)


def published(out: str, key: str) -> str:
    """Where a commit's segments are published: ``segments/part-KEY.parquet``."""
    return storage.join(out, SEGMENTS, f"part-{key}.parquet")


def empty_files(classes: list[str]) -> pa.Table:
    """A files.parquet table with no rows (its columns for these classes)."""
    row = file_summary("", 0.0, 0, [], classes)
    return pa.Table.from_pylist([row]).slice(0, 0)


# --------------------------------------------------------------------------- the driver's side


def commits(out: str) -> dict[str, list[str]]:
    """Committed task key -> its input paths, for commits whose parts are all there (of any run: score resumes)."""
    parts = staging(out)

    def complete(key: str) -> bool:
        staged_or_published = storage.is_file(parts.part("segments", key)) or storage.is_file(published(out, key))
        return staged_or_published and storage.is_file(parts.part("files", key)) and storage.is_file(parts.part("errors", key))

    return {key: table.column("path").to_pylist() for key, table in parts.commits(complete).items()}


def owners(committed: dict[str, list[str]]) -> dict[str, str]:
    """input path -> the committed task key that owns it (the smallest key, if several do).

    Two committed tasks can hold the same input when a killed run's workers
    outlive its driver and finish a task while the re-run redoes it; keeping
    exactly one owner per input is what guarantees no row is ever duplicated.
    """
    found: dict[str, str] = {}
    for key in sorted(committed):
        for path in committed[key]:
            found.setdefault(path, key)
    return found


def consolidate(out: str, classes: list[str]) -> tuple[pa.Table, pa.Table]:
    """Publish committed segments (one owner per input) and gather files/errors tables."""
    parts = staging(out)
    committed = commits(out)
    owner = owners(committed)

    def owned(table: pa.Table, key: str) -> pa.Table:
        keep = [owner.get(p) == key for p in table.column("path").to_pylist()]
        return table if all(keep) else table.filter(pa.array(keep, pa.bool_()))

    for key in sorted(committed):
        staged, dest = parts.part("segments", key), published(out, key)
        is_staged = storage.is_file(staged)
        table = storage.read_parquet(staged if is_staged else dest)
        mine = owned(table, key)
        if is_staged:
            parts.publish("segments", key, dest, table=mine)
        elif mine.num_rows != table.num_rows:
            storage.write_parquet(mine, dest)

    def gather(sub: str, empty: pa.Table) -> pa.Table:
        tables = [owned(storage.read_parquet(parts.part(sub, key)), key) for key in sorted(committed)]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return empty
        return pa.concat_tables(tables, promote_options="default").sort_by("path")

    files = gather("files", empty_files(classes))
    errors = gather("errors", errors_table([]))
    storage.write_parquet(files, storage.join(out, "files.parquet"))
    storage.write_parquet(errors, storage.join(out, "errors.parquet"))
    parts.remove_uncommitted()
    return files, errors


def committed_segments(out: str) -> list[str]:
    """The published segment parts of every commit, in key order (what the report reads)."""
    return [published(out, key) for key in sorted(commits(out))]


def segment_rows(out: str) -> int:
    return sum(storage.parquet_rows(p) for p in committed_segments(out))


def clear_own(out: str) -> None:
    """Remove what ``seremo score`` wrote into ``out``, for a run that holds its lease and starts afresh.

    Only seremo's own files go: the published parts of its commits, its staging
    prefix, its summaries and its marker; anything else in ``out`` stays.
    """
    parts = staging(out)
    for marker_file in parts.markers():
        storage.delete_file(published(out, commit.key_of(marker_file)))
    parts.clear()
    for name in ("files.parquet", "errors.parquet", "score.json", *REPORT_FILES, outputs.MARKER):
        storage.delete_file(storage.join(out, name))
    storage.remove_empty_dir(storage.join(out, SEGMENTS))
