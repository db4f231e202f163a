"""A features directory as the models read it: one typed table, made by one loader.

``seremo tune`` (classical models) reads a matrix ``X`` (or transcripts, or both);
``seremo train`` and the deep search read ``items`` (one array, transcript or pair
per row). Both share the rest: the labels mapped through the class set, the
groups held out in speaker-independent folds, corpora, utterance ids and the
feature set, so every stage names a row's speaker, corpus and label alike.
It never imports torch: what a net reads comes from the torch-free ``deep_models``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from seremo import deep_models, shards
from seremo.errors import ConfigError, SeremoError
from seremo.labels import get_class_set

INPUTS = ("audio", "text", "audio+text")


@dataclass(frozen=True)
class FeatureTable:
    """The rows a stage learns from (or is judged on), with the class set applied.

    Exactly one of ``X`` (classical models: a float matrix, or an object array of
    transcripts or (audio, transcript) pairs) and ``items`` (nets: one item per row)
    is set. ``classes`` are the training classes (a test set: the model's).
    """

    y: np.ndarray  # class names, one per row
    groups: np.ndarray  # the unit held out in speaker-independent folds (speaker, session)
    corpus: np.ndarray
    ids: np.ndarray  # utterance ids
    classes: list[str]
    X: Any = None
    items: list[Any] | None = None
    feature_set: dict[str, Any] = field(default_factory=dict)
    inputs: str | None = "audio"  # what the models see: audio features, transcripts or both
    kind: str | None = None  # a net's item kind (``nets.KINDS``); None for classical models
    in_dim: int | list[int] = 0  # a net's input size (a fusion net: [audio, vocabulary], the latter set per fold)
    excluded: dict[str, int] = field(default_factory=dict)  # rows left out, by their label
    channel: str = "as-is"
    rows_table: pa.Table | None = None  # the shards' rows kept (nets: augmentation re-reads their audio)

    @property
    def labels(self) -> np.ndarray:
        """Class indices into ``classes`` (what a net's loss reads)."""
        return np.searchsorted(self.classes, self.y)

    @property
    def corpora(self) -> list[str]:
        return sorted(set(self.corpus.tolist()))

    @property
    def n_groups(self) -> int:
        return len(set(self.groups.tolist()))


def load(features_dir: str, class_set: str | None, classes: list[str] | None = None, inputs: str | None = None,
         model: str | None = None) -> FeatureTable:  # fmt: skip
    """The rows of ``features_dir`` as classical models (``model=None``) or the net ``model`` read them.

    ``inputs`` (classical models; None: what the set gives, ``text`` for the text
    set, else ``audio``) picks what the models see: a vector set's matrix, the
    shards' transcripts, or both (feature-level fusion). A net's items are its
    kind's: audio arrays, transcripts, or (audio, transcript) pairs. ``classes``
    (a test set's: the trained model's) keeps only rows whose class the model has;
    the others are counted in ``excluded``, never dropped silently.
    """
    feats = shards.read_features(features_dir)
    channel = (shards.read_summary(features_dir) or {}).get("channel", "as-is")
    return from_features(feats, features_dir, class_set, classes, inputs, model, channel=channel)


def from_features(feats: shards.Features, features_dir: str, class_set: str | None, classes: list[str] | None = None,
                  inputs: str | None = None, model: str | None = None, channel: str = "as-is",
                  any_kind: bool = False) -> FeatureTable:  # fmt: skip
    """``load`` of shards already read (``features_dir`` names them in messages). ``any_kind``: ``X`` as a
    shipped bundle reads it, whatever the set's kind (``seremo evaluate``: the bundle's own feature set)."""
    kind = None if model is None else _net_kind(feats, features_dir, model)
    if kind is not None:
        inputs = _net_inputs(kind)
    elif not any_kind:
        inputs = _classical_inputs(feats, features_dir, inputs)
    table = feats.table
    labels = table.column("label").to_pylist()
    mapping = get_class_set(class_set).map if class_set else (lambda lab: lab)
    mapped = [mapping(lab) if lab is not None else None for lab in labels]
    keep = np.array([m is not None and (classes is None or m in classes) for m in mapped])
    excluded = Counter("(unlabelled)" if lab is None else str(lab) for lab, k in zip(labels, keep, strict=True) if not k)
    y = np.array([m for m, k in zip(mapped, keep, strict=True) if k])
    if classes is not None and not len(y):
        raise SeremoError(f"{features_dir}: no row has a class the model predicts ({', '.join(classes)}); labels "
                          f"found: {', '.join(sorted(excluded))}; pass --class-set to map them")  # fmt: skip
    X = items = None
    in_dim: int | list[int] = 0
    if kind is None:
        X = feats.model_input(inputs, features_dir, keep)
    else:
        items, in_dim = _net_items(feats, features_dir, kind, keep)
    groups = np.array(table.column("group").to_pylist())[keep]
    if classes is None:
        classes = sorted(set(y.tolist()))
        _check_learnable(features_dir, classes, groups, min_groups=2 if kind is None else 3)
    return FeatureTable(
        y=y, groups=groups, corpus=np.array(table.column("corpus").to_pylist())[keep],
        ids=np.array(table.column("utterance_id").to_pylist())[keep], classes=classes, X=X, items=items,
        feature_set=feats.feature_set, inputs=inputs, kind=kind, in_dim=in_dim, excluded=dict(excluded),
        channel=channel,
        rows_table=table.filter(pa.array(keep)) if kind is not None else None,
    )  # fmt: skip


def _classical_inputs(feats: shards.Features, features_dir: str, inputs: str | None) -> str:
    """What a classical model sees of these shards, or one line saying why it cannot."""
    inputs = inputs or ("text" if feats.kind == "text" else "audio")
    if feats.kind not in ("vector", "text"):
        raise SeremoError(
            f"{features_dir}: feature set {feats.feature_set['name']!r} is a {feats.kind}; "
            "tune needs a vector or text set (use `seremo train` for sequences and images)"
        )
    if feats.kind == "text" and inputs != "text":
        raise ConfigError(f"{features_dir}: the text feature set holds no audio features, so inputs {inputs!r} "
                          "cannot be made from it; extract an audio vector set from the same manifest (its shards "
                          "carry the transcripts too) for audio+text")  # fmt: skip
    return inputs


def _net_kind(feats: shards.Features, features_dir: str, model: str) -> str:
    """The item kind net ``model`` reads, after checking these shards give it."""
    want = deep_models.KINDS[model]
    shard_kind = "text" if want == "text" else deep_models.audio_kind(want)
    if feats.kind != shard_kind:
        raise SeremoError(
            f"{features_dir}: model {model!r} needs {shard_kind} features, but these are "
            f"{feats.feature_set['name']!r} ({feats.kind}); extract e.g. "
            + {"sequence": "mfcc_seq", "image": "logmel", "vector": "seremo", "text": "text"}[shard_kind]
            + (" from a manifest with transcripts" if want.endswith("+text") else "")
        )
    return want


def _net_inputs(kind: str) -> str:
    return "text" if kind == "text" else "audio+text" if deep_models.reads_text(kind) else "audio"


def _net_items(feats: shards.Features, features_dir: str, kind: str,
               keep: np.ndarray) -> tuple[list[Any], int | list[int]]:  # fmt: skip
    """A net's items (audio arrays, transcripts, or (audio, transcript) pairs) and its input size.

    Transcripts become word ids per fold, from a vocabulary of its training rows:
    their size is 0 until then.
    """
    audio = [a for a, k in zip(feats.arrays(), keep, strict=True) if k] if kind != "text" else None
    texts = list(feats.model_input("text", features_dir, keep)) if deep_models.reads_text(kind) else None
    items = audio if texts is None else texts if audio is None else list(zip(audio, texts, strict=True))
    audio_dim = 0 if not audio else int(audio[0].shape[-1] if feats.kind != "image" else audio[0].shape[0])
    return items, [audio_dim, 0] if kind.endswith("+text") else audio_dim


def _check_learnable(features_dir: str, classes: list[str], groups: np.ndarray, min_groups: int) -> None:
    """At least 2 classes, and enough groups for speaker-independent folds (a net also needs validation speakers)."""
    if len(classes) < 2:
        raise SeremoError(f"{features_dir}: needs at least 2 classes to learn, found {classes or 'none'}")
    n_groups = len(set(groups.tolist()))
    if n_groups < min_groups:
        why = "speaker-independent evaluation" if min_groups == 2 else "training, validation and test speakers"
        raise SeremoError(f"{features_dir}: needs at least {min_groups} groups (speakers) for {why}, found {n_groups}")


def describe_set(fs: dict[str, Any]) -> str:
    """A feature set as one line: name, version, parameters (what two feature dirs must share)."""
    import json

    return f"{fs['name']} v{fs['version']} {json.dumps(fs['params'], sort_keys=True)}"


def load_test_sets(dirs: Sequence[str], load: Any, feature_set: dict[str, Any]) -> dict[str, Any]:
    """Each ``test:`` features dir through ``load(dir)``, named by its folder; a feature set other than
    the training one (``feature_set``) is one line, raised before any work."""
    from seremo.errors import ConfigError

    tests: dict[str, Any] = {}
    for d in dirs:
        t = load(d)  # a dataset.FeatureTable
        if t.feature_set != feature_set:
            raise ConfigError(f"test {d}: feature set {describe_set(t.feature_set)} differs from the training "
                              f"features' {describe_set(feature_set)}; extract it with the same set")  # fmt: skip
        name = d.rstrip("/").rsplit("/", 1)[-1]
        tests[name if name not in tests else d] = t
    return tests
