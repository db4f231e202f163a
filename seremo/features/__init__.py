"""Feature sets, one module each, and the registry that finds them by name.

| name      | kind     | what                                                              |
|-----------|----------|-------------------------------------------------------------------|
| seremo    | vector   | our functional set (default): prosody, voice quality, cepstra, spectra |
| compact8  | vector   | 8 prosodic statistics                                              |
| lld_stats | vector   | librosa low-level descriptors summarised by mean/std/min/max       |
| mfcc_seq  | sequence | per-frame F0, voicing, ZCR, 12 MFCC + log energy, and deltas       |
| logmel    | image    | log-mel spectrogram (bands x frames)                               |
| egemaps   | vector   | openSMILE eGeMAPSv02 functionals (optional extra; research licence) |
"""

from __future__ import annotations

import dataclasses
from typing import Any

from seremo.errors import ConfigError
from seremo.features.base import FeatureSet
from seremo.features.compact8 import Compact8
from seremo.features.egemaps import EGeMAPS
from seremo.features.functionals import SeremoFunctionals
from seremo.features.lld_stats import LLDStats
from seremo.features.logmel import LogMel
from seremo.features.mfcc_seq import MFCCSeq

DEFAULT = "seremo"
FEATURE_SETS: dict[str, type[FeatureSet]] = {
    cls.name: cls for cls in (SeremoFunctionals, Compact8, LLDStats, MFCCSeq, LogMel, EGeMAPS)
}


def get(name: str, **params: Any) -> FeatureSet:
    """The feature set ``name`` with ``params`` overriding its defaults; one clear error otherwise."""
    try:
        cls = FEATURE_SETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown feature set {name!r}; choose one of: {', '.join(FEATURE_SETS)}"
        ) from None
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(
            f"feature set {name!r} has no parameter(s) {unknown}; it takes: {', '.join(known)}"
        )
    typed = {}
    for key, value in params.items():
        typed[key] = _coerce(name, key, value, known[key].type)
    return cls(**typed)


def _coerce(set_name: str, key: str, value: Any, annotation: Any) -> Any:
    """Turn CLI strings into the parameter's declared type (int, float, bool, str)."""
    if not isinstance(value, str):
        return value
    kind = str(annotation)
    try:
        if kind in ("int", "<class 'int'>"):
            return int(value)
        if kind in ("float", "<class 'float'>"):
            return float(value)
        if kind in ("bool", "<class 'bool'>"):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
    except ValueError:
        raise ConfigError(f"feature set {set_name!r}: {key}={value!r} is not a valid {kind}") from None
    return value


def from_description(desc: dict[str, Any]) -> FeatureSet:
    """Rebuild a feature set from ``describe()`` output, checking name and version."""
    fs = get(desc["name"], **desc.get("params", {}))
    if desc.get("version") != fs.version:
        raise ConfigError(
            f"feature set {desc['name']!r} version {desc.get('version')!r} does not match this "
            f"seremo's version {fs.version!r}; re-extract the features"
        )
    return fs


__all__ = ["DEFAULT", "FEATURE_SETS", "FeatureSet", "from_description", "get"]
