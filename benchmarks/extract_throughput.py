"""Extraction throughput on EmoDB, every figure measured in this one run.

1. x real-time per CPU core of each feature set (one process, one thread,
   audio decoded beforehand so only feature extraction is timed), beside
   openSMILE eGeMAPS, and each set's speed relative to eGeMAPS.
2. The Ray Data pipeline on all local cores against a plain single-process loop
   doing the same work (decode + default features + Parquet), on the EmoDB
   manifest repeated ``--repeat`` times so that start-up costs do not dominate.

    python benchmarks/extract_throughput.py [--data ../shared/corpora/emodb] [--repeat 4]

This machine is shared and noisy: compare ratios from the same run, not
absolute figures across runs. Each timing is the best of ``--trials``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # per-core figures: no BLAS/FFT threads
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from seremo import audio, features, manifest  # noqa: E402
from seremo.corpora import prepare_corpus  # noqa: E402
from seremo.extract import extract, extract_one  # noqa: E402
from seremo.summary import format_table  # noqa: E402


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


def pipeline_vs_loop(table: pa.Table, trials: int, batch_size: int) -> list[list]:
    import ray

    fs = features.get(features.DEFAULT)
    seconds = sum(table.column("duration_s").to_pylist())

    def loop() -> None:
        rows = table.to_pylist()
        feats = [extract_one(fs, r)[0] for r in rows]
        with tempfile.TemporaryDirectory() as d:
            offsets = pa.array([0, *np.cumsum([len(f) for f in feats])], pa.int32())
            values = pa.array(np.concatenate(feats), pa.float32())
            column = pa.ListArray.from_arrays(offsets, values)
            pq.write_table(table.append_column("features", column), f"{d}/x.parquet")

    def pipeline() -> None:
        with tempfile.TemporaryDirectory() as d:
            extract(table, fs, d, overwrite=True, batch_size=batch_size)

    t_loop = best_of(trials, loop)
    ray.init(include_dashboard=False, log_to_driver=False)  # all local cores
    cores = int(ray.cluster_resources()["CPU"])
    pipeline()  # warm the workers once (imports, caches): the loop's process is warm too
    t_ray = best_of(trials, pipeline)
    ray.shutdown()
    return [
        ["single-process loop", 1, round(t_loop, 2), round(seconds / t_loop, 1), 1.0],
        ["Ray Data pipeline", cores, round(t_ray, 2), round(seconds / t_ray, 1), round(t_loop / t_ray, 2)],
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/corpora/emodb"))
    p.add_argument("--files", type=int, default=200, help="EmoDB files for the per-core table")
    p.add_argument("--repeat", type=int, default=4, help="copies of the EmoDB manifest for the pipeline")
    p.add_argument("--trials", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32, help="utterances per Ray task")
    p.add_argument("--sets", nargs="*", default=list(features.FEATURE_SETS))
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
    print(f"pipeline: {big.num_rows} utterances ({args.repeat} x EmoDB), decode + '{features.DEFAULT}' + Parquet")
    print(format_table(["run", "cores", "seconds", "x real-time", "speed-up"], pipeline_vs_loop(big, args.trials, args.batch_size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
