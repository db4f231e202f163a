"""Stage 2 of ``seremo score``: class probabilities for every segment, from the driver's bundle.

The bundle is loaded and verified once, in the driver, and shipped to the workers
through Ray's object store (:class:`ShippedBundle`); :class:`Predictor` runs on an
actor pool (``--gpu``, ``--actors``) or, fused with featurisation, in the CPU tasks
(:func:`score_files`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from seremo import bundle, normalisation
from seremo.features import FeatureSet
from seremo.scoring.featurise import featurize_files, featurize_rows


@dataclass(frozen=True)
class ShippedBundle:
    """The driver's loaded and verified bundle, handed to the workers through Ray's object store.

    Loading a bundle from disk runs skops' safe loader (and imports skops): 3.2 s per
    process for tune's 7-member ensemble on this machine, paid again by every worker
    process of the job. Unpickling what the driver already verified takes 0.04 s,
    and on a cluster the nodes fetch it from the object store instead of storage.
    ``refs`` holds the one ObjectRef in a list, so that Ray passes the reference
    through a task's arguments and the worker fetches it once (``load``).
    """

    model_id: str
    refs: list

    @classmethod
    def of(cls, b: bundle.Bundle) -> ShippedBundle:
        import ray

        return cls(b.model_id, [ray.put(b)])

    def load(self) -> bundle.Bundle:
        import ray

        return ray.get(self.refs[0])


class Predictor:
    """Adds class probabilities to every segment; built once per actor or worker process.

    ``model``: a bundle path or URI (loaded here), a loaded :class:`bundle.Bundle`,
    or a :class:`ShippedBundle` (what the job passes).
    """

    def __init__(self, model: str | bundle.Bundle | ShippedBundle, device: str | None = None, defer: bool = False):
        if isinstance(model, ShippedBundle):
            model = model.load()
        self.bundle = model if isinstance(model, bundle.Bundle) else bundle.load(model)
        self.classes = self.bundle.classes
        if device:
            self.bundle.model.to(device)  # torch weights move (an ensemble's torch members too); others stay
        # ``defer``: segments arrive as audio, and the bundle's model-backed feature set (ssl) runs here,
        # its model loaded once per actor, on the actor's device
        self.runner = self.bundle.feature_set.load(device or "cpu") if defer else None

    def featurize(self, batch: pa.Table) -> pa.Table:
        """The deferred features of every segment of the batch, the segments of all its files run together
        (sorted by length inside the set); a file with a segment that fails becomes an error row."""
        files = batch.column("segments").to_pylist()
        fs = self.bundle.feature_set
        where = [(f, j) for f, segs in enumerate(files) for j in range(len(segs))]
        done = fs.extract_many([np.asarray(files[f][j]["features"], np.float32) for f, j in where],
                               fs.sample_rate, self.runner)  # fmt: skip
        errors = batch.column("error").to_pylist()
        messages, stages = batch.column("message").to_pylist(), batch.column("stage").to_pylist()
        for (f, j), x in zip(where, done, strict=True):
            if isinstance(x, Exception):
                errors[f], messages[f], stages[f] = type(x).__name__, str(x), "features"
            else:
                files[f][j].update(features=x.ravel().tolist(), shape=list(x.shape))
        files = [[] if errors[f] else segs for f, segs in enumerate(files)]
        columns = {"segments": pa.array(files, batch.schema.field("segments").type), "error": pa.array(errors, pa.string()),
                   "message": pa.array(messages, pa.string()), "stage": pa.array(stages, pa.string())}  # fmt: skip
        for name, column in columns.items():
            batch = batch.set_column(batch.column_names.index(name), name, column)
        return batch

    def normalise(self, X: Any, segments: list[list[dict]]) -> Any:
        """As the bundle was evaluated: with a per-speaker or per-corpus variant, each channel of each
        file is one speaker (and the only audio of its kind), z-scored with its own segments."""
        if self.bundle.meta.normalisation == "none":
            return X
        channel = [f"{i}/{s['channel']}" for i, file_segs in enumerate(segments) for s in file_segs]
        if isinstance(X, np.ndarray):
            return normalisation.speaker_normalise(X, channel).astype(np.float32)
        return normalisation.normalise_items(X, self.bundle.meta.feature_set.kind, "speaker", channel, channel)

    def predict(self, file_segs: list[dict]) -> np.ndarray:
        """Class probabilities for one file's segments.

        One call per file: a file's figures then never depend on which other files
        shared its batch (BLAS sums a matrix in an order that depends on its shape).
        """
        if not file_segs:
            return np.zeros((0, len(self.classes)), np.float32)
        inputs = self.bundle.meta.inputs
        if inputs == "text":
            return self.bundle.predict_proba(np.asarray([s["text"] for s in file_segs], dtype=object))
        arrays = [np.asarray(s["features"], np.float32).reshape(s["shape"]) for s in file_segs]
        X = np.stack(arrays) if arrays[0].ndim == 1 else arrays
        X = self.normalise(X, [file_segs])
        if inputs == "audio+text":
            X = bundle.join_inputs(X, [s["text"] for s in file_segs])
        return self.bundle.predict_proba(X)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.runner is not None:
            batch = self.featurize(batch)
        out_segments = []
        for file_segs in batch.column("segments").to_pylist():
            proba = self.predict(file_segs)
            out_segments.append(
                [{"channel": s["channel"], "start_s": s["start_s"], "end_s": s["end_s"],
                  "utterance_id": s.get("utterance_id"), "proba": proba[j].astype(np.float32).tolist()}
                 for j, s in enumerate(file_segs)]
            )  # fmt: skip
        seg_type = pa.list_(
            pa.struct([("channel", pa.int32()), ("start_s", pa.float64()), ("end_s", pa.float64()),
                       ("utterance_id", pa.string()), ("proba", pa.list_(pa.float32()))])
        )  # fmt: skip
        return batch.drop_columns(["segments"]).append_column("segments", pa.array(out_segments, seg_type))


_PREDICTORS: dict[str, Predictor] = {}  # per worker process, by model id: a bundle arrives once, not per task


def score_files(batch: pa.Table, feature_set: FeatureSet, settings: dict[str, Any], model: ShippedBundle,
                by_row: bool = False) -> pa.Table:  # fmt: skip
    """Featurize and predict in one CPU task (the default without --gpu or --actors)."""
    if model.model_id not in _PREDICTORS:
        _PREDICTORS.clear()
        _PREDICTORS[model.model_id] = Predictor(model)
    featurize = featurize_rows if by_row else featurize_files
    return _PREDICTORS[model.model_id](featurize(batch, feature_set, settings))

