"""Issue 30, item 7: one line for every mistake.

A user's mistake (a bad flag, a bad config, a missing optional package, an --out that is a file)
ends as exactly one line on stderr and exit 2, found in the driver before Ray starts. None of these
tests starts Ray: ``ensure_ray`` is replaced by a sentinel that fails the test (or, in the fuzz
test, marks a case that got past validation).
"""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

import pytest

from seremo.cli import main
from seremo.errors import ConfigError, SeremoError

RAY_USERS = ("seremo.extract", "seremo.score", "seremo.train", "seremo.tune", "seremo.deep_search")


class RayStarted(Exception):
    """What the patched ``ensure_ray`` raises: the case got past every check of its settings."""


@pytest.fixture
def no_ray(monkeypatch):
    """``ensure_ray`` raises RayStarted in every stage module (each imported it by name)."""
    import importlib

    def refuse(*args, **kwargs):
        raise RayStarted

    for name in RAY_USERS:
        monkeypatch.setattr(importlib.import_module(name), "ensure_ray", refuse)


def one_line(capsys, argv: list[str]) -> str:
    """Run the CLI; it must exit 2 with one line on stderr. That line."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# --------------------------------------------------------------------------- 1, 6: flags name the flag and value


@pytest.mark.parametrize("flag, value", [
    ("--batch-size", "-1"), ("--batch-size", "0"), ("--actors", "0"), ("--gpus-per-actor", "-0.5"),
    ("--gpus-per-actor", "1.5"), ("--gpus-per-actor", "nan"), ("--failure-budget", "1.5"), ("--failure-budget", "-1"),
])  # fmt: skip
def test_extract_flags_are_checked_before_the_manifest_and_ray(flag, value, tmp_path, capsys, no_ray):
    err = one_line(capsys, ["extract", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "o"), flag, value])
    assert f"{flag}: {float(value) if flag in ('--gpus-per-actor', '--failure-budget') else int(value)}" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, needle", [
    (["score", "IN", "--model", "M", "--files-per-task", "0"], "--files-per-task: 0: "),
    (["score", "IN", "--model", "M", "--failure-budget", "-1"], "--failure-budget: -1.0: "),
    (["score", "IN", "--model", "M", "--actors", "-2"], "--actors: -2: "),
    (["score", "IN", "--model", "M", "--min-s", "-1"], "min_s must be a number >= 0, not -1.0"),
    (["train", "FEATS", "--workers", "0"], "--workers: 0: "),
    (["train", "FEATS", "--epochs", "-3"], "--epochs: -3: "),
])  # fmt: skip
def test_score_and_train_flags_name_the_flag_and_the_value(argv, needle, tmp_path, capsys, no_ray):
    err = one_line(capsys, [*argv, "--out", str(tmp_path / "o")])
    assert needle in err and "validation error" not in err


def test_a_config_key_is_named_with_its_file_not_as_a_flag(tmp_path, capsys, no_ray):
    cfg = tmp_path / "t.yaml"
    cfg.write_text("train:\n  workers: 0\n")
    err = one_line(capsys, ["train", "FEATS", "--out", str(tmp_path / "o"), "--config", str(cfg)])
    assert f"{cfg}: train.workers: " in err


def test_argparse_mistakes_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["extract", "m.parquet", "--out", "o", "--batch-size", "many"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1
    assert "--batch-size: invalid int value: 'many'" in err and "seremo extract --help" in err


# --------------------------------------------------------------------------- 2: optional packages, in the driver


def test_ssl_without_transformers_is_one_line_before_any_actor(tmp_path, capsys, monkeypatch, no_ray):
    monkeypatch.setitem(sys.modules, "transformers", None)  # an import of it now fails, as when not installed
    model = tmp_path / "model"
    model.mkdir()
    err = one_line(capsys, ["extract", str(tmp_path / "none.parquet"), "--features", "ssl", "--param",
                            f"model={model}", "--out", str(tmp_path / "o")])  # fmt: skip
    assert "feature set ssl needs transformers" in err and "pip install -e '.[ssl]'" in err


def test_the_requires_hook_is_what_score_and_evaluate_call(monkeypatch):
    from seremo import features

    monkeypatch.setitem(sys.modules, "opensmile", None)
    with pytest.raises(ConfigError, match=r"egemaps needs opensmile.*seremo\[opensmile\]"):
        features.get("egemaps").check_installed()
    features.get("seremo").check_installed()  # a set with nothing optional: nothing to refuse


# --------------------------------------------------------------------------- 3, 4: tune configs


@pytest.mark.parametrize("yaml, needle", [
    ("models: {}\n", "tune.models: names no family"),
    ("models: {logreg: {C: []}}\n", "tune.models.logreg.C: an empty list"),
    ("models: {logreg: {}, svm_linear: {C: []}}\n", "tune.models.svm_linear.C: an empty list"),
    ("tune:\n  models: {nosuch: {}}\n", "tune.models.nosuch: unknown model family 'nosuch'"),
    ("models: {logreg: {penalty: [l1]}}\n", "model 'logreg' has no hyperparameter(s) ['penalty']"),
])  # fmt: skip
def test_tune_grids_are_checked_as_the_settings_load(yaml, needle, tmp_path, capsys, no_ray):
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(yaml)
    err = one_line(capsys, ["tune", "FEATS", "--out", str(tmp_path / "o"), "--config", str(cfg)])
    assert f"{cfg}: {needle}" in err
    assert not (tmp_path / "o").exists()


def test_an_asha_grace_period_beyond_the_epochs_is_one_line(tmp_path, capsys, no_ray):
    cfg = tmp_path / "tune.yaml"
    cfg.write_text("epochs: 1\n")
    err = one_line(capsys, ["tune", "FEATS", "--model", "mlp", "--out", str(tmp_path / "o"), "--config", str(cfg)])
    assert "grace_period 3 is more than epochs 1" in err
    cfg.write_text("epochs: 1\nscheduler: fifo\n")  # no ASHA, no grace period: past the settings
    assert "FEATS: features directory not found" in one_line(capsys, ["tune", "FEATS", "--model", "mlp", "--out",
                                                                      str(tmp_path / "o2"), "--config", str(cfg)])


# --------------------------------------------------------------------------- 5: a time budget that stopped everything


def _trial(stopped: str, error: str | None = None) -> dict:
    return {"status": "error" if error else "ok", "error": error, "checkpoint_path": None, "best_val_uar": math.nan,
            "epochs": 0, "stopped": stopped}  # fmt: skip


def test_a_time_budget_that_stopped_every_trial_says_so():
    from seremo.deep_search import best_trial

    with pytest.raises(SeremoError) as exc:
        best_trial([_trial("budget"), _trial("budget")], "fold 1/5", time_budget_s=5.0)
    msg = str(exc.value)
    assert "time budget (time_budget_s: 5) stopped every trial before it reported a validation score" in msg
    assert "failed" not in msg and "raise time_budget_s" in msg
    with pytest.raises(SeremoError, match="every trial failed; the first error: boom"):  # errors stay errors
        best_trial([_trial("budget"), _trial("error", "boom")], "fold 1/5", time_budget_s=5.0)


# --------------------------------------------------------------------------- 7: --out that is a file


def _a_file(tmp_path: Path) -> Path:
    out = tmp_path / "m.parquet"
    out.write_bytes(b"the user's file")
    return out


@pytest.mark.parametrize("verb", ["tune", "train", "tune_mlp"])
def test_out_that_is_a_file_is_refused_in_one_line(verb, tmp_path, capsys, no_ray):
    out = _a_file(tmp_path)
    argv = ["tune", "FEATS", "--model", "mlp"] if verb == "tune_mlp" else [verb, "FEATS"]
    err = one_line(capsys, [*argv, "--out", str(out)])
    assert err.endswith(f"{out}: is a file; --out must be a directory") and "Errno" not in err
    assert out.read_bytes() == b"the user's file"


def test_extract_into_a_file_is_refused_in_one_line(emodb_manifest, tmp_path, capsys, no_ray):
    out = _a_file(tmp_path)
    err = one_line(capsys, ["extract", emodb_manifest, "--out", str(out)])
    assert err.endswith(f"{out}: is a file; --out must be a directory")
    assert out.read_bytes() == b"the user's file"


@pytest.mark.parametrize("verb, writes", [("extract", ("shards",)), ("score", ("segments",)), ("tune", ("model",))])
def test_check_owner_refuses_a_file_before_reading_a_marker_under_it(verb, writes, tmp_path):
    from seremo import outputs

    out = _a_file(tmp_path)
    with pytest.raises(SeremoError, match="is a file; --out must be a directory"):
        outputs.check_owner(str(out), verb, writes)
    assert out.read_bytes() == b"the user's file"


# --------------------------------------------------------------------------- 8: fuzz: every verb's validation

NUMBERS = ["0", "-1", "1", "2", "0.5", "1.5", "-0.5", "1e308", "-1e308", "nan", "inf", "-inf", str(10**30),
           "abc", "", "3x", "0x10"]  # fmt: skip
VERB_FLAGS = {
    "extract": ["--batch-size", "--actors", "--gpus-per-actor", "--failure-budget"],
    "score": ["--files-per-task", "--actors", "--failure-budget", "--min-s", "--max-s", "--window-s", "--hop-s"],
    "train": ["--workers", "--epochs"],
    "tune": [],
}
YAML_VALUES = ["0", "-1", "1", "2", "0.5", "1e9", "nan", ".inf", "ten", "''", "null", "[]", "{}", "[1, 2]", "{a: 1}", "true"]
YAML_KEYS = {
    "tune": ["num_samples", "outer_folds", "inner_folds", "top_k", "search", "selection", "ship", "speaker_norm",
             "bogus", "models", "epochs", "grace_period", "reduction_factor", "time_budget_s", "gpu_fraction",
             "space", "scheduler", "max_concurrent_trials"],
    "train": ["epochs", "patience", "min_epochs", "batch_size", "lr", "workers", "folds", "val_fraction", "arch",
              "weight_decay", "masking", "augment", "bogus", "model", "normalise", "schedule"],
}  # fmt: skip
MODEL_GRIDS = ["{}", "{logreg: {C: []}}", "{logreg: {}, svm_linear: {C: []}}", "{nosuch: {}}", "{logreg: {C: 5}}",
               "{logreg: null}", "[logreg]", "{logreg: {C: [1, 2]}, naive_bayes: {}}", "{logreg: {penalty: [l1]}}"]  # fmt: skip


def _config(rng: random.Random, verb: str, path: Path) -> str:
    """A random YAML config: random values (wrong types, out of range, empty grids) under random keys."""
    lines = []
    for key in rng.sample(YAML_KEYS[verb], rng.randint(0, 4)):
        value = rng.choice(MODEL_GRIDS) if key == "models" else rng.choice(YAML_VALUES)
        lines.append(f"  {key}: {value}")
    section = rng.choice([f"{verb}:\n", ""])
    body = "\n".join(line if section else line.strip() for line in lines)
    path.write_text(section + body + "\n" if rng.random() < 0.9 else rng.choice([":::\n", "- a list\n", "[\n"]))
    return str(path)


def _argv(rng: random.Random, i: int, tmp_path: Path) -> list[str]:
    """One case: a verb, nonexistent inputs (anything past validation fails fast), random flag values."""
    verb = rng.choice(list(VERB_FLAGS))
    out = str(tmp_path / f"out{i}")
    argv = {
        "extract": ["extract", str(tmp_path / "none.parquet"), "--out", out],
        "score": ["score", str(tmp_path / "audio"), "--model", str(tmp_path / "bundle"), "--out", out],
        "train": ["train", str(tmp_path / "feats"), "--out", out],
        "tune": ["tune", str(tmp_path / "feats"), "--out", out],
    }[verb]
    for flag in VERB_FLAGS[verb]:
        if rng.random() < 0.5:
            argv.append(f"{flag}={rng.choice(NUMBERS)}")  # = so that "-1" is a value, not a flag
    if verb in ("tune", "train") and rng.random() < 0.8:
        argv += ["--config", _config(rng, verb, tmp_path / f"c{i}.yaml")]
    if verb == "tune" and rng.random() < 0.4:
        argv += ["--model", rng.choice(["mlp", "bilstm"])]
    return argv


def test_fuzzed_settings_and_flags_are_one_line_or_pass(tmp_path, capsys, no_ray):
    """Seeded random flags and configs through every verb: exit 2 with one line, or past validation
    (the patched ensure_ray); never a traceback, never exit 1."""
    rng = random.Random(30)
    (tmp_path / "audio").mkdir()
    past, mistakes = 0, 0
    for i in range(200):
        argv = _argv(rng, i, tmp_path)
        try:
            rc = main(argv)
        except RayStarted:
            rc = None
        except SystemExit as exc:  # argparse: a value that is no number at all
            rc = exc.code
        err = capsys.readouterr().err.strip()
        if rc is not None:
            assert rc == 2, (argv, rc, err)
            assert len(err.splitlines()) == 1 and "Traceback" not in err, (argv, err)
        if rc is None or "not found; create it with" in err:  # past the settings, to the missing input
            past += 1
        else:
            mistakes += 1
    assert mistakes > 100 and past > 20, (mistakes, past)  # both the checks and the way past them are fuzzed
