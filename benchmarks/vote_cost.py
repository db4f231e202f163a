"""What the shipped soft vote gains against what it costs to score with, from one finished tune run.

Gain: nested UAR of the vote over the best ``k`` families (k = 1..all, families ranked by their inner UAR
in each outer fold, so chosen from training speakers only), recomputed from the run's own trials (their
outer-fold probabilities), no refitting. Cost: the run's shipped members' prediction time per segment,
each member timed on the run's features in batches of ``--batch`` rows (a call's segments), one thread.

    python benchmarks/vote_cost.py RUN_DIR FEATURES_DIR [--batch 40] [--repeat 20]

RUN_DIR is a ``seremo tune`` output (it keeps Ray Tune's trial folders under ``ray/``), FEATURES_DIR
the features it was tuned on.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from seremo import bundle, dataset, folds, measure, selection  # noqa: E402
from seremo.outcome import format_table  # noqa: E402


def trials_of(run: Path) -> list[dict]:
    """Every finished trial of the run: family, params, inner UAR per outer fold, outer-fold probabilities."""
    out = []
    for i, d in enumerate(sorted((run / "ray" / "tune").glob("_trial_*"))):
        lines = (d / "result.json").read_text().strip().splitlines()
        ckpt = sorted(d.glob("checkpoint_*"))
        if not lines or not ckpt:
            continue
        last = json.loads(lines[-1])
        out.append({"trial": i, "family": last["family"], "params": last["params"],
                    "inner_uar": np.load(ckpt[-1] / "inner_uar.npy").tolist(),
                    "proba": np.load(ckpt[-1] / "proba.npy").astype(np.float32)})  # fmt: skip
    return out


def best_families(trials: list[dict], outer: list, n: int, classes: list[str], k: int = 99,
                  margin: float = 1.0) -> tuple[np.ndarray, float]:  # fmt: skip
    """Nested predictions of the soft vote over the ``k`` families with the best inner UAR, fold by fold,
    keeping only those within ``margin`` of the best; and the mean number of members."""
    proba = np.zeros((n, len(classes)), np.float32)
    sizes = []
    for f, (_, te) in enumerate(outer):
        members = selection.pick(sorted(trials, key=lambda t: (-t["inner_uar"][f], t["trial"])), "family_vote")[:k]
        members = [t for t in members if t["inner_uar"][f] >= members[0]["inner_uar"][f] - margin]
        sizes.append(len(members))
        proba[te] = np.mean([t["proba"][te] for t in members], axis=0)
    return np.asarray(classes, dtype=object)[np.argmax(proba, axis=1)], float(np.mean(sizes))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("features")
    p.add_argument("--batch", type=int, default=40, help="rows per predict_proba call (a call's segments)")
    p.add_argument("--repeat", type=int, default=20)
    args = p.parse_args()

    run = Path(args.run)
    metrics = json.loads((run / "metrics.json").read_text())
    data = dataset.load(args.features, metrics.get("class_set"))
    outer = folds.plan_nested(data.groups, metrics["protocol"]["outer_folds"]
                              if metrics["protocol"]["outer_folds"] < data.n_groups else None, 3,
                              inner_is_default=True, inner_groups=data.groups)[0]  # fmt: skip
    trials = trials_of(run)
    n_fam = len({t["family"] for t in trials})
    rows = []
    for k in range(1, n_fam + 1):
        pred, size = best_families(trials, outer, len(data.y), data.classes, k=k)
        rows.append([f"best {k}", size, round(measure.uar(data.y, pred), 4)])
    for margin in (0.02, 0.03, 0.05, 0.1):
        pred, size = best_families(trials, outer, len(data.y), data.classes, margin=margin)
        rows.append([f"within {margin} of the best", size, round(measure.uar(data.y, pred), 4)])
    print(f"{run}: nested UAR of the soft vote over the best families (by inner UAR, per outer fold); "
          f"the run's own figure: {metrics['uar']:.4f}")
    print(format_table(["families", "members (mean)", "nested UAR"], rows))

    shipped = bundle.load(str(run / "model"))
    X = data.X.astype(np.float32)
    batch = X[: args.batch]
    timing = []
    listed = metrics["final_model"]["members"]
    models = shipped.model.members if len(listed) > 1 else [shipped]
    for member, model in zip(listed, models, strict=True):
        model.predict_proba(batch)
        t = time.perf_counter()
        for _ in range(args.repeat):
            model.predict_proba(batch)
        ms = (time.perf_counter() - t) / args.repeat / len(batch) * 1000
        timing.append([member["family"], member["cv_uar"], round(ms, 3)])
    timing.sort(key=lambda r: -r[1])
    total = sum(r[2] for r in timing)
    cumulative = np.cumsum([r[2] for r in timing])
    print(f"\nshipped members (ranked by plain-CV UAR), prediction per segment in batches of {len(batch)}, 1 thread")
    print(format_table(["family", "plain-CV UAR", "ms / segment", "first k: ms / segment"],
                       [[*r, round(c, 3)] for r, c in zip(timing, cumulative, strict=True)]))  # fmt: skip
    print(f"all {len(timing)} members: {total:.3f} ms per segment")
    return 0


if __name__ == "__main__":
    sys.exit(main())
