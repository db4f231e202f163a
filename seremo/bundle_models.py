"""What each model kind of a bundle loads, and one interface over them: ``predict_proba``.

A bundle's ``model_kind`` names one class here (``MODEL_KINDS``). Each class loads its
weights without running code (skops with an allowlist, XGBoost's UBJ, safetensors),
says whether its own classes are the ones ``bundle.json`` lists, and predicts class
probabilities for features as the bundle takes them. :class:`seremo.bundle.Bundle`
only verifies and delegates, so a new kind is one class, not a branch in every caller.
"""

from __future__ import annotations

import math
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from seremo.errors import BundleError

if TYPE_CHECKING:
    from seremo.bundle import Bundle, BundleMeta, FeatureSetMeta

META = "bundle.json"  # the bundle's own description (seremo.bundle)

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
    "scipy.sparse._csr.csr_matrix",  # a fitted text or fusion pipeline's sparse state (skops stores it as npz)
]


def skops_io() -> Any:
    """``skops.io``, imported without dragging torch in.

    Importing ``skops.io`` lists every scikit-learn estimator (``all_estimators``), and
    that package walk imports ``sklearn.externals.array_api_compat.torch``, hence torch:
    3.6 s and 210 MiB in every process that loads a bundle (each scoring worker, the
    driver). The walk skips packages that fail to import and lists no class from
    ``externals``, so while it runs torch is hidden (unless it is loaded already): the
    trusted-type list comes out the same (``tests/test_bundle_integrity.py`` checks), in 1.8 s and 30 MiB.
    """
    if "skops.io" in sys.modules or "torch" in sys.modules:
        import skops.io

        return skops.io
    sys.modules["torch"] = None  # type: ignore[assignment]  # an import of torch raises ImportError
    try:
        import skops.io
    finally:
        del sys.modules["torch"]
        for name in [m for m in sys.modules if m.startswith("sklearn.externals.array_api_compat.torch")]:
            del sys.modules[name]
    return skops.io


def load_skops(path: Path) -> Any:
    """A skops file whose every type is in ``SKOPS_TRUSTED``; else one BundleError naming the others."""
    sio = skops_io()
    untrusted = set(sio.get_untrusted_types(file=path)) - set(SKOPS_TRUSTED)
    if untrusted:
        raise BundleError(f"{path}: holds types seremo does not load: {', '.join(sorted(untrusted))}")
    return sio.load(path, trusted=sorted(set(sio.get_untrusted_types(file=path))))


def valid_weights(weights: Any, n: int) -> bool:
    """One finite, non-negative number per member, summing above zero (else every row would get NaN)."""
    return (isinstance(weights, list) and len(weights) == n
            and all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
                    for w in weights) and sum(weights) > 0)  # fmt: skip


def ensemble_input(members: list[BundleMeta]) -> tuple[FeatureSetMeta, str, str]:
    """The one input (feature set, inputs, normalisation) a ``seremo ensemble`` of these members takes.

    Members that read audio must agree on the feature set and its normalisation (a bundle
    extracts one feature set per segment); members that read transcripts only take them
    from any of it. Members of different inputs (audio, text, audio+text) make an
    ``audio+text`` ensemble, and each member gets its part (``input_view``). A ValueError
    says which two members disagree.
    """
    audio = [m for m in members if m.inputs != "text"]
    ref = audio[0] if audio else members[0]
    for m in audio[1:]:
        if (m.feature_set, m.normalisation) != (ref.feature_set, ref.normalisation):
            raise ValueError(f"{_describe(m)} and {_describe(ref)}: members that read audio must share the feature "
                             "set and its normalisation")  # fmt: skip
    inputs = {m.inputs for m in members}
    return ref.feature_set, (inputs.pop() if len(inputs) == 1 else "audio+text"), ref.normalisation


def _describe(meta: BundleMeta) -> str:
    fs = meta.feature_set
    return f"{meta.model_name} takes {fs.name} v{fs.version} ({meta.inputs}, normalisation {meta.normalisation})"


def join_inputs(audio: Any, texts: Any) -> Any:
    """The ``audio+text`` input: a vector matrix gives ``classical.fusion_input``'s rows (what a pipeline
    takes), a list of sequences or images gives (audio, transcript) pairs (what a deep fusion model takes)."""
    if isinstance(audio, np.ndarray):
        from seremo.classical import fusion_input

        return fusion_input(audio, texts)
    return list(zip(audio, list(texts), strict=True))


def input_view(X: Any, have: str, want: str) -> Any:
    """The part of an ``audio+text`` input (``join_inputs``) a member of ``want`` inputs reads: fusion rows
    of a vector set (audio dims, transcript last) or (audio, transcript) pairs give their audio, or their
    transcripts."""
    if have == want or want == "audio+text":
        return X
    if isinstance(X, np.ndarray):  # classical.fusion_input's rows
        return X[:, :-1].astype(np.float32) if want == "audio" else X[:, -1]
    pairs = list(X)
    return [a for a, _ in pairs] if want == "audio" else np.asarray([t for _, t in pairs], dtype=object)


class BundleModel(ABC):
    """A bundle's loaded model: class probabilities for features as the bundle takes them."""

    kind: ClassVar[str]
    files: ClassVar[tuple[str, ...]]  # the weights this kind loads: checked before loading

    @classmethod
    @abstractmethod
    def load(cls, root: Path, meta: BundleMeta, load_bundle: Callable[[Path], Bundle]) -> BundleModel:
        """The weights in ``root``, as ``meta`` describes them; ``load_bundle`` loads (and verifies) a member
        bundle, for kinds that hold others."""

    @abstractmethod
    def predict_proba(self, X: Any) -> np.ndarray:
        """(rows, classes) probabilities, columns in the bundle's class order."""

    @abstractmethod
    def class_problem(self, classes: list[str]) -> str | None:
        """How the model's own classes differ from ``classes`` ("the model has 3 outputs"), else None."""

    def to(self, device: str) -> None:  # noqa: B027 - a no-op unless a kind has weights to move
        """Move the weights to a device; only torch models have anywhere to go."""


def _as_input(X: Any, inputs: str) -> np.ndarray:
    """Audio vectors as float32; transcripts (1-D) and fusion rows (audio dims + transcript) as objects."""
    return np.asarray(X, np.float32) if inputs == "audio" else np.asarray(X, dtype=object)


class SklearnModel(BundleModel):
    """A scikit-learn pipeline; it keeps its class names, so names and order are checked."""

    kind = "sklearn"
    files = ("model.skops",)

    def __init__(self, pipeline: Any, inputs: str):
        self.pipeline, self.inputs = pipeline, inputs

    @classmethod
    def load(cls, root: Path, meta: BundleMeta, load_bundle: Callable[[Path], Bundle]) -> SklearnModel:
        return cls(load_skops(root / "model.skops"), meta.inputs)

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.asarray(self.pipeline.predict_proba(_as_input(X, self.inputs)))

    def class_problem(self, classes: list[str]) -> str | None:
        own = [str(c) for c in getattr(self.pipeline, "classes_", [])]
        return None if own == classes else f"the model has {len(own)} ({', '.join(own)})"


class XGBoostModel(BundleModel):
    """Preprocessing (skops) before an XGBoost booster (its own UBJ format); it knows only its output count."""

    kind = "xgboost"
    files = ("preprocess.skops", "model.ubj")

    def __init__(self, preprocess: Any, booster: Any, inputs: str):
        self.preprocess, self.booster, self.inputs = preprocess, booster, inputs

    @classmethod
    def load(cls, root: Path, meta: BundleMeta, load_bundle: Callable[[Path], Bundle]) -> XGBoostModel:
        from xgboost import XGBClassifier

        booster = XGBClassifier()
        booster.load_model(str(root / "model.ubj"))
        return cls(load_skops(root / "preprocess.skops"), booster, meta.inputs)

    def predict_proba(self, X: Any) -> np.ndarray:
        X = _as_input(X, self.inputs)
        return np.asarray(self.booster.predict_proba(self.preprocess.transform(X) if self.preprocess is not None else X))

    def class_problem(self, classes: list[str]) -> str | None:
        n = int(self.booster.n_classes_)
        return None if n == len(classes) else f"the model has {n} outputs"


class TorchModel(BundleModel):
    """A torch module (safetensors + its architecture's arguments); it takes sequences and images too."""

    kind = "torch"
    files = ("model.safetensors",)

    def __init__(self, module: Any):
        self.module = module

    @classmethod
    def load(cls, root: Path, meta: BundleMeta, load_bundle: Callable[[Path], Bundle]) -> TorchModel:
        from seremo.nets import load_module

        return cls(load_module(root, meta))

    def predict_proba(self, X: Any) -> np.ndarray:
        from seremo.nets import predict_proba

        return predict_proba(self.module, X)

    def class_problem(self, classes: list[str]) -> str | None:
        from seremo.nets import model_classes

        n = model_classes(self.module)
        return None if n == len(classes) else f"the model has {n} outputs"

    def to(self, device: str) -> None:
        self.module.to(device)


class EnsembleModel(BundleModel):
    """Member bundles in ``members/<i>/``: tune's soft vote (no rule: the mean, one normalisation for all),
    or ``seremo ensemble``'s rule and weights (whole bundles, each reading its part of the input)."""

    kind = "ensemble"
    files = ("members/0/bundle.json",)

    def __init__(self, members: list[Bundle], inputs: str, rule: str, weights: list[float] | None):
        self.members, self.inputs, self.rule, self.weights = members, inputs, rule, weights

    @classmethod
    def load(cls, root: Path, meta: BundleMeta, load_bundle: Callable[[Path], Bundle]) -> EnsembleModel:
        from seremo import vote

        listed = meta.params.get("members")
        if not isinstance(listed, list) or not listed:
            raise BundleError(f"{root / META}: an ensemble lists no members")
        members = [load_bundle(root / "members" / str(i)) for i in range(len(listed))]
        if "rule" in meta.params:
            try:
                why = "" if ensemble_input([m.meta for m in members]) == (
                    meta.feature_set, meta.inputs, meta.normalisation) else "it records another"  # fmt: skip
            except ValueError as exc:
                why = str(exc)
            if why:
                raise BundleError(f"{root / META}: its members do not take the ensemble's input ({why})")
        for i, m in enumerate(members if "rule" not in meta.params else []):
            if (m.meta.feature_set, m.meta.normalisation, m.meta.inputs) != (meta.feature_set, "none", meta.inputs):
                raise BundleError(f"{root / 'members' / str(i)}: does not take the ensemble's input")
        rule, weights = meta.params.get("rule", "average"), meta.params.get("weights")
        if rule not in vote.RULES or (rule == "weighted" and not valid_weights(weights, len(members))):
            raise BundleError(f"{root / META}: rule {rule!r} with weights {weights!r} is not a valid ensemble")
        return cls(members, meta.inputs, rule, weights)

    def predict_proba(self, X: Any) -> np.ndarray:
        from seremo import vote

        return vote.combine([m.predict_proba(input_view(X, self.inputs, m.meta.inputs)) for m in self.members],
                            self.rule, self.weights)  # fmt: skip

    def class_problem(self, classes: list[str]) -> str | None:
        for i, member in enumerate(self.members):
            if member.classes != classes:
                return f"member {i} has {', '.join(member.classes)}"
        return None

    def to(self, device: str) -> None:
        for m in self.members:
            m.model.to(device)


MODEL_KINDS: dict[str, type[BundleModel]] = {c.kind: c for c in (SklearnModel, XGBoostModel, TorchModel, EnsembleModel)}
