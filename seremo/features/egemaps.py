"""egemaps: openSMILE eGeMAPSv02 functionals (88 values), the published reference.

An optional extra (``pip install seremo[opensmile]``). openSMILE's licence
allows research and personal use only, not commercial use: it is a baseline to
compare against, never the default.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from typing import ClassVar

import numpy as np

from seremo.errors import ConfigError
from seremo.features.base import FeatureSet


@lru_cache(maxsize=1)
def _smile():
    try:
        import opensmile
    except ImportError:
        raise ConfigError(
            "feature set 'egemaps' needs openSMILE: pip install 'seremo[opensmile]' "
            "(research licence: not for commercial use)"
        ) from None
    return opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02,
        feature_level=opensmile.FeatureLevel.Functionals,
    )


@dataclasses.dataclass(frozen=True)
class EGeMAPS(FeatureSet):
    name: ClassVar[str] = "egemaps"
    kind: ClassVar[str] = "vector"
    version: ClassVar[str] = "02"
    requires: ClassVar[tuple[str, ...]] = ("opensmile",)
    install: ClassVar[str] = "pip install 'seremo[opensmile]' (research licence: not for commercial use)"

    def compute(self, y: np.ndarray, sr: int) -> np.ndarray:
        return _smile().process_signal(y, sr).to_numpy()[0]

    def feature_names(self) -> list[str]:
        return list(_smile().feature_names)
