"""Progress of a long Ray Data job on a terminal: one line, redrawn, counted from its outputs.

The count comes from what the job has committed (score's ``done`` markers,
extract's shards), so it is what a re-run would find finished, not a guess.
Nothing is drawn when stderr is not a terminal (logs, CI, ``ray job`` output).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO


class Progress:
    """``with Progress("score", total, count, "inputs"):`` redraws ``score: 40/160 inputs (25%), 12 s``."""

    def __init__(self, label: str, total: int, count: Callable[[], int], unit: str, *,
                 interval_s: float = 1.0, stream: TextIO | None = None):  # fmt: skip
        self.label, self.total, self.count, self.unit = label, total, count, unit
        self.interval_s = interval_s
        self.stream = stream if stream is not None else sys.stderr
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._drawn = False

    def line(self) -> str:
        try:
            done = self.count()
        except OSError:  # a listing that failed this instant: the next tick tries again
            return ""
        pct = f" ({100 * done / self.total:.0f}%)" if self.total else ""
        return f"{self.label}: {done}/{self.total} {self.unit}{pct}, {time.perf_counter() - self._started:.0f} s"

    def _draw(self) -> None:
        text = self.line()
        if text:
            self.stream.write("\r" + text + "\x1b[K")
            self.stream.flush()
            self._drawn = True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._draw()

    def __enter__(self) -> Progress:
        self._started = time.perf_counter()
        if self._terminal():
            self._thread = threading.Thread(target=self._run, name="seremo-progress", daemon=True)
            self._thread.start()
        return self

    def _terminal(self) -> bool:
        if self.stream is sys.stderr:
            from seremo.runtime import stderr_is_terminal

            return stderr_is_terminal()
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def __exit__(self, *exc: Any) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._draw()
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()


class NewFiles:
    """Sum of a per-file number over the files of a folder, reading each new file once."""

    def __init__(self, list_files: Callable[[], list[str]], number: Callable[[str], int]):
        self.list_files, self.number = list_files, number
        self.seen: dict[str, int] = {}

    def skip_existing(self) -> NewFiles:
        """Count only files that appear from now on (an earlier run's commits are not this run's progress)."""
        self.seen = dict.fromkeys(self.list_files(), 0)
        return self

    def __call__(self) -> int:
        for path in self.list_files():
            if path not in self.seen:
                self.seen[path] = self.number(path)
        return sum(self.seen.values())
