"""A user's own manifest: a CSV, TSV or Parquet file passed as the root.

Required columns are ``path``, ``label`` and ``speaker``; optional ones are
``utterance_id``, ``group`` (default: the speaker), ``corpus`` (default: the
file's stem), ``start_s``, ``end_s``, ``transcript`` and ``gender``. Relative
paths resolve against the manifest's folder, and every local path is stored
absolute and resolved (``seremo.manifest.normalise_path``); URIs (``s3://...``)
are kept as written. The default utterance id is ``<corpus>/<path relative to the
manifest folder, without extension>``, with ``@START-END`` appended for rows
that name a segment, so several segments of one file get distinct ids.
Labels pass through ``seremo.labels.canonical`` ("anger" -> angry) and the
label as written is kept in ``source_label``; an empty label is a null
(unlabelled) row. Speakers are kept exactly as written, without a corpus
prefix. Rows are numbered as file lines for CSV/TSV (the header is line 1)
and from 1 for Parquet.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from seremo.corpora._common import table
from seremo.errors import CorpusError
from seremo.labels import CANONICAL, canonical
from seremo.manifest import normalise_path

NAME = "table"
REQUIRED = ("path", "label", "speaker")
OPTIONAL = ("utterance_id", "group", "corpus", "start_s", "end_s", "transcript", "gender")
EXTS = (".csv", ".tsv", ".parquet")
GENDERS = {"m": "m", "male": "m", "f": "f", "female": "f"}


def _text(value: Any) -> str | None:
    """A cell as stripped text, None when empty."""
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from Parquet/pandas
        return None
    text = str(value).strip()
    return text or None


def _rows(path: Path) -> tuple[list[str], Iterator[tuple[str, dict[str, Any]]]]:
    """The column names and (where, row) pairs of a CSV/TSV/Parquet manifest."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            data = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise CorpusError(path, f"is not a readable Parquet file ({exc})") from None
        columns = [str(c).strip() for c in data.column_names]
        records = data.rename_columns(columns).to_pylist()
        return columns, ((f"row {i}", r) for i, r in enumerate(records, start=1))
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            columns = [(c or "").strip() for c in reader.fieldnames or []]
            records = []
            for raw in reader:
                row = {k.strip(): v for k, v in raw.items() if isinstance(k, str)}
                records.append((f"line {reader.line_num}", row))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CorpusError(path, f"cannot be read as a {suffix[1:].upper()} file ({exc})") from None
    return columns, iter(records)


def _float(value: Any, column: str, manifest: Path, where: str) -> float | None:
    text = _text(value)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise CorpusError(
            manifest, f"{where}: {column} {text!r} is not a number of seconds"
        ) from None


def _resolve(written: str, folder: Path) -> tuple[str, str]:
    """(path to store, path for the default id) for a path as the user wrote it."""
    if "://" in written:
        return written, written.split("://", 1)[1]
    p = Path(written).expanduser()
    if p.is_absolute():
        try:
            rel = p.relative_to(folder)
        except ValueError:
            rel = Path(*p.parts[1:])
        return normalise_path(p), rel.as_posix()
    # resolved against the folder as the OS would (a symlinked folder's '..' is its target's parent)
    return normalise_path(folder / p), PurePosixPath(*Path(os.path.normpath(p)).parts).as_posix()


def prepare(root: str | Path) -> pa.Table:
    """Manifest from a user CSV/TSV/Parquet file with at least path, label and speaker."""
    manifest = Path(root).expanduser()
    if manifest.suffix.lower() not in EXTS:
        raise CorpusError(manifest, f"a table manifest must be a file ending {', '.join(EXTS)}")
    if not manifest.is_file():
        raise CorpusError(manifest, "manifest file not found (expected a CSV, TSV or Parquet file)")
    folder = manifest.absolute().parent
    columns, records = _rows(manifest)
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise CorpusError(
            manifest,
            f"lacks required column(s) {', '.join(missing)}; it has: {', '.join(columns) or 'no columns'} "
            f"(need {', '.join(REQUIRED)}; optional: {', '.join(OPTIONAL)})",
        )
    default_corpus = manifest.stem
    rows = []
    for where, rec in records:
        written = _text(rec.get("path"))
        if written is None:
            raise CorpusError(manifest, f"{where}: empty path")
        speaker = _text(rec.get("speaker"))
        if speaker is None:
            raise CorpusError(manifest, f"{where}: empty speaker ({written}); every row needs one")
        source_label = _text(rec.get("label"))
        label = None
        if source_label is not None:
            label = canonical(source_label)
            if label is None:
                raise CorpusError(
                    manifest,
                    f"{where}: unknown label {source_label!r}; use one of {' '.join(CANONICAL)} "
                    "(or a common spelling such as anger, happiness, fear)",
                )
        start_s = _float(rec.get("start_s"), "start_s", manifest, where)
        end_s = _float(rec.get("end_s"), "end_s", manifest, where)
        if start_s is not None and end_s is not None and end_s <= start_s:
            raise CorpusError(manifest, f"{where}: end_s {end_s} is not after start_s {start_s}")
        corpus = _text(rec.get("corpus")) or default_corpus
        path, rel = _resolve(written, folder)
        uid = _text(rec.get("utterance_id"))
        if uid is None:
            uid = f"{corpus}/{PurePosixPath(rel).with_suffix('').as_posix()}"
            if start_s is not None or end_s is not None:
                a = f"{start_s or 0.0:.3f}"
                b = "end" if end_s is None else f"{end_s:.3f}"
                uid = f"{uid}@{a}-{b}"
        gender = _text(rec.get("gender"))
        rows.append(
            {
                "utterance_id": uid,
                "path": path,
                "corpus": corpus,
                "speaker": speaker,
                "group": _text(rec.get("group")) or speaker,
                "label": label,
                "start_s": start_s,
                "end_s": end_s,
                "transcript": _text(rec.get("transcript")),
                "gender": GENDERS.get(gender.lower(), gender) if gender else None,
                "source_label": source_label,
            }
        )
    if not rows:
        raise CorpusError(manifest, "has a header but no rows")
    return table(rows, manifest, default_corpus, "a row per utterance with path,label,speaker")
