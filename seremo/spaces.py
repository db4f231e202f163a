"""The deep search's spaces: each model's default space, the YAML's ``space:`` applied, the trials drawn.

A space maps settings paths (``arch.hidden``, ``masking.freq_width``, ``lr``) to a
domain (``choice``, ``uniform``, ``loguniform``, ``randint``) or a fixed value; a
trial's configuration sets its values at those paths of the train settings.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seremo.errors import ConfigError
from seremo.settings import DeepSearchSettings, TrainSettings

_COMMON = {
    "lr": {"loguniform": [5e-4, 5e-3]},
    "weight_decay": {"loguniform": [1e-5, 1e-3]},
    "batch_size": {"choice": [16, 32]},
    "arch.dropout": {"uniform": [0.1, 0.5]},
}
_MASKING = {"masking.time_width": {"choice": [10, 20, 30]}}
# Each model's default search space, in one place: settings paths (``arch.*``, ``masking.*`` or a
# train setting) to a domain (``choice``, ``uniform``, ``loguniform``, ``randint``). ``space:`` in the
# YAML replaces a path's domain, adds a path, or fixes one with a plain value.
SPACES: dict[str, dict[str, Any]] = {
    "bilstm": {**_COMMON, **_MASKING, "arch.hidden": {"choice": [64, 96, 128]},
               "masking.freq_width": {"choice": [2, 3, 4]}},
    "cnn": {**_COMMON, **_MASKING, "arch.channels": {"choice": [[16, 32, 64], [32, 64, 128]]},
            "masking.freq_width": {"choice": [4, 8, 12]}},
    "cnn_lstm": {**_COMMON, **_MASKING, "arch.hidden": {"choice": [64, 96, 128]},
                 "masking.freq_width": {"choice": [4, 8, 12]}},
    "mlp": {**_COMMON, "arch.hidden": {"choice": [128, 256, 512]}},
    "text_bilstm": {**_COMMON, "arch.embed": {"choice": [50, 100]}, "arch.hidden": {"choice": [64, 96, 128]}},
    "fusion_bilstm": {**_COMMON, **_MASKING, "arch.hidden": {"choice": [64, 96]},
                      "arch.text_hidden": {"choice": [32, 64, 96]}},
    "fusion_cnn": {**_COMMON, **_MASKING, "arch.text_hidden": {"choice": [32, 64, 96]}},
}  # fmt: skip
DOMAINS = ("choice", "uniform", "loguniform", "randint")


def search_space(settings: DeepSearchSettings) -> dict[str, Any]:
    """The model's space with the YAML's ``space:`` applied (a path set to null leaves the space)."""
    space = {**SPACES[settings.train.model], **settings.space}
    return {k: v for k, v in space.items() if v is not None}


def _domain(path: str, spec: Any, grid: bool) -> Any:
    from ray import tune

    if not isinstance(spec, dict):
        return spec  # a fixed value
    if len(spec) != 1 or next(iter(spec)) not in DOMAINS:
        raise ConfigError(f"tune.space.{path}: give one of {', '.join(DOMAINS)} (e.g. {{choice: [64, 128]}}), "
                          f"or a plain value; not {spec!r}")  # fmt: skip
    (kind, args), = spec.items()
    if grid:
        if kind != "choice":
            raise ConfigError(f"tune.space.{path}: search: grid takes choice lists only, not {kind}")
        return tune.grid_search(list(args))
    if kind == "choice":
        return tune.choice(list(args))
    if not (isinstance(args, list) and len(args) == 2):
        raise ConfigError(f"tune.space.{path}: {kind} takes [low, high], not {args!r}")
    return {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}[kind](*args)


def param_space(settings: DeepSearchSettings) -> dict[str, Any]:
    """Tune's ``param_space``: flat keys (``arch.hidden``) so trial tables and plots read them as named."""
    grid = settings.search == "grid"
    return {path: _domain(path, spec, grid) for path, spec in search_space(settings).items()}


def trial_settings(base: TrainSettings, config: dict[str, Any]) -> TrainSettings:
    """``base`` with a trial's values set at their paths (``arch.hidden`` -> ``arch: {hidden: ...}``)."""
    raw = base.model_dump()
    for path, value in config.items():
        node = raw
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return TrainSettings.model_validate(raw)


def check_space(settings: DeepSearchSettings) -> None:
    """Every path of the space names a setting the model takes, checked with a sample of each domain,
    so a typo is one line before any trial starts."""
    from pydantic import ValidationError

    for path, spec in search_space(settings).items():
        _domain(path, spec, settings.search == "grid")
        value = spec
        if isinstance(spec, dict):
            (kind, args), = spec.items()
            value = args[0]
        try:
            trial_settings(settings.train, {path: value})
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ConfigError(f"tune.space.{path}: {err['msg']}") from None


def sample_configs(settings: DeepSearchSettings, seed: int) -> list[dict[str, Any]] | None:
    """The search's trials, drawn before any runs: grid, every combination (``num_samples`` times);
    random, ``num_samples`` draws, one configuration after another from ``seed`` (so the first k of n
    draws are the k draws of a smaller search). Drawn up front, the list is what a resumed search
    must hold, whatever Tune had made of it before it was cut off. Optuna proposes as it learns,
    so it draws nothing here (``None``)."""
    import itertools

    space = search_space(settings)
    if settings.search == "optuna":
        return None
    fixed = {p: v for p, v in space.items() if not isinstance(v, dict)}
    domains = {p: next(iter(v.items())) for p, v in sorted(space.items()) if isinstance(v, dict)}
    if settings.search == "grid":
        combos = itertools.product(*(args for _, args in domains.values()))
        grid = [{**fixed, **dict(zip(domains, combo, strict=True))} for combo in combos]
        return [dict(c) for _ in range(settings.num_samples) for c in grid]
    rng = np.random.default_rng(seed)

    def draw(kind: str, args: list) -> Any:
        if kind == "choice":
            return args[int(rng.integers(len(args)))]
        if kind == "randint":
            return int(rng.integers(args[0], args[1]))
        if kind == "loguniform":
            return float(np.exp(rng.uniform(np.log(args[0]), np.log(args[1]))))
        return float(rng.uniform(args[0], args[1]))

    return [{**fixed, **{p: draw(kind, args) for p, (kind, args) in domains.items()}}
            for _ in range(settings.num_samples)]  # fmt: skip
