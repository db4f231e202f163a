"""The feature-set contract: a name, a kind, a sample rate, parameters, a version
and ``extract(y, sr) -> np.ndarray``.

Each feature set is a frozen dataclass: its fields are its parameters, readable
in one place, and ``describe()`` is what shard metadata and model bundles record.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

import numpy as np

from seremo.errors import ConfigError

Kind = Literal["vector", "sequence", "image", "text"]


@dataclasses.dataclass(frozen=True)
class FeatureSet(ABC):
    """Base class; subclasses set ``name``, ``kind``, ``version`` and implement ``compute``."""

    name: ClassVar[str]
    kind: ClassVar[Kind]
    version: ClassVar[str]
    # False for sets made from the manifest's transcript (``text``): no audio is decoded.
    reads_audio: ClassVar[bool] = True
    # Clips shorter than this are zero-padded before extraction (never an error).
    min_samples_s: ClassVar[float] = 0.05

    # Optional packages the set computes with (``requires``) and how to install them (``install``):
    # ``check_installed`` refuses a missing one in the driver, before a Ray worker fails on it.
    requires: ClassVar[tuple[str, ...]] = ()
    install: ClassVar[str] = ""

    sample_rate: int = 16000

    def check_installed(self) -> None:
        """One line when a package ``requires`` names is not importable (found without importing it: cheap)."""
        missing = [name for name in self.requires if not _importable(name)]
        if missing:
            raise ConfigError(f"feature set {self.name} needs {', '.join(missing)}, which is not installed: "
                              f"{self.install}")  # fmt: skip

    @property
    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "version": self.version, "params": self.params}

    def extract(self, y: np.ndarray, sr: int) -> np.ndarray:
        """Features of a mono float signal at ``sr`` (must equal ``sample_rate``).

        Always finite float32: vectors are (dim,), sequences (frames, dim),
        images (bands, frames).
        """
        return _finite(self.compute(self.prepare(y, sr), sr))

    def prepare(self, y: np.ndarray, sr: int) -> np.ndarray:
        """The signal as ``compute`` takes it: mono float32 at ``sample_rate``, padded to ``min_samples_s``."""
        if sr != self.sample_rate:
            raise ValueError(f"{self.name} expects {self.sample_rate} Hz audio, got {sr} Hz")
        y = np.asarray(y, dtype=np.float32)
        if y.ndim != 1:
            raise ValueError(f"{self.name} expects mono audio, got shape {y.shape}")
        n_min = int(self.min_samples_s * sr)
        return np.pad(y, (0, n_min - len(y))) if len(y) < n_min else y

    @abstractmethod
    def compute(self, y: np.ndarray, sr: int) -> np.ndarray: ...

    # Sets that run a network (``ssl``) load it once per process or actor (``load``) and take batches
    # of signals (``compute_many``); the others compute one signal at a time.
    batched: ClassVar[bool] = False

    def load(self, device: str = "cpu", threads: int | None = None) -> Any:
        """What ``compute_many`` runs on (a model on ``device``, using ``threads`` CPU threads); nothing for
        the per-signal sets."""
        return None

    def compute_many(self, ys: list[np.ndarray], runner: Any) -> list[np.ndarray]:
        return [self.compute(y, self.sample_rate) for y in ys]

    def extract_many(self, ys: list[np.ndarray], sr: int, runner: Any = None) -> list[np.ndarray | Exception]:
        """``extract`` of each signal, batched where the set is; a signal that fails is its exception (the
        batch is retried one signal at a time, so one bad signal never fails the others)."""
        return self.finish_many([self.front_or_error(y, sr) for y in ys], runner)

    # A batched set's work in two parts, so that GPU actors run only the model: ``front`` (in CPU tasks: what
    # the model reads, and a vector appended after the model's output) and ``model_many`` (on the actors).
    def front(self, y: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        """(what ``model_many`` reads, a vector appended after its output): the prepared signal and nothing."""
        return self.prepare(y, sr), np.zeros(0, np.float32)

    def front_or_error(self, y: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray] | Exception:
        try:
            return self.front(y, sr)
        except Exception as exc:
            return exc

    def model_many(self, inputs: list[np.ndarray], runner: Any) -> list[np.ndarray]:
        """The model's part: each ``front`` input's features (before the appended vector)."""
        return self.compute_many(inputs, runner)

    def finish_many(self, fronts: list[tuple[np.ndarray, np.ndarray] | Exception], runner: Any = None
                    ) -> list[np.ndarray | Exception]:  # fmt: skip
        """Each ``front``'s features (``model_many`` on the batch, then its appended vector), or its exception."""

        def joined(x: np.ndarray, extra: np.ndarray) -> np.ndarray:
            return _finite(np.concatenate([x, extra]) if extra.size else x)

        out: list[np.ndarray | Exception] = list(fronts)  # type: ignore[arg-type]
        ok = [j for j, f in enumerate(fronts) if not isinstance(f, Exception)]
        try:
            for j, x in zip(ok, self.model_many([fronts[j][0] for j in ok], runner), strict=True):  # type: ignore[index]
                out[j] = joined(x, fronts[j][1])  # type: ignore[index]
        except Exception:
            for j in ok:
                try:
                    out[j] = joined(self.model_many([fronts[j][0]], runner)[0], fronts[j][1])  # type: ignore[index]
                except Exception as exc:
                    out[j] = exc
        return out

    def feature_names(self) -> list[str] | None:
        """Names of the vector's dimensions, where the set has them."""
        return None


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module without a spec
        return False


def _finite(x: Any) -> np.ndarray:
    return np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)


FUNCTIONALS = ("mean", "std", "min", "max", "p10", "p50", "p90", "range", "skew", "slope")


def functionals(x: np.ndarray, prefix: str | list[str], which: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    """Summarise each column of ``x`` (frames, d) over time.

    ``which`` names functionals from: mean std min max p10 p50 p90 range skew
    slope. Empty input (no frames selected) gives zeros, never NaN.
    """
    unknown = set(which) - set(FUNCTIONALS)
    if unknown:
        raise ValueError(f"unknown functional(s) {sorted(unknown)}; known: {', '.join(FUNCTIONALS)}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    d = x.shape[1]
    names = prefix if isinstance(prefix, list) else [f"{prefix}{i}" for i in range(d)]
    if len(x) == 0:
        return np.zeros(d * len(which), np.float32), [f"{n}_{w}" for w in which for n in names]
    out = []
    pct = None
    if any(w in ("p10", "p50", "p90", "range") for w in which):
        pct = np.percentile(x, [10, 50, 90], axis=0)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    for w in which:
        if w == "mean":
            out.append(mean)
        elif w == "std":
            out.append(std)
        elif w == "min":
            out.append(x.min(axis=0))
        elif w == "max":
            out.append(x.max(axis=0))
        elif w == "p10":
            out.append(pct[0])
        elif w == "p50":
            out.append(pct[1])
        elif w == "p90":
            out.append(pct[2])
        elif w == "range":
            out.append(pct[2] - pct[0])
        elif w == "skew":
            out.append(((x - mean) ** 3).mean(axis=0) / np.maximum(std, 1e-8) ** 3)
        else:  # slope
            t = np.arange(len(x), dtype=np.float64)
            t -= t.mean()
            denom = (t * t).sum()
            out.append((t @ (x - mean)) / denom if denom > 0 else np.zeros(d))
    return np.concatenate(out).astype(np.float32), [f"{n}_{w}" for w in which for n in names]
