"""The manifest: one row per utterance, the contract between every stage.

Columns (see DESIGN.md): ``utterance_id`` (unique), ``path``, ``corpus``,
``speaker``, ``group`` (the unit held out in speaker-independent CV), ``label``
(canonical, null where the corpus gives no emotion), ``start_s``/``end_s``
(a segment inside a longer file, else null), ``transcript``, ``gender``.
seremo adds two nullable columns: ``source_label`` (the corpus's own code, kept
for traceability) and ``duration_s`` (seconds of audio the row covers).

A *text-only* row (a transcript corpus such as MELD) has a null ``path`` and a
non-empty ``transcript``; every other column keeps its meaning (``duration_s``
stays null). Stages that read audio refuse such rows in one line
(:func:`require_audio`); a row with neither audio nor text is invalid.
Local paths are stored absolute and resolved (see ``normalise_path``), so one
file has one name in every manifest and in everything keyed on its path.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from seremo.errors import CorpusError
from seremo.labels import CANONICAL, ClassSet

log = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        pa.field("utterance_id", pa.string(), nullable=False),
        pa.field("path", pa.string()),  # null: a text-only row (it then carries a transcript)
        pa.field("corpus", pa.string(), nullable=False),
        pa.field("speaker", pa.string(), nullable=False),
        pa.field("group", pa.string(), nullable=False),
        pa.field("label", pa.string()),
        pa.field("start_s", pa.float64()),
        pa.field("end_s", pa.float64()),
        pa.field("transcript", pa.string()),
        pa.field("gender", pa.string()),
        pa.field("source_label", pa.string()),
        pa.field("duration_s", pa.float64()),
    ]
)
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)
REQUIRED: tuple[str, ...] = ("utterance_id", "path", "corpus", "speaker", "group")  # columns
NOT_NULL: tuple[str, ...] = ("utterance_id", "corpus", "speaker", "group")  # values; path: audio or text


def normalise_path(path: str | os.PathLike) -> str:
    """The one name of a local file: ``~`` expanded, absolute, ``..`` and symlinks resolved.

    Paths are kept as typed otherwise (``/x/work/../shared/a.wav``), so one file
    could appear under two names and resume or de-duplication keyed on the path
    would miss it. URIs (anything with ``://``) and empty strings are returned as
    they are; the file need not exist. A symlink that leads nowhere (dangling, or
    a loop) keeps its own name, so that its error row names what the user has.
    """
    path = os.fspath(path)
    if not path or "://" in path:
        return path
    path = os.path.expanduser(path)
    real = os.path.realpath(path)
    if os.path.islink(path) and not os.path.exists(real):  # dangling, or a loop: its own name says which input
        return os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(path))), os.path.basename(path))
    return real


def from_rows(rows: Iterable[Mapping[str, Any]], source: str = "manifest") -> pa.Table:
    """Build a manifest table from dict rows, filling absent optional columns with null.

    Every corpus loader ends here, so local paths are normalised here, once
    (``normalise_path``); relative ones resolve against the working directory.
    """
    rows = list(rows)
    data = {name: [row.get(name) for row in rows] for name in COLUMNS}
    data["path"] = [None if p is None else normalise_path(p) for p in data["path"]]
    table = pa.Table.from_pydict(data, schema=SCHEMA)
    validate(table, source)
    return table


def validate(table: pa.Table, source: str = "manifest") -> pa.Table:
    """Check the manifest contract; raise CorpusError naming ``source`` on a breach."""
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise CorpusError(source, f"manifest lacks column(s) {', '.join(missing)}")
    for name in NOT_NULL:
        if table.column(name).null_count:
            raise CorpusError(source, f"manifest column {name!r} has empty values")
    if table.column("path").null_count:
        text = table.column("transcript") if "transcript" in table.column_names else pa.nulls(len(table), pa.string())
        has_text = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0), False)
        neither = pc.and_(text_only(table), pc.invert(has_text))
        if pc.any(neither).as_py():
            first = table.column("utterance_id").filter(neither)[0].as_py()
            raise CorpusError(source, f"row {first!r} has neither an audio path nor a transcript; every row needs one")
    ids = table.column("utterance_id")
    if pc.count_distinct(ids).as_py() != len(ids):
        counts = Counter(ids.to_pylist())
        dup = next(k for k, v in counts.items() if v > 1)
        raise CorpusError(source, f"utterance_id {dup!r} appears {counts[dup]} times; ids must be unique")
    if "label" in table.column_names:
        bad = set(table.column("label").drop_null().to_pylist()) - set(CANONICAL)
        if bad:
            raise CorpusError(source, f"labels {sorted(bad)} are not canonical ({' '.join(CANONICAL)})")
    check_same_audio(table, source)
    return table


def _clip_keys(table: pa.Table) -> pa.Table:
    """One row per audio row: its clip (normalised path, span; a null start is 0) and what folds read of it."""
    audio = table.filter(pc.invert(text_only(table)))
    n = audio.num_rows
    col = lambda name: audio.column(name) if name in audio.column_names else pa.nulls(n, pa.float64())  # noqa: E731
    label = audio.column("label") if "label" in audio.column_names else pa.nulls(n, pa.string())
    return pa.table({
        "path": audio.column("path"), "start": pc.fill_null(col("start_s"), 0.0), "end": col("end_s"),
        "utterance_id": audio.column("utterance_id"), "speaker": audio.column("speaker"),
        "group": audio.column("group"), "label": label,
    })  # fmt: skip


def check_same_audio(table: pa.Table, source: str = "manifest") -> None:
    """One clip (same path and span) under several utterance ids: refused when the copies disagree, else a warning.

    Folds hold out whole groups by row, so one clip under two speakers or groups can
    land on both sides of a fold (its test row is a training row), and under two labels
    it contradicts itself. Copies that agree stay in one fold; they only count twice.
    Segments of one long file differ by their span, so the span is part of the key.
    """
    keys = _clip_keys(table)
    if keys.num_rows < 2:
        return
    agg = [("utterance_id", "count"), ("speaker", "count_distinct", pc.CountOptions("all")),
           ("group", "count_distinct", pc.CountOptions("all")), ("label", "count_distinct", pc.CountOptions("all"))]
    clips = keys.group_by(["path", "start", "end"], use_threads=False).aggregate(agg)
    repeated = clips.filter(pc.greater(clips.column("utterance_id_count"), 1))
    if not repeated.num_rows:
        return
    differ = pc.or_(pc.or_(pc.greater(repeated.column("speaker_count_distinct"), 1),
                           pc.greater(repeated.column("group_count_distinct"), 1)),
                    pc.greater(repeated.column("label_count_distinct"), 1))  # fmt: skip
    conflicting = repeated.filter(differ)
    if conflicting.num_rows:
        raise CorpusError(source, f"{conflicting.num_rows} audio clip(s) appear under several utterance_ids with "
                                  f"different speaker, group or label, e.g. {_example(keys, conflicting)}; the same "
                                  "clip could land on both sides of a fold: keep one row per clip")  # fmt: skip
    log.warning("%s: %d audio clip(s) appear under several utterance_ids (same speaker, group and label), e.g. %s; "
                "each copy counts as an utterance in training and in the figures", source, repeated.num_rows,
                _example(keys, repeated))  # fmt: skip


def _example(keys: pa.Table, clips: pa.Table) -> str:
    """The first repeated clip as text: its path, span and the rows that hold it."""
    first = clips.slice(0, 1).to_pylist()[0]
    same_file = keys.filter(pc.equal(keys.column("path"), first["path"])).to_pylist()
    rows = [r for r in same_file if (r["start"], r["end"]) == (first["start"], first["end"])]
    span = "" if first["start"] == 0.0 and first["end"] is None else f" [{first['start']}-{first['end'] or 'end'} s]"
    held = ", ".join(f"{r['utterance_id']!r} ({r['speaker']}/{r['group']}, {r['label']})" for r in rows[:3])
    return f"{first['path']}{span} as {held}"


def text_only(table: pa.Table) -> pa.Array:
    """Which rows are text-only (no audio path)."""
    return pc.is_null(table.column("path"))


def require_audio(table: pa.Table, source: str, stage: str) -> None:
    """Refuse, in one line, a manifest with text-only rows in a stage that reads audio."""
    mask = text_only(table)
    n = pc.sum(mask).as_py() or 0
    if n:
        first = table.column("utterance_id").filter(mask)[0].as_py()
        raise CorpusError(source, f"{n} of {table.num_rows} rows are text-only (no audio path, e.g. {first!r}); "
                                  f"{stage} reads audio: prepare the audio rows apart, or drop those rows")  # fmt: skip


def conform(table: pa.Table) -> pa.Table:
    """Reorder/cast to SCHEMA, adding absent optional columns as nulls."""
    cols = []
    for f in SCHEMA:
        if f.name in table.column_names:
            cols.append(table.column(f.name).cast(f.type))
        else:
            cols.append(pa.nulls(len(table), f.type))
    return pa.Table.from_arrays(cols, schema=SCHEMA)


def apply_class_set(table: pa.Table, class_set: ClassSet) -> tuple[pa.Table, Counter]:
    """Keep the rows whose label the class set uses, relabelled to its classes.

    Returns the new table and a count of the rows left out, by original label
    (``None`` for unlabelled rows), so the caller can report them.
    """
    labels = table.column("label").to_pylist()
    mapped = [class_set.map(lab) for lab in labels]
    keep = [m is not None for m in mapped]
    dropped = Counter(lab for lab, k in zip(labels, keep, strict=True) if not k)
    out = table.filter(pa.array(keep))
    out = out.set_column(
        out.column_names.index("label"), "label", pa.array([m for m in mapped if m is not None], pa.string())
    )
    return out, dropped


def read(path: str) -> pa.Table:
    """Read a manifest Parquet file (local path or pyarrow filesystem URI)."""
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise CorpusError(path, "manifest not found; create it with `seremo prepare`") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorpusError(path, f"not a readable Parquet manifest ({exc})") from None
    return validate(conform(table), path)


def write(table: pa.Table, path: str) -> None:
    """Write a manifest as one Parquet file; a file there that is not a manifest is never replaced."""
    check_replaceable(path)
    pq.write_table(conform(table), path)


def check_replaceable(path: str, what: str = "manifest") -> None:
    """Refuse to overwrite an existing file unless it is a seremo manifest or errors table (by its columns)."""
    from pyarrow import fs as pafs

    from seremo import storage

    filesystem, inner = storage.filesystem(path)
    info = filesystem.get_file_info(inner)
    if info.type == pafs.FileType.NotFound:
        return
    if info.type == pafs.FileType.Directory:
        raise CorpusError(path, f"is a directory; the {what} is one Parquet file")
    try:
        names = set(pq.read_schema(inner, filesystem=filesystem).names)
    except (pa.ArrowInvalid, OSError):
        names = set()
    if not (set(REQUIRED) <= names or {"path", "stage", "error", "message"} <= names):
        raise CorpusError(path, f"exists and is not a seremo {what}; seremo does not overwrite files it did "
                                "not write: choose another --out")  # fmt: skip
