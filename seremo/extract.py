"""``seremo extract``: a Ray Data pipeline from a manifest to feature shards.

manifest rows -> blocks of ``batch_size`` -> ``map_batches(extract_batch)`` on a
pool of CPU tasks (decode, resample, extract) -> ``FeatureShardSink`` (Parquet
shards + error records) -> ``errors.parquet`` and ``extract.json``.

Nothing is dropped: every manifest row ends as a shard row or an error row, and
the run fails loudly if the two do not add up to the input.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from seremo import __version__, audio, manifest, shards
from seremo.errors import AudioError, SeremoError
from seremo.features import FeatureSet
from seremo.runtime import ensure_ray, single_stage_data_context

log = logging.getLogger(__name__)


def extract_one(fs: FeatureSet, row: dict[str, Any]) -> tuple[np.ndarray, float]:
    """Decode one manifest row at the feature set's rate and extract; (features, seconds)."""
    y, sr = audio.load(
        row["path"],
        sr=fs.sample_rate,
        channel="mix",
        start_s=row.get("start_s"),
        end_s=row.get("end_s"),
    )
    return fs.extract(y, sr), len(y) / sr


def extract_batch(batch: pa.Table, feature_set: FeatureSet) -> pa.Table:
    """Stateless Ray Data UDF: features for every row, or the reason it failed."""
    rows = batch.to_pylist()
    feats, shapes, secs, kinds, messages, stages = [], [], [], [], [], []
    for row in rows:
        try:
            x, seconds = extract_one(feature_set, row)
        except AudioError as exc:
            x, seconds, kind, msg, stage = None, None, exc.kind, exc.reason, "decode"
        except Exception as exc:  # a feature bug must not sink the job: it becomes an error row
            log.exception("%s: feature extraction failed", row["path"])
            x, seconds, kind, msg, stage = None, None, type(exc).__name__, str(exc), "extract"
        else:
            kind = msg = stage = None
        feats.append(None if x is None else x.ravel())
        shapes.append(None if x is None else list(x.shape))
        secs.append(seconds if seconds is not None else row.get("duration_s"))
        kinds.append(kind)
        messages.append(msg)
        stages.append(stage)
    out = manifest.conform(batch)
    out = out.set_column(out.column_names.index("duration_s"), "duration_s", pa.array(secs, pa.float64()))
    return (
        out.append_column("features", pa.array(feats, pa.list_(pa.float32())))
        .append_column("shape", pa.array(shapes, pa.list_(pa.int32())))
        .append_column(shards.ERROR_KIND, pa.array(kinds, pa.string()))
        .append_column(shards.ERROR_MESSAGE, pa.array(messages, pa.string()))
        .append_column(shards.ERROR_STAGE, pa.array(stages, pa.string()))
    )


@dataclass
class ExtractResult:
    summary: dict[str, Any]
    errors: list[dict]


def _prepare_out(out: str, overwrite: bool) -> None:
    from pyarrow import fs as pafs

    filesystem, base = shards.filesystem(out)
    if shards.read_summary(out) is not None and not overwrite:
        raise SeremoError(f"{out}: already holds a different finished extraction; pass --overwrite to replace it")
    info = filesystem.get_file_info(base)
    if info.type == pafs.FileType.File:
        raise SeremoError(f"{out}: is a file; --out must be a directory")
    if info.type == pafs.FileType.Directory:
        for name in (shards.SHARDS, shards.ERRORS, shards.SUMMARY):
            sub = filesystem.get_file_info(f"{base}/{name}")
            if sub.type == pafs.FileType.Directory:
                log.info("%s: clearing %s/ left by an earlier run", out, name)
                filesystem.delete_dir(sub.path)
            elif sub.type == pafs.FileType.File:
                filesystem.delete_file(sub.path)
    filesystem.create_dir(f"{base}/{shards.SHARDS}", recursive=True)


def extract(
    table: pa.Table,
    feature_set: FeatureSet,
    out: str,
    *,
    batch_size: int = 32,
    address: str | None = None,
    num_cpus: int | None = None,
    overwrite: bool = False,
    source: str | None = None,
) -> ExtractResult:
    """Extract ``feature_set`` for every manifest row into ``out`` with Ray Data."""
    import ray

    if table.num_rows == 0:
        raise SeremoError(f"{source or 'manifest'}: has no rows to extract")
    previous = shards.read_summary(out)
    if (
        previous is not None
        and not overwrite
        and previous["feature_set"] == feature_set.describe()
        and previous["manifest"] == source
        and previous["inputs"] == table.num_rows
    ):
        log.info("%s: already extracted with these settings; skipping (--overwrite redoes it)", out)
        return ExtractResult({**previous, "skipped": True}, _read_errors(out))
    _prepare_out(out, overwrite)
    ensure_ray(address, num_cpus)
    started = time.perf_counter()
    blocks = [table.slice(i, batch_size) for i in range(0, table.num_rows, batch_size)]
    sink = shards.FeatureShardSink(out, feature_set.describe())
    with single_stage_data_context():  # a Dataset snapshots the context when it is created
        ds = ray.data.from_arrow(blocks).map_batches(
            extract_batch,
            fn_kwargs={"feature_set": feature_set},
            batch_format="pyarrow",
            batch_size=batch_size,
            compute=ray.data.TaskPoolStrategy(),
            num_cpus=1,
        )
        ds.write_datasink(sink)
    wall = time.perf_counter() - started
    shards.write_errors(out, sink.errors)
    n_in, n_out, n_err = table.num_rows, sink.rows, len(sink.errors)
    summary = {
        "feature_set": feature_set.describe(),
        "seremo_version": __version__,
        "manifest": source,
        "inputs": n_in,
        "rows": n_out,
        "errors": n_err,
        "audio_hours": sink.seconds / 3600,
        "wall_s": wall,
        "x_realtime": sink.seconds / wall if wall > 0 else None,
        "cpus": ray.cluster_resources().get("CPU"),
    }
    if n_out + n_err != n_in:
        raise SeremoError(
            f"{out}: {n_in} inputs but {n_out} rows + {n_err} errors; the extraction lost rows"
        )
    shards.write_summary(out, summary)
    return ExtractResult(summary, sink.errors)


def _read_errors(out: str) -> list[dict]:
    import pyarrow.parquet as pq

    filesystem, base = shards.filesystem(out)
    return pq.read_table(f"{base}/{shards.ERRORS}", filesystem=filesystem).to_pylist()


def extract_manifest(manifest_path: str, feature_set: FeatureSet, out: str, **kwargs: Any) -> ExtractResult:
    return extract(manifest.read(manifest_path), feature_set, out, source=manifest_path, **kwargs)
