"""Feature shards on disk: layout, the Ray Data sink that writes them, and the reader.

A features directory holds::

    shards/part-*.parquet   manifest columns + ``features`` (list<float32>) + ``shape``
    errors.parquet          one row per input that failed (path, utterance_id, stage, error, message)
    extract.json            feature set, parameters, version, counts, hours, wall time
    _parts/                 while a run writes: its staged shards and commits (:mod:`seremo.commit`)

Every shard's Parquet metadata names the feature set (``seremo.feature_set``:
name, kind, version, params). Paths may be local or pyarrow filesystem URIs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from seremo import commit, manifest, storage
from seremo.errors import ERROR_COLUMNS, SeremoError, errors_table
from seremo.storage import filesystem  # noqa: F401  (re-exported: shards.filesystem)

SHARDS = "shards"
STAGED = (SHARDS,)  # the part each write task stages (commit.Staging)
ERRORS = "errors.parquet"
SUMMARY = "extract.json"
META_KEY = b"seremo.feature_set"
FEATURE_COLUMNS = ("features", "shape")
# In-flight columns that carry a failure from the extraction UDF to the sink.
ERROR_KIND, ERROR_MESSAGE, ERROR_STAGE = "_error", "_message", "_stage"


def shard_schema(feature_set_desc: dict[str, Any]) -> pa.Schema:
    fields = list(manifest.SCHEMA) + [
        pa.field("features", pa.list_(pa.float32())),
        pa.field("shape", pa.list_(pa.int32())),
    ]
    return pa.schema(fields, metadata={META_KEY: json.dumps(feature_set_desc).encode()})


def staging(out: str, lease_at: str | None = None) -> commit.Staging:
    """The staging folder of a features directory (``OUT/_parts``), fenced by the lease at ``lease_at``."""
    return commit.Staging(out, STAGED, lease_at)


class FeatureShardSink(commit.CommitSink):
    """A Ray Data datasink staging good rows as shards and returning failures.

    Each write task stages its rows as one Parquet file and commits it
    (:mod:`seremo.commit`: a fresh key, a commit marker written last, only while
    this run holds the output's lease), returning its error records (small) to the
    driver, which writes ``errors.parquet`` once. The driver then publishes this
    run's committed shards into ``shards/`` (:meth:`publish`): shards never carry
    error columns, and a killed or fenced run's shards never reach ``shards/``.
    """

    def __init__(self, out: str, feature_set_desc: dict[str, Any], token: str, lease_at: str | None = None):
        super().__init__(staging(out, lease_at), token)  # the lease lives at ``lease_at`` (the output, when ``out`` is its staging)
        self.out = out
        self.schema = shard_schema(feature_set_desc)

    def get_name(self) -> str:
        return "WriteFeatureShards"

    def write(self, blocks: Iterable[Any], ctx: Any) -> dict[str, Any]:
        table = self.block_table(blocks)
        if table is None:
            return {"rows": 0, "seconds": 0.0, "errors": []}
        failed = pc.is_valid(table.column(ERROR_KIND))
        ok = table.filter(pc.invert(failed)).select(self.schema.names).cast(self.schema)
        bad = table.filter(failed)
        key = commit.new_key(ctx.task_idx)
        staged = [self.staging.part(SHARDS, key)] if ok.num_rows else []
        for path in staged:
            storage.write_parquet(ok, path)
        inputs = pa.table({"utterance_id": table.column("utterance_id")})
        if not self.staging.commit(key, inputs, self.token, staged):  # a killed run's worker: another run owns it
            return {"rows": 0, "seconds": 0.0, "errors": [], "fenced": True}
        errors = [
            {
                "path": p,
                "utterance_id": u,
                "stage": s,
                "error": k,
                "message": m,
            }
            for p, u, s, k, m in zip(
                *(bad.column(c).to_pylist() for c in ("path", "utterance_id", ERROR_STAGE, ERROR_KIND, ERROR_MESSAGE)),
                strict=True,
            )
        ]
        return {
            "rows": ok.num_rows,
            "seconds": float(pc.sum(ok.column("duration_s")).as_py() or 0.0),
            "errors": errors,
        }

    def on_write_complete(self, write_result: Any) -> None:
        returns = list(write_result.write_returns)
        self.rows = sum(r["rows"] for r in returns)
        self.seconds = sum(r["seconds"] for r in returns)
        self.errors = [e for r in returns for e in r["errors"]]
        self.fenced = any(r.get("fenced") for r in returns)

    def publish(self) -> list[dict[str, Any]]:
        """Move this run's committed shards into ``shards/part-KEY.parquet`` and remove the staging folder
        (with any other run's parts). Returns the shard list ``extract.json`` keeps (name, rows)."""
        published = []
        for key in sorted(self.staging.commits(lambda key: True, token=self.token)):
            if storage.is_file(self.staging.part(SHARDS, key)):  # a task whose every row failed stages no shard
                name = f"part-{key}.parquet"
                self.staging.publish(SHARDS, key, storage.join(self.out, SHARDS, name))
                published.append({"name": name, "rows": storage.parquet_rows(storage.join(self.out, SHARDS, name))})
        self.staging.clear()
        self.shards = published
        self.rows = sum(s["rows"] for s in published)  # what reached shards/, not what the tasks said
        return published


def write_errors(out: str, records: list[dict]) -> None:
    fs, base = filesystem(out)
    with fs.open_output_stream(f"{base}/{ERRORS}") as f:
        pq.write_table(errors_table(records), f)


def write_summary(out: str, summary: dict[str, Any]) -> None:
    fs, base = filesystem(out)
    with fs.open_output_stream(f"{base}/{SUMMARY}") as f:
        f.write(json.dumps(summary, indent=2).encode())


def read_summary(out: str) -> dict[str, Any] | None:
    """extract.json of a finished extraction, or None when there is none."""
    fs, base = filesystem(out)
    path = f"{base}/{SUMMARY}"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return json.loads(f.read())


@dataclass
class Features:
    """Feature shards loaded into memory: the rows, the feature set, and the arrays."""

    table: pa.Table  # manifest columns + features + shape
    feature_set: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.feature_set["kind"]

    def arrays(self) -> list[np.ndarray]:
        """Each row's features reshaped to its shape (vectors, sequences or images)."""
        flat = self.table.column("features").to_pylist()
        shapes = self.table.column("shape").to_pylist()
        return [np.asarray(v, np.float32).reshape(s) for v, s in zip(flat, shapes, strict=True)]

    def matrix(self) -> np.ndarray:
        """(rows, dim) for vector feature sets."""
        if self.kind != "vector":
            raise SeremoError(f"feature set {self.feature_set['name']!r} is a {self.kind}, not a vector")
        col = self.table.column("features").combine_chunks()
        dim = self.table.column("shape")[0].as_py()[0]
        return col.values.to_numpy(zero_copy_only=False).reshape(-1, dim)


    def model_input(self, inputs: str, where: str, keep: np.ndarray | None = None) -> Any:
        """What a model takes for ``inputs`` (``classical.INPUTS``, ``classical.inputs_of``), for the rows
        ``keep`` selects (default: all): a vector set's matrix (with the transcripts for a classical
        fusion pipeline), the transcripts, or for sequences and images the arrays (with their
        transcripts as (audio, transcript) pairs for a deep fusion model).

        Text comes from the ``transcript`` column (cleaned as the text set cleans it);
        a kept row without one is refused in one line, never dropped.
        """
        from seremo.bundle import join_inputs
        from seremo.transcripts import clean_transcript

        keep = np.ones(self.table.num_rows, bool) if keep is None else np.asarray(keep, bool)
        vectors = self.kind in ("vector", "text")
        if inputs == "audio":
            if not vectors:
                return [a for a, k in zip(self.arrays(), keep, strict=True) if k]
            return self.matrix().astype(np.float32)[keep]
        text = np.asarray([clean_transcript(t) for t in self.table.column("transcript").to_pylist()], dtype=object)
        empty = np.flatnonzero((text == "") & keep)
        if len(empty):
            first = self.table.column("utterance_id")[int(empty[0])].as_py()
            raise SeremoError(f"{where}: {len(empty)} of {int(keep.sum())} rows have no transcript (e.g. {first!r}); "
                              f"inputs {inputs!r} needs one on every row: use a manifest with transcripts, or "
                              "audio inputs")  # fmt: skip
        if inputs == "text":
            return text[keep]
        return join_inputs(self.model_input("audio", where, keep), text[keep])


def read_features(out: str) -> Features:
    """Load every shard of a finished extraction, checked against ``extract.json``.

    A missing or extra shard (lost, or copied in), a shard whose rows differ
    from what the extraction wrote, or shards of two feature sets are each
    refused in one line, so tune and train never learn from stale data.
    """
    fs, base = filesystem(out)
    shard_dir = f"{base}/{SHARDS}"
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        raise SeremoError(f"{out}: features directory not found; create it with `seremo extract`")
    infos = fs.get_file_info(pafs.FileSelector(shard_dir, allow_not_found=True))
    files = sorted(i.path for i in infos if i.path.endswith(".parquet"))
    if not files:
        raise SeremoError(f"{out}: no feature shards in {SHARDS}/; run `seremo extract` into it")
    tables, descs = {}, set()
    for path in files:
        t = pq.read_table(path, filesystem=fs)
        meta = (t.schema.metadata or {}).get(META_KEY)
        if meta is None:
            raise SeremoError(f"{path}: not a seremo feature shard (no {META_KEY.decode()} metadata)")
        descs.add(meta)
        tables[path.rsplit("/", 1)[-1]] = t
    if len(descs) > 1:
        names = sorted({json.loads(d)["name"] + " v" + json.loads(d)["version"] for d in descs})
        raise SeremoError(f"{out}: shards mix feature sets ({', '.join(names)}); use one directory per set")
    _check_against_summary(out, tables)
    table = pa.concat_tables(list(tables.values()))
    order = pc.sort_indices(table, [("utterance_id", "ascending")])
    return Features(table.take(order), json.loads(descs.pop()))


def _check_against_summary(out: str, tables: dict[str, pa.Table]) -> None:
    """The shards on disk are exactly those the finished extraction listed, with their row counts."""
    summary = read_summary(out)
    redo = "re-run `seremo extract ... --overwrite` into it"
    if summary is None or "shards" not in summary:
        raise SeremoError(f"{out}: not a finished extraction (no shard list in {SUMMARY}); {redo}")
    listed = {s["name"]: s["rows"] for s in summary["shards"]}
    missing = sorted(set(listed) - set(tables))
    if missing:
        raise SeremoError(f"{out}: shard {SHARDS}/{missing[0]} is missing ({len(missing)} of {len(listed)}); {redo}")
    extra = sorted(set(tables) - set(listed))
    if extra:
        raise SeremoError(f"{out}: {SHARDS}/{extra[0]} was not written by this extraction (a copy?); "
                          f"remove it, or {redo}")  # fmt: skip
    for name, rows in listed.items():
        if tables[name].num_rows != rows:
            raise SeremoError(f"{out}: {SHARDS}/{name} holds {tables[name].num_rows} rows, not the {rows} "
                              f"written; {redo}")  # fmt: skip
    ids = pa.chunked_array([t.column("utterance_id") for t in tables.values()])
    if pc.count_distinct(ids).as_py() != len(ids):
        raise SeremoError(f"{out}: an utterance appears in two shards; {redo}")


__all__ = [
    "ERROR_COLUMNS",
    "FeatureShardSink",
    "Features",
    "read_features",
    "read_summary",
    "write_errors",
    "write_summary",
]
