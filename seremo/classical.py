"""Classical model families as scikit-learn pipelines, with their default search spaces.

Every family is a ``Pipeline`` whose preprocessing (scaling, optional feature
selection) sits inside it, so it is fitted on training folds only: leakage from
test speakers is impossible by construction. Search spaces are plain dicts of
lists, overridable from YAML (``models: {svm_rbf: {C: [1, 10]}}``).

A pipeline takes one of three inputs (``INPUTS``), told apart by the array it is given:

- ``audio``: a float matrix (rows, dims) of a vector feature set; scaled.
- ``text``: a 1-D object array of transcripts; word 1-2-gram and character 2-5-gram
  TF-IDF (``TEXT_VECTORISER``), so the vocabulary and the IDF are fitted on the
  training rows only, like the scaler.
- ``audio+text``: a 2-D object array, the audio dims then the transcript in the last
  column (``fusion_input``); feature-level fusion in one pipeline. The audio block is
  scaled then L2-normalised per row, so each block (audio, words, characters) has
  unit norm and neither drowns the other in a linear model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import MultinomialNB
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import MinMaxScaler, Normalizer, StandardScaler
from sklearn.svm import SVC, LinearSVC

from seremo.errors import ConfigError

SEED = 0
INPUTS = ("audio", "text", "audio+text")
# Families that suit sparse TF-IDF input: searched by default when the inputs hold text.
TEXT_FAMILIES = ("logreg", "svm_linear", "naive_bayes")
# The TF-IDF blocks, in one place: words (with "!" and "?", which carry emotion) and characters within words
# (robust to ASR misspellings and inflection); sublinear tf; terms in fewer than 2 training rows are dropped.
TEXT_VECTORISER = {
    "words": {"analyzer": "word", "ngram_range": (1, 2), "token_pattern": r"(?u)\b\w+\b|[!?]", "min_df": 2,
              "sublinear_tf": True, "max_features": 50000},
    "chars": {"analyzer": "char_wb", "ngram_range": (2, 5), "min_df": 2, "sublinear_tf": True,
              "max_features": 100000},
}  # fmt: skip


def inputs_of(X: Any) -> str:
    """Which input a model array is: ``audio`` (float matrix), ``text`` (1-D strings) or ``audio+text``."""
    X = np.asarray(X) if not hasattr(X, "dtype") else X
    if X.dtype != object:
        return "audio"
    return "text" if X.ndim == 1 else "audio+text"


def fusion_input(audio: np.ndarray, text: Any) -> np.ndarray:
    """The ``audio+text`` model input: audio dims, then the transcript as the last column."""
    out = np.empty((len(audio), audio.shape[1] + 1), dtype=object)
    out[:, :-1] = audio
    out[:, -1] = np.asarray(text, dtype=object)
    return out


def text_vectoriser() -> FeatureUnion:
    return FeatureUnion([(name, TfidfVectorizer(**kw)) for name, kw in TEXT_VECTORISER.items()])


@dataclass(frozen=True)
class Family:
    """A model family: how to build its pipeline, and the grid searched by default."""

    name: str
    space: dict[str, list[Any]]
    make: Callable[[dict[str, Any]], BaseEstimator]
    scaler: str = "standard"  # "standard", or "minmax" for models that need non-negative input
    # Seconds of one fit on EmoDB's whisper vectors (430 rows, 466 dims, one core), measured: the search
    # starts the slowest trials first so both cores finish together (benchmarks/tune_time.py).
    cost: float = 0.1

    def build(self, params: dict[str, Any], inputs: str = "audio") -> Pipeline:
        """The pipeline for ``params`` and ``inputs`` (``select_k`` adds univariate feature selection)."""
        params = dict(params)
        select_k = params.pop("select_k", None)
        unknown = set(params) - set(self.space) - {"select_k"}
        if unknown:
            raise ConfigError(
                f"model {self.name!r} has no hyperparameter(s) {sorted(unknown)}; "
                f"it takes: {', '.join(sorted(self.space))}, select_k"
            )
        scaler = MinMaxScaler(clip=True) if self.scaler == "minmax" else StandardScaler()
        if inputs == "audio":
            steps: list[tuple[str, Any]] = [("scale", scaler)]
        elif inputs == "text":
            steps = [("vectorise", text_vectoriser())]
        elif inputs == "audio+text":
            audio = Pipeline([("scale", scaler), ("unit", Normalizer())])
            steps = [("blocks", ColumnTransformer([("audio", audio, slice(0, -1)), ("text", text_vectoriser(), -1)]))]
        else:
            raise ConfigError(f"inputs {inputs!r}: choose one of {', '.join(INPUTS)}")
        if select_k:
            steps.append(("select", SelectKBest(f_classif, k=int(select_k))))
        steps.append(("model", self.make(params)))
        return Pipeline(steps)


class XGBPipeline(ClassifierMixin, BaseEstimator):
    """XGBoost on label-encoded classes (XGBoost wants 0..k-1), scikit-learn style."""

    def __init__(self, **params: Any):
        self.params = params

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return dict(self.params)

    def set_params(self, **params: Any) -> XGBPipeline:
        self.params.update(params)
        return self

    def fit(self, X: np.ndarray, y: np.ndarray) -> XGBPipeline:
        from xgboost import XGBClassifier

        self.classes_ = np.unique(y)
        codes = np.searchsorted(self.classes_, y)
        counts = np.bincount(codes, minlength=len(self.classes_))
        weights = (len(codes) / (len(self.classes_) * counts))[codes]  # balanced classes
        # 32 histogram bins, not 256: on a few hundred to a few thousand rows the split search over the bins
        # is most of the time; 4x faster on EmoDB's whisper vectors at the same UAR (docs/results.md)
        self.booster_ = XGBClassifier(
            tree_method="hist", max_bin=32, n_jobs=1, random_state=SEED, eval_metric="mlogloss", **self.params
        )
        self.booster_.fit(X, codes, sample_weight=weights)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.booster_.predict_proba(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def calibrated(estimator: BaseEstimator) -> CalibratedClassifierCV:
    """Probabilities for margin classifiers (SVMs): Platt scaling on 3 internal folds.

    The internal folds split the training data only, so test speakers stay unseen.
    """
    return CalibratedClassifierCV(estimator, method="sigmoid", cv=3, ensemble=False)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "logreg",
            {"C": [0.01, 0.03, 0.1, 0.3, 1.0]},
            lambda p: LogisticRegression(max_iter=3000, class_weight="balanced", **p),
            cost=0.04,
        ),
        Family(
            "svm_linear",
            {"C": [0.001, 0.003, 0.01, 0.03]},
            lambda p: calibrated(LinearSVC(class_weight="balanced", max_iter=20000, random_state=SEED, **p)),
            cost=0.35,
        ),
        Family(
            "svm_rbf",
            {"C": [1.0, 10.0, 100.0], "gamma": ["scale", 0.001]},
            lambda p: calibrated(SVC(kernel="rbf", class_weight="balanced", random_state=SEED, **p)),
            cost=0.14,
        ),
        Family(
            "random_forest",
            {"n_estimators": [200], "max_features": ["sqrt", 0.1]},
            lambda p: RandomForestClassifier(
                class_weight="balanced_subsample", n_jobs=1, random_state=SEED, **p
            ),
            cost=1.1,
        ),
        Family(
            "xgboost",
            {"n_estimators": [200], "max_depth": [3, 5], "learning_rate": [0.1]},
            lambda p: XGBPipeline(subsample=0.8, colsample_bytree=0.5, **p),
            cost=1.3,
        ),
        Family(
            "naive_bayes",
            {"alpha": [0.1, 1.0]},
            lambda p: MultinomialNB(**p),
            scaler="minmax",
            cost=0.01,
        ),
        Family(
            "mlp",
            {"hidden_layer_sizes": [[256]], "alpha": [0.01, 0.1]},
            lambda p: MLPClassifier(
                max_iter=600, early_stopping=False, random_state=SEED,
                **{**p, "hidden_layer_sizes": tuple(p.get("hidden_layer_sizes", (256,)))},
            ),
            cost=1.4,
        ),
    )
}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(f"unknown model family {name!r}; choose from: {', '.join(FAMILIES)}") from None


def grid(family: Family, override: dict[str, list[Any]] | None = None) -> list[dict[str, Any]]:
    """Every combination of the family's space, with ``override`` replacing entries."""
    import itertools

    space = dict(family.space)
    for key, values in (override or {}).items():
        space[key] = values if isinstance(values, list) else [values]
    keys = sorted(space)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(space[k] for k in keys))]


def fit(family: str, params: dict[str, Any], X: np.ndarray, y: np.ndarray) -> Pipeline:
    """A fitted pipeline of ``family``; its inputs follow ``X`` (see ``inputs_of``)."""
    return clone(get_family(family).build(params, inputs_of(X))).fit(X, y)
