"""Audio, text and their fusion, classical and deep, on one corpus in IEMOCAP's layout.

The corpus is ``seremo.simulate.iemocap_like_tree``: EmoDB's angry, happy, sad and
neutral takes as five two-speaker "sessions", with transcripts that carry valence only,
so each modality alone is informative but incomplete. Every model is evaluated
leave-one-session-out on the same five folds, through the CLI as a user runs it:

- classical (``seremo tune``, nested, logreg C=1): audio (``seremo`` vectors), text
  (TF-IDF), feature-level fusion (``--inputs audio+text``);
- deep (``seremo train``, Ray Train, CPU workers): ``bilstm`` on MFCC frames,
  ``text_bilstm`` on the words, ``fusion_bilstm`` joining the two branches;
- decision-level: ``seremo ensemble`` of the audio and text runs, classical and deep.

    python benchmarks/fusion_tree.py WORK_DIR [--emodb ../shared/corpora/emodb] [--epochs 25]

WORK_DIR must not exist (everything is written under it). About 25 minutes on 2 CPUs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from seremo import manifest
from seremo.cli import main as seremo
from seremo.corpora import prepare_corpus
from seremo.simulate import iemocap_like_tree

# small nets for 157 utterances: the fusion model's branches are the single-modality models' sizes
ARCH = {"bilstm": {"hidden": 32, "layers": 1}, "text_bilstm": {"embed": 16, "hidden": 16},
        "fusion_bilstm": {"hidden": 32, "layers": 1, "embed": 16, "text_hidden": 16}}  # fmt: skip


def run(args: list[str]) -> float:
    started = time.perf_counter()
    if seremo(args) != 0:
        raise SystemExit(f"seremo {' '.join(args)} failed")
    return time.perf_counter() - started


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work")
    ap.add_argument("--emodb", default=str(Path(__file__).resolve().parents[2] / "shared" / "corpora" / "emodb"))
    ap.add_argument("--epochs", type=int, default=25)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True)
    tree = iemocap_like_tree(sorted(Path(args.emodb, "wav").glob("*.wav")), work / "iemocap")
    m = str(work / "iemocap.parquet")
    manifest.write(prepare_corpus("iemocap", tree).table, m)
    for features in ("seremo", "mfcc_seq"):
        run(["extract", m, "--features", features, "--out", str(work / features)])
    rows: list[tuple[str, str, dict, float]] = []

    tune_cfg = work / "tune.yaml"
    tune_cfg.write_text(yaml.safe_dump({"tune": {"models": {"logreg": {"C": [1.0]}}, "inner_folds": 2}}))
    for inputs in ("audio", "text", "audio+text"):
        out = work / f"tune_{inputs.replace('+', '_')}"
        wall = run(["tune", str(work / "seremo"), "--out", str(out), "--config", str(tune_cfg), "--inputs", inputs])
        rows.append(("classical (tune, logreg)", inputs, metrics(out), wall))

    train_cfg = work / "train.yaml"
    for model in ("bilstm", "text_bilstm", "fusion_bilstm"):
        train_cfg.write_text(yaml.safe_dump({"train": {"folds": 5, "epochs": args.epochs, "patience": args.epochs,
                                                       "batch_size": 16, "workers": 1, "arch": ARCH[model],
                                                       "text": {"min_count": 1}}}))  # fmt: skip
        out = work / f"train_{model}"
        source = work / ("text" if model == "text_bilstm" else "mfcc_seq")
        if model == "text_bilstm" and not source.exists():
            run(["extract", m, "--features", "text", "--out", str(source)])
        wall = run(["train", str(source), "--model", model, "--out", str(out), "--config", str(train_cfg)])
        rows.append(("deep (train)", {"bilstm": "audio", "text_bilstm": "text"}.get(model, "audio+text"),
                     metrics(out), wall))  # fmt: skip

    for kind, audio, text in (("classical", "tune_audio", "tune_text"), ("deep", "train_bilstm", "train_text_bilstm")):
        out = work / f"late_{kind}"
        wall = run(["ensemble", str(work / audio), str(work / text), "--out", str(out)])
        for rule, figures in metrics(out)["rules"].items():
            rows.append((f"{kind}, decision-level ({rule})", "audio, text", figures, wall))

    print(f"\n{manifest.read(m).num_rows} utterances, leave-one-session-out (5 folds)\n")
    print(f"| {'model':<40} | {'inputs':<12} | UAR   | WA    | macro-F1 | wall s |")
    print(f"|{'-' * 42}|{'-' * 14}|-------|-------|----------|--------|")
    for name, inputs, fig, wall in rows:
        print(f"| {name:<40} | {inputs:<12} | {fig['uar']:.3f} | {fig['wa']:.3f} | {fig['macro_f1']:.3f}    | "
              f"{wall:6.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
