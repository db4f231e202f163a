"""Training for the telephone channel: a bundle tuned on eight EmoDB speakers at 16 kHz, and the same
search on the same rows as a simulated phone line delivers them (``seremo extract --channel telephone``),
each scoring stereo 8 kHz mu-law calls built from the two held-out speakers' clips (one speaker per
channel, ``simulate.make_calls(by_speaker=True)``). Everything runs through the CLI, as a user runs it.

Reported per bundle, in one run on the same calls:
- segment label agreement: each true utterance gets the label of the segment that covers most of it
  (an utterance no segment covers counts as wrong); its share right, and UAR over the utterances;
- each channel's share of speech labelled with each class, beside the truth's (the issue's symptom: a
  16 kHz bundle labels half of one channel and most of the other ``bored``);
- scoring speed: audio hours (of the call files) per wall-clock hour per core, in the job and from the
  command's start to its exit.

    python benchmarks/telephone.py WORK_DIR [--features whisper] [--calls 16] [--held-out 15 16]
        [--config GRID.yaml] [--data ../shared/corpora/emodb]

WORK_DIR must not exist. The default grid is logistic regression alone (about 6 minutes per search on
2 CPUs with the encoder); ``--config`` takes any ``seremo tune`` settings (the default grid: the file
``tune: {}``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from seremo import manifest, measure
from seremo.outcome import format_table
from seremo.simulate import Utterance, make_calls

SEREMO = str(Path(sys.executable).parent / "seremo")


def run(*argv: str) -> float:
    """One seremo command, as a user runs it; its wall time from start to exit."""
    started = time.perf_counter()
    done = subprocess.run([SEREMO, *argv], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"seremo {' '.join(argv)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def assign(truth: list[dict], segments: list[dict]) -> list[str | None]:
    """Each true utterance's label: the label of the segment (same file and channel) covering most of it."""
    by_key: dict[tuple, list[dict]] = {}
    for s in segments:
        by_key.setdefault((s["path"], s["channel"]), []).append(s)
    out = []
    for u in truth:
        best, label = 0.0, None
        for s in by_key.get((u["path"], u["channel"]), []):
            overlap = min(u["end_s"], s["end_s"]) - max(u["start_s"], s["start_s"])
            if overlap > best:
                best, label = overlap, s["label"]
        out.append(label)
    return out


def shares(rows: list[dict], key: str, classes: list[str]) -> dict[int, dict[str, float]]:
    """Per channel, the share of speech time (segment or utterance seconds) labelled with each class."""
    out = {}
    for channel in (0, 1):
        mine = [r for r in rows if r["channel"] == channel]
        total = sum(r["end_s"] - r["start_s"] for r in mine) or 1.0
        out[channel] = {c: sum(r["end_s"] - r["start_s"] for r in mine if r[key] == c) / total for c in classes}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("work", type=Path)
    p.add_argument("--data", default="../shared/corpora/emodb")
    p.add_argument("--features", default="whisper")
    p.add_argument("--held-out", nargs=2, default=["15", "16"], metavar="SPEAKER")
    p.add_argument("--calls", type=int, default=16)
    p.add_argument("--utterances-per-call", type=int, default=24)
    p.add_argument("--config", default=None, help="seremo tune settings (default: logistic regression's grid)")
    args = p.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True)
    config = args.config or str(work / "grid.yaml")
    if not args.config:
        (work / "grid.yaml").write_text("tune:\n  models: {logreg: {}}\n")

    run("prepare", "emodb", args.data, "--out", str(work / "emodb.parquet"))
    table = manifest.read(str(work / "emodb.parquet"))
    speakers = np.asarray(table.column("speaker").to_pylist())
    held = np.isin(speakers, args.held_out) | np.isin([v.rsplit("/", 1)[-1] for v in speakers], args.held_out)
    if held.sum() == 0:
        sys.exit(f"no EmoDB speaker named {args.held_out}; speakers are {sorted(set(speakers.tolist()))}")
    manifest.write(table.filter(~held), str(work / "train.parquet"))
    rows = table.filter(held).to_pylist()
    truth = make_calls([Utterance(r["path"], r["label"], r["speaker"]) for r in rows], work / "calls",
                       n_calls=args.calls, utterances_per_call=args.utterances_per_call, seed=0,
                       by_speaker=True).to_pylist()  # fmt: skip

    results, table_rows = {}, []
    for channel in ("as-is", "telephone"):
        feats, tuned, scored = (work / f"{what}-{channel}" for what in ("features", "tune", "score"))
        run("extract", str(work / "train.parquet"), "--features", args.features, "--channel", channel,
            "--out", str(feats))  # fmt: skip
        tune_s = run("tune", str(feats), "--out", str(tuned), "--config", config)
        score_s = run("score", str(work / "calls"), "--model", str(tuned / "model"), "--out", str(scored))
        job = json.loads((scored / "score.json").read_text())
        segments = pq.read_table(scored / "segments").to_pylist()
        classes = job["classes"]
        got = assign(truth, segments)
        y_true = [u["label"] for u in truth]
        agree = float(np.mean([g == t for g, t in zip(got, y_true, strict=True)]))
        uar = measure.uar(y_true, [g or "(none)" for g in got])
        nested = json.loads((tuned / "metrics.json").read_text())["uar"]
        results[channel] = {"segments": segments, "classes": classes}
        call_s = job["audio_hours"] * 3600
        cores = job["cores"]
        table_rows.append([channel, round(nested, 3), job["segments"], round(agree, 3), round(uar, 3),
                           round(call_s / job["wall_s"] / cores, 1), round(call_s / score_s / cores, 1),
                           round(tune_s)])  # fmt: skip
    classes = results["as-is"]["classes"]
    print(f"calls: {args.calls} stereo 8 kHz mu-law, {call_s / 60:.1f} min, {len(truth)} utterances of EmoDB "
          f"speakers {' and '.join(args.held_out)} (one per channel); bundles tuned on the other "
          f"{len(set(speakers.tolist())) - 2} speakers, features {args.features}; {cores:g} cores")  # fmt: skip
    print(format_table(["trained on", "nested UAR (8 spk)", "segments", "agreement", "UAR on calls",
                        "x RT/core job", "x RT/core e2e", "tune s"], table_rows))  # fmt: skip
    truth_share = shares(truth, "label", classes)
    share_rows = []
    for channel in (0, 1):
        share_rows.append([f"ch{channel} truth", *(f"{truth_share[channel][c]:.2f}" for c in classes)])
        for name, r in results.items():
            got = shares(r["segments"], "label", classes)
            share_rows.append([f"ch{channel} {name}", *(f"{got[channel][c]:.2f}" for c in classes)])
    print("share of speech time per label:")
    print(format_table(["", *classes], share_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
