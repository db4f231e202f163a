"""Every stage's settings, validated without importing Ray or torch.

A config (``seremo run``'s, or ``seremo tune/train --config``) is checked, key by
key, before any work starts and before the heavy libraries load: these models
import only pydantic, the config reader and the classical families' grids. The
stage modules (:mod:`seremo.tune`, :mod:`seremo.train`, :mod:`seremo.score`)
re-export the names they run with.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from seremo import classical, config, deep_models
from seremo.errors import ConfigError

# --------------------------------------------------------------------------- tune


class TuneSettings(BaseModel):
    """What ``--config`` may set (a YAML file, flat or under a ``tune:`` key)."""

    model_config = ConfigDict(extra="forbid")

    class_set: str | None = None
    models: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {name: {} for name in classical.FAMILIES},
        description="families to search, each with optional search-space overrides (default: every family; "
        "with text inputs, classical.TEXT_FAMILIES)",
    )
    inputs: Literal["audio", "text", "audio+text"] | None = Field(
        None, description="what the models see: a vector set's features, the transcripts (TF-IDF), or both "
        "fused in one pipeline; None: text for the text feature set, else audio",
    )
    search: Literal["grid", "random", "optuna"] = "grid"
    num_samples: int = Field(20, ge=1, description="trials for random/optuna search")
    outer_folds: int | None = Field(None, ge=2, le=1000, description="None = leave one group out for up to "
                                    "30 groups, else 10 grouped folds (folds.default_folds)")
    inner_folds: int = Field(3, ge=2, le=1000)
    groups: Literal["speaker", "corpus"] = Field(
        "speaker", description="outer folds hold out speakers (the manifest's group) or whole corpora"
    )
    test: list[str] = Field(default_factory=list, description="features dirs the shipped model scores, reported apart")
    speaker_norm: bool = False
    corpus_norm: bool = False
    selection: Literal["family_vote", "top_k", "best"] = Field(
        "family_vote", description="per outer fold, by inner UAR: a soft vote of each family's best configuration, "
        "of the top_k configurations, or the single best one"
    )
    top_k: int = Field(5, ge=1, le=100, description="members of a top_k vote")
    vote_margin: float | None = Field(
        0.05, ge=0, le=1, description="family_vote: only the families whose best configuration is within this "
        "much UAR of the best family's (None: every family); measured: the same nested UAR as every family on "
        "EmoDB (whisper 0.872, functionals 0.764) with 3.7-4.6 members instead of 7, a third of the prediction "
        "cost (benchmarks/vote_cost.py)"
    )
    ship: Literal["raw", "speaker_norm", "corpus_norm"] = Field("raw", description="the variant the bundle holds")
    max_concurrent: int | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _shipped_variant_runs(self) -> TuneSettings:
        if self.ship not in self.variants:
            raise ValueError(f"ship {self.ship!r} needs {self.ship.replace('_norm', '')}_norm: true; "
                             f"the variants that run are {', '.join(self.variants)}")  # fmt: skip
        return self

    def families(self, inputs: str) -> dict[str, dict[str, Any]]:
        """The families searched for ``inputs``: those named in ``models``, else every family for audio
        and the ones that suit sparse TF-IDF (``classical.TEXT_FAMILIES``) where the inputs hold text."""
        if "models" in self.model_fields_set or inputs == "audio":
            return self.models
        return {name: {} for name in classical.TEXT_FAMILIES}

    @property
    def variants(self) -> list[str]:
        """raw, and each normalisation variant asked for: each is searched and reported apart."""
        return ["raw"] + [v for v, on in (("speaker_norm", self.speaker_norm), ("corpus_norm", self.corpus_norm)) if on]

    def describe_selection(self) -> str:
        return {
            "family_vote": "per outer fold, a soft vote of each family's configuration with the best mean inner-CV UAR"
                           + ("" if self.vote_margin is None else
                              f", the families within {self.vote_margin:g} of the best family"),
            "top_k": f"per outer fold, a soft vote of the {self.top_k} configurations with the best mean inner-CV UAR",
            "best": "per outer fold, the configuration with the best mean inner-CV UAR",
        }[self.selection]



def load_tune(path: str | None) -> TuneSettings:
    return tune_from_dict(config.read_section(path, "tune", pipeline_keys=("features",)), path or "settings")


def tune_from_dict(raw: Any, source: str) -> TuneSettings:
    settings = config.validate(TuneSettings, raw, source, "tune.")
    problem = grid_problem(settings.models)
    if problem:
        raise ConfigError(f"{source}: {problem}")
    return settings


def grid_problem(models: dict[str, dict[str, Any]]) -> str | None:
    """What is wrong with the families' grids, else None: checked as the settings load, since an empty
    grid is a Ray Tune IndexError (or a family silently searched with no configuration) once Ray runs."""
    if not models:
        return f"tune.models: names no family; name one or more of: {', '.join(classical.FAMILIES)}"
    for name, override in models.items():
        if name not in classical.FAMILIES:
            return f"tune.models.{name}: unknown model family {name!r}; choose from: {', '.join(classical.FAMILIES)}"
        family = classical.FAMILIES[name]
        unknown = set(override) - set(family.space) - {"select_k"}
        if unknown:
            return (f"model {name!r} has no hyperparameter(s) {sorted(unknown)}; "
                    f"it takes: {', '.join(sorted(family.space))}, select_k")  # fmt: skip
        empty = next((key for key, values in override.items() if values == []), None)
        if empty is not None:
            return (f"tune.models.{name}.{empty}: an empty list searches no value, so {name} would have no "
                    f"configuration; give one value or more, or leave {empty} out for the default grid")  # fmt: skip
    return None


# --------------------------------------------------------------------------- train


class Augment(BaseModel):
    """Training-only audio augmentation (off by default): copies of each training utterance."""

    model_config = ConfigDict(extra="forbid")
    copies: int = Field(0, ge=0)
    noise_snr_db: float | None = None
    speed: list[float] | None = None
    pitch_semitones: float | None = None

    @model_validator(mode="after")
    def _something_to_do(self) -> Augment:
        if self.copies and self.noise_snr_db is None and not self.speed and not self.pitch_semitones:
            raise ValueError("copies > 0 needs noise_snr_db, speed or pitch_semitones")
        return self


class Masking(BaseModel):
    """SpecAugment-style masking of training batches (on by default; ``time_masks: 0, freq_masks: 0`` turns it off).

    Chosen on EmoDB, where together with the one-cycle schedule it was the largest single gain
    for the BiLSTM and the CNN (README, "Measured on EmoDB"); the settings were picked on the same
    folds they are reported on, so treat that figure as optimistic.
    """

    model_config = ConfigDict(extra="forbid")
    time_masks: int = Field(2, ge=0)
    time_width: int = Field(20, ge=1, description="widest time span, in frames")
    freq_masks: int = Field(2, ge=0)
    freq_width: int | None = Field(None, ge=1, description="widest band span; default 8 mel bands, 3 sequence dims")

    def kwargs(self, kind: str) -> dict[str, int]:
        width = self.freq_width or (8 if kind == "image" else 3)
        return {"time_masks": self.time_masks, "time_width": self.time_width,
                "freq_masks": self.freq_masks, "freq_width": width}  # fmt: skip


class TextSettings(BaseModel):
    """The text model's words: a vocabulary learnt from each fold's training rows, optional pretrained vectors."""

    model_config = ConfigDict(extra="forbid")
    min_count: int = Field(2, ge=1, description="a word enters the vocabulary from this many training rows' uses")
    max_words: int = Field(20000, ge=10, description="the most frequent words kept")
    vectors: str | None = Field(None, description="a local text file of word vectors (GloVe format: word v1 ... vd); "
                                "arch.embed must match d")


class TrainSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: Literal[deep_models.NAMES] = "bilstm"  # type: ignore[valid-type]
    class_set: str | None = None
    folds: int = Field(5, ge=2, le=1000)
    groups: Literal["speaker", "corpus"] = Field(
        "speaker", description="folds hold out speakers (the manifest's group) or whole corpora (then one per corpus)"
    )
    test: list[str] = Field(default_factory=list, description="features dirs the final model scores, reported apart")
    normalise: Literal["none", "speaker", "corpus"] = Field(
        "none", description="z-score each speaker's (or corpus's) frames before the net: a named protocol"
    )
    val_fraction: float = Field(0.2, gt=0, lt=1, description="share of training speakers for early stopping")
    epochs: int = Field(60, ge=1)
    patience: int = Field(15, ge=1)
    min_epochs: int = Field(1, ge=1, description="no early stop before this epoch (validation UAR is noisy "
                            "while the one-cycle rate is high)")  # fmt: skip
    batch_size: int = Field(32, ge=1)
    lr: float = Field(2e-3, gt=0, description="peak learning rate")
    schedule: Literal["onecycle", "constant"] = Field("onecycle", description="one-cycle: warm up 10%, cosine down")
    weight_decay: float = Field(1e-4, ge=0)
    masking: Masking = Field(default_factory=Masking)
    arch: dict[str, Any] = Field(default_factory=dict, description="model arguments, e.g. hidden: 64")
    workers: int = Field(2, ge=1)
    gpu: bool = False
    max_failures: int = Field(2, ge=0)
    collective_timeout_s: int = Field(120, ge=10, description="how long a rank waits for a dead peer")
    final_fit: bool = True
    augment: Augment = Field(default_factory=Augment)
    text: TextSettings = Field(default_factory=TextSettings)
    seed: int = 0

    @model_validator(mode="after")
    def _text_model_reads_words(self) -> TrainSettings:
        if self.model == "text_bilstm" and (self.normalise != "none" or self.augment.copies):
            raise ValueError("text_bilstm reads words: normalise and augment apply to audio; leave them off")
        if self.text.vectors and not os.path.isfile(self.text.vectors):
            raise ValueError(f"text.vectors: {self.text.vectors} is not a file")
        return self

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """A typo in ``arch`` fails here, not as a traceback inside a Ray Train worker."""
        model = info.data.get("model")
        problem = deep_models.arch_problem(model, arch) if model else None
        if problem:
            raise ValueError(f"{problem[0]}: {problem[1]}")
        return arch


def load_train(path: str | None, **overrides: Any) -> TrainSettings:
    raw = config.read_section(path, "train")
    raw = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
    source = path or "settings"
    model, arch = raw.get("model", TrainSettings.model_fields["model"].default), raw.get("arch")
    if model in deep_models.MODELS and isinstance(arch, dict):  # else pydantic names what is wrong
        problem = deep_models.arch_problem(model, arch)
        if problem:
            raise ConfigError(f"{source}: train.arch.{problem[0]}: {problem[1]}")
    return config.validate(TrainSettings, raw, source, "train.", flags=[k for k, v in overrides.items() if v is not None])



# --------------------------------------------------------------------------- deep search (tune --model)


class DeepSearchSettings(BaseModel):
    """``seremo tune FEATURES --model NAME``: the search's own settings, and ``train``, every trial's fixed
    values (any ``seremo train`` setting, given flat beside the search's in the YAML)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    protocol: Literal["nested", "search_once"] = Field(
        "nested", description="nested: a search per outer fold on its training speakers; search_once: one search "
        "over all speakers, then grouped folds (optimistic, labelled so)")  # fmt: skip
    outer_folds: int = Field(5, ge=2, le=1000)
    num_samples: int = Field(16, ge=1, description="trials per search (random/optuna); grid: repeats of the grid")
    search: Literal["random", "grid", "optuna"] = "random"
    scheduler: Literal["asha", "fifo"] = Field("asha", description="asha stops weak trials early on validation UAR")
    grace_period: int = Field(3, ge=1, description="epochs every trial runs before ASHA may stop it")
    reduction_factor: int = Field(3, ge=2)
    max_concurrent_trials: int | None = Field(None, ge=1, description="default: what the cluster's CPUs (or GPU "
                                              "shares) hold")  # fmt: skip
    time_budget_s: float | None = Field(None, gt=0, description="per search: no new trials after this long")
    gpu_fraction: float = Field(0.0, ge=0, le=1, description="GPU share per trial worker (0.25: four trials per GPU); "
                                "0 trains on CPUs")  # fmt: skip
    space: dict[str, Any] = Field(default_factory=dict, description="per path (lr, arch.hidden, masking.time_width): "
                                  "{choice: [...]}, {uniform: [a, b]}, {loguniform: [a, b]}, {randint: [a, b]}, "
                                  "a fixed value, or null to leave the default space's path out")  # fmt: skip
    seed: int = 0
    train: TrainSettings = Field(default_factory=TrainSettings)

    @model_validator(mode="after")
    def _grace_within_epochs(self) -> DeepSearchSettings:
        """ASHA asserts this inside Ray Tune; here it is one line naming both values."""
        if self.scheduler == "asha" and self.grace_period > self.train.epochs:
            raise ValueError(f"grace_period {self.grace_period} is more than epochs {self.train.epochs}: ASHA runs "
                             "every trial grace_period epochs before it may stop one; lower grace_period or raise "
                             "epochs (or scheduler: fifo)")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _gpu_workers(self) -> DeepSearchSettings:
        if self.gpu_fraction and not self.train.gpu:
            self.train = self.train.model_copy(update={"gpu": True})
        return self

    def fingerprint(self) -> str:
        """A digest of everything that shapes the search: a re-run with another resumes nothing of this one."""
        import hashlib
        import json

        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True, default=str).encode()).hexdigest()[:12]


def load_deep_search(path: str | None, model: str, **overrides: Any) -> DeepSearchSettings:
    """The YAML's ``tune:`` section: the search's keys, and every other key a fixed ``seremo train`` setting."""
    raw = config.read_section(path, "tune", pipeline_keys=("features",))
    own = set(DeepSearchSettings.model_fields) - {"train"}
    search = {k: v for k, v in raw.items() if k in own}
    fixed = {k: v for k, v in raw.items() if k not in own}
    fixed.update({k: v for k, v in overrides.items() if v is not None})
    source = path or "settings"
    if model in deep_models.MODELS and isinstance(fixed.get("arch"), dict):
        problem = deep_models.arch_problem(model, fixed["arch"])
        if problem:
            raise ConfigError(f"{source}: tune.arch.{problem[0]}: {problem[1]}")
    train = config.validate(TrainSettings, {**fixed, "model": model}, source, "tune.")
    return config.validate(DeepSearchSettings, {**search, "train": train}, source, "tune.")


# --------------------------------------------------------------------------- extract


class ExtractSettings(BaseModel):
    """``seremo extract``'s flags that shape the Ray job, checked in the driver before Ray starts."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int | None = Field(None, ge=1, description="utterances per Ray task")
    actors: int | None = Field(None, ge=1, description="actors of a model-backed set's pool")
    gpus_per_actor: float = Field(0.0, ge=0, allow_inf_nan=False, description="GPU share of each actor")
    channel: Literal["as-is", "telephone"] = Field("as-is", description="the audio as it is, or as a simulated "
                                                   "phone line delivers it (augment.telephone_line)")
    failure_budget: float = Field(0.05, ge=0, le=1, description="share of inputs that may fail for reasons "
                                  "not their own before the run exits non-zero")  # fmt: skip

    @field_validator("gpus_per_actor")
    @classmethod
    def _ray_share(cls, share: float) -> float:
        """Ray takes a GPU share below 1 or a whole number of GPUs."""
        if share > 1 and not share.is_integer():
            raise ValueError("give a share below 1 (0.5: two actors per GPU) or a whole number of GPUs")
        return share


def check_extract(**flags: Any) -> ExtractSettings:
    """The extract flags, validated: a bad one is one line naming the flag and its value."""
    return config.validate(ExtractSettings, flags, "seremo extract", flags=flags)


# --------------------------------------------------------------------------- score


class ScoreSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels: Literal["split", "mix"] = "split"
    segment: dict[str, Any] = Field(default_factory=dict, description="seremo.segment.SegmentSettings fields")
    files_per_task: int | None = Field(None, ge=1, description="files per Ray task (default: about 8 tasks "
                                       "per CPU, at most 16 files each; see score.files_per_task)")
    actors: int | None = Field(None, ge=1, description="predict on a pool of this many actors instead of inside "
                               "the CPU tasks (default: inside them; with gpu, one actor per GPU)")
    gpu: bool = False
    failure_budget: float = Field(0.05, ge=0, le=1, description="share of inputs that may fail for reasons "
                                  "not their own (a bug, a lost worker) before the run exits non-zero")
