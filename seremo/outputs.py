"""Who owns an output directory: one verb, one identity, one run at a time.

Every verb that writes a directory (extract, tune, train, score) marks it::

    OUT/seremo-output.json   the owner: verb, identity (what decides its rows), seremo version
    OUT/seremo-lease.json    the run writing now: token, host, pid, heartbeat (removed at the end)

Before any work a verb checks the marker: another verb's directory is refused,
and a directory seremo never marked may hold anything of the user's, so it is
refused when it already holds a name the verb would write. The lease keeps two
runs out of one directory: a live lease is refused in one line; a lease whose
heartbeat is older than its time-to-live, or whose process is gone from this
host, is taken over. Workers check the lease before they commit (a fence), so
the workers of a killed run cannot commit into a run that took over.

Paths are local paths or pyarrow filesystem URIs (see :mod:`seremo.storage`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from seremo import __version__, storage
from seremo.errors import SeremoError

log = logging.getLogger(__name__)

MARKER = "seremo-output.json"
LEASE = "seremo-lease.json"


def lease_ttl_s() -> float:
    """How long a lease outlives its last heartbeat (``SEREMO_LEASE_TTL_S``, default 60 s)."""
    return float(os.environ.get("SEREMO_LEASE_TTL_S", "60"))


# --------------------------------------------------------------------------- the owner marker


def owner(out: str) -> dict[str, Any] | None:
    """The owner marker of ``out``, or None where seremo never marked it."""
    try:
        return storage.read_json(storage.join(out, MARKER))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SeremoError(f"{storage.join(out, MARKER)}: is not valid JSON; this output was damaged") from None


def check_owner(out: str, verb: str, writes: Iterable[str]) -> dict[str, Any] | None:
    """The identity an earlier ``verb`` run recorded in ``out`` (None for a new output).

    Refuses, in one line, a directory another verb owns and an unmarked directory
    that already holds one of the names in ``writes`` (the user's, not seremo's).
    """
    if storage.exists(out) and not _is_dir(out):  # before the marker: OUT/seremo-output.json of a file is ENOTDIR
        raise SeremoError(f"{out}: is a file; --out must be a directory")
    marker = owner(out)
    if marker is None:
        clash = [name for name in writes if storage.exists(storage.join(out, name))]
        if clash:
            raise SeremoError(
                f"{out}: already holds {clash[0]}, which seremo did not write here; "
                "choose a new --out (seremo never overwrites files it did not write)"
            )
        return None
    if marker.get("verb") != verb:
        raise SeremoError(
            f"{out}: holds the output of `seremo {marker.get('verb')}`, not of `seremo {verb}`; "
            f"write the {verb} output to its own --out"
        )
    return marker.get("identity") or {}


def record_owner(out: str, verb: str, identity: dict[str, Any]) -> None:
    """Mark ``out`` as ``verb``'s, with the identity later runs are compared against."""
    storage.makedirs(out)
    storage.write_json(storage.join(out, MARKER), {
        "verb": verb, "identity": identity, "seremo_version": __version__,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })  # fmt: skip


def _is_dir(path: str) -> bool:
    from pyarrow import fs as pafs

    filesystem, inner = storage.filesystem(path)
    return filesystem.get_file_info(inner).type == pafs.FileType.Directory


# --------------------------------------------------------------------------- the lease


def _expired(held: dict[str, Any], now: float) -> bool:
    if now - float(held.get("heartbeat", 0)) > float(held.get("ttl_s", lease_ttl_s())):
        return True
    if held.get("host") == socket.gethostname():
        try:
            os.kill(int(held.get("pid", 0)), 0)
        except ProcessLookupError:
            return True  # its process is gone: a killed run
        except (PermissionError, ValueError, OverflowError):
            return False
    return False


def _write_exclusive(path: str, doc: dict[str, Any]) -> bool:
    """Create ``path`` only where it does not exist; False when another run got there first."""
    if storage.is_uri(path):  # object stores: write, then read back whose lease stands
        storage.write_json(path, doc)
        time.sleep(0.2)
        return (storage.read_json(path) or {}).get("token") == doc["token"]
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    return True


def _overwrite(path: str, doc: dict[str, Any]) -> None:
    if storage.is_uri(path):
        storage.write_json(path, doc)
        return
    tmp = f"{path}.{doc['token'][:8]}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def _read_lease(path: str) -> dict[str, Any] | None:
    try:
        return storage.read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}  # being written this instant, or damaged: treated as expired below


class Lease:
    """This run's hold on an output directory, kept alive by a heartbeat thread."""

    def __init__(self, out: str, verb: str):
        self.out, self.verb = out, verb
        self.path = storage.join(out, LEASE)
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _doc(self) -> dict[str, Any]:
        return {"token": self.token, "verb": self.verb, "host": socket.gethostname(), "pid": os.getpid(),
                "heartbeat": time.time(), "ttl_s": lease_ttl_s()}  # fmt: skip

    def acquire(self) -> Lease:
        storage.makedirs(self.out)
        for _ in range(3):
            held = _read_lease(self.path)
            now = time.time()
            if held and not _expired(held, now):
                raise SeremoError(
                    f"{self.out}: is being written by another `seremo {held.get('verb')}` run "
                    f"(pid {held.get('pid')} on {held.get('host')}, heartbeat {now - float(held['heartbeat']):.0f} s ago); "
                    "wait for it to finish, or write to another --out"
                )  # fmt: skip
            if held is not None:
                log.warning("%s: taking over the lease of a run that is gone (pid %s on %s)",
                            self.out, (held or {}).get("pid"), (held or {}).get("host"))  # fmt: skip
                self._remove_if(held.get("token"))
            if _write_exclusive(self.path, self._doc()):
                self._thread = threading.Thread(target=self._beat, name="seremo-lease", daemon=True)
                self._thread.start()
                return self
        raise SeremoError(f"{self.out}: another run took the lease at the same moment; try again")

    def _remove_if(self, token: str | None) -> None:
        held = _read_lease(self.path)
        if held is not None and held.get("token") == token:
            filesystem, inner = storage.filesystem(self.path)
            try:
                filesystem.delete_file(inner)
            except FileNotFoundError:
                pass

    def _beat(self) -> None:
        interval = max(0.5, lease_ttl_s() / 4)
        while not self._stop.wait(interval):
            held = _read_lease(self.path)
            if not held or held.get("token") != self.token:
                log.error("%s: this run's lease was taken over by another run; its commits will be refused",
                          self.out)  # fmt: skip
                return
            try:
                _overwrite(self.path, self._doc())
            except OSError as exc:  # a transient storage error: the next beat tries again
                log.warning("%s: lease heartbeat failed (%s)", self.out, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._remove_if(self.token)

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def holds(out: str, token: str) -> bool:
    """True while the run with ``token`` still holds ``out`` (the fence a worker checks before committing)."""
    held = _read_lease(storage.join(out, LEASE))
    return bool(held) and held.get("token") == token


def check_apart(out: str, folders: Iterable[str], files: Iterable[str] = (), what: str = "input") -> None:
    """Refuse an ``out`` that is an input folder or lies inside one, or that holds an input file.

    Writing into the input would make the next run read its own output as input
    (or overwrite input files); ``files`` are normalised paths (no stat per file).
    """
    if storage.is_uri(out):
        return
    root = os.path.realpath(out)
    for folder in folders:
        if storage.is_uri(folder):
            continue
        path = os.path.realpath(folder)
        if root == path or root.startswith(path + os.sep):
            raise SeremoError(f"{out}: is or lies inside the {what} folder {folder}; write the output elsewhere")
    inside = next((f for f in files if not storage.is_uri(f) and f.startswith(root + os.sep)), None)
    if inside is not None:
        raise SeremoError(f"{out}: holds the {what} {inside}; write the output to a folder of its own")


# --------------------------------------------------------------------------- run directories (tune, train)

RUN_WRITES = ("metrics.json", "report.md", "confusion_matrix.png", "curves.png", "hyperparameters.png", "trials.parquet",
              "predictions.parquet", "model_predictions.parquet", "model", "ray")  # fmt: skip


@contextlib.contextmanager
def run_dir(out: str, verb: str, identity: dict[str, Any]) -> Iterator[Path]:
    """The local directory a tune/train run writes in, once ``out`` is this verb's and this run's.

    Another verb's run dir, another model's, or a folder of the user's holding a
    name a run writes, is refused before any work; a re-run of the same verb and
    model replaces the files the earlier run wrote (and only those), so no stale
    report or bundle is left beside the new one.
    """
    before = check_owner(out, verb, RUN_WRITES)
    if before is not None and before != identity:
        raise SeremoError(
            f"{out}: holds a `seremo {verb}` run of {_describe(before)}, not of {_describe(identity)}; "
            "write this run to its own --out"
        )
    with Lease(out, verb):
        if before is not None:
            _remove_run_files(out)
        record_owner(out, verb, identity)
        with storage.run_dir(out) as local:
            yield local


def _describe(identity: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(identity.items())) or "another kind"


def _remove_run_files(out: str) -> None:
    """Delete what an earlier run of this directory wrote: the names in RUN_WRITES, the bundle's listed files."""
    from pyarrow import fs as pafs

    filesystem, base = storage.filesystem(out)
    for name in RUN_WRITES:
        path = f"{base}/{name}"
        kind = filesystem.get_file_info(path).type
        if kind == pafs.FileType.File:
            filesystem.delete_file(path)
        elif kind == pafs.FileType.Directory and name == "model":
            meta = storage.read_json(storage.join(out, "model", "bundle.json")) or {}
            listed = [*meta.get("files", {}), "bundle.json"]
            for name_ in listed:
                if filesystem.get_file_info(f"{path}/{name_}").type == pafs.FileType.File:
                    filesystem.delete_file(f"{path}/{name_}")
            # an ensemble's member folders (members/0, members/): deepest first, only once empty
            subdirs = {"/".join(n.split("/")[:i]) for n in listed for i in range(1, n.count("/") + 1)}
            for sub in sorted(subdirs, key=lambda d: -d.count("/")):
                full = f"{path}/{sub}"
                info = filesystem.get_file_info(full)
                if info.type == pafs.FileType.Directory and not filesystem.get_file_info(pafs.FileSelector(full)):
                    filesystem.delete_dir(full)
            if not filesystem.get_file_info(pafs.FileSelector(path)):
                filesystem.delete_dir(path)
        elif kind == pafs.FileType.Directory:  # ray/: the Ray Tune/Train state of the earlier run
            filesystem.delete_dir(path)
