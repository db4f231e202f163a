"""What ``seremo score`` scores: the inputs of a folder, prefix, glob or manifest, and a manifest's rows.

Paths come back normalised and de-duplicated, so that one archive typed two ways
is one input set (and resumes alike); a manifest that cannot be scored is refused
in one line, never skipped in part.
"""

from __future__ import annotations

import glob
import hashlib
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv

from seremo import storage
from seremo.errors import SeremoError
from seremo.manifest import normalise_path


def list_inputs(source: str) -> list[str]:
    """Every file of a directory (recursively), a glob's matches, or a manifest's ``path`` column.

    A symlink that leads nowhere (dangling, or a loop) is listed like a file: it
    is an input, and decoding it gives its error row (``missing``).

    Paths come back normalised (absolute, resolved) and de-duplicated, so that
    ``calls`` and ``$(pwd)/calls`` are the same input set and resume alike.
    """
    return sorted({normalise_path(p) for p in _listed(source)})


def _listed(source: str) -> list[str]:
    if storage.is_uri(source):
        if storage.is_dir(source):  # a prefix: every object under it
            return [p for p in storage.list_files(source, recursive=True) if not p.rsplit("/", 1)[-1].startswith(".")]
        if storage.is_file(source):
            return _manifest_paths(source) if _is_manifest(source) else [source]
        raise SeremoError(f"{source}: no such object, prefix or manifest in the bucket")
    p = Path(source)
    if p.is_dir():  # every name, broken symlinks too: they are inputs that fail, never left out
        return [f for f in storage.local_files(p) if not os.path.basename(f).startswith(".")]
    if p.is_file():
        return _manifest_paths(source) if _is_manifest(source) else [str(p)]
    matches = sorted(glob.glob(source, recursive=True))
    if any(ch in source for ch in "*?[") and matches:
        return [m for m in matches if not os.path.isdir(m)]
    raise SeremoError(f"{source}: no such directory, file, manifest or glob match")


def _is_manifest(source: str) -> bool:
    return source.lower().endswith((".parquet", ".csv"))


def _read_manifest(source: str) -> pa.Table:
    """A manifest (.parquet or .csv); one that is not a readable table is one line naming it."""
    try:
        if source.lower().endswith(".parquet"):
            return storage.read_parquet(source)
        fs, inner = storage.filesystem(source)
        text = {c: pa.string() for c in ("path", "utterance_id", "transcript", "speaker", "group", "corpus", "label")}
        with fs.open_input_stream(inner) as f:  # ids like 00123 and numeric transcripts stay text
            return pyarrow.csv.read_csv(f, convert_options=pyarrow.csv.ConvertOptions(column_types=text))
    except pa.ArrowInvalid as exc:
        first = (str(exc).strip().splitlines() or ["unreadable"])[0]
        raise SeremoError(f"{source}: is not a readable manifest ({first})") from None


def _resolve(source: str, path: str) -> str:
    """A manifest path as an input: relative paths are relative to the manifest's folder or prefix."""
    return path if os.path.isabs(path) or storage.is_uri(path) else storage.join(storage.parent(source), path)


def _manifest_paths(source: str) -> list[str]:
    """A manifest's ``path`` column; relative paths are relative to the manifest's folder or prefix."""
    table = _read_manifest(source)
    if "path" not in table.column_names:
        raise SeremoError(f"{source}: a manifest needs a `path` column")
    listed = table.column("path").to_pylist()
    empty = sum(1 for x in listed if x is None or not str(x).strip())
    if empty:  # text-only rows (a transcript corpus), or holes: never skipped in silence
        raise SeremoError(f"{source}: {empty} of {len(listed)} rows have no audio path (text-only rows?); "
                          "seremo score reads audio: give it the audio rows only")  # fmt: skip
    return [_resolve(source, str(x)) for x in listed]


TEXT_INPUT = "text:"  # the input key of a text-only manifest row: "text:<utterance_id>"


def manifest_rows(source: str, inputs: str) -> dict[str, list[dict[str, Any]]]:
    """For a text or fusion bundle: the manifest's rows, each one segment, grouped into inputs.

    An input is an audio file (its rows are segments of it, by ``start_s``/``end_s``;
    none: the whole file) or, for a text bundle, a text-only row on its own
    (``text:<utterance_id>``). Every row needs a transcript, and for ``audio+text``
    an audio path: rows that lack one are refused in one line, never skipped.
    """
    from seremo.transcripts import clean_transcript

    if not _is_manifest(source):
        raise SeremoError(f"{source}: a {inputs} bundle scores a manifest's rows (path, transcript, optional "
                          "start_s/end_s); give it a manifest (.parquet or .csv), not a folder of audio")  # fmt: skip
    table = _read_manifest(source)
    if "transcript" not in table.column_names:
        raise SeremoError(f"{source}: has no `transcript` column; a {inputs} bundle needs one transcript per row "
                          "(from the corpus or your ASR)")  # fmt: skip
    n = table.num_rows
    column = lambda name: table.column(name).to_pylist() if name in table.column_names else [None] * n  # noqa: E731
    ids = [str(u) if u is not None else f"row{i + 1}" for i, u in enumerate(column("utterance_id"))]
    texts = [clean_transcript(t) for t in column("transcript")]
    paths = [str(p) if p is not None and str(p).strip() else None for p in column("path")]
    missing = [i for i, t in enumerate(texts) if not t]
    if missing:
        raise SeremoError(f"{source}: {len(missing)} of {n} rows have no transcript (e.g. {ids[missing[0]]!r}); a "
                          f"{inputs} bundle needs one on every row")  # fmt: skip
    no_audio = [i for i, p in enumerate(paths) if p is None]
    if inputs == "audio+text" and no_audio:
        raise SeremoError(f"{source}: {len(no_audio)} of {n} rows have no audio path (e.g. {ids[no_audio[0]]!r}); "
                          "an audio+text bundle needs the audio and the transcript of every row")  # fmt: skip
    if len(set(ids)) != n:
        raise SeremoError(f"{source}: utterance ids repeat; every row needs its own")
    grouped: dict[str, list[dict[str, Any]]] = {}
    for uid, text, path, start, end in zip(ids, texts, paths, column("start_s"), column("end_s"), strict=True):
        key = normalise_path(_resolve(source, path)) if path else TEXT_INPUT + uid
        grouped.setdefault(key, []).append({"utterance_id": uid, "transcript": text, "start_s": start, "end_s": end})
    return grouped



def input_fingerprint(inputs: list[str]) -> dict[str, Any]:
    """The identity of an input set: its size and a hash of its normalised paths."""
    digest = hashlib.sha256("\n".join(sorted(inputs)).encode()).hexdigest()
    return {"count": len(inputs), "sha256": digest}
