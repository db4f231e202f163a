"""Corpus loaders: one module per corpus, each ``prepare(root) -> pyarrow.Table``.

``prepare_corpus`` wraps a loader with what every corpus needs: reading each
file's header once (duration, and an errors row for any file that is not
readable audio) and applying a class set.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from seremo import audio, manifest
from seremo.corpora import (
    cremad,
    emodb,
    emovo,
    folder,
    iemocap,
    meld,
    nemo,
    ravdess,
    savee,
    table,
    tess,
    urdu,
)
from seremo.corpora._common import skipped_counts
from seremo.errors import AudioError, ConfigError, error_record, errors_table
from seremo.labels import get_class_set

log = logging.getLogger(__name__)

LOADERS: dict[str, Callable[..., pa.Table]] = {
    "emodb": emodb.prepare,
    "ravdess": ravdess.prepare,
    "cremad": cremad.prepare,
    "savee": savee.prepare,
    "tess": tess.prepare,
    "iemocap": iemocap.prepare,
    "emovo": emovo.prepare,
    "meld": meld.prepare,
    "nemo": nemo.prepare,
    "urdu": urdu.prepare,
    "table": table.prepare,
    "csv": table.prepare,
    "parquet": table.prepare,
    "folder": folder.prepare,
}


@dataclass
class Prepared:
    """A manifest and the account of everything the loader found but did not keep."""

    table: pa.Table
    errors: pa.Table
    skipped: Counter = field(default_factory=Counter)  # files left out by design, by reason
    excluded: Counter = field(default_factory=Counter)  # rows the class set left out, by label


def _durations(t: pa.Table) -> tuple[pa.Table, list[dict]]:
    """Fill ``duration_s`` from each file's header; unreadable files become error rows."""
    paths = t.column("path").to_pylist()
    known = t.column("duration_s").to_pylist()
    starts, ends = t.column("start_s").to_pylist(), t.column("end_s").to_pylist()

    def one(i: int) -> float | AudioError | None:
        if paths[i] is None:  # a text-only row: no audio to read
            return known[i]
        # The header is read even when the loader knows the duration: it proves the file is audio.
        try:
            total = audio.info(paths[i]).duration_s
        except AudioError as exc:
            return exc
        if total <= 0:
            return AudioError(paths[i], "empty", "the file holds no samples")
        if known[i] is not None:
            return known[i]
        end = total if ends[i] is None else min(ends[i], total)
        return end - (starts[i] or 0.0)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(len(paths))))
    ids = t.column("utterance_id").to_pylist()
    errors = [
        error_record("prepare", paths[i], ids[i], r) for i, r in enumerate(results) if isinstance(r, AudioError)
    ]
    keep = [not isinstance(r, AudioError) for r in results]
    durations = pa.array([r for r in results if not isinstance(r, AudioError)], pa.float64())
    out = t.filter(pa.array(keep))
    out = out.set_column(out.column_names.index("duration_s"), "duration_s", durations)
    return out, errors


def get_loader(name: str) -> Any:
    """The loader called ``name``; an unknown one is one line listing the known ones."""
    try:
        return LOADERS[name]
    except KeyError:
        raise ConfigError(f"unknown corpus {name!r}; choose one of: {', '.join(sorted(LOADERS))}") from None


def prepare_corpus(
    name: str, root: str | Path, class_set: str | None = None, **options: str
) -> Prepared:
    """Run the named loader, read headers, and apply ``class_set`` if given."""
    loader = get_loader(name)
    chosen = get_class_set(class_set) if class_set is not None else None  # fail before any work
    try:
        t = loader(root, **options)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise ConfigError(f"corpus {name!r} does not take option(s) {sorted(options)}") from None
        raise
    skipped = skipped_counts(t)
    t, errs = _durations(manifest.conform(t))
    excluded: Counter = Counter()
    if chosen is not None:
        t, excluded = manifest.apply_class_set(t, chosen)
    for reason, n in skipped.items():
        log.info("%s: left out %d file(s): %s", name, n, reason)
    return Prepared(t, errors_table(errs), skipped, excluded)


def _namespaced(t: pa.Table) -> pa.Table:
    """Speakers and groups prefixed ``<corpus>/`` where the loader kept them as written (CSV, folder)."""
    corpora = t.column("corpus").to_pylist()
    for col in ("speaker", "group"):
        values = [v if v.startswith(f"{c}/") else f"{c}/{v}"
                  for c, v in zip(corpora, t.column(col).to_pylist(), strict=True)]  # fmt: skip
        t = t.set_column(t.column_names.index(col), col, pa.array(values, pa.string()))
    return t


def prepare_corpora(
    entries: list[tuple[str, str | Path, dict[str, str]]], class_set: str | None = None
) -> Prepared:
    """One manifest from several corpora: ``entries`` are (loader, root, options).

    One corpus is exactly ``prepare_corpus``. With several, speaker and group ids
    are namespaced by corpus (``emodb/03``; loaders that keep speakers as written
    get the prefix here), so no speaker of one corpus is ever a group of
    another, and the class set applies to every corpus alike.
    """
    if not entries:
        raise ConfigError("prepare needs at least one CORPUS ROOT pair")
    parts = [prepare_corpus(name, root, class_set=class_set, **opts) for name, root, opts in entries]
    if len(parts) == 1:
        return parts[0]
    seen: dict[str, str] = {}
    for (_, root, _), part in zip(entries, parts, strict=True):
        for corpus in set(part.table.column("corpus").to_pylist()):
            if corpus in seen:
                raise ConfigError(f"corpus {corpus!r} comes from both {seen[corpus]} and {root}; "
                                  "prepare each corpus once")  # fmt: skip
            seen[corpus] = str(root)
    tables = [_namespaced(p.table).replace_schema_metadata(None) for p in parts]
    combined = manifest.validate(pa.concat_tables(tables), "the combined manifest")
    return Prepared(
        combined,
        pa.concat_tables([p.errors for p in parts]),
        sum((p.skipped for p in parts), Counter()),
        sum((p.excluded for p in parts), Counter()),
    )


__all__ = ["LOADERS", "Prepared", "prepare_corpora", "prepare_corpus"]
