"""Feature sets, one module each, and the registry that finds them by name.

| name      | kind     | what                                                              |
|-----------|----------|-------------------------------------------------------------------|
| seremo    | vector   | our functional set (version 2; the fast choice): speaker- and channel-robust prosody, voice quality, spectral balance, formants, cepstral dynamics |
| compact8  | vector   | 8 prosodic statistics                                              |
| lld_stats | vector   | librosa low-level descriptors summarised by mean/std/min/max       |
| mfcc_seq  | sequence | per-frame F0, voicing, ZCR, 12 MFCC + log energy, and deltas       |
| logmel    | image    | log-mel spectrogram (bands x frames)                               |
| egemaps   | vector   | openSMILE eGeMAPSv02 functionals (optional extra; research licence) |
| text      | text     | the transcript (cleaned), for TF-IDF, text networks and fusion; reads no audio |
| ssl       | vector   | a self-supervised model's layer (wav2vec 2.0, HuBERT, WavLM): mean and std over time (extra `ssl`) |
| ssl_seq   | sequence | the same layer's frame embeddings                                  |
| whisper   | vector   | the default: Whisper encoder (tiny.en, CTranslate2, offline), the mean of its output frames, with the seremo functionals appended |
| whisper_seq | sequence | the same encoder's output frames (50 per second)                 |

A set's ``version`` changes whenever its numbers would; older versions stay
registered so that shards and bundles made with them still load and score.
``NAME`` is the newest version, ``NAME@VERSION`` a given one (``seremo@1``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from seremo.errors import ConfigError
from seremo.features.base import FeatureSet
from seremo.features.compact8 import Compact8
from seremo.features.egemaps import EGeMAPS
from seremo.features.functionals import SeremoFunctionals
from seremo.features.functionals_v1 import SeremoFunctionalsV1
from seremo.features.lld_stats import LLDStats
from seremo.features.logmel import LogMel
from seremo.features.mfcc_seq import MFCCSeq
from seremo.features.ssl import SSLFeatures, SSLSequence
from seremo.features.text import Text
from seremo.features.whisper import WhisperFeatures, WhisperSequence

DEFAULT = "whisper"  # measured: ahead of the functionals on EmoDB, EMOVO and across them (README)
# the newest version of each set, by name: what `--features NAME` gives
FEATURE_SETS: dict[str, type[FeatureSet]] = {
    cls.name: cls for cls in (SeremoFunctionals, Compact8, LLDStats, MFCCSeq, LogMel, EGeMAPS, Text, SSLFeatures, SSLSequence,
                WhisperFeatures, WhisperSequence)
}
# every version still readable, by (name, version)
VERSIONS: dict[tuple[str, str], type[FeatureSet]] = {
    (cls.name, cls.version): cls for cls in (*FEATURE_SETS.values(), SeremoFunctionalsV1)
}


def get(name: str, **params: Any) -> FeatureSet:
    """The feature set ``name`` (``NAME`` or ``NAME@VERSION``) with ``params`` overriding its defaults.

    One clear error for an unknown name, version or parameter.
    """
    base, at, version = name.partition("@")
    if base not in FEATURE_SETS:
        raise ConfigError(
            f"unknown feature set {base!r}; choose one of: {', '.join(FEATURE_SETS)}"
        )
    cls = VERSIONS.get((base, version)) if at else FEATURE_SETS[base]  # "seremo@" names no version
    if cls is None:
        known = ", ".join(f"{base}@{v}" for n, v in VERSIONS if n == base)
        raise ConfigError(
            f"feature set {base!r} has no version {version!r} in this seremo (it has {known}); "
            f"re-extract the features with the newest, `--features {base}`"
        )
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
    """Rebuild a feature set from ``describe()`` output: the very version that made it."""
    return get(f"{desc['name']}@{desc.get('version')}", **desc.get("params", {}))


__all__ = ["DEFAULT", "FEATURE_SETS", "VERSIONS", "FeatureSet", "from_description", "get"]
