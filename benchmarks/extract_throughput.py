"""Extraction throughput on EmoDB, every figure measured in this one run.

1. x real-time per CPU core of each feature set (one process, one thread,
   audio decoded beforehand so only feature extraction is timed), beside
   openSMILE eGeMAPS, and each set's speed relative to eGeMAPS.
2. ``seremo extract`` on all local cores, end to end (its own process: imports,
   Ray start-up, the job, shutdown) and inside the job, against a plain
   single-process loop doing the same work (decode + default features +
   Parquet), for each of ``--pipeline-sets`` (the functionals and the Whisper encoder), on the EmoDB
   manifest repeated ``--repeat`` times (5 = 2.07 h); with ``--running-ray``, also against a local Ray
   started once beforehand (``RAY_ADDRESS``; ``private_ray``: a head of its own, other Ray instances left alone), so Ray's start-up and shutdown leave the command.

    python benchmarks/extract_throughput.py [--data ../shared/corpora/emodb] [--repeat 5] [--pipeline-sets seremo whisper] [--running-ray]

This machine is shared and noisy: compare ratios from the same run, not
absolute figures across runs. Each timing is the best of ``--trials``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # per-core figures: no BLAS/FFT threads
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from seremo import audio, features, manifest  # noqa: E402
from seremo.corpora import prepare_corpus  # noqa: E402
from seremo.extract import extract_one  # noqa: E402
from seremo.outcome import format_table  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from private_ray import cold_env, running_ray  # noqa: E402


def best_of(trials: int, fn) -> float:
    times = []
    for _ in range(trials):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def per_core(signals: list, names: list[str], trials: int) -> list[list]:
    seconds = sum(len(y) for y in signals) / 16000
    rows, rt = [], {}
    for name in names:
        fs = features.get(name)
        fs.extract(signals[0], 16000)  # warm caches (filterbanks, openSMILE config)
        el = best_of(trials, lambda fs=fs: [fs.extract(y, 16000) for y in signals])
        rt[name] = seconds / el
        rows.append([name, fs.kind, round(el, 2), round(rt[name], 1)])
    ref = rt.get("egemaps")
    for row in rows:
        row.append(round(rt[row[0]] / ref, 2) if ref else "n/a")
    return rows


def pipeline_vs_loop(table: pa.Table, trials: int, batch_size: int | None, name: str,
                     joins: dict[str, str] | None = None) -> list[list]:  # fmt: skip
    """The plain loop in this (warm) process against ``seremo extract`` as a user runs it.

    ``seremo extract`` runs in a process of its own, so its end-to-end time holds
    everything a user waits for (imports, Ray's start-up and shutdown, the
    workers' imports); "in the job" is the job's own ``wall_s`` from its summary.
    The runs alternate (loop, CLI, loop, CLI, ...) and each keeps its best, so a
    slow spell of this shared machine does not fall on one side only.
    """
    fs = features.get(name)
    seconds = sum(table.column("duration_s").to_pylist())
    cores = os.cpu_count() or 1

    def loop() -> None:
        rows = table.to_pylist()
        feats = [extract_one(fs, r)[0] for r in rows]
        with tempfile.TemporaryDirectory() as d:
            offsets = pa.array([0, *np.cumsum([len(f) for f in feats])], pa.int32())
            values = pa.array(np.concatenate(feats), pa.float32())
            column = pa.ListArray.from_arrays(offsets, values)
            pq.write_table(table.append_column("features", column), f"{d}/x.parquet")

    env = {**cold_env(), **(joins or {})}
    t_loop, t_cli, t_job = [], [], []
    with tempfile.TemporaryDirectory() as d:
        manifest.write(table, f"{d}/manifest.parquet")
        extract_one(fs, table.slice(0, 1).to_pylist()[0])  # the loop's process is warm (imports, caches)
        for i in range(trials):
            t_loop.append(best_of(1, loop))
            out = f"{d}/features{i}"
            t = time.perf_counter()
            batch = ["--batch-size", str(batch_size)] if batch_size else []
            subprocess.run([str(Path(sys.executable).parent / "seremo"), "extract", f"{d}/manifest.parquet",
                            "--features", name, "--out", out, *batch], check=True, capture_output=True, env=env)  # fmt: skip
            t_cli.append(time.perf_counter() - t)
            t_job.append(json.loads(Path(out, "extract.json").read_text())["wall_s"])
    loop_s, cli_s, job_s = min(t_loop), min(t_cli), min(t_job)
    ray_is = "on a running Ray" if joins else "Ray started by the command"
    return [
        [name, "single-process loop (warm)", 1, round(loop_s, 2), round(seconds / loop_s, 1), 1.0],
        [name, f"seremo extract, in the job ({ray_is})", cores, round(job_s, 2), round(seconds / job_s / cores, 1),
         round(loop_s / job_s, 2)],
        [name, f"seremo extract, end to end ({ray_is})", cores, round(cli_s, 2), round(seconds / cli_s / cores, 1),
         round(loop_s / cli_s, 2)],
    ]  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/corpora/emodb"))
    p.add_argument("--files", type=int, default=200, help="EmoDB files for the per-core table")
    p.add_argument("--repeat", type=int, default=5, help="copies of the EmoDB manifest for the pipeline")
    p.add_argument("--trials", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=None, help="utterances per Ray task (default: seremo's own)")
    p.add_argument("--sets", nargs="*", default=[*(n for n, c in features.FEATURE_SETS.items() if c.reads_audio and not c.batched), "whisper"])
    p.add_argument("--pipeline-sets", nargs="*", default=["seremo", "whisper"],
                   help="feature sets timed through the pipeline against the loop")
    p.add_argument("--running-ray", action="store_true",
                   help="also time seremo extract against a local Ray started once beforehand (RAY_ADDRESS; a head of its own)")
    args = p.parse_args()

    table = prepare_corpus("emodb", args.data).table
    paths = table.column("path").to_pylist()
    step = max(1, len(paths) // args.files)
    signals = [audio.load(p)[0] for p in paths[::step][: args.files]]
    minutes = sum(len(y) for y in signals) / 16000 / 60
    print(f"per-core feature extraction: {len(signals)} EmoDB files, {minutes:.1f} min of audio, 1 thread")
    print(format_table(["feature set", "kind", "seconds", "x real-time / core", "vs eGeMAPS"],
                       per_core(signals, args.sets, args.trials)))  # fmt: skip
    print()
    big = pa.concat_tables([
        manifest.from_rows([{**r, "utterance_id": f"{r['utterance_id']}#{i}"} for r in table.to_pylist()])
        for i in range(args.repeat)
    ])  # fmt: skip
    hours = sum(big.column("duration_s").to_pylist()) / 3600
    print(f"pipeline: {big.num_rows} utterances ({args.repeat} x EmoDB, {hours:.2f} h), decode + features + Parquet")
    rows = [row for name in args.pipeline_sets for row in pipeline_vs_loop(big, args.trials, args.batch_size, name)]
    if args.running_ray:
        with running_ray(os.cpu_count() or 1) as joins:
            rows += [row for name in args.pipeline_sets
                     for row in pipeline_vs_loop(big, args.trials, args.batch_size, name, joins)[1:]]
    print(format_table(["feature set", "run", "cores", "seconds", "x real-time / core", "vs the loop"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
