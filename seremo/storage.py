"""Where outputs live: local paths, or pyarrow filesystem URIs (``s3://``, ``gs://``, ...).

Extraction writes its shards straight to any filesystem from the Ray workers.
Stages that assemble a run dir on the driver (tune, train) stage it and swap it
in when it succeeds (:func:`seremo.outputs.run_dir`): on a URI, through a local
scratch directory uploaded at the end, so every node can read what a stage wrote.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from seremo.errors import SeremoError

log = logging.getLogger(__name__)

# Schemes pyarrow (and fsspec) open; ``<scheme>:`` without ``//`` at a path's start is a typo, not a folder.
SCHEMES = ("s3", "s3a", "s3n", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss", "az", "adl", "file", "mock",
           "http", "https")  # fmt: skip
_MISTYPED = re.compile(rf"^({'|'.join(SCHEMES)}):(?!//)(.*)$", re.IGNORECASE | re.DOTALL)


def check_path(path: str) -> str:
    """``path`` as it is, or a one-line refusal where it reads as a URI with a slash missing.

    ``--out s3:/bucket/x`` would otherwise write a local folder ``./s3:/bucket/x``
    and exit 0; every path seremo opens passes through here (``is_uri``).
    """
    m = _MISTYPED.match(str(path))
    if m:
        scheme, rest = m.group(1), m.group(2)
        fixed = f"{scheme}:///{rest.lstrip('/')}" if scheme.lower() == "file" else f"{scheme}://{rest.lstrip('/')}"
        raise SeremoError(f"{path}: looks like a mistyped URI (did you mean {fixed}?); "
                          f"a local path starting with {scheme}: needs ./ in front")  # fmt: skip
    return path


def is_uri(path: str) -> bool:
    """True for ``scheme://...``; a mistyped URI (``s3:/x``) is refused here, before any use."""
    return "://" in check_path(str(path))


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI such as s3://bucket/dir."""
    if is_uri(path):
        try:
            return pafs.FileSystem.from_uri(path)
        except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise SeremoError(f"{path}: not a filesystem pyarrow can open ({exc})") from None
    return pafs.LocalFileSystem(), os.path.abspath(path)


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a local path or a URI."""
    return "/".join([str(base).rstrip("/"), *parts]) if is_uri(base) else str(Path(base, *parts))


def parent(path: str) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[0] if is_uri(path) else str(Path(path).absolute().parent)


def exists(path: str) -> bool:
    fs, inner = filesystem(path)
    return fs.get_file_info(inner).type != pafs.FileType.NotFound


def read_json(path: str) -> Any | None:
    """The JSON document at ``path``, or None when there is none."""
    fs, inner = filesystem(path)
    try:
        with fs.open_input_stream(inner) as f:
            return json.loads(f.read().decode())
    except FileNotFoundError:
        return None


def write_json(path: str, doc: Any) -> None:
    write_bytes(path, json.dumps(doc, indent=2).encode())


def makedirs(path: str) -> None:
    """Create a directory and its parents (on object stores, where directories are implicit, a no-op)."""
    fs, inner = filesystem(path)
    fs.create_dir(inner, recursive=True)


def is_file(path: str) -> bool:
    fs, inner = filesystem(path)
    return fs.get_file_info(inner).type == pafs.FileType.File


def is_dir(path: str) -> bool:
    """A directory (on object stores: a prefix that holds objects)."""
    fs, inner = filesystem(path)
    return fs.get_file_info(inner).type == pafs.FileType.Directory


def list_files(path: str, suffix: str = "", recursive: bool = False) -> list[str]:
    """Files under the directory ``path`` (none when it is not there), as paths or URIs like ``path``."""
    fs, inner = filesystem(path)
    infos = fs.get_file_info(pafs.FileSelector(inner, allow_not_found=True, recursive=recursive))
    names = sorted(i.path[len(inner.rstrip("/")) + 1 :] for i in infos if i.type == pafs.FileType.File)
    return [join(path, *n.split("/")) for n in names if n.endswith(suffix)]


def local_files(root: str | os.PathLike) -> list[str]:
    """Every name under a local folder that is not a folder, recursively and sorted.

    Files, and symlinks that lead to no file (dangling, or a loop) too: those are
    inputs that fail, and an input the listing left out would vanish from the
    account (inputs = outputs + errors). A symlinked folder is followed when it
    leads out of the tree; one that leads back into it (a loop to a folder above,
    or a second name for a folder inside) is not, as its files are listed under
    their own names: each file once, and no walk recurses forever.
    """
    found: list[str] = []
    root = os.fspath(root)
    _walk_into(root, os.path.realpath(root), frozenset(), found)
    return sorted(found)


def _walk_into(folder: str, real_root: str, above: frozenset[tuple[int, int]], found: list[str]) -> None:
    st = os.stat(folder)
    above = above | {(st.st_dev, st.st_ino)}
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError as exc:  # not silent: its files cannot be named, so say so
        log.warning("%s: cannot be listed, so its files are not inputs (%s)", folder, exc.strerror or exc)
        return
    for entry in entries:
        try:
            is_dir = entry.is_dir()  # follows links: a dangling one or a loop is no folder
        except OSError:
            is_dir = False
        if not is_dir:
            found.append(entry.path)
        elif not _walked_already(entry, real_root, above):
            _walk_into(entry.path, real_root, above, found)


def _walked_already(entry: os.DirEntry, real_root: str, above: frozenset[tuple[int, int]]) -> bool:
    """A folder on the way down (a loop), or a symlink to one inside the tree, whose files are listed anyway."""
    st = os.stat(entry.path)
    if (st.st_dev, st.st_ino) in above:
        return True
    if not entry.is_symlink():
        return False
    real = os.path.realpath(entry.path)
    return os.path.commonpath([real, real_root]) == real_root


def delete_file(path: str) -> None:
    """Remove one file; one that is already gone is fine."""
    fs, inner = filesystem(path)
    try:
        fs.delete_file(inner)
    except FileNotFoundError:
        pass
    except OSError as exc:  # object stores say "not found" in words
        if "not found" not in str(exc).lower() and "does not exist" not in str(exc).lower():
            raise


def write_parquet(table: pa.Table, path: str) -> None:
    """Write a Parquet file whole or not at all.

    Local disks: write a hidden temporary beside it, then rename. Object stores:
    one PUT creates an object atomically (no rename there, and none needed), so
    a killed writer never leaves a half-written file either way.
    """
    if is_uri(path):
        fs, inner = filesystem(path)
        if not isinstance(fs, pafs.LocalFileSystem):
            pq.write_table(table, inner, filesystem=fs)
            return
        path = inner  # a file:// URI is a local path: its folder made, the file renamed into place
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, target)


def read_parquet(path: str, **kwargs: Any) -> pa.Table:
    fs, inner = filesystem(path)
    return pq.read_table(inner, filesystem=fs, **kwargs)


def parquet_rows(path: str) -> int:
    fs, inner = filesystem(path)
    return pq.read_metadata(inner, filesystem=fs).num_rows


def write_bytes(path: str, data: bytes) -> None:
    fs, inner = filesystem(path)
    fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)  # file:// URIs need the folder too
    with fs.open_output_stream(inner) as f:
        f.write(data)


def local_copy(path: str) -> Path:
    """A local directory holding ``path``'s files: ``path`` itself, or a fresh download of a URI.

    Downloads go to a temporary directory removed when the process exits.
    """
    if not is_uri(path):
        return Path(path)
    import atexit

    local = Path(tempfile.mkdtemp(prefix="seremo-copy-"))
    atexit.register(shutil.rmtree, local, ignore_errors=True)
    fs, inner = filesystem(path)
    if fs.get_file_info(inner).type == pafs.FileType.Directory:
        pafs.copy_files(inner, str(local), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return local


def remove_empty_dir(path: str) -> None:
    """Remove a local directory that holds nothing (object stores have no empty directories to remove)."""
    if not is_uri(path):
        with contextlib.suppress(FileNotFoundError, OSError):
            os.rmdir(path)


def remove_dir(path: str) -> None:
    fs, inner = filesystem(path)
    fs.delete_dir(inner)
