"""Helpers every corpus loader shares: walking a tree, one clear error, skip counts."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa

from seremo import manifest, storage
from seremo.errors import CorpusError

SKIPPED_KEY = b"seremo.skipped"
T = TypeVar("T")


def require_dir(root: str | Path, corpus: str) -> Path:
    """The corpus root as a Path, or a CorpusError saying it is not there."""
    path = Path(root).expanduser().absolute()
    if not path.is_dir():
        raise CorpusError(path, f"{corpus} root is not a directory; point it at the unpacked corpus")
    return path


def walk(root: Path, exts: Iterable[str] = (".wav",)) -> list[Path]:
    """Every file under ``root`` (recursively, hidden files left out) with one of ``exts``, sorted.

    A symlink named like audio that leads nowhere (dangling, or a loop) is listed
    too, so that reading its header makes it an error row rather than nothing.
    """
    exts = {e.lower() for e in exts}
    paths = (Path(p) for p in storage.local_files(root))
    return sorted(p for p in paths if p.suffix.lower() in exts and not p.name.startswith("."))


def table(
    rows: list[Mapping[str, Any]],
    root: Path,
    corpus: str,
    pattern: str,
    skipped: Mapping[str, int] | None = None,
) -> pa.Table:
    """The manifest for ``rows``; a CorpusError when a loader found nothing.

    ``skipped`` (reason -> count) is kept in the schema metadata so the CLI
    can report what the loader deliberately left out (e.g. RAVDESS song files).
    """
    if not rows:
        raise CorpusError(root, f"no {corpus} files found (expected names like {pattern})")
    out = manifest.from_rows(rows, source=str(root))
    if skipped:
        out = out.replace_schema_metadata({SKIPPED_KEY: json.dumps(dict(skipped)).encode()})
    return out


def skipped_counts(t: pa.Table) -> Counter:
    """The reason -> count of files a loader left out, read back from the metadata."""
    meta = t.schema.metadata or {}
    return Counter(json.loads(meta[SKIPPED_KEY])) if SKIPPED_KEY in meta else Counter()


def named_files(root: Path, pattern: re.Pattern[str], naming: str,
                exts: Iterable[str] = (".wav",)) -> Iterator[tuple[Path, re.Match[str]]]:  # fmt: skip
    """Every file under ``root`` (as ``walk``) with ``pattern`` matched on its name. A file that does not
    follow the corpus's ``naming`` ("EmoDB naming SSTTTEV.wav (e.g. 03a01Fa.wav)") is one CorpusError
    naming it: a loader never skips a file silently."""
    for path in walk(root, exts):
        m = pattern.match(path.name)
        if not m:
            raise CorpusError(path, f"does not follow {naming}")
        yield path, m


def known(path: Path, table: Mapping[str, T], key: str, what: str, sep: str = " ") -> T:
    """``table[key]``, or a CorpusError on ``path``: "unknown <what> 'key' (known: ...)"."""
    if key not in table:
        raise CorpusError(path, f"unknown {what} {key!r} (known: {sep.join(table)})")
    return table[key]


def utterance_row(corpus: str, path: Path, uid: str, speaker: str, label: str, **more: Any) -> dict[str, Any]:
    """A manifest row of ``corpus``: ids and speakers namespaced by the corpus, the speaker its CV group."""
    return {"utterance_id": f"{corpus}/{uid}", "path": str(path), "corpus": corpus, "speaker": f"{corpus}/{speaker}",
            "group": f"{corpus}/{speaker}", "label": label, **more}  # fmt: skip
