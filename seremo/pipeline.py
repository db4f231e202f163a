"""``seremo run``: the stages an experiment config lists, end to end, skipping finished ones.

An experiment config (``configs/*.yaml``) names a data root, an output root and
the stages to run; each stage section carries that stage's settings (the same
fields ``seremo tune --config`` / ``seremo train --config`` read). Everything is
validated before any work starts, so a typo is one line naming the key and file.

Output layout under ``out`` (a local path or a pyarrow filesystem URI)::

    manifest.parquet          prepare
    features/NAME/            extract, one per feature set
    tune/                     tune run dir (report.md, metrics.json, model/)
    train/NAME/               train run dirs
    score/                    score output
    pipeline/STAGE.json       what finished, with the settings it ran with

A step is skipped when its marker names the same settings (its own and those of
the steps it reads) and its output is there; change a stage's settings and that
stage and everything downstream of it run again, nothing else.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from seremo import config, outputs, speed, storage
from seremo.errors import ConfigError, SeremoError, storage_error
from seremo.outcome import Outcome, format_table
from seremo.settings import (
    ExtractSettings,
    ScoreSettings,
    TrainSettings,
    TuneSettings,
    tune_from_dict,
)

log = logging.getLogger(__name__)

STAGES = ("prepare", "extract", "tune", "train", "score")


class PrepareStage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    corpus: str = Field(description="emodb, ravdess, cremad, savee, tess, iemocap, csv, folder, ...")
    root: str = Field(description="the corpus folder, relative to data_root unless absolute")
    class_set: str | None = None
    options: dict[str, str] = Field(default_factory=dict, description="loader options (as `--opt`)")


class ExtractStage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    features: str = Field(description="feature set name")
    name: str | None = Field(None, description="output folder under features/ (default: the set's name)")
    params: dict[str, Any] = Field(default_factory=dict)
    batch_size: int | None = Field(None, ge=1, description="utterances per Ray task (default: about 8 tasks "
                                   "per CPU, at most 64 each)")
    channel: Literal["as-is", "telephone"] = Field("as-is", description="telephone: as a simulated phone line "
                                                   "delivers the audio (seremo extract --channel)")

    @property
    def dirname(self) -> str:
        return self.name or self.features


class TuneStage(TuneSettings):
    features: str = Field(description="an extract entry's name")


class TrainStage(TrainSettings):
    features: str = Field(description="an extract entry's name")
    name: str | None = Field(None, description="output folder under train/ (default: the model)")

    @property
    def dirname(self) -> str:
        return self.name or self.model


class ScoreStage(ScoreSettings):
    input: str = Field(description="archive folder, glob or manifest; relative to data_root unless absolute")
    model: str = Field("tune", description="`tune`, `train/NAME` (this pipeline's models) or a bundle path")


class JobSettings(BaseModel):
    """How ``seremo submit`` runs the pipeline as a Ray job."""

    model_config = ConfigDict(extra="forbid")
    entrypoint_num_cpus: float = Field(0, ge=0, description="CPUs reserved for the driver (it mostly waits)")
    entrypoint_num_gpus: float = Field(0, ge=0)
    pip: list[str] = Field(default_factory=list, description="extra packages for the job's runtime env")
    env_vars: dict[str, str] = Field(default_factory=dict)
    excludes: list[str] = Field(default_factory=list, description="more paths left out of the uploaded working dir")


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    data_root: str | None = Field(None, description="where corpora and archives are read; --data-root overrides")
    out: str = Field(description="output root: a local path, or a URI (s3://...) on a multi-node cluster")
    out_is_shared: bool = Field(False, description="a local `out` that every node mounts (NFS, one machine)")
    stages: list[Literal["prepare", "extract", "tune", "train", "score"]]
    prepare: list[PrepareStage] = Field(default_factory=list, description="one corpus, or a list of them")
    extract: list[ExtractStage] = Field(default_factory=list)
    tune: TuneStage | None = None
    train: list[TrainStage] = Field(default_factory=list)
    score: ScoreStage | None = None
    job: JobSettings = Field(default_factory=JobSettings)

    @field_validator("prepare", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _stages_have_sections(self) -> PipelineConfig:
        for stage in self.stages:
            if not getattr(self, stage):
                raise ValueError(f"stage {stage!r} is listed but the config has no `{stage}:` section")
        sets = {p.class_set for p in self.prepare if p.class_set is not None}
        if len(sets) > 1:
            raise ValueError(f"prepare entries name different class sets ({', '.join(sorted(sets))}); "
                             "one class set applies to every corpus")  # fmt: skip
        names = [e.dirname for e in self.extract]
        if len(set(names)) != len(names):
            raise ValueError("two extract entries write the same folder; give one a `name:`")
        for where, wanted in [("tune", self.tune), *[(f"train ({t.dirname})", t) for t in self.train]]:
            if wanted is not None and wanted.features not in names:
                raise ValueError(f"{where} reads features {wanted.features!r}, which no extract entry makes "
                                 f"(extract makes: {', '.join(names) or 'nothing'})")  # fmt: skip
        train_names = [t.dirname for t in self.train]
        if len(set(train_names)) != len(train_names):
            raise ValueError("two train entries write the same folder; give one a `name:`")
        return self

    # ------------------------------------------------------------------ paths

    def data_path(self, path: str) -> str:
        if os.path.isabs(path) or storage.is_uri(path) or self.data_root is None:
            return path
        return storage.join(self.data_root, path)

    def output(self, *parts: str) -> str:
        return storage.join(self.out, *parts)

    def manifest_path(self) -> str:
        return self.output("manifest.parquet")

    def features_dir(self, name: str) -> str:
        return self.output("features", name)

    def bundle_path(self, ref: str) -> str:
        if ref == "tune":
            return self.output("tune", "model")
        if ref.startswith("train/"):
            return self.output("train", ref.split("/", 1)[1], "model")
        return ref


def load(path: str, data_root: str | None = None, out: str | None = None) -> PipelineConfig:
    """Read and validate an experiment config; ``data_root``/``out`` override the file's."""
    return from_dict(config.read_yaml(path), path, data_root, out)


def from_dict(raw: Any, source: str, data_root: str | None = None, out: str | None = None) -> PipelineConfig:
    """Validate a config document (a YAML file's, or the JSON ``seremo submit`` sends) with overrides."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: an experiment config is a mapping (name:, out:, stages:, ...)")
    overrides = {k: v for k, v in (("data_root", data_root), ("out", out)) if v is not None}
    cfg = config.validate(PipelineConfig, {**raw, **overrides}, source)
    if cfg.tune is not None:  # the tune grid's own checks (unknown hyperparameters)
        tune_from_dict(cfg.tune.model_dump(exclude={"features"}), source)
    return cfg


def check_inputs(cfg: PipelineConfig, source: str) -> None:
    """The inputs the listed stages read exist: one line naming what is missing and how to point at it."""
    wanted = []
    if "prepare" in cfg.stages:
        wanted += [("prepare.root", cfg.data_path(p.root)) for p in cfg.prepare]
    if "score" in cfg.stages:
        wanted.append(("score.input", cfg.data_path(cfg.score.input)))
    for key, path in wanted:
        if storage.is_uri(path) or any(ch in path for ch in "*?["):
            continue
        if not os.path.exists(path):
            root = f"data root {cfg.data_root!r}" if cfg.data_root else "no data_root"
            raise ConfigError(f"{source}: {key} {path!r} not found ({root}); set data_root in the config or "
                              "pass --data-root")  # fmt: skip


def fingerprint(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- the run


@dataclass
class Step:
    """One unit of a pipeline (a stage, or one entry of a listed stage) and how to tell it is done."""

    stage: str
    label: str
    settings: dict[str, Any]
    output: str
    done_file: str  # exists once the step's output is complete
    work: Callable[[], Outcome]

    def marker(self, cfg: PipelineConfig) -> str:
        return cfg.output("pipeline", f"{self.label.replace('/', '-')}.json")


def _prepare_steps(cfg: PipelineConfig, address: str | None) -> list[Step]:
    entries = [(p.corpus, cfg.data_path(p.root), p.options) for p in cfg.prepare]
    class_set = next((p.class_set for p in cfg.prepare if p.class_set), None)
    manifest = cfg.manifest_path()

    def work() -> Outcome:
        from seremo.prepare import run_stage

        return run_stage(entries, manifest, class_set)

    settings = [{**p.model_dump(), "root": cfg.data_path(p.root)} for p in cfg.prepare]
    # one corpus keeps the settings (and so the fingerprint) it had before lists
    return [Step("prepare", "prepare", settings[0] if len(settings) == 1 else {"corpora": settings},
                 manifest, manifest, work)]  # fmt: skip


def _extract_steps(cfg: PipelineConfig, address: str | None) -> list[Step]:
    from seremo.shards import SUMMARY

    steps = []
    for e in cfg.extract:
        out = cfg.features_dir(e.dirname)

        def work(e: ExtractStage = e, out: str = out) -> Outcome:
            from seremo.extract import run_stage

            settings = ExtractSettings(batch_size=e.batch_size, channel=e.channel)
            return run_stage(cfg.manifest_path(), e.features, e.params, out, settings, address, overwrite=True,
                             out_is_shared=cfg.out_is_shared)

        steps.append(Step("extract", f"extract/{e.dirname}", e.model_dump(), out, storage.join(out, SUMMARY), work))
    return steps


def _tune_steps(cfg: PipelineConfig, address: str | None) -> list[Step]:
    t, out = cfg.tune, cfg.output("tune")

    def work() -> Outcome:
        from seremo.tune import run_stage

        settings = TuneSettings.model_validate(t.model_dump(exclude={"features"}, exclude_unset=True))
        return run_stage(cfg.features_dir(t.features), out, settings, address)

    return [Step("tune", "tune", t.model_dump(), out, storage.join(out, "metrics.json"), work)]


def _train_steps(cfg: PipelineConfig, address: str | None) -> list[Step]:
    steps = []
    for t in cfg.train:
        out = cfg.output("train", t.dirname)

        def work(t: TrainStage = t, out: str = out) -> Outcome:
            from seremo.train import run_stage

            settings = TrainSettings.model_validate(t.model_dump(exclude={"features", "name"}, exclude_unset=True))
            return run_stage(cfg.features_dir(t.features), out, settings, address)

        steps.append(Step("train", f"train/{t.dirname}", t.model_dump(), out, storage.join(out, "metrics.json"), work))
    return steps


def _score_steps(cfg: PipelineConfig, address: str | None) -> list[Step]:
    s, out = cfg.score, cfg.output("score")

    def work() -> Outcome:
        from seremo.score import run_stage

        settings = ScoreSettings.model_validate(s.model_dump(exclude={"input", "model"}))
        # Scoring resumes by input path; once this pipeline has scored here, other settings or another model
        # start afresh (cleared only after the bundle and the inputs check out), never resume the old rows.
        afresh = storage.exists(cfg.output("pipeline", "score.json"))
        return run_stage(cfg.data_path(s.input), cfg.bundle_path(s.model), out, settings, address, cfg.out_is_shared,
                         afresh=afresh)  # fmt: skip

    return [Step("score", "score", {**s.model_dump(), "model": cfg.bundle_path(s.model)}, out,
                 storage.join(out, "score.json"), work)]  # fmt: skip


# Each stage's steps, in pipeline order.
STEPS: dict[str, Callable[[PipelineConfig, str | None], list[Step]]] = {
    "prepare": _prepare_steps, "extract": _extract_steps, "tune": _tune_steps, "train": _train_steps,
    "score": _score_steps,
}  # fmt: skip


def plan(cfg: PipelineConfig, address: str | None) -> list[Step]:
    """The steps of the listed stages, in pipeline order.

    A step's settings include the fingerprints of the steps it reads, so changing
    an upstream stage makes everything downstream of it run again too.
    """
    steps = [step for stage in STAGES if getattr(cfg, stage) for step in STEPS[stage](cfg, address)]
    prints = {}
    for step in steps:
        step.settings["upstream"] = [prints[u] for u in _upstream(step, cfg) if u in prints]
        prints[step.label] = fingerprint(step.settings)
    return [step for step in steps if step.stage in cfg.stages]


def _upstream(step: Step, cfg: PipelineConfig) -> list[str]:
    """Labels of the steps whose outputs ``step`` reads."""
    if step.stage == "extract":
        return ["prepare"]
    if step.stage in ("tune", "train"):
        return [f"extract/{step.settings['features']}"]
    if step.stage == "score":
        ref = cfg.score.model
        return ["tune"] if ref == "tune" else [ref] if ref.startswith("train/") else []
    return []


def is_done(step: Step, marker: dict | None) -> bool:
    """Finished with these settings (the marker says so) and its output is still there."""
    return bool(marker) and marker.get("settings") == fingerprint(step.settings) and storage.exists(step.done_file)


def check_storage(cfg: PipelineConfig, source: str) -> None:
    """On a multi-node cluster, outputs must go where every node can read them."""
    from seremo.runtime import check_shared_output

    try:
        check_shared_output(cfg.out, cfg.out_is_shared, "set out_is_shared: true")
    except SeremoError as exc:
        raise ConfigError(f"{source}: out {exc}") from None


def select_stages(cfg: PipelineConfig, only: list[str] | None, source: str) -> PipelineConfig:
    """The config with only the ``only`` stages (all when None); a stage it does not list is one line."""
    if not only:
        return cfg
    unknown = sorted(set(only) - set(cfg.stages))
    if unknown:
        raise ConfigError(f"{source}: stage(s) {unknown} are not among the config's stages {cfg.stages}")
    return cfg.model_copy(update={"stages": [s for s in cfg.stages if s in only]})


def run(cfg: PipelineConfig, source: str, address: str | None = None, only: list[str] | None = None) -> list[dict]:
    """Run the config's stages (or ``only`` those), skipping finished steps; returns one row per step."""
    from seremo.runtime import check_reachable

    cfg = select_stages(cfg, only, source)
    check_inputs(cfg, source)
    roots = [cfg.data_path(p.root) for p in cfg.prepare] if "prepare" in cfg.stages else []
    outputs.check_out(cfg.out, roots, what="corpus")  # the stages write inside out: it must be a place of its own
    if address:  # before any work, even where this process already holds a Ray connection
        check_reachable(address)
    storage.makedirs(cfg.out)
    with outputs.Lease(cfg.out, "run"):  # two pipelines into one out would redo and race each other's steps
        return _run_steps(plan(cfg, address), cfg, source, address)


def _run_steps(steps: list[Step], cfg: PipelineConfig, source: str, address: str | None) -> list[dict]:
    from seremo.runtime import ensure_ray

    rows, connected = [], False
    for i, step in enumerate(steps, 1):
        head = f"[{i}/{len(steps)}] {step.label}"
        marker = storage.read_json(step.marker(cfg))
        if is_done(step, marker):
            print(f"{head}: complete, skipped ({step.output})", flush=True)
            rows.append({"step": step.label, "status": "skipped", "wall_s": 0.0, "output": step.output,
                         **marker.get("result", {})})  # fmt: skip
            continue
        print(f"{head}: running -> {step.output}", flush=True)
        if not connected:  # once, and only when a step has work to do
            ensure_ray(address)
            check_storage(cfg, source)
            connected = True
        started = time.perf_counter()
        if i > 1:  # "end to end" of a later step starts at the step, not at the pipeline's start (seremo.speed)
            speed.step_started()
        outcome = step.work()
        print(outcome.text, flush=True)
        result = outcome.result
        wall = time.perf_counter() - started
        storage.write_json(step.marker(cfg), {
            "step": step.label, "settings": fingerprint(step.settings), "config": source,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_s": wall, "result": result,
        })  # fmt: skip
        rows.append({"step": step.label, "status": "ran", "wall_s": wall, "output": step.output, **result})
    return rows


def reports(cfg: PipelineConfig) -> list[str]:
    """The report.md of every tune/train step of the config that exists."""
    paths = []
    if "tune" in cfg.stages:
        paths.append(cfg.output("tune", "report.md"))
    paths += [cfg.output("train", t.dirname, "report.md") for t in cfg.train if "train" in cfg.stages]
    return [p for p in paths if storage.exists(p)]


# --------------------------------------------------------------------------- the entrypoint of jobs/*.py


def job_main(stage: str | None, argv: list[str] | None = None) -> int:
    """``python jobs/X.py --config CONFIG``: run one stage (or, with ``stage=None``, the pipeline).

    The same command is a ``ray job submit`` entrypoint; ``seremo submit`` passes the
    validated config inline as ``--config-json``.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog=f"jobs/{stage or 'pipeline'}.py")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="experiment config YAML (configs/*.yaml)")
    src.add_argument("--config-json", help="the config as JSON (what seremo submit sends)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--address", default=None, help="Ray address (inside a Ray job: the job's cluster)")
    if stage is None:
        parser.add_argument("--stages", default=None, help="comma-separated subset of the config's stages")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.config:
            source, cfg = args.config, load(args.config, args.data_root, args.out)
        else:
            source = "submitted config"
            cfg = from_dict(json.loads(args.config_json), source, args.data_root, args.out)
        only = [stage] if stage else (args.stages.split(",") if args.stages else None)
        print_rows(run(cfg, source, args.address, only), cfg)
    except SeremoError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{parser.prog}: error: {storage_error(exc)}", file=sys.stderr)
        return 2
    return 0


def print_rows(rows: list[dict], cfg: PipelineConfig) -> None:
    print()
    print(format_table(["step", "status", "wall s", "UAR", "output"],
                       [[r["step"], r["status"], round(r["wall_s"], 1), r.get("uar", ""), r["output"]]
                        for r in rows]))  # fmt: skip
    for path in reports(cfg):
        print(f"report: {path}")
