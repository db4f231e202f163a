"""Canonical emotion vocabulary and named class sets.

Corpora map their own codes onto the canonical labels; a class set then selects
and merges canonical labels into the classes a model is trained on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from seremo.errors import ConfigError

CANONICAL: tuple[str, ...] = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
    "bored",
    "frustrated",
    "excited",
)

# Labels an analytics team reads as negative speech (the archive report, the worst moment of a call).
NEGATIVE = ("angry", "frustrated", "sad", "fearful", "disgust")

# Names people (and user manifests) commonly use for the canonical labels.
_ALIASES: dict[str, str] = {
    "neu": "neutral",
    "neutrality": "neutral",
    "hap": "happy",
    "happiness": "happy",
    "joy": "happy",
    "sadness": "sad",
    "ang": "angry",
    "anger": "angry",
    "fear": "fearful",
    "fea": "fearful",
    "afraid": "fearful",
    "dis": "disgust",
    "disgusted": "disgust",
    "sur": "surprised",
    "surprise": "surprised",
    "ps": "surprised",
    "pleasant_surprise": "surprised",
    "pleasant_surprised": "surprised",
    "boredom": "bored",
    "fru": "frustrated",
    "frustration": "frustrated",
    "exc": "excited",
    "excitement": "excited",
}


def canonical(label: str) -> str | None:
    """Return the canonical label for a common spelling, or None if unknown."""
    key = label.strip().lower().replace(" ", "_").replace("-", "_")
    if key in CANONICAL:
        return key
    return _ALIASES.get(key)


@dataclass(frozen=True)
class ClassSet:
    """An ordered list of classes and the canonical labels merged into each."""

    name: str
    classes: tuple[str, ...]
    members: Mapping[str, tuple[str, ...]]

    def __post_init__(self) -> None:
        for cls in self.classes:
            for member in self.members[cls]:
                if member not in CANONICAL:
                    raise ValueError(f"class set {self.name}: {member!r} is not canonical")

    @property
    def mapping(self) -> dict[str, str]:
        """canonical label -> class name, for the labels this set keeps."""
        return {m: cls for cls in self.classes for m in self.members[cls]}

    def map(self, label: str | None) -> str | None:
        """The class for a canonical label, or None when the set leaves it out."""
        if label is None:
            return None
        return self.mapping.get(label)


def _simple(name: str, classes: Iterable[str]) -> ClassSet:
    classes = tuple(classes)
    return ClassSet(name, classes, {c: (c,) for c in classes})


CLASS_SETS: dict[str, ClassSet] = {
    cs.name: cs
    for cs in (
        _simple("all", CANONICAL),
        _simple("emodb7", ("neutral", "happy", "sad", "angry", "fearful", "disgust", "bored")),
        _simple(
            "ravdess8",
            ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"),
        ),
        _simple("savee7", ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised")),
        _simple("tess7", ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised")),
        _simple("cremad6", ("neutral", "happy", "sad", "angry", "fearful", "disgust")),
        ClassSet(
            "iemocap4",
            ("neutral", "happy", "sad", "angry"),
            {"neutral": ("neutral",), "happy": ("happy", "excited"), "sad": ("sad",), "angry": ("angry",)},
        ),
        # The seven emotions RAVDESS, CREMA-D, SAVEE, TESS, EMOVO and EmoDB (less surprise) share.
        _simple("shared7", ("angry", "disgust", "fearful", "happy", "neutral", "sad", "surprised")),
        # The four emotions every acted corpus here shares; for cross-corpus work.
        ClassSet(
            "core4",
            ("neutral", "happy", "sad", "angry"),
            {"neutral": ("neutral",), "happy": ("happy", "excited"), "sad": ("sad",), "angry": ("angry",)},
        ),
    )
}


def get_class_set(name: str) -> ClassSet:
    """Look up a class set by name, with one clear error for an unknown name."""
    try:
        return CLASS_SETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown class set {name!r}; choose one of: {', '.join(sorted(CLASS_SETS))}"
        ) from None
