"""Energy VAD vs Silero VAD on calls with hold music and background noise, built from real EmoDB speech.

Each call is one channel at 8 kHz: EmoDB utterances of four held-out speakers
separated by pauses, with hold music (``simulate.hold_music``) in every third
pause and pink background noise under everything at ``--snr`` dB below the
speech. Reported per mode, in one run on the same calls:

- speech recall: share of true utterance time inside a segment;
- precision: share of segment time that is true speech;
- music as speech: seconds of hold music inside segments, per minute of music;
- utterances found: share of utterances overlapped by a segment;
- label agreement: each utterance gets the label of the segment covering most
  of it, from an 8 kHz `seremo` logistic regression trained on the other six
  speakers; the share of utterances where the two modes agree, and each mode's
  UAR against the acted label (utterances no segment covers count as wrong);
- x real time of the segmentation alone (one process, one core).

    python benchmarks/segmentation.py [--calls 12] [--snr 15] [--data ../shared/corpora/emodb]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from seremo import audio, classical, features, measure
from seremo.corpora import prepare_corpus
from seremo.outcome import format_table
from seremo.segment import FileSegmenter, SegmentSettings
from seremo.simulate import hold_music, pink_noise

SR = 8000
HELD_OUT = ("emodb/13", "emodb/14", "emodb/15", "emodb/16")


def build_calls(rows: list[dict], out: Path, n_calls: int, snr_db: float, seed: int) -> tuple[list, list, list]:
    """(paths, utterances [(call, start, end, label)], music [(call, start, end)])."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    paths, utts, music = [], [], []
    cache: dict[str, np.ndarray] = {}
    for c in range(n_calls):
        parts, spoken, t = [np.zeros(int(0.8 * SR), np.float32)], [], 0.8
        for k, i in enumerate(rng.choice(len(rows), size=12, replace=False)):
            r = rows[int(i)]
            y = cache.setdefault(r["path"], audio.load(r["path"], sr=SR)[0])
            utts.append((c, t, t + len(y) / SR, r["label"]))
            parts.append(y)
            spoken.append(y)
            t += len(y) / SR
            pause = rng.uniform(0.8, 2.0)
            if k % 3 == 2:  # hold music, framed by silence
                m = hold_music(rng.uniform(4.0, 8.0), SR, rng, level=float(np.abs(y).max()) * 0.7)
                gap = np.zeros(int(pause / 2 * SR), np.float32)
                music.append((c, t + len(gap) / SR, t + (len(gap) + len(m)) / SR))
                parts += [gap, m, gap]
                t += (2 * len(gap) + len(m)) / SR
            else:
                parts.append(np.zeros(int(pause * SR), np.float32))
                t += int(pause * SR) / SR
        y = np.concatenate(parts)
        speech_rms = float(np.sqrt(np.mean(np.concatenate(spoken) ** 2)))
        y = y + pink_noise(len(y), rng, speech_rms * 10 ** (-snr_db / 20))
        path = out / f"call{c:03d}.wav"
        sf.write(str(path), np.clip(y, -1, 1), SR, subtype="PCM_16")
        paths.append(str(path))
    return paths, utts, music


def overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/corpora/emodb"))
    p.add_argument("--calls", type=int, default=12)
    p.add_argument("--snr", type=float, default=15.0, help="speech-to-background-noise ratio, dB")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    table = prepare_corpus("emodb", args.data).table.to_pylist()
    train = [r for r in table if r["group"] not in HELD_OUT]
    test = [r for r in table if r["group"] in HELD_OUT]
    fs = features.get("seremo", sample_rate=SR)
    X = np.stack([fs.extract(audio.load(r["path"], sr=SR)[0], SR) for r in train])
    model = classical.fit("logreg", {"C": 0.1}, X, np.array([r["label"] for r in train]))

    with tempfile.TemporaryDirectory() as tmp:
        paths, utts, music = build_calls(test, Path(tmp), args.calls, args.snr, args.seed)
        audio_s = sum(sf.info(p).duration for p in paths)
        rows, labels = [], {}
        for mode in ("vad", "silero"):
            list(FileSegmenter(paths[0], SegmentSettings(mode=mode), sr=SR))  # load the model outside the timing
            started = time.perf_counter()
            segs = [(c, g) for c, path in enumerate(paths) for g in FileSegmenter(path, SegmentSettings(mode=mode), sr=SR)]
            seconds = time.perf_counter() - started
            proba = model.predict_proba(np.stack([fs.extract(g.audio, SR) for _, g in segs]))
            seg_labels = model.classes_[proba.argmax(axis=1)]
            speech = sum(e - s for _, s, e, _ in utts)
            covered = sum(overlap(s, e, g.start_s, g.end_s) for c, s, e, _ in utts for cg, g in segs if cg == c)
            seg_time = sum(g.end_s - g.start_s for _, g in segs)
            music_s = sum(e - s for _, s, e in music)
            music_in = sum(overlap(s, e, g.start_s, g.end_s) for c, s, e in music for cg, g in segs if cg == c)
            found, mode_labels = 0, []
            for c, s, e, _ in utts:
                best = max(((overlap(s, e, g.start_s, g.end_s), i) for i, (cg, g) in enumerate(segs) if cg == c),
                           default=(0.0, -1))  # fmt: skip
                found += best[0] > 0
                mode_labels.append(seg_labels[best[1]] if best[0] > 0 else "(none)")
            labels[mode] = np.array(mode_labels)
            truth = np.array([lab for *_, lab in utts])
            rows.append([mode, len(segs), covered / speech, covered / seg_time, 60 * music_in / music_s,
                         found / len(utts), measure.uar(truth, labels[mode]), audio_s / seconds])  # fmt: skip
    agree = float(np.mean(labels["vad"] == labels["silero"]))
    print(f"{args.calls} calls, {audio_s / 60:.1f} min at {SR} Hz, {len(utts)} utterances, "
          f"{sum(e - s for _, s, e in music):.0f} s of hold music, background noise at {args.snr:g} dB SNR")
    print(format_table(["mode", "segments", "speech recall", "precision", "music s/min", "utterances found",
                        "label UAR", "x real time"], rows))  # fmt: skip
    print(f"label agreement between the modes (per utterance): {agree:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
