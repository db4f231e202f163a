"""Typed errors for the mistakes a user can make.

Every ``SeremoError`` carries a message meant to be printed as one line: what
failed, on which file, and what to do. The CLI prints it without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class SeremoError(Exception):
    """A user-facing failure: printed as one line by the CLI, never a traceback."""


class CorpusError(SeremoError):
    """A corpus tree or manifest that does not follow its documented layout."""

    def __init__(self, path: str | Path, message: str):
        self.path = str(path)
        super().__init__(f"{path}: {message}")


class AudioError(SeremoError):
    """An audio input that cannot be decoded.

    ``kind`` is one of ``missing``, ``empty``, ``corrupt``, ``unsupported`` or
    ``too_short``; it becomes the ``error`` column of ``errors.parquet``.
    """

    KINDS = ("missing", "empty", "corrupt", "unsupported", "too_short")

    def __init__(self, path: str | Path, kind: str, message: str):
        if kind not in self.KINDS:
            raise ValueError(f"unknown AudioError kind {kind!r}")
        self.path = str(path)
        self.kind = kind
        self.reason = message
        super().__init__(f"{path}: {kind} audio: {message}")


class ConfigError(SeremoError):
    """A bad config file, option or command-line value."""


# ``errors.parquet``: one row per input that failed, in every stage.
ERROR_COLUMNS: tuple[str, ...] = ("path", "utterance_id", "stage", "error", "message")


def error_record(stage: str, path: str, utterance_id: str | None, exc: BaseException) -> dict:
    """One ``errors.parquet`` row for an exception raised while handling an input.

    ``error`` is the AudioError kind where there is one, else the exception's
    class name; ``message`` is its text without the path (that has a column).
    """
    if isinstance(exc, AudioError):
        kind, message = exc.kind, exc.reason
    else:
        kind, message = type(exc).__name__, str(exc)
    return {
        "path": str(path),
        "utterance_id": utterance_id,
        "stage": stage,
        "error": kind,
        "message": message,
    }


def errors_table(records: list[dict]):
    """The records as a pyarrow Table with the errors.parquet schema (empty is fine)."""
    import pyarrow as pa

    schema = pa.schema([(c, pa.string()) for c in ERROR_COLUMNS])
    return pa.Table.from_pylist(records, schema=schema)
