"""End-to-end scoring throughput on a call archive built from real EmoDB utterances.

Builds ``--calls`` stereo 8 kHz mu-law calls (``simulate.make_calls``), trains a
telephone-band (8 kHz) logistic regression on EmoDB for the bundle, then times
``seremo score`` on all local cores and reports x real-time per core
(seconds of call audio / (wall seconds x cores)). Ray start-up and the
bundle's training are outside the timing; everything the score job does is in.

    python benchmarks/score_throughput.py [--calls 48] [--data ../shared/corpora/emodb]
"""

from __future__ import annotations

import argparse
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
from seremo.score import ScoreSettings, score
from seremo.shards import read_features
from seremo.simulate import Utterance, make_calls, telephone_copies
from seremo.summary import format_table


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/corpora/emodb"))
    p.add_argument("--calls", type=int, default=48)
    p.add_argument("--utterances-per-call", type=int, default=40)
    p.add_argument("--files-per-task", type=int, default=2)
    args = p.parse_args()

    table = prepare_corpus("emodb", args.data).table
    ray.init(include_dashboard=False, log_to_driver=False)
    cores = int(ray.cluster_resources()["CPU"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fs = features.get("seremo", sample_rate=8000)
        phone = telephone_copies(table.column("path").to_pylist(), tmp / "phone")
        extract(table.set_column(table.column_names.index("path"), "path", pa.array(phone)), fs, str(tmp / "features"))
        feats = read_features(str(tmp / "features"))
        y = np.asarray(feats.table.column("label").to_pylist())
        model = classical.fit("logreg", {"C": 0.1}, feats.matrix(), y)
        meta = bundle.base_meta(model_kind="sklearn", model_name="logreg", params={"C": 0.1},
                                feature_set=feats.feature_set, classes=list(model.classes_),
                                training={"corpora": ["emodb"], "utterances": len(y)}, metrics={})  # fmt: skip
        bundle.save_classical(tmp / "model", model, meta)
        utts = [Utterance(r["path"], r["label"], r["speaker"]) for r in table.to_pylist()]
        make_calls(utts, tmp / "calls", n_calls=args.calls, utterances_per_call=args.utterances_per_call, seed=0)
        started = time.perf_counter()
        summary = score(str(tmp / "calls"), str(tmp / "model"), str(tmp / "scored"),
                        ScoreSettings(files_per_task=args.files_per_task))  # fmt: skip
        wall = time.perf_counter() - started
    audio_s = summary["audio_hours"] * 3600
    print(f"archive: {summary['files']} stereo 8 kHz mu-law calls, {audio_s / 60:.1f} min of calls "
          f"({2 * audio_s / 60:.1f} channel-minutes), {summary['segments']} segments")  # fmt: skip
    print(format_table(
        ["cores", "wall s", "x real-time", "x real-time / core", "channel-x real-time / core"],
        [[cores, round(wall, 1), round(audio_s / wall, 1), round(audio_s / wall / cores, 1),
          round(2 * audio_s / wall / cores, 1)]],
    ))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
