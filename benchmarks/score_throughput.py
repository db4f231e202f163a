"""End-to-end scoring throughput on a call archive built from real EmoDB utterances.

Builds ``--calls`` stereo 8 kHz mu-law calls (``simulate.make_calls``), trains two
logistic regressions on EmoDB (the default set at 16 kHz, what a user's first
bundle is, and at 8 kHz on telephone copies), then times ``seremo score`` with
each, with prediction fused into the CPU tasks (the default) and on an actor
pool, on all local cores, and reports x real-time per core (seconds of call
audio / (seconds x cores)) end to end (``score()`` from the call: listing,
bundle load, the job, consolidation, the report; Ray already running) and
inside the job; then runs ``seremo score`` (fused) in a process of its own
with each bundle, timed from its start to its exit (imports, Ray's start-up
and shutdown included), as a user runs it. The bundles' training is outside
every timing.

    python benchmarks/score_throughput.py [--calls 48] [--data ../shared/corpora/emodb]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray

from seremo import bundle, classical, features
from seremo.corpora import prepare_corpus
from seremo.extract import extract
from seremo.outcome import format_table
from seremo.score import ScoreSettings, score
from seremo.shards import read_features
from seremo.simulate import Utterance, make_calls, telephone_copies


def train_bundle(table: pa.Table, rate: int, tmp: Path) -> Path:
    """A logistic regression on all of EmoDB with the default set at ``rate`` (8 kHz: telephone copies)."""
    fs = features.get("seremo", sample_rate=rate)
    if rate == 8000:
        phone = telephone_copies(table.column("path").to_pylist(), tmp / "phone")
        table = table.set_column(table.column_names.index("path"), "path", pa.array(phone))
    extract(table, fs, str(tmp / f"features{rate}"))
    feats = read_features(str(tmp / f"features{rate}"))
    y = np.asarray(feats.table.column("label").to_pylist())
    model = classical.fit("logreg", {"C": 0.1}, feats.matrix(), y)
    meta = bundle.base_meta(model_kind="sklearn", model_name="logreg", params={"C": 0.1},
                            feature_set=feats.feature_set, classes=list(model.classes_),
                            training={"corpora": ["emodb"], "utterances": len(y)}, metrics={})  # fmt: skip
    return bundle.save_classical(tmp / f"model{rate}", model, meta)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/corpora/emodb"))
    p.add_argument("--calls", type=int, default=48)
    p.add_argument("--utterances-per-call", type=int, default=40)
    p.add_argument("--files-per-task", type=int, default=None, help="default: seremo score's own")
    p.add_argument("--bundle16", default=None,
                   help="a 16 kHz bundle to use instead of the logistic regression (e.g. runs/emodb/tune/model "
                        "from the main job: what seremo tune ships)")  # fmt: skip
    args = p.parse_args()

    table = prepare_corpus("emodb", args.data).table
    ray.init(include_dashboard=False, log_to_driver=False)
    cores = int(ray.cluster_resources()["CPU"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundles = {rate: train_bundle(table, rate, tmp) for rate in ((8000,) if args.bundle16 else (16000, 8000))}
        if args.bundle16:
            bundles[16000] = Path(args.bundle16)
        utts = [Utterance(r["path"], r["label"], r["speaker"]) for r in table.to_pylist()]
        make_calls(utts, tmp / "calls", n_calls=args.calls, utterances_per_call=args.utterances_per_call, seed=0)
        for rate, how, actors in ((16000, "fused (default)", None), (16000, "actor pool (--actors 1)", 1),
                                  (8000, "fused (default)", None), (8000, "actor pool (--actors 1)", 1)):  # fmt: skip
            started = time.perf_counter()
            summary = score(str(tmp / "calls"), str(bundles[rate]), str(tmp / f"scored-{rate}-{actors}"),
                            ScoreSettings(files_per_task=args.files_per_task, actors=actors))  # fmt: skip
            wall = time.perf_counter() - started
            audio_s = summary["audio_hours"] * 3600
            name = bundle.load(str(bundles[rate])).meta.model_name
            rows.append([f"{rate // 1000} kHz {name}", how, round(wall, 1), round(audio_s / wall / cores, 1),
                         round(audio_s / summary["wall_s"] / cores, 1)])  # fmt: skip
        ray.shutdown()  # the CLI runs start their own Ray, as a user's would
        for rate in (16000, 8000):
            out = tmp / f"cli-{rate}"
            started = time.perf_counter()
            subprocess.run([str(Path(sys.executable).parent / "seremo"), "score", str(tmp / "calls"), "--model",
                            str(bundles[rate]), "--out", str(out)], check=True, capture_output=True)  # fmt: skip
            wall = time.perf_counter() - started
            job = json.loads((out / "score.json").read_text())
            audio_s = job["audio_hours"] * 3600
            name = bundle.load(str(bundles[rate])).meta.model_name
            rows.append([f"{rate // 1000} kHz {name}", "`seremo score`, with start-up", round(wall, 1),
                         round(audio_s / wall / cores, 1), round(audio_s / job["wall_s"] / cores, 1)])  # fmt: skip
    print(f"archive: {summary['files']} stereo 8 kHz mu-law calls, {audio_s / 60:.1f} min of calls "
          f"({2 * audio_s / 60:.1f} channel-minutes), {summary['segments']} segments; {cores} cores")  # fmt: skip
    print(format_table(["bundle", "prediction", "wall s", "x real-time / core", "in the job / core"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
