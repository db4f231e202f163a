"""Reading YAML configs and turning validation failures into one line naming the key and file."""

from __future__ import annotations

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


def validate(model: type[M], raw: Any, source: str, prefix: str = "", error: type[SeremoError] = ConfigError) -> M:
    """``model.model_validate(raw)``, with the first problem as one line: file, key, what is wrong."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise error(f"{source}: {prefix}{where}: {err['msg']}") from None
