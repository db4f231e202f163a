"""Reading YAML configs and turning validation failures into one line naming the key and file."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from seremo.errors import ConfigError, SeremoError

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: str) -> Any:
    """The parsed YAML file; a missing file or bad YAML is one line naming the file."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None


def read_section(path: str | None, section: str, pipeline_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """The ``section:`` mapping of a YAML file (or the whole file when it has no such key).

    ``pipeline_keys`` are the keys only an experiment config's section has (which
    features it reads): dropped when the section comes from one, so the same file
    serves `seremo run` and the single verb.
    """
    if path is None:
        return {}
    raw = read_yaml(path) or {}
    if isinstance(raw, dict) and section in raw:
        raw = raw[section] or {}
        if isinstance(raw, dict):
            raw = {k: v for k, v in raw.items() if k not in pipeline_keys}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {section} settings must be a mapping, not {type(raw).__name__}")
    return raw


def validate(model: type[M], raw: Any, source: str, prefix: str = "", error: type[SeremoError] = ConfigError,
             flags: Iterable[str] = ()) -> M:
    """``model.model_validate(raw)``, with the first problem as one line: file, key, what is wrong.

    ``flags`` are the fields that came from the command line: a problem with one of them names the
    flag and the value given (``--files-per-task: 0: ...``), since the user typed that, not a key.
    """
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise error(problem(exc, source, prefix, set(flags))) from None


def problem(exc: ValidationError, source: str, prefix: str = "", flags: set[str] = frozenset()) -> str:
    """The first error of ``exc`` as ``SOURCE: KEY: why`` or, for a command-line field, ``--FLAG: VALUE: why``."""
    err = exc.errors()[0]
    why = err["msg"].removeprefix("Value error, ")
    loc = [str(x) for x in err["loc"]]
    if loc and loc[0] in flags:
        return f"{flag(loc[0])}: {err['input']!r}: {why}"
    return f"{source}: {prefix}{'.'.join(loc)}: {why}" if loc else f"{source}: {why}"


def flag(field: str) -> str:
    """The command-line flag of a settings field: ``files_per_task`` -> ``--files-per-task``."""
    return "--" + field.replace("_", "-")
