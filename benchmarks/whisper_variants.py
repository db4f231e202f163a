"""How to pool and feed the Whisper encoder: which variant of the ``whisper`` set to make the default.

On one corpus (all its clips, decoded once), for each variant: leave one speaker out, logistic regression
(scaled, C=0.03 and C=0.3, both printed: no inner selection, so read the differences between rows, not
the level), raw and with each speaker z-scored with its own rows; and the encoder's time on one thread.

Variants: the encoder at each clip's own length or padded with Whisper's silence to ``--pads`` seconds;
the frames pooled by their mean, or mean and standard deviation; alone or with the ``seremo`` functionals
appended (feature-level fusion); and the ``seremo`` functionals alone.

    python benchmarks/whisper_variants.py emodb ../shared/corpora/emodb [--pads 0 8 30] [--compute int8]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from seremo import audio, classical, features, measure, normalisation  # noqa: E402
from seremo.corpora import prepare_corpus  # noqa: E402
from seremo.outcome import format_table  # noqa: E402


def loso(X: np.ndarray, y: np.ndarray, groups: np.ndarray, normalised: bool, C: float) -> float:
    Xn = normalisation.speaker_normalise(X, groups) if normalised else X
    predicted = np.empty(len(y), dtype=object)
    for g in np.unique(groups):
        train = groups != g
        model = classical.fit("logreg", {"C": C}, Xn[train].astype(np.float32), y[train])
        predicted[~train] = model.predict(Xn[~train].astype(np.float32))
    return measure.uar(y, predicted.astype(str))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus")
    p.add_argument("root")
    p.add_argument("--pads", nargs="*", type=float, default=[0.0, 30.0], help="0: each clip at its own length")
    p.add_argument("--compute", default="int8", help="CTranslate2 compute type on the CPU")
    args = p.parse_args()
    table = prepare_corpus(args.corpus, args.root).table
    y = np.asarray(table.column("label").to_pylist())
    groups = np.asarray(table.column("group").to_pylist())
    signals = [audio.load(path, sr=16000)[0] for path in table.column("path").to_pylist()]
    minutes = sum(len(s) for s in signals) / 16000 / 60
    functionals = np.stack([features.get("seremo").extract(s, 16000) for s in signals])
    rows = []

    def add(name: str, X: np.ndarray, seconds: float | None) -> None:
        scores = [loso(X, y, groups, n, C) for n in (False, True) for C in (0.03, 0.3)]
        rows.append([name, X.shape[1], *(f"{v:.3f}" for v in scores),
                     f"{minutes * 60 / seconds:.0f}" if seconds else ""])  # fmt: skip
        print(format_table(["variant", "dims", "raw C=.03", "raw C=.3", "spk C=.03", "spk C=.3", "encoder x RT"],
                           rows[-1:]), flush=True)  # fmt: skip

    add("seremo functionals alone", functionals, None)
    for pad in args.pads:
        fs = features.get("whisper_seq", pad_s=pad, compute_type=args.compute)
        encoder = fs.load(threads=1)
        encoder.frames(signals[:1])  # warm up
        started = time.perf_counter()
        frames = [encoder.frames([s])[0] for s in signals]
        seconds = time.perf_counter() - started
        mean = np.stack([f.mean(0) for f in frames])
        both = np.hstack([mean, np.stack([f.std(0) for f in frames])])
        where = "own length" if pad == 0 else f"padded to {pad:g} s"
        add(f"{where}, mean", mean, seconds)
        add(f"{where}, mean+std", both, seconds)
        add(f"{where}, mean + seremo", np.hstack([mean, functionals]), seconds)
        add(f"{where}, mean+std + seremo", np.hstack([both, functionals]), seconds)
    print(f"\n{args.corpus}: {len(y)} clips, {minutes:.1f} min, {len(set(groups))} speakers, {len(set(y))} classes; "
          f"leave one speaker out, logistic regression; encoder {args.compute}, one thread, one clip at a time")  # fmt: skip
    print(format_table(["variant", "dims", "raw C=.03", "raw C=.3", "spk C=.03", "spk C=.3", "encoder x RT"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
