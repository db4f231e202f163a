"""Synthetic call archives from real utterances, with ground truth, for tests and benchmarks.

A call is a stereo recording (agent on channel 0, customer on channel 1, as
telephony systems store them): real utterances placed alternately on the two
channels with pauses between them and faint line noise everywhere, written as
8 kHz mu-law WAV (optionally with FLAC and MP3 copies). The truth table records
where every utterance went, so segmentation and labels can be checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import soundfile as sf

from seremo import audio


@dataclass(frozen=True)
class Utterance:
    path: str
    label: str
    speaker: str


def write_mp3(path: Path, y: np.ndarray, sr: int) -> None:
    """(channels, n) float audio to MP3 with FFmpeg's LAME encoder."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libmp3lame", rate=sr)
        stream.layout = "stereo" if y.shape[0] == 2 else "mono"
        frame_size = 1152
        pcm = (np.clip(y, -1, 1) * 32767).astype(np.int16)
        for i in range(0, pcm.shape[1], frame_size):
            chunk = np.ascontiguousarray(pcm[:, i : i + frame_size].T.reshape(1, -1))
            frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout=stream.layout.name)
            frame.sample_rate = sr
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def make_calls(
    utterances: Sequence[Utterance],
    out_dir: str | Path,
    *,
    n_calls: int,
    utterances_per_call: int = 24,
    sr: int = 8000,
    pause_s: tuple[float, float] = (1.0, 2.5),
    noise: float = 3e-4,
    copies: Sequence[str] = (),
    seed: int = 0,
    by_speaker: bool = False,
) -> pa.Table:
    """Write ``n_calls`` stereo calls into ``out_dir``; return the truth table.

    Truth columns: path, channel, start_s, end_s, label, speaker, source.
    ``copies`` may hold "flac" and/or "mp3": the same call in those formats
    (their truth rows are repeated with the copy's path). ``by_speaker``: the
    utterances hold exactly two speakers, each keeps one channel (the first
    in sorted order channel 0), as in a real two-party call.
    """
    rng = np.random.default_rng(seed)
    pools = [list(range(len(utterances)))] * 2
    if by_speaker:
        speakers = sorted({u.speaker for u in utterances})
        if len(speakers) != 2:
            raise ValueError(f"by_speaker needs utterances of exactly two speakers, got {len(speakers)}")
        pools = [[i for i, u in enumerate(utterances) if u.speaker == s] for s in speakers]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    cache: dict[str, np.ndarray] = {}
    for c in range(n_calls):
        if by_speaker:
            half = [rng.choice(pool, size=(utterances_per_call + 1 - c) // 2, replace=len(pool) < utterances_per_call // 2)
                    for c, pool in enumerate(pools)]  # fmt: skip
            picks = [int(half[k % 2][k // 2]) for k in range(utterances_per_call)]
        else:
            picks = rng.choice(len(utterances), size=utterances_per_call, replace=len(utterances) < utterances_per_call)
        placed, t = [], rng.uniform(0.5, 1.5)
        for k, i in enumerate(picks):
            u = utterances[int(i)]
            if u.path not in cache:
                cache[u.path] = audio.load(u.path, sr=sr)[0]
            y = cache[u.path]
            placed.append((k % 2, t, y, u))
            t += len(y) / sr + rng.uniform(*pause_s)
        total = int((t + 1.0) * sr)
        call = (rng.standard_normal((2, total)) * noise).astype(np.float32)
        for channel, start, y, u in placed:
            a = int(round(start * sr))
            call[channel, a : a + len(y)] += y
            rows.append({"channel": channel, "start_s": a / sr, "end_s": (a + len(y)) / sr,
                         "label": u.label, "speaker": u.speaker, "source": u.path, "call": c})  # fmt: skip
        np.clip(call, -1, 1, out=call)
        base = out_dir / f"call{c:04d}"
        sf.write(f"{base}.wav", call.T, sr, subtype="ULAW")
        for r in rows:
            if r["call"] == c:
                r["path"] = f"{base}.wav"
        extra = []
        if "flac" in copies:
            sf.write(f"{base}.flac", call.T, sr, subtype="PCM_16")
            extra.append(f"{base}.flac")
        if "mp3" in copies:
            write_mp3(Path(f"{base}.mp3"), call, sr)
            extra.append(f"{base}.mp3")
        rows += [{**r, "path": p} for p in extra for r in rows if r["call"] == c and r["path"] == f"{base}.wav"]
    return pa.Table.from_pylist(
        [{k: r[k] for k in ("path", "channel", "start_s", "end_s", "label", "speaker", "source")} for r in rows]
    )


def hold_music(seconds: float, sr: int, rng: np.random.Generator, level: float = 0.08) -> np.ndarray:
    """Synthetic hold music: a chord per half second (harmonic tones, soft attack), peak ``level``.

    Loud, tonal and steady: what an energy VAD takes for speech and a speech
    detector should not.
    """
    t = np.arange(int(seconds * sr)) / sr
    y = np.zeros_like(t)
    for start in np.arange(0, seconds, 0.5):
        on = (t >= start) & (t < start + 0.5)
        root = 220.0 * 2 ** (rng.choice([0, 3, 5, 7, 10]) / 12)
        for h, f in enumerate((root, root * 1.25, root * 1.5)):
            y[on] += np.sin(2 * np.pi * f * t[on]) / (h + 1) * np.minimum(1, (t[on] - start) * 20)
    return (level * y / max(np.abs(y).max(), 1e-9)).astype(np.float32)


def pink_noise(n: int, rng: np.random.Generator, rms: float) -> np.ndarray:
    """Background noise with a 1/f spectrum (office hum and chatter are closer to it than to white), at ``rms``."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
    y = np.fft.irfft(spectrum, n)
    return (y * rms / max(float(np.sqrt(np.mean(y**2))), 1e-12)).astype(np.float32)


def telephone_copies(paths: Sequence[str], out_dir: str | Path, *, sr: int = 8000, noise: float = 3e-4,
                     seed: int = 0) -> list[str]:  # fmt: skip
    """Each file as it would arrive over a phone line (8 kHz mu-law with faint line noise).

    For training telephone-band models on a clean corpus: the same channel
    ``make_calls`` simulates, applied to single utterances. Returns the new paths.
    """
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for p in paths:
        y = audio.load(p, sr=sr)[0]
        y = np.clip(y + (rng.standard_normal(len(y)) * noise).astype(np.float32), -1, 1)
        target = out_dir / (Path(p).stem + ".wav")
        sf.write(target, y, sr, subtype="ULAW")
        out.append(str(target))
    return out


# --------------------------------------------------------------------------- an IEMOCAP-layout corpus

# EmoDB speaker -> (IEMOCAP session, gender letter); EmoDB emotion letter -> IEMOCAP code
_SESSIONS = {"03": (1, "M"), "08": (1, "F"), "09": (2, "F"), "10": (2, "M"), "11": (3, "M"), "13": (3, "F"),
             "12": (4, "M"), "14": (4, "F"), "15": (5, "M"), "16": (5, "F")}  # fmt: skip
_CODES = {"W": "ang", "F": "hap", "T": "sad", "N": "neu"}
_NEGATIVE = ["I can't stand this any more", "this is terrible", "why does everything go wrong",
             "I hate how this turned out", "it is awful, all of it", "nothing works and I am done"]  # fmt: skip
_OTHER = ["that sounds good", "thanks, that is fine", "we can do it tomorrow", "see you then",
          "okay that works for me", "the meeting is at ten"]  # fmt: skip


def _summary_line(start: float, end: float, uid: str, code: str) -> str:
    return f"[{start:.4f} - {end:.4f}]\t{uid}\t{code}\t[2.5000, 2.5000, 2.5000]\nC-E2:\tNeutral;\t()\n\n"


def iemocap_like_tree(emodb_wavs: Sequence[Path], root: Path, per_speaker_and_class: int = 4, seed: int = 7) -> Path:
    """A corpus in IEMOCAP's layout (sessions, dialog summaries, transcriptions) whose audio is real
    emotional speech, where each modality alone is informative but incomplete, for fusion.

    EmoDB's angry, happy, sad and neutral takes (symlinked), two speakers per session, five
    sessions. The transcripts carry valence only (angry and sad say negative things, happy and
    neutral do not) while the voice carries arousal above all: text alone cannot tell angry from
    sad, audio alone confuses some of each arousal pair, a fused model sees both.
    """
    import os

    rng = np.random.default_rng(seed)
    taken: dict[tuple[str, str], int] = {}
    dialogs: dict[int, list[tuple[str, float, str, str, Path]]] = {}
    for wav in emodb_wavs:
        spk, emo = wav.stem[:2], wav.stem[5]
        if emo not in _CODES or taken.get((spk, emo), 0) >= per_speaker_and_class:
            continue
        taken[(spk, emo)] = taken.get((spk, emo), 0) + 1
        session, gender = _SESSIONS[spk]
        code = _CODES[emo]
        pool = _NEGATIVE if code in ("ang", "sad") else _OTHER
        text = pool[int(rng.integers(len(pool)))]
        dialogs.setdefault(session, []).append((gender, sf.info(str(wav)).duration, code, text, wav))
    for session, utts in dialogs.items():
        dialog = f"Ses{session:02d}F_impro01"
        base = root / f"Session{session}"
        emo_lines, lines, clock = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"], [], 0.0
        counters = {"F": 0, "M": 0}
        for gender, seconds, code, text, wav in utts:
            uid = f"{dialog}_{gender}{counters[gender]:03d}"
            counters[gender] += 1
            emo_lines.append(_summary_line(clock, clock + seconds, uid, code))
            lines.append(f"{uid} [{clock:08.4f}-{clock + seconds:08.4f}]: {text}")
            target = base / "sentences" / "wav" / dialog / f"{uid}.wav"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(Path(wav).resolve(), target)
            clock += seconds + 0.5
        (base / "dialog" / "EmoEvaluation").mkdir(parents=True)
        (base / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text("".join(emo_lines))
        (base / "dialog" / "transcriptions").mkdir(parents=True)
        (base / "dialog" / "transcriptions" / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
    return root
