"""How each model-selection rule would have scored on a finished `seremo tune` run, without refitting.

Every trial's checkpoint holds its inner-CV UAR per outer fold and its outer-fold
probabilities, so the nested figure of any rule that chooses from inner scores
only can be recomputed from the run: the single best configuration, the top-k
soft vote, and the vote of each family's best (`family_vote`, the default), beside
each family's own nested figure. Same trials, same folds: the differences are the
rules alone.

    python benchmarks/selection_rules.py RUN_DIR FEATURES_DIR [--class-set core4]

Choosing a rule by these figures on the corpus you report is itself a choice made
on test speakers: compare rules on one corpus, report on others.
"""

from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

import numpy as np

from seremo import dataset, folds, measure, selection


def load_trials(run: Path) -> list[dict]:
    """Each finished trial's family, variant, inner scores and outer probabilities, from its checkpoint."""
    trials = []
    for i, d in enumerate(sorted(glob.glob(str(run / "ray" / "tune" / "_trial*")))):
        ckpts = sorted(glob.glob(f"{d}/checkpoint_*"))
        if not ckpts:
            continue
        cfg = json.loads(Path(d, "params.json").read_text())
        trials.append({"trial": i, "family": cfg["trial"]["family"], "params": json.dumps(cfg["trial"]["params"]),
                       "variant": cfg.get("variant", "raw"), "proba": np.load(f"{ckpts[-1]}/proba.npy").astype(np.float32),
                       "inner_uar": np.load(f"{ckpts[-1]}/inner_uar.npy").tolist()})  # fmt: skip
    return trials


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("features")
    ap.add_argument("--class-set", default=None)
    args = ap.parse_args()
    run = Path(args.run)
    metrics = json.loads((run / "metrics.json").read_text())
    data = dataset.load(args.features, args.class_set or metrics.get("class_set"))
    proto = metrics["protocol"]
    units = data.corpus if proto.get("groups") == "corpus" else data.groups
    outer = folds.group_folds(units, proto["outer_folds"])
    y, classes = data.y, data.classes
    trials = load_trials(run)
    print(f"{run}: {len(trials)} trials, {len(outer)} outer folds ({proto['outer']}), {len(y)} utterances")
    for variant in sorted({t["variant"] for t in trials}):
        ok = [t for t in trials if t["variant"] == variant]

        def nested(rule: str, k: int = 5, pool: list[dict] = ok) -> float:
            return measure.uar(y, selection.nested(pool, outer, len(y), classes, rule, k)[0])

        rows = [("best (single configuration)", nested("best"))]
        rows += [(f"top_k, k={k}", nested("top_k", k)) for k in (3, 5, 10)]
        rows += [("family_vote", nested("family_vote"))]
        families = {f: nested("best", pool=[t for t in ok if t["family"] == f]) for f in sorted({t["family"] for t in ok})}
        best_family = max(families, key=families.get)
        print(f"\n[{variant}]")
        for name, value in rows:
            print(f"  {name:30s} nested UAR {value:.3f}   vs best family {value - families[best_family]:+.3f}")
        for f, value in sorted(families.items(), key=lambda kv: -kv[1]):
            print(f"  family {f:23s} nested UAR {value:.3f}")


if __name__ == "__main__":
    main()
