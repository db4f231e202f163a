"""``seremo extract``: a Ray Data pipeline from a manifest to feature shards.

manifest rows -> blocks of ``batch_size`` -> ``map_batches(extract_batch)`` on a
pool of CPU tasks (decode, resample, extract) -> ``FeatureShardSink`` (Parquet
shards staged and committed by :mod:`seremo.commit`, + error records) -> the
run's committed shards published into ``shards/``, ``errors.parquet`` and ``extract.json``.

Nothing is dropped: every manifest row ends as a shard row or an error row, and
the run fails loudly if the two do not add up to the input.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from seremo import __version__, audio, augment, commit, manifest, outputs, shards, speed, storage
from seremo.errors import AudioError, SeremoError, TextError, check_failures
from seremo.features import FeatureSet
from seremo.outcome import Outcome, format_table
from seremo.progress import NewFiles, Progress
from seremo.runtime import check_shared_output, data_context, dataset_of, ensure_ray, items_per_task

if TYPE_CHECKING:  # the settings import scikit-learn (the tune grids): 0.4 s a worker process that needs none of it
    from seremo.settings import ExtractSettings

log = logging.getLogger(__name__)


def extract_one(fs: FeatureSet, row: dict[str, Any], channel: str = "as-is") -> tuple[np.ndarray, float | None]:
    """Decode one manifest row at the feature set's rate and extract; (features, seconds).

    A set that reads no audio (``text``) cleans the row's transcript in place and
    gives an empty vector; seconds are the manifest's (null for text-only rows).
    """
    if not fs.reads_audio:
        row["transcript"] = fs.transcript(row)
        return np.zeros(0, np.float32), row.get("duration_s")
    y, sr = decode(fs, row, channel)
    return fs.extract(y, sr), len(y) / sr


def decode(fs: FeatureSet, row: dict[str, Any], channel: str = "as-is") -> tuple[np.ndarray, int]:
    """One manifest row's audio (its span, mixed to mono) at the feature set's rate; with ``channel``
    ``telephone``, as a simulated phone line delivers it (``augment.telephone_line``, the same line for
    the same utterance in every run)."""
    y, sr = audio.load(row["path"], sr=fs.sample_rate, channel="mix", start_s=row.get("start_s"), end_s=row.get("end_s"))
    if channel == "telephone":
        y = augment.telephone_line(y, sr, augment.line_rng(row["utterance_id"]))
    return y, sr


def extract_batch(batch: pa.Table, feature_set: FeatureSet, runner: Any = None, channel: str = "as-is") -> pa.Table:
    """Ray Data UDF: features for every row, or the reason it failed. A batched set (``whisper``, ``ssl``)
    decodes every row first and runs its model on the batch's signals together: ``runner``, which
    :class:`ModelExtractor` loads once per actor, or (``None``, in a task) the model its ``load`` keeps
    once per worker process."""
    read = _read(batch, feature_set, channel)
    _finish(read, feature_set, runner, list(read.fronts), [read.fronts[i] for i in read.fronts])
    return read.table()


def front_batch(batch: pa.Table, feature_set: FeatureSet, channel: str = "as-is") -> pa.Table:
    """Ray Data UDF, the CPU stage before model actors: each row decoded and its ``front`` computed (the
    model's input and the vector appended after its output, e.g. Whisper's log-mel and the functionals),
    as columns ``front``, ``front_shape``, ``extra``; a row that failed carries its reason instead."""
    read = _read(batch, feature_set, channel)
    fronts = [read.fronts.get(i) for i in range(len(read.rows))]
    for i, f in enumerate(fronts):
        if isinstance(f, Exception):
            read.fail(i, f)
            fronts[i] = None
    return read.table(front=pa.array([None if f is None else f[0].ravel() for f in fronts], pa.list_(pa.float32())),
                      front_shape=pa.array([None if f is None else list(f[0].shape) for f in fronts],
                                           pa.list_(pa.int32())),
                      extra=pa.array([None if f is None else f[1] for f in fronts], pa.list_(pa.float32())))  # fmt: skip


def finish_batch(batch: pa.Table, feature_set: FeatureSet, runner: Any) -> pa.Table:
    """Ray Data UDF on the model actors, after :func:`front_batch`: the model on the batch's fronts; rows
    that failed before pass through with their reason."""
    columns = {name: batch.column(name).to_pylist() for name in ("front", "front_shape", "extra")}
    rows = batch.drop_columns(["front", "front_shape", "extra"])
    read = _Read(rows.to_pylist(), rows.schema, rows.column("duration_s").to_pylist(), feature_set)
    kinds, messages, stages = (rows.column(c).to_pylist() for c in (shards.ERROR_KIND, shards.ERROR_MESSAGE,
                                                                        shards.ERROR_STAGE))  # fmt: skip
    read.errors = [None if k is None else (k, m, st) for k, m, st in zip(kinds, messages, stages, strict=True)]
    todo = [i for i, f in enumerate(columns["front"]) if f is not None]
    fronts = [(np.asarray(columns["front"][i], np.float32).reshape(columns["front_shape"][i]),
               np.asarray(columns["extra"][i], np.float32)) for i in todo]  # fmt: skip
    _finish(read, feature_set, runner, todo, fronts)
    return read.table(base=rows.drop_columns(list(_RESULT_COLUMNS)))


_RESULT_COLUMNS = ("features", "shape", shards.ERROR_KIND, shards.ERROR_MESSAGE, shards.ERROR_STAGE)


class _Read:
    """A batch's rows as read: features (per-signal sets), seconds, errors, and a batched set's fronts."""

    def __init__(self, rows: list[dict[str, Any]], schema: pa.Schema, secs: list[float | None],
                 feature_set: FeatureSet, batch: pa.Table | None = None):  # fmt: skip
        self.rows, self.schema, self.secs, self.feature_set = rows, schema, secs, feature_set
        self.batch = batch  # the rows as they came, where nothing rewrote them
        self.feats: list[np.ndarray | None] = [None] * len(rows)
        self.errors: list[tuple[str, str, str] | None] = [None] * len(rows)
        self.fronts: dict[int, Any] = {}  # a batched set's front of each decoded row (or its exception)

    def fail(self, i: int, exc: Exception) -> None:
        log.error("%s: feature extraction failed: %s", self.rows[i]["path"], exc)
        self.errors[i] = (type(exc).__name__, str(exc), "extract")

    def table(self, base: pa.Table | None = None, **columns: pa.Array) -> pa.Table:
        """The batch's rows (``base``: as given) with duration, features, shape, error columns (and ``columns``)."""
        if base is None:  # a text set cleaned each row's transcript in place
            rewritten = self.batch is None or not self.feature_set.reads_audio
            base = manifest.conform(pa.Table.from_pylist(self.rows, schema=self.schema) if rewritten else self.batch)
        out = base.set_column(base.column_names.index("duration_s"), "duration_s", pa.array(self.secs, pa.float64()))
        err = [e or (None, None, None) for e in self.errors]
        out = (
            out.append_column("features", pa.array([None if x is None else x.ravel() for x in self.feats],
                                                   pa.list_(pa.float32())))
            .append_column("shape", pa.array([None if x is None else list(x.shape) for x in self.feats],
                                             pa.list_(pa.int32())))
            .append_column(shards.ERROR_KIND, pa.array([e[0] for e in err], pa.string()))
            .append_column(shards.ERROR_MESSAGE, pa.array([e[1] for e in err], pa.string()))
            .append_column(shards.ERROR_STAGE, pa.array([e[2] for e in err], pa.string()))
        )  # fmt: skip
        for name, column in columns.items():
            out = out.append_column(name, column)
        return out


def _read(batch: pa.Table, feature_set: FeatureSet, channel: str) -> _Read:
    """Decode every row: a per-signal set's features now, a batched set's ``front`` (or its exception)."""
    rows = batch.to_pylist()
    read = _Read(rows, batch.schema, [row.get("duration_s") for row in rows], feature_set, batch=batch)
    for i, row in enumerate(rows):
        try:
            if feature_set.batched:
                y, sr = decode(feature_set, row, channel)
                read.secs[i] = len(y) / sr
                read.fronts[i] = feature_set.front_or_error(y, sr)
            else:
                read.feats[i], seconds = extract_one(feature_set, row, channel)
                read.secs[i] = seconds if seconds is not None else read.secs[i]
        except AudioError as exc:
            read.errors[i] = (exc.kind, exc.reason, "decode")
        except TextError as exc:
            read.errors[i] = (exc.kind, exc.reason, "extract")
        except Exception as exc:  # a feature bug must not sink the job: it becomes an error row
            log.exception("%s: feature extraction failed", row["path"])
            read.errors[i] = (type(exc).__name__, str(exc), "extract")
    return read


def _finish(read: _Read, feature_set: FeatureSet, runner: Any, where: list[int], fronts: list[Any]) -> None:
    """The model on the fronts of rows ``where``: each row's features, or its error."""
    if not where:
        return
    for i, x in zip(where, feature_set.finish_many(fronts, runner), strict=True):
        if isinstance(x, Exception):
            read.fail(i, x)
        else:
            read.feats[i] = x


class ModelExtractor:
    """The model of a batched set on an actor that loads it once (a GPU share, or CPUs): the whole of
    ``extract_batch``, or (``after_front``) only the model, after :func:`front_batch` ran on the CPU tasks."""

    def __init__(self, feature_set: FeatureSet, device: str = "cpu", threads: int | None = None,
                 channel: str = "as-is", after_front: bool = False):  # fmt: skip
        self.feature_set, self.channel, self.after_front = feature_set, channel, after_front
        self.runner = feature_set.load(device, threads)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.after_front:
            return finish_batch(batch, self.feature_set, self.runner)
        return extract_batch(batch, self.feature_set, self.runner, self.channel)


@dataclass
class ExtractResult:
    summary: dict[str, Any]
    errors: list[dict]


# What ``seremo extract`` writes at the top of its --out (checked against a user's folder).
WRITES = (shards.SHARDS, shards.ERRORS, shards.SUMMARY, commit.PARTS)


def manifest_fingerprint(table: pa.Table) -> str:
    """A content hash of the manifest rows: a re-prepared manifest with the same row count differs."""
    import hashlib
    import json

    rows = manifest.conform(table).to_pylist()
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()


def _clear_own(out: str) -> None:
    """Remove what an earlier extraction into ``out`` wrote: its shards, errors, summary and staging."""
    from pyarrow import fs as pafs

    filesystem, base = shards.filesystem(out)
    infos = filesystem.get_file_info(pafs.FileSelector(f"{base}/{shards.SHARDS}", allow_not_found=True))
    for info in infos:
        name = info.path.rsplit("/", 1)[-1]
        if info.type == pafs.FileType.File and name.startswith("part-") and name.endswith(".parquet"):
            filesystem.delete_file(info.path)
    for name in (shards.ERRORS, shards.SUMMARY):
        if filesystem.get_file_info(f"{base}/{name}").type == pafs.FileType.File:
            filesystem.delete_file(f"{base}/{name}")
    shards.staging(out).clear()  # a killed run's staged shards and commits


def extract(
    table: pa.Table,
    feature_set: FeatureSet,
    out: str,
    settings: ExtractSettings | None = None,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    overwrite: bool = False,
    source: str | None = None,
    out_is_shared: bool = False,
) -> ExtractResult:
    """Extract ``feature_set`` for every manifest row into ``out`` (a local path or a URI) with Ray Data.

    On a multi-node cluster a local ``out`` is refused unless ``out_is_shared`` (every node mounts it).
    ``settings`` (:class:`seremo.settings.ExtractSettings`): ``batch_size``, utterances per task (default:
    about 8 tasks per CPU, at most 64 each); model-backed sets (``ssl``, ``whisper``) run on the CPUs in the
    same stateless tasks as every set, each worker process loading the model once (``FeatureSet.load``
    caches it): an actor pool of one actor per CPU cost 6 s more start-up on 8 EmoDB rows and ran 1.5x
    slower on 1.24 h (benchmarks/PROFILE.md). ``gpus_per_actor`` puts them on an actor pool of GPU actors
    (``actors`` of them, default one per share); ``actors`` alone, on that many CPU actors. ``channel``:
    ``telephone`` extracts every row as a simulated phone line delivers it (to train for call archives),
    recorded in the summary and the identity; ``failure_budget``.
    """
    if settings is None:
        from seremo.settings import ExtractSettings

        settings = ExtractSettings()
    preflight(feature_set)
    channel = settings.channel
    if table.num_rows == 0:
        raise SeremoError(f"{source or 'manifest'}: has no rows to extract")
    if feature_set.reads_audio:
        manifest.require_audio(table, source or "manifest", f"seremo extract --features {feature_set.name}")
    out = out if storage.is_uri(out) else os.path.abspath(out)  # workers do not share the driver's cwd
    identity = {"feature_set": feature_set.describe(), "manifest_sha256": manifest_fingerprint(table),
                **({"channel": channel} if channel != "as-is" else {})}  # older extractions: as-is, unnamed
    before = outputs.check_owner(out, "extract", WRITES)
    previous = shards.read_summary(out) if before is not None else None
    if previous is not None and not overwrite:
        if {k: previous.get(k) for k in identity} == identity and previous.get("channel", "as-is") == channel:
            log.info("%s: already extracted with these settings; skipping (--overwrite redoes it)", out)
            return ExtractResult({**previous, "skipped": True}, _read_errors(out))
        raise SeremoError(f"{out}: already holds a different finished extraction (another feature set, "
                          "manifest or channel); pass --overwrite to replace it")  # fmt: skip
    outputs.check_apart(out, [], table.column("path").drop_null().to_pylist(), what="manifest's audio file")
    ensure_ray(address, num_cpus)  # a cluster that cannot be joined fails before anything is written
    check_shared_output(out, out_is_shared, "pass --out-is-shared")
    if feature_set.batched and (settings.gpus_per_actor or settings.actors is not None):
        pool_size(settings.gpus_per_actor, settings.actors)  # actors the cluster cannot hold: one line, first
    batch_size = settings.batch_size or items_per_task(table.num_rows, most=64)  # 64 vs 32 a task: 26 s vs 30 s for 2 h on 2 CPUs
    with outputs.Lease(out, "extract") as lease:
        # A finished extraction (--overwrite) stays until its replacement has succeeded: the new one is
        # written in a staging folder inside out and swapped in at the end (outputs.stage / publish).
        staged = outputs.stage(out, lease.token) if previous is not None else None
        if staged is None:
            _clear_own(out)  # what an unfinished earlier run left
            outputs.record_owner(out, "extract", identity)
        target = staged.remote if staged else out
        try:
            result = _extract(table, feature_set, target, batch_size, source, lease.token, settings.gpus_per_actor,
                              settings.actors, lease_at=out, channel=channel)  # fmt: skip
            result.summary.update(manifest_sha256=identity["manifest_sha256"], channel=channel)
            shards.write_summary(target, result.summary)
            s = result.summary
            check_failures(out, s["inputs"], s["rows"], [e["error"] for e in result.errors],
                           [e["message"] for e in result.errors[:1]], settings.failure_budget,
                           see="the earlier extraction is kept as it was" if staged else None)  # fmt: skip
            if staged is not None:
                _clear_own(out)
                outputs.publish(staged)
                outputs.record_owner(out, "extract", identity)
        except BaseException:
            if staged is not None:
                outputs.discard(staged)
            raise
    return result


def preflight(feature_set: FeatureSet) -> None:
    """The set's optional packages, checked in the driver: a missing one is one line here, not a traceback
    from Ray (or from every actor that would load the model). The settings were checked when they were made
    (``settings.check_extract``: one line naming the flag)."""
    feature_set.check_installed()


def pool_size(gpus_per_actor: float = 0.0, actors: int | None = None) -> int:
    """How many model actors the flags ask for on this cluster, or one line saying why they cannot run."""
    import ray

    res = ray.cluster_resources()
    if gpus_per_actor:
        if not res.get("GPU"):
            raise SeremoError("--gpus-per-actor asks for GPUs, but the Ray cluster has none; leave it out to "
                              "extract on the CPUs")  # fmt: skip
        if gpus_per_actor > res["GPU"]:
            raise SeremoError(f"--gpus-per-actor {gpus_per_actor}: the Ray cluster has {res['GPU']:g} GPUs; "
                              "give a share of one (0.5) or at most that many")  # fmt: skip
        return actors or max(1, int(res["GPU"] / gpus_per_actor))
    cpus = int(res.get("CPU", 1))
    if actors is None or actors >= cpus:
        raise SeremoError(f"--actors {actors}: the Ray cluster has {cpus} CPUs and each actor holds one; give at "
                          f"most {cpus - 1} to leave CPUs for decoding, or leave --actors out to run the model in "
                          "the CPU tasks")  # fmt: skip
    return actors


def model_stage(feature_set: FeatureSet, gpus_per_actor: float = 0.0, actors: int | None = None) -> dict[str, Any]:
    """``map_batches`` arguments of a model-backed set's actor pool, after :func:`front_batch` ran on the CPU
    tasks: ``actors`` actors (default: one per ``gpus_per_actor`` share of the cluster's GPUs), each loading
    the model once and running only the model."""
    import ray

    pool = ray.data.ActorPoolStrategy(size=pool_size(gpus_per_actor, actors))
    if gpus_per_actor:  # no CPU reserved: the GPU is the actor's resource, every CPU is left to the front tasks
        return {"compute": pool, "num_gpus": gpus_per_actor, "num_cpus": 0,
                "fn_constructor_kwargs": {"feature_set": feature_set, "device": "cuda", "after_front": True}}  # fmt: skip
    return {"compute": pool, "num_cpus": 1,
            "fn_constructor_kwargs": {"feature_set": feature_set, "device": "cpu", "threads": 1, "after_front": True}}  # fmt: skip


def _extract(table: pa.Table, feature_set: FeatureSet, out: str, batch_size: int, source: str | None,
             token: str, gpus_per_actor: float = 0.0, actors: int | None = None,
             lease_at: str | None = None, channel: str = "as-is") -> ExtractResult:  # fmt: skip
    import ray

    storage.makedirs(storage.join(out, shards.SHARDS))
    started = time.perf_counter()
    blocks = [table.slice(i, batch_size) for i in range(0, table.num_rows, batch_size)]
    sink = shards.FeatureShardSink(out, feature_set.describe(), token, lease_at)
    on_actors = feature_set.batched and (gpus_per_actor > 0 or actors is not None)
    with data_context(single_stage=not on_actors):  # a Dataset snapshots the context when it is created
        stage = model_stage(feature_set, gpus_per_actor, actors) if on_actors else {}
        cpu = {"fn_kwargs": {"feature_set": feature_set, "channel": channel}, "batch_format": "pyarrow",
               "batch_size": batch_size, "compute": ray.data.TaskPoolStrategy(), "num_cpus": 1}  # fmt: skip
        if on_actors:  # decode and the front on the CPU tasks, the model alone on the actors
            ds = dataset_of(blocks).map_batches(front_batch, **cpu).map_batches(
                ModelExtractor, **stage, batch_format="pyarrow", batch_size=batch_size)
            writer = {"num_cpus": 0}
        else:
            ds, writer = dataset_of(blocks).map_batches(extract_batch, **cpu), None
        with Progress("extract", table.num_rows, NewFiles(sink.staging.markers, storage.parquet_rows), "rows"):
            ds.write_datasink(sink, ray_remote_args=writer)
    if sink.fenced:  # another run owns the output now: publish nothing, leave its staging to it
        raise SeremoError(f"{out}: another run took this output over while it was written; nothing was committed")
    sink.publish()
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
        "shards": sink.shards,
        "audio_hours": sink.seconds / 3600,
        **speed.figures(sink.seconds, wall, ray.cluster_resources().get("CPU"),
                        gpus=gpus_per_actor * stage["compute"].max_size if gpus_per_actor else 0.0),
        **({"actors": stage["compute"].max_size, "gpus_per_actor": gpus_per_actor} if on_actors else {}),
    }
    if n_out + n_err != n_in:
        raise SeremoError(
            f"{out}: {n_in} inputs but {n_out} rows + {n_err} errors; the extraction lost rows"
        )
    return ExtractResult(summary, sink.errors)


def _read_errors(out: str) -> list[dict]:
    import pyarrow.parquet as pq

    filesystem, base = shards.filesystem(out)
    return pq.read_table(f"{base}/{shards.ERRORS}", filesystem=filesystem).to_pylist()


def extract_manifest(manifest_path: str, feature_set: FeatureSet, out: str, settings: ExtractSettings | None = None,
                     **kwargs: Any) -> ExtractResult:  # fmt: skip
    return extract(manifest.read(manifest_path), feature_set, out, settings, source=manifest_path, **kwargs)


# --------------------------------------------------------------------------- the stage


def run_stage(manifest_path: str, feature_set: str, params: dict, out: str, settings: ExtractSettings,
              address: str | None, overwrite: bool, out_is_shared: bool = False) -> Outcome:  # fmt: skip
    """``seremo extract``: a feature set by name for a manifest, with the printed summary."""
    from seremo import features

    fs = features.get(feature_set, **params)
    preflight(fs)  # before the manifest is read
    outputs.check_out(out, files=[manifest_path], what="manifest")  # extract() checks the audio files too
    result = extract_manifest(manifest_path, fs, out, settings, address=address, overwrite=overwrite,
                              out_is_shared=out_is_shared)  # fmt: skip
    text = []
    if result.summary.get("skipped"):
        text.append(f"{out}: already extracted with these settings; skipped (pass --overwrite to redo)")
    text += [summary_text(result.summary, result.errors), f"features: {out}/shards"]
    if result.errors:
        text.append(f"errors:   {out}/errors.parquet")
    return Outcome({k: result.summary.get(k) for k in ("inputs", "rows", "errors", "x_realtime_per_core")},
                   "\n".join(text))


def summary_text(summary: dict, errors: list[dict]) -> str:
    fs = summary["feature_set"]
    lines = [
        format_table(
            ["feature set", "inputs", "rows", "errors", "audio h", *speed.HEADERS],
            [[
                f"{fs['name']} v{fs['version']}", summary["inputs"], summary["rows"], summary["errors"],
                round(summary["audio_hours"], 3), *speed.row(summary),
            ]],
        )
    ]  # fmt: skip
    if errors:
        kinds: dict[str, int] = {}
        for e in errors:
            kinds[e["error"]] = kinds.get(e["error"], 0) + 1
        lines += ["", format_table(["error", "inputs"], sorted(kinds.items()))]
    return "\n".join(lines)
