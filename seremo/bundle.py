"""Model bundles: a directory with ``bundle.json`` beside weights that load without running code.

- scikit-learn pipelines: ``skops.io`` (no pickle), loaded with an explicit
  allowlist of the estimator types seremo builds;
- XGBoost: its preprocessing via skops plus the booster in XGBoost's own UBJ format;
- torch: a ``safetensors`` state dict plus the architecture's arguments in JSON.

``bundle.json`` records the format version, model kind and name, the feature set
(name, kind, version, parameters), the classes in order, the sample rate, what
it was trained on, its metrics, the seremo version, a SHA-256 for every file,
and ``bundle_sha256``: the SHA-256 of its own canonical JSON without that field.
``training_ids.json`` (listed and checksummed like the weights; absent from bundles
written before it) fingerprints the rows the shipped model was fitted on, early-stopping
rows included: the first 16 hex digits of each ``utterance_id``'s SHA-256, sorted, so
``seremo evaluate`` can tell a training row from an unseen one without the ids themselves.
As that covers the per-file checksums, one digest identifies the whole bundle
(``Bundle.model_id``), and an edit to ``bundle.json`` itself (swapped or removed
class names, another model kind) is caught, not trusted.

Loading checks, in order: every field; that the feature set exists in this
seremo; ``bundle_sha256``; every file's checksum; the files the model kind
needs; that the weights load; and that the classes in ``bundle.json`` match
the model's own (sklearn: names and order; xgboost and torch: their number).
Any failure is one ``BundleError`` line naming the file: never a stack from a
Ray task or from XGBoost's C++ core.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from seremo import __version__, config, storage
from seremo.bundle_models import (  # noqa: F401  (ensemble_input, input_view, join_inputs: part of bundle's API)
    META,
    MODEL_KINDS,
    BundleModel,
    ensemble_input,
    input_view,
    join_inputs,
    skops_io,
)
from seremo.errors import BundleError, SeremoError

FORMAT_VERSION = 2  # 2: bundle_sha256 covers bundle.json itself
TRAINING_IDS = "training_ids.json"
ID_HEX = 16  # hex digits of sha256(utterance_id) kept per training row: collisions are negligible below 10^9 rows
SELF_DIGEST = "bundle_sha256"

class FeatureSetMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    kind: Literal["vector", "sequence", "image", "text"]
    version: str
    params: dict[str, Any]


class BundleMeta(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    format_version: int
    model_kind: Literal["sklearn", "xgboost", "torch", "ensemble"]
    model_name: str
    params: dict[str, Any] = Field(default_factory=dict)
    feature_set: FeatureSetMeta
    # How features are normalised before the model, as it was evaluated: "speaker" z-scores each
    # speaker (a call channel when scoring) with its own statistics, "corpus" each corpus.
    normalisation: Literal["none", "speaker", "corpus"] = "none"
    # What the model takes (classical.INPUTS): the feature set's vectors, the transcript, or both (fusion).
    inputs: Literal["audio", "text", "audio+text"] = "audio"
    classes: list[str] = Field(min_length=2)
    sample_rate: int = Field(gt=0)
    training: dict[str, Any]
    metrics: dict[str, Any]
    seremo_version: str
    files: dict[str, str] = Field(min_length=1)
    bundle_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("format_version")
    @classmethod
    def _known_format(cls, v: int) -> int:
        if v != FORMAT_VERSION:
            raise ValueError(f"format {v} is not {FORMAT_VERSION}; re-export it with this seremo")
        return v

    @field_validator("files")
    @classmethod
    def _confined(cls, v: dict[str, str]) -> dict[str, str]:
        outside = next((name for name in v if not confined_name(name)), None)
        if outside is not None:
            raise ValueError(f"names {outside!r}, outside the bundle folder; every file must lie inside it")
        return v

    @field_validator("classes")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("classes repeat")
        return v


def confined_name(name: Any) -> bool:
    """True for a relative name that stays inside the bundle folder (``a/b.json``; not ``../x``, ``/x``, ``a\\b``).

    A bundle is someone else's file: its names decide what seremo reads, and a re-run of
    its run dir removes them, so a name that leaves the folder is refused before either.
    """
    if not isinstance(name, str) or not name or name.startswith("/") or "\\" in name or "\0" in name:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def meta_digest(meta: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``meta`` without its own digest.

    Canonical (sorted keys, compact separators) so that key order and whitespace,
    which JSON does not give a meaning, do not change a bundle's identity.
    """
    body = {k: v for k, v in meta.items() if k != SELF_DIGEST}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()


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
    model: BundleModel  # one class per model_kind (seremo.bundle_models)

    @property
    def classes(self) -> list[str]:
        return list(self.meta.classes)

    @property
    def model_id(self) -> str:
        """``name:digest``: any change to the bundle (weights or bundle.json) gives another id."""
        return f"{self.meta.model_name}:{self.meta.bundle_sha256[:12]}"

    @property
    def feature_set(self):
        from seremo import features

        return features.from_description(self.meta.feature_set.model_dump())

    def training_ids(self) -> frozenset[str] | None:
        """The hashed ids (``id_hash``) of the rows the model was fitted on; None for a bundle that predates them."""
        if TRAINING_IDS not in self.meta.files:
            return None
        path = self.path / TRAINING_IDS
        try:
            ids = json.loads(path.read_text())["ids"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"{path}: is not a training-ids file ({exc}); re-export the bundle") from None
        if not isinstance(ids, list) or not all(isinstance(i, str) and re.fullmatch(f"[0-9a-f]{{{ID_HEX}}}", i)
                                                for i in ids):  # fmt: skip
            raise BundleError(f"{path}: ids must be {ID_HEX}-hex-digit hashes; re-export the bundle")
        return frozenset(ids)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities for features as the model saw them (normalise first: ``normalisation``)."""
        return self.model.predict_proba(X)

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.classes)[np.argmax(self.predict_proba(X), axis=1)]


def id_hash(utterance_id: str) -> str:
    """A training row's fingerprint: short, fixed-length, and not the id itself (ids may name people)."""
    return hashlib.sha256(str(utterance_id).encode()).hexdigest()[:ID_HEX]


def write_training_ids(out: Path, hashes: Iterable[str]) -> None:
    """``training_ids.json``: the sorted, distinct ``id_hash`` of every training row."""
    body = {"hash": f"sha256(utterance_id)[:{ID_HEX}]", "ids": sorted(set(hashes))}
    (out / TRAINING_IDS).write_text(json.dumps(body, separators=(",", ":")))


def write_meta(out: Path, meta: dict[str, Any], training_ids: Iterable[str] | None = None) -> None:
    """Checksum every file in ``out``, then seal ``bundle.json`` with its own digest.

    ``training_ids`` (the utterance ids the model was fitted on) are written first as
    ``training_ids.json``, so they are listed and checksummed like the weights.
    ``meta`` gets ``files`` and ``bundle_sha256`` (any earlier ones are replaced).
    The digest is taken over the JSON round trip of ``meta``, i.e. exactly what
    ``load`` will read back (numpy scalars as numbers, tuples as lists, keys as strings).
    """
    if training_ids is not None:
        write_training_ids(out, (id_hash(u) for u in training_ids))
    meta.pop(SELF_DIGEST, None)
    meta["files"] = {p.relative_to(out).as_posix(): _sha256(p) for p in sorted(out.rglob("*"))
                     if p.is_file() and p != out / META}  # fmt: skip
    plain = json.loads(json.dumps(meta, default=_json_default))
    meta[SELF_DIGEST] = plain[SELF_DIGEST] = meta_digest(plain)
    BundleMeta.model_validate(plain)  # never write a bundle that would not load
    (out / META).write_text(json.dumps(plain, indent=2))


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


def save_classical(out: str | Path, pipeline: Any, meta: dict[str, Any],
                   training_ids: Iterable[str] | None = None) -> Path:  # fmt: skip
    """Write a fitted classical pipeline (skops, or skops + XGBoost UBJ) as a bundle, with its training ids."""
    sio = skops_io()

    from seremo.classical import XGBPipeline

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _plain_vocabularies(pipeline)
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
    write_meta(out, meta, training_ids)
    return out


def _plain_vocabularies(est: Any) -> None:
    """TF-IDF vocabularies with Python ints, not numpy scalars: skops writes each numpy scalar as a file of
    its own, checking the archive's whole listing each time, so a 70,000-term vocabulary took over an hour
    to save (MELD); as plain ints it is one JSON object (2 s). The mapping itself is unchanged. Walks the
    fitted pipeline: steps, a FeatureUnion's transformers, a ColumnTransformer's fitted ``transformers_``."""
    vocab = getattr(est, "vocabulary_", None)
    if isinstance(vocab, dict):
        est.vocabulary_ = {term: int(i) for term, i in vocab.items()}
    for attr in ("steps", "transformer_list", "transformers_"):
        for item in getattr(est, attr, None) or []:
            _plain_vocabularies(item[1])


def save_tuned(out: str | Path, models: list[Any], members: list[dict[str, Any]], feature_set: dict[str, Any],
               training: dict[str, Any], metrics: dict[str, Any], normalisation: str = "none",
               inputs: str = "audio", training_ids: Iterable[str] | None = None) -> Path:  # fmt: skip
    """A tune run's model: one pipeline, or a soft vote of several (``members/<i>/``, each a bundle).

    ``training_ids``: the utterance ids every member was fitted on (``training_ids.json``)."""
    out = Path(out)
    classes = [str(c) for c in models[0].classes_]

    def meta_for(m: dict[str, Any], norm: str) -> dict[str, Any]:
        meta = base_meta(model_kind="sklearn", model_name=m["family"], params=m["params"], feature_set=feature_set,
                         classes=classes, training=training, metrics=metrics)  # fmt: skip
        return {**meta, "normalisation": norm, "inputs": inputs}

    if len(models) == 1:
        return save_classical(out, models[0], meta_for(members[0], normalisation), training_ids)
    for i, (model, m) in enumerate(zip(models, members, strict=True)):
        save_classical(out / "members" / str(i), model, meta_for(m, "none"))  # members see normalised input
    meta = base_meta(model_kind="ensemble", model_name=f"soft_vote_of_{len(models)}",
                     params={"members": [{"family": m["family"], "params": m["params"]} for m in members]},
                     feature_set=feature_set, classes=classes, training=training, metrics=metrics)  # fmt: skip
    write_meta(out, {**meta, "normalisation": normalisation, "inputs": inputs}, training_ids)
    return out


def save_ensemble(out: str | Path, members: list[Bundle], rule: str, weights: list[float] | None,
                  sources: list[str], training: dict[str, Any], metrics: dict[str, Any]) -> Path:  # fmt: skip
    """A ``seremo ensemble`` bundle: each member bundle copied whole into ``members/<i>/`` (its own
    ``bundle.json`` and checksums kept, so it verifies as it did in its run), and the rule and weights
    in ``params``. The ensemble takes ``ensemble_input`` of its members; its training rows are every
    member's (``training_ids.json`` only where each member records its own)."""
    import shutil

    from seremo import vote

    if rule not in vote.RULES:
        raise ValueError(f"unknown rule {rule!r}")
    feature_set, inputs, normalisation = ensemble_input([m.meta for m in members])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for i, m in enumerate(members):
        shutil.copytree(m.path, out / "members" / str(i))
    meta = base_meta(model_kind="ensemble", model_name=f"{rule}_of_{len(members)}",
                     params={"rule": rule, "weights": weights,
                             "members": [{"model": m.meta.model_name, "model_id": m.model_id, "run": src}
                                         for m, src in zip(members, sources, strict=True)]},
                     feature_set=feature_set.model_dump(), classes=members[0].meta.classes, training=training,
                     metrics=metrics)  # fmt: skip
    known = [m.training_ids() for m in members]
    if all(ids is not None for ids in known):  # else one member's rows are unknown, so the ensemble's are
        write_training_ids(out, frozenset().union(*known))
    write_meta(out, {**meta, "normalisation": normalisation, "inputs": inputs})
    return out


def load(path: str | Path) -> Bundle:
    """Load and verify a bundle (a directory, or a URI such as s3://.../model); problems are one BundleError line."""
    if storage.is_uri(str(path)):  # verified and loaded from a local copy; errors name the URI
        local = storage.local_copy(str(path))
        try:
            return load(local)
        except BundleError as exc:
            raise BundleError(str(exc).replace(str(local), str(path).rstrip("/"))) from None
    root = Path(path)
    meta_path = root / META
    if not meta_path.is_file():
        raise BundleError(f"{root}: not a model bundle (no {META}); point --model at a run's model/ directory")
    try:
        raw = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{meta_path}: is not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise BundleError(f"{meta_path}: is not a JSON object")
    meta = config.validate(BundleMeta, raw, str(meta_path), "field ", error=BundleError)
    # A field that is wrong on its own (a feature set this seremo lacks) says what is wrong;
    # the digest then catches edits that still look valid (swapped classes).
    try:
        Bundle(root, meta, None).feature_set  # type: ignore[arg-type]  # noqa: B018 - validates name, parameters and version
    except SeremoError as exc:
        raise BundleError(f"{meta_path}: {exc}") from None
    if meta_digest(raw) != meta.bundle_sha256:
        raise BundleError(f"{meta_path}: does not match its own checksum; the bundle was edited or damaged (re-export it)")
    for name, digest in meta.files.items():
        f = root / name
        if f.is_symlink() or not f.resolve().is_relative_to(root.resolve()):
            raise BundleError(f"{f}: is a link or leads outside the bundle; a bundle holds its own files")
        if not f.is_file():
            raise BundleError(f"{f}: listed in {META} but missing; the bundle is incomplete")
        if _sha256(f) != digest:
            raise BundleError(f"{f}: does not match its checksum in {META}; the file was changed or damaged")
    absent = [n for n in MODEL_KINDS[meta.model_kind].files if n not in meta.files]
    if absent:
        raise BundleError(
            f"{meta_path}: model_kind {meta.model_kind!r} needs {', '.join(absent)}, which the bundle "
            f"does not hold (it has {', '.join(sorted(meta.files))})"
        )
    try:
        model = MODEL_KINDS[meta.model_kind].load(root, meta, load)  # an ensemble loads its members with it
    except BundleError:
        raise
    except Exception as exc:  # a file that passed its checksum yet does not decode
        raise BundleError(f"{root}: the {meta.model_kind} weights do not load ({type(exc).__name__}: {_first_line(exc)})") from None
    problem = model.class_problem(list(meta.classes))
    if problem:
        raise BundleError(f"{meta_path}: lists {len(meta.classes)} classes ({', '.join(meta.classes)}) but {problem}")
    return Bundle(root, meta, model)


def _first_line(exc: BaseException) -> str:
    """An exception's message as one line: XGBoost appends a C++ stack, torch a list of keys.

    A first line that only announces what follows (ends with ':') keeps the next line too;
    XGBoost's "[hh:mm:ss] /its/source.cc:123: " prefix is dropped.
    """
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return "no message"
    text = f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    text = re.sub(r"^\[\d{2}:\d{2}:\d{2}\] \S+:\d+: ", "", text)
    return text if len(text) <= 300 else text[:297] + "..."
