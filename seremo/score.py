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
(:mod:`seremo.commit`, the protocol extract's sink follows too); the driver publishes committed segments into
``segments/`` with exactly one owner per input, and a re-run skips every input a
commit names. Staged parts no commit owns (a killed or fenced run's) are removed
once the run is done, never while another run's worker may still write them. So
rows are never duplicated or lost, and nothing seremo did not write is touched.
Audio is streamed in blocks, never decoded whole.

This module is the verb (``score``, ``run_stage``); its pieces live in
:mod:`seremo.scoring` (inputs, featurise, predict, sink, report), and the names
other code imports from here are re-exported.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from typing import Any

import pyarrow.compute as pc

from seremo import bundle, commit, outputs, speed, storage
from seremo.errors import ConfigError, SeremoError, check_failures
from seremo.outcome import Outcome, format_table
from seremo.progress import NewFiles, Progress
from seremo.runtime import check_shared_output, data_context, ensure_ray, items_per_task
from seremo.scoring import report, sink
from seremo.scoring.featurise import SEGMENT_TYPE, featurize_files, featurize_rows
from seremo.scoring.inputs import TEXT_INPUT, input_fingerprint, list_inputs, manifest_rows
from seremo.scoring.predict import Predictor, ShippedBundle, score_files
from seremo.scoring.report import REPORT_FILES
from seremo.scoring.sink import ScoreSink, file_summary
from seremo.settings import ScoreSettings

log = logging.getLogger(__name__)

__all__ = [  # what other code imports from the verb module
    "SEGMENT_TYPE", "TEXT_INPUT", "Predictor", "ScoreSettings", "ScoreSink", "ShippedBundle", "featurize_files",
    "featurize_rows", "file_summary", "input_fingerprint", "list_inputs", "manifest_rows", "run_stage", "score",
    "score_files",
]  # fmt: skip

# --------------------------------------------------------------------------- driver

# What ``seremo score`` writes at the top of its --out (checked against a user's folder).
WRITES = (sink.SEGMENTS, commit.PARTS, "files.parquet", "errors.parquet", "score.json", *REPORT_FILES)


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
        if not stale:  # a new output, or the same run resumed
            outputs.record_owner(out, "score", identity)
            return _score(inputs, b, out, settings, lease.token, rows)
        # Other settings or another model (afresh): the new run is written in a staging folder inside out and
        # swapped in only when it has succeeded, so a failed re-run leaves the finished one as it was.
        log.info("%s: settings or model changed since the last run; scoring afresh", out)
        staged = outputs.stage(out, lease.token)
        try:
            summary = _score(inputs, b, staged.remote, settings, lease.token, rows, lease_at=out)
            sink.clear_own(out)
            outputs.publish(staged)
            outputs.record_owner(out, "score", identity)
        except BaseException:
            outputs.discard(staged)
            raise
        return summary


def _score(inputs: list[str], b: bundle.Bundle, out: str, settings: ScoreSettings, token: str,
           rows: dict[str, list[dict]] | None = None, lease_at: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Score ``inputs`` into ``out``: audio files segmented here, or (``rows``) manifest rows grouped by input.
    ``lease_at``: the output whose lease fences the commits, where ``out`` is its staging place."""
    import json

    import ray

    done = {p for paths in sink.commits(out).values() for p in paths}
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
            writer = ScoreSink(out, b.classes, b.model_id, token, by_row=rows is not None, lease_at=lease_at)
            committed = NewFiles(writer.staging.markers, storage.parquet_rows).skip_existing()
            with Progress("score", len(todo), committed, "inputs"):
                ds.write_datasink(writer)
        returns = writer.returns
    wall = time.perf_counter() - started
    files, errors = sink.consolidate(out, b.classes)
    audio_s = float(pc.sum(files.column("duration_s")).as_py() or 0.0) if files.num_rows else 0.0
    this_run_s = sum(r["seconds"] for r in returns)
    summary = {
        "inputs": len(inputs), "files": files.num_rows, "errors": errors.num_rows, "segments": sink.segment_rows(out),
        "audio_hours": audio_s / 3600, "scored_this_run": len(todo), "audio_hours_this_run": this_run_s / 3600,
        **speed.figures(this_run_s, wall, ray.cluster_resources().get("CPU"), gpus=_gpus(settings)),
        "model": b.model_id, "classes": b.classes,
        "normalisation": b.meta.normalisation, "settings": settings.model_dump(),
    }  # fmt: skip
    if files.num_rows + errors.num_rows != len(inputs):
        raise SeremoError(f"{out}: {len(inputs)} inputs but {files.num_rows} files + {errors.num_rows} errors")
    storage.write_json(storage.join(out, "score.json"), summary)
    _write_report(out, b.classes, summary)
    check_failures(lease_at or out, len(inputs), files.num_rows, errors.column("error").to_pylist(),
                   errors.column("message").to_pylist()[:1], settings.failure_budget,
                   see="the earlier scores are kept as they were" if lease_at else None)  # fmt: skip
    return summary


def _write_report(out: str, classes: list[str], summary: dict[str, Any]) -> None:
    """The archive report, from the Parquet just written (it never slows the job itself)."""
    started = time.perf_counter()
    report.write(out, classes, sink.committed_segments(out), summary)  # committed parts only
    log.info("%s: report.md written in %.1f s", out, time.perf_counter() - started)


def _fused(settings: ScoreSettings) -> bool:
    return not settings.gpu and settings.actors is None


def _gpus(settings: ScoreSettings) -> float:
    """The GPUs a run's predictors hold (one per actor, ``_predicted``): 0 on CPU."""
    import ray

    return float(settings.actors or ray.cluster_resources().get("GPU", 1)) if settings.gpu else 0.0


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
    n_actors = int(_gpus(settings)) if settings.gpu else settings.actors
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
        ["inputs", "files", "errors", "segments", "audio h", *speed.HEADERS],
        [[s["inputs"], s["files"], s["errors"], s["segments"], round(s["audio_hours"], 3), *speed.row(s)]],
    )  # fmt: skip
    where = (f"segments: {out}/segments   files: {out}/files.parquet   errors: {out}/errors.parquet\n"
             f"report:   {out}/report.md")
    if s.get("normalisation") == "speaker":
        where += f"\nnote:     {SPEAKER_NORM_NOTE}"
    return Outcome({k: s[k] for k in ("inputs", "files", "errors", "segments")}, f"{table}\n{where}")
