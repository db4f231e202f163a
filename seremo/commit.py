"""One commit protocol for the sinks that write a shared output (extract's shards, score's parts).

Many Ray write tasks write into one output, a run can be killed mid-way, and the
workers of a killed run can outlive its driver. So every write task::

    1. takes a fresh key                    KEY = <task index>-<12 hex digits>, never reused
    2. stages each of its parts             OUT/_parts/<part>/KEY.parquet
    3. checks the fence                     does its run still hold OUT's lease? (outputs.holds)
    4. commits, last                        OUT/_parts/done/KEY.parquet: its inputs, and (schema
                                            metadata ``seremo.commit``) the lease token it ran under

A fenced task removes what it staged and commits nothing. The driver, holding the
lease, reads the commits (:meth:`Staging.commits`), publishes what they name into
the output's own layout (:meth:`Staging.publish`), and removes staged parts that
no commit names (:meth:`Staging.remove_uncommitted`): a killed or fenced run's.
A commit names its run, so a verb that never resumes (extract) takes only its own
run's commits (``token=``) and one that resumes (score) takes every run's, with
one owner per input. Only names of this layout are ever removed: what seremo did
not write stays, and a failed run adds nothing that a reader takes for output.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from ray.data import Datasink
from ray.data.block import BlockAccessor

from seremo import outputs, storage

log = logging.getLogger(__name__)

PARTS = "_parts"  # the staging folder, at the top of the output
DONE = "done"  # the commit markers, one per committed task
META_KEY = b"seremo.commit"


def new_key(task_idx: int) -> str:
    """A write task's fresh key: its index (for a readable order) and 12 random hex digits (never reused)."""
    return f"{task_idx:05d}-{uuid.uuid4().hex[:12]}"


def key_of(path: str) -> str:
    """The key of a staged part or commit marker, from its file name."""
    return path.rsplit("/", 1)[-1].removesuffix(".parquet")


def commit_token(marker: pa.Table) -> str | None:
    """The lease token a commit was made under (None for a commit older than the token in its metadata)."""
    meta = (marker.schema.metadata or {}).get(META_KEY)
    return json.loads(meta).get("token") if meta else None


@dataclass(frozen=True)
class Staging:
    """The staging folder of one output: where write tasks stage parts and commit.

    ``out``: the folder ``_parts/`` lives in; ``lease_at``: the output whose lease
    fences the commits (``out`` itself, unless ``out`` is a run's staging place).
    ``parts``: the names of the parts a task stages.
    """

    out: str
    parts: tuple[str, ...]
    lease_at: str | None = None

    @property
    def root(self) -> str:
        return storage.join(self.out, PARTS)

    def part(self, sub: str, key: str) -> str:
        """Where a task stages (or commits, for ``done``) its part ``sub``: a fresh key, never overwritten."""
        return storage.join(self.root, sub, f"{key}.parquet")

    def markers(self) -> list[str]:
        """Every commit marker, of any run."""
        return storage.list_files(storage.join(self.root, DONE), ".parquet")

    def commit(self, key: str, inputs: pa.Table, token: str, staged: list[str]) -> bool:
        """Commit a task's ``staged`` parts (``inputs``: one row per input it covers) while its run holds
        the lease; a fenced task removes what it staged and commits nothing (False)."""
        _pause_before_commit(inputs.column("path").to_pylist() if "path" in inputs.column_names else [])
        if not outputs.holds(self.lease_at or self.out, token):  # the fence: another run owns the output now
            log.warning("%s: this run no longer holds the output; task %s is not committed", self.out, key)
            for f in staged:
                storage.delete_file(f)
            return False
        marker = inputs.replace_schema_metadata({META_KEY: json.dumps({"token": token}).encode()})
        storage.write_parquet(marker, self.part(DONE, key))  # the commit: written last, whole or not at all
        return True

    def commits(self, complete: Callable[[str], bool], token: str | None = None) -> dict[str, pa.Table]:
        """Committed key -> its inputs table, for commits whose parts are all there (``complete(key)``);
        ``token``: only the commits of that run."""
        found = {}
        for marker in self.markers():
            key, table = key_of(marker), storage.read_parquet(marker)
            if token is not None and commit_token(table) != token:
                continue
            if complete(key):
                found[key] = table
            else:
                log.warning("%s: commit %s lacks some of its parts; its inputs are written again", self.out, key)
        return found

    def publish(self, sub: str, key: str, dest: str, table: pa.Table | None = None) -> None:
        """Move a staged part to its place in the output (``table``: write that instead, e.g. the rows
        the commit owns), then remove it from staging."""
        staged = self.part(sub, key)
        if table is not None:
            storage.write_parquet(table, dest)
        elif storage.is_uri(staged):
            filesystem, inner = storage.filesystem(staged)
            filesystem.copy_file(inner, storage.filesystem(dest)[1])
        else:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.replace(staged, dest)
            return
        storage.delete_file(staged)

    def remove_uncommitted(self) -> None:
        """Staged parts no commit names: what a killed or fenced run left behind (seremo's own, by key)."""
        done = {key_of(p) for p in self.markers()}
        for sub in self.parts:
            for f in storage.list_files(storage.join(self.root, sub), ".parquet"):
                if key_of(f) not in done:
                    storage.delete_file(f)

    def clear(self) -> None:
        """Remove the whole staging folder (its parts and commits, nothing else), for a run that holds the lease."""
        for f in storage.list_files(self.root, recursive=True):
            storage.delete_file(f)
        for sub in (*self.parts, DONE):
            storage.remove_empty_dir(storage.join(self.root, sub))
        storage.remove_empty_dir(self.root)


class CommitSink(Datasink):
    """A Ray Data sink whose write tasks stage into ``staging`` and commit under the run's lease ``token``."""

    def __init__(self, staging: Staging, token: str):
        self.staging = staging
        self.token = token  # the lease this run holds: checked before each commit

    @staticmethod
    def block_table(blocks: Iterable[Any]) -> pa.Table | None:
        """A write task's blocks as one table (None when they hold no row)."""
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        return pa.concat_tables(tables, promote_options="default") if tables else None


def _pause_before_commit(paths: list[str]) -> None:
    """Fault injection for the tests: ``SEREMO_TEST_STOP_BEFORE_COMMIT=<input path>`` makes the
    worker that staged that input stop itself (SIGSTOP) just before its commit, as a worker of a
    killed run that a scheduler froze would; the test resumes it later."""
    target = os.environ.get("SEREMO_TEST_STOP_BEFORE_COMMIT")
    if target and target in paths:
        import signal

        os.kill(os.getpid(), signal.SIGSTOP)
