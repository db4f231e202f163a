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
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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


def check_apart(out: str, folders: Iterable[str] = (), files: Iterable[str] = (), what: str = "input") -> None:
    """Refuse an ``out`` that is an input, lies inside an input folder, or holds an input file.

    Writing into the input would make the next run read its own output as input
    (or overwrite input files); ``files`` are normalised paths (no stat per file).
    """
    inputs = [f for f in files if f]
    if storage.is_uri(out):
        target = out.rstrip("/")
        if target in (f.rstrip("/") for f in [*folders, *inputs] if storage.is_uri(f)):
            raise SeremoError(f"{out}: is the {what} itself; write the output elsewhere")
    else:
        root = os.path.realpath(out)
        for folder in folders:
            if folder and not storage.is_uri(folder):
                path = os.path.realpath(folder)
                if root == path or root.startswith(path + os.sep):
                    raise SeremoError(f"{out}: is or lies inside the {what} folder {folder}; write the output elsewhere")
        for f in inputs:
            if not storage.is_uri(f) and root == os.path.realpath(f):
                raise SeremoError(f"{out}: is the {what} {f} itself; write the output to another path")
        inside = next((f for f in inputs if not storage.is_uri(f) and f.startswith(root + os.sep)), None)
        if inside is not None:
            raise SeremoError(f"{out}: holds the {what} {inside}; write the output to a folder of its own")


def check_out(out: str, folders: Iterable[str] = (), files: Iterable[str] = (), what: str = "input") -> None:
    """Every verb's rule for its ``--out``, before anything is written: apart from its inputs
    (:func:`check_apart`) and not inside another output or a bundle (:func:`check_not_inside_output`)."""
    check_apart(out, folders, files, what)
    check_not_inside_output(out)


def check_not_inside_output(out: str) -> None:
    """Refuse an ``out`` inside what seremo wrote (a features dir, a run dir, a score output) or inside a bundle.

    ``out`` itself may be an output of the verb (a re-run: ``check_owner`` judges it), never a bundle.
    """
    from seremo.bundle import META

    if storage.exists(storage.join(out, META)):
        raise SeremoError(f"{out}: is a model bundle; write the output to a folder of its own")
    for here in _ancestors(out):
        for name, kind in ((MARKER, None), (META, "a model bundle")):
            if storage.is_file(storage.join(here, name)):
                if kind is None:
                    kind = f"the `seremo {(owner(here) or {}).get('verb', '?')}` output"
                raise SeremoError(f"{out}: lies inside {here}, {kind}; write the output to a folder of its own")


def _ancestors(out: str) -> list[str]:
    """The folders above ``out``, nearest first (on object storage: the prefixes up to the bucket)."""
    if storage.is_uri(out):
        scheme, rest = out.rstrip("/").split("://", 1)
        lead = "/" if rest.startswith("/") else ""  # file:///abs/path
        parts = rest.strip("/").split("/")
        return [f"{scheme}://{lead}{'/'.join(parts[:i])}" for i in range(len(parts) - 1, 0, -1)]
    return [str(p) for p in Path(os.path.realpath(out)).parents]


# --------------------------------------------------------------------------- run directories (tune, train, ...)

RUN_WRITES = ("metrics.json", "report.md", "confusion_matrix.png", "curves.png", "hyperparameters.png", "trials.parquet",
              "predictions.parquet", "model_predictions.parquet", "model", "ray")  # fmt: skip
STAGING = ".seremo-staging-"  # + the run's lease token: where a run writes until it commits
_STAGING_NAME = re.compile(re.escape(STAGING) + r"[0-9a-f]{32}")


@dataclass(frozen=True)
class RunDir:
    """Where a run writes before it commits.

    ``local`` holds what the driver writes (a directory inside ``out``, or scratch
    for a URI); ``remote`` is the same staging place as Ray workers and Ray's own
    storage see it (``local`` itself for a local ``out``, a prefix inside a URI).
    ``state`` names folders of resumable state that live in ``out`` itself, across runs.
    """

    out: str
    local: Path
    remote: str

    @property
    def ray_storage(self) -> str:
        """Ray Train/Tune ``storage_path``: inside the staging place, so it is committed with the run."""
        return storage.join(self.remote, "ray")

    def state(self, name: str) -> str:
        """A folder of resumable state (a deep search's trials): in ``out`` itself, kept between runs."""
        return storage.join(self.out, name)


@contextlib.contextmanager
def run_dir(out: str, verb: str, identity: dict[str, Any], writes: tuple[str, ...] = RUN_WRITES,
            state: tuple[str, ...] = ()) -> Iterator[RunDir]:  # fmt: skip
    """Stage a tune/train/evaluate/ensemble run beside the earlier one and swap it in when it succeeds.

    Refused before anything is written: another verb's run dir, another model's
    run, a folder of the user's holding a name a run writes (``writes``, ``state``),
    and an earlier run whose bundle names files outside itself. The new run writes
    under ``OUT/.seremo-staging-TOKEN/``; only when its body returns are the earlier
    run's files (``writes``, the bundle's listed files) replaced by the staged ones.
    A run that fails for any reason (a typo'd input, an unreachable cluster, an
    interrupt) leaves the earlier run exactly as it was and nothing of its own but
    ``state`` (a deep search's resumable trials).
    """
    before = check_owner(out, verb, (*writes, *state))
    if before is not None and before != identity:
        raise SeremoError(
            f"{out}: holds a `seremo {verb}` run of {_describe(before)}, not of {_describe(identity)}; "
            "write this run to its own --out"
        )
    earlier = _earlier_bundle_files(out) if before is not None else []
    created = not storage.exists(out)
    with Lease(out, verb) as lease:
        if before is None:  # a new output: marked now, so a killed run's resumable state is known as seremo's
            record_owner(out, verb, identity)
        run = stage(out, lease.token)
        try:
            yield run
            _remove_run_files(out, writes, earlier)
            publish(run)
            record_owner(out, verb, identity)
        except BaseException:
            discard(run)
            if before is None and not any(storage.exists(storage.join(out, n)) for n in state):
                storage.delete_file(storage.join(out, MARKER))
            raise
    if created:
        storage.remove_empty_dir(out)  # a new run that failed leaves no empty folder behind


def stage(out: str, token: str) -> RunDir:
    """A fresh staging place in ``out`` for the run holding lease ``token`` (killed runs' staging removed first)."""
    _remove_stale_staging(out, token)
    if storage.is_uri(out):
        return RunDir(out, Path(tempfile.mkdtemp(prefix="seremo-run-")), storage.join(out, STAGING + token))
    local = Path(out).absolute() / (STAGING + token)
    local.mkdir(parents=True)
    return RunDir(str(Path(out).absolute()), local, str(local))


def publish(run: RunDir) -> None:
    """Move the staged run into ``out`` (the earlier run's files already removed): a rename per file on
    a local disk, folders merged into those that stay; a copy on object storage."""
    from pyarrow import fs as pafs

    if not storage.is_uri(run.out):
        _move_into(run.local, Path(run.out).absolute())
        return
    filesystem, inner = storage.filesystem(run.out)
    _, staged = storage.filesystem(run.remote)
    if filesystem.get_file_info(staged).type == pafs.FileType.Directory:  # what Ray wrote (its storage)
        pafs.copy_files(staged, inner, source_filesystem=filesystem, destination_filesystem=filesystem)
        filesystem.delete_dir(staged)
    pafs.copy_files(str(run.local), inner, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=filesystem)
    shutil.rmtree(run.local, ignore_errors=True)


def _move_into(src: Path, dst: Path) -> None:
    """``src``'s entries renamed into ``dst``; a folder already there (a user's file beside seremo's) is merged."""
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if entry.is_dir() and not entry.is_symlink() and target.is_dir() and not target.is_symlink():
            _move_into(entry, target)
        else:
            os.replace(entry, target)
    src.rmdir()


def discard(run: RunDir) -> None:
    """Remove what a failed run staged (never anything else)."""
    shutil.rmtree(run.local, ignore_errors=True)
    if storage.is_uri(run.out):
        with contextlib.suppress(OSError, FileNotFoundError):
            if storage.is_dir(run.remote):
                storage.remove_dir(run.remote)


def _remove_stale_staging(out: str, token: str) -> None:
    """Staging folders of killed runs of this output (named by seremo; only ever seremo's)."""
    from pyarrow import fs as pafs

    filesystem, inner = storage.filesystem(out)
    for info in filesystem.get_file_info(pafs.FileSelector(inner, allow_not_found=True)):
        if _STAGING_NAME.fullmatch(info.base_name) and not info.base_name.endswith(token):
            log.info("%s: removing %s, left by a run that was killed", out, info.base_name)
            if info.type == pafs.FileType.Directory:
                filesystem.delete_dir(info.path)
            else:
                filesystem.delete_file(info.path)


def _describe(identity: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(identity.items())) or "another kind"


def _earlier_bundle_files(out: str) -> list[str]:
    """The files the earlier run's ``model/bundle.json`` lists, each confined to the bundle.

    A name that leaves the bundle (``../x``, an absolute path) refuses the re-run before
    anything is read or removed: seremo deletes only what it wrote.
    """
    from seremo.bundle import META, confined_name

    path = storage.join(out, "model", META)
    try:
        meta = storage.read_json(path) or {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SeremoError(f"{path}: is not valid JSON; the earlier run's bundle is damaged; remove {out}/model "
                          "yourself or choose a new --out") from None  # fmt: skip
    listed = meta.get("files", {}) if isinstance(meta, dict) else {}
    names = [*(listed if isinstance(listed, dict) else {}), META]
    for name in names:
        if not confined_name(name):
            raise SeremoError(f"{path}: lists {name!r}, a name outside the bundle; seremo will not remove it "
                              f"(remove {out}/model yourself, or choose a new --out)")  # fmt: skip
    return names


def _remove_run_files(out: str, writes: tuple[str, ...], bundle_files: list[str]) -> None:
    """Delete what the earlier run of this directory wrote: the names in ``writes``, the bundle's listed files."""
    from pyarrow import fs as pafs

    filesystem, base = storage.filesystem(out)
    for name in writes:
        path = f"{base}/{name}"
        kind = filesystem.get_file_info(path).type
        if kind == pafs.FileType.File:
            filesystem.delete_file(path)
        elif kind == pafs.FileType.Directory and name == "model":
            for name_ in bundle_files:
                if filesystem.get_file_info(f"{path}/{name_}").type == pafs.FileType.File:
                    filesystem.delete_file(f"{path}/{name_}")
            # an ensemble's member folders (members/0, members/): deepest first, only once empty
            subdirs = {"/".join(n.split("/")[:i]) for n in bundle_files for i in range(1, n.count("/") + 1)}
            for sub in sorted(subdirs, key=lambda d: -d.count("/")):
                full = f"{path}/{sub}"
                info = filesystem.get_file_info(full)
                if info.type == pafs.FileType.Directory and not filesystem.get_file_info(pafs.FileSelector(full)):
                    filesystem.delete_dir(full)
            if not filesystem.get_file_info(pafs.FileSelector(path)):
                filesystem.delete_dir(path)
        elif kind == pafs.FileType.Directory and (name == "ray" or (owner(path) or {}).get("verb") == "extract"):
            filesystem.delete_dir(path)  # ray/: the earlier run's Ray state; features/: evaluate's extraction
