"""Model bundles: a directory with ``bundle.json`` beside weights that load without running code.

- scikit-learn pipelines: ``skops.io`` (no pickle), loaded with an explicit
  allowlist of the estimator types seremo builds;
- XGBoost: its preprocessing via skops plus the booster in XGBoost's own UBJ format;
- torch: a ``safetensors`` state dict plus the architecture's arguments in JSON.

``bundle.json`` records the format version, model kind and name, the feature set
(name, kind, version, parameters), the classes in order, the sample rate, what
it was trained on, its metrics, the seremo version, and a SHA-256 for every
file: loading checks every field and every checksum and fails with one line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from seremo import __version__, config
from seremo.errors import SeremoError

FORMAT_VERSION = 1
META = "bundle.json"

# Every type a seremo classical pipeline may contain; anything else is refused at load time.
SKOPS_TRUSTED = [
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._data.MinMaxScaler",
    "sklearn.feature_selection._univariate_selection.SelectKBest",
    "sklearn.feature_selection._univariate_selection.f_classif",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.svm._classes.SVC",
    "sklearn.svm._classes.LinearSVC",
    "sklearn.calibration.CalibratedClassifierCV",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._tree.Tree",
    "sklearn.naive_bayes.MultinomialNB",
    "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.utils._bunch.Bunch",
    "numpy.random._mt19937.MT19937",
    "numpy.random.mtrand.RandomState",
    "builtins.slice",
]


class BundleError(SeremoError):
    """A bundle that is missing, incomplete, tampered with or from another version."""


class FeatureSetMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    kind: Literal["vector", "sequence", "image"]
    version: str
    params: dict[str, Any]


class BundleMeta(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    format_version: int
    model_kind: Literal["sklearn", "xgboost", "torch"]
    model_name: str
    params: dict[str, Any] = Field(default_factory=dict)
    feature_set: FeatureSetMeta
    classes: list[str] = Field(min_length=2)
    sample_rate: int = Field(gt=0)
    training: dict[str, Any]
    metrics: dict[str, Any]
    seremo_version: str
    files: dict[str, str] = Field(min_length=1)

    @field_validator("format_version")
    @classmethod
    def _known_format(cls, v: int) -> int:
        if v != FORMAT_VERSION:
            raise ValueError(f"format {v} is not {FORMAT_VERSION}; re-export it with this seremo")
        return v

    @field_validator("classes")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("classes repeat")
        return v


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Bundle:
    """A loaded model: ``predict_proba(features)`` columns follow ``classes``."""

    path: Path
    meta: BundleMeta
    model: Any  # a fitted pipeline, or (preprocess, booster), or a torch module

    @property
    def classes(self) -> list[str]:
        return list(self.meta.classes)

    @property
    def feature_set(self):
        from seremo import features

        return features.from_description(self.meta.feature_set.model_dump())

    def predict_proba(self, X: Any) -> np.ndarray:
        kind = self.meta.model_kind
        if kind == "sklearn":
            return np.asarray(self.model.predict_proba(np.asarray(X, np.float32)))
        if kind == "xgboost":
            pre, booster = self.model
            Xt = pre.transform(np.asarray(X, np.float32)) if pre is not None else np.asarray(X, np.float32)
            return np.asarray(booster.predict_proba(Xt))
        from seremo.nets import predict_proba  # torch models take sequences/images too

        return predict_proba(self.model, X)

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.classes)[np.argmax(self.predict_proba(X), axis=1)]


def write_meta(out: Path, meta: dict[str, Any]) -> None:
    meta["files"] = {p.name: _sha256(p) for p in sorted(out.iterdir()) if p.name != META}
    BundleMeta.model_validate(meta)  # never write a bundle that would not load
    (out / META).write_text(json.dumps(meta, indent=2, default=_json_default))


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def base_meta(
    *, model_kind: str, model_name: str, params: dict[str, Any], feature_set: dict[str, Any],
    classes: list[str], training: dict[str, Any], metrics: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    return {
        "format_version": FORMAT_VERSION,
        "model_kind": model_kind,
        "model_name": model_name,
        "params": params,
        "feature_set": feature_set,
        "classes": list(classes),
        "sample_rate": int(feature_set["params"]["sample_rate"]),
        "training": training,
        "metrics": metrics,
        "seremo_version": __version__,
    }


def save_classical(out: str | Path, pipeline: Any, meta: dict[str, Any]) -> Path:
    """Write a fitted classical pipeline (skops, or skops + XGBoost UBJ) as a bundle."""
    import skops.io as sio

    from seremo.classical import XGBPipeline

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    final = pipeline.steps[-1][1]
    if list(pipeline.classes_) != list(meta["classes"]):
        raise ValueError("bundle classes must follow the model's class order")
    if isinstance(final, XGBPipeline):
        from sklearn.pipeline import Pipeline

        sio.dump(Pipeline(pipeline.steps[:-1]), out / "preprocess.skops")
        final.booster_.save_model(str(out / "model.ubj"))
        meta = {**meta, "model_kind": "xgboost"}
    else:
        sio.dump(pipeline, out / "model.skops")
        meta = {**meta, "model_kind": "sklearn"}
    write_meta(out, meta)
    return out


def _load_skops(path: Path) -> Any:
    import skops.io as sio

    untrusted = set(sio.get_untrusted_types(file=path)) - set(SKOPS_TRUSTED)
    if untrusted:
        raise BundleError(f"{path}: holds types seremo does not load: {', '.join(sorted(untrusted))}")
    return sio.load(path, trusted=sorted(set(sio.get_untrusted_types(file=path))))


def load(path: str | Path) -> Bundle:
    """Load and verify a bundle; any problem is one BundleError line naming the file."""
    root = Path(path)
    meta_path = root / META
    if not meta_path.is_file():
        raise BundleError(f"{root}: not a model bundle (no {META}); point --model at a run's model/ directory")
    try:
        raw = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{meta_path}: is not valid JSON ({exc})") from None
    meta = config.validate(BundleMeta, raw, str(meta_path), "field ", error=BundleError)
    for name, digest in meta.files.items():
        f = root / name
        if not f.is_file():
            raise BundleError(f"{f}: listed in {META} but missing; the bundle is incomplete")
        if _sha256(f) != digest:
            raise BundleError(f"{f}: does not match its checksum in {META}; the file was changed or damaged")
    try:
        model = _load_model(root, meta)
    except BundleError:
        raise
    except Exception as exc:  # a file that passed its checksum yet does not decode
        raise BundleError(f"{root}: the {meta.model_kind} weights do not load ({type(exc).__name__}: {exc})") from None
    bundle = Bundle(root, meta, model)
    bundle.feature_set  # noqa: B018 - validates the feature set's name, parameters and version
    return bundle


def _load_model(root: Path, meta: BundleMeta) -> Any:
    if meta.model_kind == "sklearn":
        return _load_skops(root / "model.skops")
    if meta.model_kind == "xgboost":
        from xgboost import XGBClassifier

        booster = XGBClassifier()
        booster.load_model(str(root / "model.ubj"))
        return (_load_skops(root / "preprocess.skops"), booster)
    from seremo.nets import load_module

    return load_module(root, meta)
