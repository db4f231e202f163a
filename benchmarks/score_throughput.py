"""`seremo score` throughput on a call archive built from real EmoDB utterances, in seremo's one unit.

Builds ``--calls`` stereo 8 kHz mu-law calls (``simulate.make_calls``; 48 calls = about 2.4 h), then runs
``seremo score`` as a user does, in a process of its own, once per bundle, and prints x real time per CPU
core (audio hours of the call files, each call counted once whatever its channels, per wall-clock hour per
core; ``seremo.speed``): in the job and end to end as ``score.json`` records them, and the command timed
from outside, from its start to its exit. With ``--running-ray`` each bundle is run a second time against
a local Ray started once beforehand (``private_ray``: ``ray start --head`` of its own, other Ray instances
left alone; ``RAY_ADDRESS``), the way to run many jobs on one machine: Ray's start-up and shutdown leave the command.

    python benchmarks/score_throughput.py --bundle runs/emodb-seremo/tune/model --bundle runs/emodb/tune/model \
        [--calls 48] [--running-ray] [--data ../shared/corpora/emodb]

Without ``--bundle``, a logistic regression on the default functionals is trained on EmoDB first (outside
every timing). This machine is shared and noisy: compare rows of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from seremo import bundle, classical, features
from seremo.corpora import prepare_corpus
from seremo.outcome import format_table
from seremo.simulate import Utterance, make_calls

sys.path.insert(0, str(Path(__file__).resolve().parent))
from private_ray import cold_env, running_ray  # noqa: E402

SEREMO = str(Path(sys.executable).parent / "seremo")


def train_bundle(table, tmp: Path) -> Path:
    """A logistic regression on all of EmoDB with the default functionals (16 kHz)."""
    from seremo.extract import extract
    from seremo.shards import read_features

    extract(table, features.get("seremo"), str(tmp / "features"))
    feats = read_features(str(tmp / "features"))
    y = np.asarray(feats.table.column("label").to_pylist())
    model = classical.fit("logreg", {"C": 0.1}, feats.matrix(), y)
    meta = bundle.base_meta(model_kind="sklearn", model_name="logreg", params={"C": 0.1},
                            feature_set=feats.feature_set, classes=list(model.classes_),
                            training={"corpora": ["emodb"], "utterances": len(y)}, metrics={})  # fmt: skip
    return bundle.save_classical(tmp / "model", model, meta)


def describe(path: Path) -> str:
    b = bundle.load(str(path))
    members = b.meta.params.get("members")
    model = f"vote of {len(members)}" if isinstance(members, list) else b.meta.model_name
    return f"{b.meta.feature_set.name} {model}"


def run_cli(calls: Path, model: Path, out: Path, env: dict[str, str]) -> list:
    started = time.perf_counter()
    subprocess.run([SEREMO, "score", str(calls), "--model", str(model), "--out", str(out)], check=True,
                   capture_output=True, env=env)  # fmt: skip
    command_s = time.perf_counter() - started
    job = json.loads((out / "score.json").read_text())
    audio_s = job["audio_hours_this_run"] * 3600
    return [round(job["wall_s"], 1), round(job["x_realtime_per_core"], 1), round(job["x_realtime_per_core_end_to_end"], 1),
            round(command_s, 1), round(audio_s / command_s / job["cores"], 1)]  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/corpora/emodb"))
    p.add_argument("--calls", type=int, default=48)
    p.add_argument("--utterances-per-call", type=int, default=40)
    p.add_argument("--bundle", action="append", default=[], help="a bundle to score with (repeatable)")
    p.add_argument("--running-ray", action="store_true", help="also run each against an already running local Ray")
    args = p.parse_args()

    table = prepare_corpus("emodb", args.data).table
    cores = os.cpu_count()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundles = [Path(b) for b in args.bundle] or [train_bundle(table, tmp)]
        utts = [Utterance(r["path"], r["label"], r["speaker"]) for r in table.to_pylist()]
        make_calls(utts, tmp / "calls", n_calls=args.calls, utterances_per_call=args.utterances_per_call, seed=0)
        hours = sum(sf.info(str(f)).duration for f in (tmp / "calls").iterdir()) / 3600
        with contextlib.ExitStack() as stack:
            modes = [("cold: Ray started by the command", None)]
            if args.running_ray:
                modes.append(("on a running Ray (RAY_ADDRESS)", stack.enter_context(running_ray(cores))))
            for i, model in enumerate(bundles):
                for how, joins in modes:
                    env = {**cold_env(), **(joins or {})}
                    rows.append([describe(model), how, *run_cli(tmp / "calls", model, tmp / f"scored-{i}-{bool(joins)}", env)])
    print(f"archive: {args.calls} stereo 8 kHz mu-law calls, {hours:.2f} h of calls ({2 * hours:.2f} channel-hours); "
          f"{cores} cores; x real time per core = audio hours of the calls / wall-clock hours / cores")  # fmt: skip
    print(format_table(["bundle", "Ray", "job s", "x RT/core job", "x RT/core end to end (score.json)",
                        "command s", "x RT/core command start to exit"], rows))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
