"""Helpers every corpus loader shares: walking a tree, one clear error, skip counts."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from seremo import manifest, storage
from seremo.errors import CorpusError

SKIPPED_KEY = b"seremo.skipped"


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
