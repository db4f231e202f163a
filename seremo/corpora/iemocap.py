"""IEMOCAP, the Interactive Emotional Dyadic Motion Capture database (Busso et al., 2008).

Utterances are ``SessionN/sentences/wav/<dialog>/<utterance>.wav``; labels
come from the summary lines of ``SessionN/dialog/EmoEvaluation/<dialog>.txt``
(``[START - END]<TAB>utterance<TAB>code<TAB>[V, A, D]``; the header and the
evaluators' lines between summaries are ignored) and transcripts from
``SessionN/dialog/transcriptions/<dialog>.txt`` (``utterance [START-END]: text``;
a dialog without one gets null transcripts). Codes neu hap exc sad ang fru fea
sur dis map to canonical labels; ``xxx`` (no majority) and ``oth`` (other)
rows are kept with a null label and their code in ``source_label``, so a
class set drops them with a count. Sessions are the CV groups; the speaker
is the session plus the gender letter of the utterance id's last part
(``Ses01F_impro01_M003`` -> ``iemocap/Ses01M``, male).

``source`` chooses the audio: ``"sentences"`` (default) points ``path`` at
the utterance's own wav, leaves ``start_s``/``end_s`` null (the file is the
utterance) and sets ``duration_s`` from the EmoEvaluation times;
``"dialog"`` points ``path`` at ``SessionN/dialog/wav/<dialog>.wav`` with
``start_s``/``end_s`` the EmoEvaluation times (``duration_s`` is then read
from the dialog's header by ``prepare_corpus``).

The corpus must be whole: a wav without an EmoEvaluation entry, and an
EmoEvaluation entry (or dialog) whose wav is missing, are CorpusErrors rather
than skipped rows, because a silently smaller IEMOCAP gives figures that
cannot be compared with anyone else's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from seremo.corpora._common import require_dir, table, walk
from seremo.errors import ConfigError, CorpusError

NAME = "iemocap"
SOURCES = ("sentences", "dialog")
SUMMARY = re.compile(
    r"^\[\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*\]\s+(\S+)\s+(\S+)\s+\[.*\]\s*$"
)
UTTERANCE = re.compile(r"^Ses(\d{2})[FM]_\S+_([FM])\w*$")
TRANSCRIPT = re.compile(r"^(\S+)\s+\[\s*\d+(?:\.\d+)?\s*-\s*\d+(?:\.\d+)?\s*\]:\s?(.*)$")

EMOTIONS: dict[str, str | None] = {
    "neu": "neutral",
    "hap": "happy",
    "exc": "excited",
    "sad": "sad",
    "ang": "angry",
    "fru": "frustrated",
    "fea": "fearful",
    "sur": "surprised",
    "dis": "disgust",
    "xxx": None,  # the evaluators did not agree
    "oth": None,  # other
}


@dataclass(frozen=True)
class _Entry:
    utterance: str
    dialog: str
    session_dir: Path
    start: float
    end: float
    code: str
    source: Path  # the EmoEvaluation file
    line: int
    session: str  # "01"
    letter: str  # the utterance's speaker: "F" or "M"


def _read_text(path: Path) -> list[str]:
    """The lines of a label or transcript file (UTF-8, else Latin-1)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorpusError(path, f"cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.splitlines()


def _evaluations(path: Path) -> list[_Entry]:
    """The summary lines of one ``EmoEvaluation/<dialog>.txt``."""
    dialog = path.stem
    entries = []
    for number, line in enumerate(_read_text(path), start=1):
        if not line.startswith("["):
            continue  # header (%), blank, or an evaluator's line (C-E2:, A-F1:, ...)
        m = SUMMARY.match(line)
        if not m:
            raise CorpusError(
                path,
                f"line {number}: {line.strip()[:80]!r} is not an EmoEvaluation summary line "
                "'[START - END]<TAB>utterance<TAB>code<TAB>[V, A, D]'",
            )
        start, end, utterance, code = m.groups()
        if code not in EMOTIONS:
            raise CorpusError(
                path,
                f"line {number}: unknown IEMOCAP emotion code {code!r} (known: {' '.join(EMOTIONS)})",
            )
        u = UTTERANCE.match(utterance)
        if not utterance.startswith(f"{dialog}_") or u is None:
            raise CorpusError(
                path,
                f"line {number}: utterance {utterance!r} does not follow IEMOCAP naming "
                f"{dialog}_<F|M>NNN for this dialog",
            )
        if float(end) < float(start):
            raise CorpusError(
                path, f"line {number}: {utterance} ends ({end}) before it starts ({start})"
            )
        entries.append(
            _Entry(
                utterance,
                dialog,
                path.parents[2],
                float(start),
                float(end),
                code,
                path,
                number,
                *u.groups(),
            )
        )
    if not entries:
        raise CorpusError(
            path, "holds no summary lines '[START - END]<TAB>utterance<TAB>code<TAB>[V, A, D]'"
        )
    return entries


def _transcripts(path: Path) -> dict[str, str]:
    """utterance id -> text from one ``transcriptions/<dialog>.txt`` (absent: empty)."""
    if not path.is_file():
        return {}
    out = {}
    for line in _read_text(path):
        m = TRANSCRIPT.match(line.strip())
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def _classify(path: Path) -> str | None:
    """'sentence' or 'dialog' for a wav in its documented place, else None."""
    parts = path.parts
    if len(parts) >= 4 and parts[-4] == "sentences" and parts[-3] == "wav":
        return "sentence"
    if len(parts) >= 3 and parts[-3] == "dialog" and parts[-2] == "wav":
        return "dialog"
    return None


def prepare(root: str | Path, *, source: str = "sentences") -> pa.Table:
    """Manifest of every evaluated IEMOCAP utterance under ``root``; sessions are the CV groups."""
    if source not in SOURCES:
        raise ConfigError(
            f"iemocap: unknown source {source!r}; choose one of: {', '.join(SOURCES)}"
        )
    root = require_dir(root, NAME)

    entries: dict[str, _Entry] = {}
    dialogs: set[str] = set()
    for folder in sorted(
        p for p in root.rglob("EmoEvaluation") if p.is_dir() and p.parent.name == "dialog"
    ):
        for path in sorted(folder.glob("*.txt")):
            if path.name.startswith(".") or not path.is_file():
                continue
            dialogs.add(path.stem)
            for e in _evaluations(path):
                if e.utterance in entries:
                    first = entries[e.utterance]
                    raise CorpusError(
                        path,
                        f"line {e.line}: {e.utterance} is also in {first.source} line {first.line}",
                    )
                entries[e.utterance] = e

    sentences: dict[str, Path] = {}
    for path in walk(root):
        kind = _classify(path)
        if kind is None:
            raise CorpusError(
                path,
                "is not where IEMOCAP keeps audio "
                "(SessionN/sentences/wav/<dialog>/<utterance>.wav or SessionN/dialog/wav/<dialog>.wav)",
            )
        if kind == "dialog":
            if path.stem not in dialogs:
                raise CorpusError(
                    path,
                    f"has no EmoEvaluation file (expected SessionN/dialog/EmoEvaluation/{path.stem}.txt)",
                )
            continue
        entry = entries.get(path.stem)
        if entry is None:
            raise CorpusError(
                path,
                "has no entry in any EmoEvaluation file "
                f"(expected one in SessionN/dialog/EmoEvaluation/{path.parent.name}.txt)",
            )
        if path.parent.name != entry.dialog:
            raise CorpusError(
                path, f"lies in folder {path.parent.name} but belongs to dialog {entry.dialog}"
            )
        sentences[path.stem] = path

    transcripts: dict[Path, dict[str, str]] = {}
    rows = []
    for uid, e in sorted(entries.items()):
        if source == "sentences":
            path = sentences.get(uid)
            if path is None:
                raise CorpusError(
                    e.source,
                    f"line {e.line}: {uid} has no wav "
                    f"(expected {e.session_dir / 'sentences' / 'wav' / e.dialog / (uid + '.wav')})",
                )
            start_s = end_s = None
            duration = round(e.end - e.start, 6)
        else:
            path = e.session_dir / "dialog" / "wav" / f"{e.dialog}.wav"
            if not path.is_file():
                raise CorpusError(e.source, f"dialog {e.dialog} has no wav (expected {path})")
            start_s, end_s, duration = e.start, e.end, None
        tpath = e.session_dir / "dialog" / "transcriptions" / f"{e.dialog}.txt"
        if tpath not in transcripts:
            transcripts[tpath] = _transcripts(tpath)
        rows.append(
            {
                "utterance_id": f"iemocap/{uid}",
                "path": str(path),
                "corpus": NAME,
                "speaker": f"iemocap/Ses{e.session}{e.letter}",
                "group": f"iemocap/Session{int(e.session)}",
                "label": EMOTIONS[e.code],
                "start_s": start_s,
                "end_s": end_s,
                "transcript": transcripts[tpath].get(uid),
                "gender": e.letter.lower(),
                "source_label": e.code,
                "duration_s": duration,
            }
        )
    return table(rows, root, NAME, "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav")
