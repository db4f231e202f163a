"""The deep models ``seremo train`` builds, by name, without importing torch.

``seremo --help``, the settings' validation (a typo in ``arch`` is one line before
any work starts) and the train stage's feature checks read this table; the torch
classes live in :mod:`seremo.nets`, whose ``MODELS`` maps the same names to them. A
test keeps each row equal to its class's constructor and ``kind``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    """One model: what it reads and what its constructor takes."""

    kind: str  # the feature set's kind it reads: sequence | image | vector | text, "<audio kind>+text" for fusion
    data_args: tuple[str, str]  # the constructor's first two arguments: input size and class count, from the data
    arch: tuple[str, ...]  # the rest: what a config's ``arch`` may set


MODELS: dict[str, ModelSpec] = {
    "bilstm": ModelSpec("sequence", ("in_dim", "n_classes"), ("hidden", "layers", "dropout", "stack")),
    "cnn": ModelSpec("image", ("n_mels", "n_classes"), ("channels", "dropout")),
    "cnn_lstm": ModelSpec("image", ("n_mels", "n_classes"), ("channels", "hidden", "dropout")),
    "mlp": ModelSpec("vector", ("in_dim", "n_classes"), ("hidden", "dropout")),
    "text_bilstm": ModelSpec("text", ("in_dim", "n_classes"), ("embed", "hidden", "layers", "dropout")),
    "fusion_bilstm": ModelSpec("sequence+text", ("in_dim", "n_classes"),
                               ("hidden", "layers", "stack", "embed", "text_hidden", "dropout")),
    "fusion_cnn": ModelSpec("image+text", ("in_dim", "n_classes"), ("channels", "embed", "text_hidden", "dropout")),
}  # fmt: skip
NAMES = tuple(MODELS)
KINDS = {name: spec.kind for name, spec in MODELS.items()}  # what each model reads


def audio_kind(kind: str) -> str:
    """The audio part of a model kind ("sequence+text" -> "sequence"); "" for text alone."""
    return "" if kind == "text" else kind.removesuffix("+text")


def reads_text(kind: str) -> bool:
    """Whether items of this kind carry words (a text model, or a fusion model)."""
    return kind == "text" or kind.endswith("+text")


def arch_problem(model: str, arch: dict[str, object]) -> tuple[str, str] | None:
    """(key, why) for the first ``arch`` key the model's constructor does not take, else None."""
    spec = MODELS[model]
    for key in arch:
        if key in spec.data_args:
            return key, f"{model} gets {key} from the data; arch takes: {', '.join(spec.arch)}"
        if key not in spec.arch:
            return key, f"{model} has no argument {key!r}; arch takes: {', '.join(spec.arch)}"
    return None
