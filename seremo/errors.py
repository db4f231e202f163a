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


class InputError(SeremoError):
    """An input a stage cannot use, for a reason of its own: ``kind`` (one of the class's ``KINDS``)
    becomes the ``error`` column of ``errors.parquet``, ``reason`` its ``message``."""

    KINDS: tuple[str, ...] = ()

    def __init__(self, path: str | Path | None, kind: str, message: str):
        if kind not in self.KINDS:
            raise ValueError(f"unknown {type(self).__name__} kind {kind!r}")
        self.path = str(path)
        self.kind = kind
        self.reason = message
        super().__init__(self.describe())

    def describe(self) -> str:
        return f"{self.path}: {self.reason}"


class AudioError(InputError):
    """An audio input that cannot be decoded.

    ``kind`` is one of ``missing``, ``empty``, ``corrupt``, ``unsupported``,
    ``too_short`` or ``truncated`` (a container whose header promises more sample bytes
    than the file holds: cut short in a copy, which libsndfile would otherwise
    read as a shorter file without a word).
    """

    KINDS = ("missing", "empty", "corrupt", "unsupported", "too_short", "truncated")

    def describe(self) -> str:
        return f"{self.path}: {self.kind} audio: {self.reason}"


class TextError(InputError):
    """A row a text stage cannot use: ``no_transcript``."""

    KINDS = ("no_transcript",)


# The error kinds that are the input's own fault (not a bug, not a lost worker).
INPUT_KINDS = AudioError.KINDS + TextError.KINDS


class BundleError(SeremoError):
    """A bundle that is missing, incomplete, tampered with or from another version."""


class ConfigError(SeremoError):
    """A bad config file, option or command-line value."""


# ``errors.parquet``: one row per input that failed, in every stage.
ERROR_COLUMNS: tuple[str, ...] = ("path", "utterance_id", "stage", "error", "message")


def error_record(stage: str, path: str, utterance_id: str | None, exc: BaseException) -> dict:
    """One ``errors.parquet`` row for an exception raised while handling an input.

    ``error`` is the AudioError kind where there is one, else the exception's
    class name; ``message`` is its text without the path (that has a column).
    """
    if isinstance(exc, InputError):
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


def check_failures(where: str, n_inputs: int, n_ok: int, kinds: list[str], first: list[str], budget: float,
                   see: str | None = None) -> None:  # fmt: skip
    """Fail (one line) when every input failed, or more than ``budget`` of them failed for
    reasons that are not the input's own (a bug, a lost worker); called once the outputs are
    written, so what did work is kept. ``kinds`` is the ``error`` column, ``first`` a message;
    ``see`` says where the errors are (default ``where``/errors.parquet)."""
    from collections import Counter

    see = see or f"see {where}/errors.parquet"
    counts = Counter(kinds)
    if n_inputs and n_ok == 0:
        top = ", ".join(f"{k} x{v}" for k, v in counts.most_common(3))
        example = f"; e.g. {first[0]}" if first else ""
        raise SeremoError(f"{where}: every one of the {n_inputs} inputs failed ({top}{example}); {see}")
    internal = sum(v for k, v in counts.items() if k not in INPUT_KINDS)
    if internal > budget * n_inputs:
        raise SeremoError(
            f"{where}: {internal} of {n_inputs} inputs failed for reasons that are not the input's own "
            f"(more than the failure budget of {budget:.0%}); {see}"
        )


def storage_error(exc: OSError) -> str:
    """One line for an I/O error: the message pyarrow or the OS gave, with what to check."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{first} (check the path or URI, and for object storage AWS_ENDPOINT_URL and the credentials)"
