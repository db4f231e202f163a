"""Settings checked against the data before any work: fold counts, validation speakers, ``arch``.

A setting the data cannot honour is one line naming it (exit 2) before Ray Tune or
Ray Train starts; a run that goes ahead reports the folds it actually ran.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from seremo.cli import main
from seremo.errors import ConfigError, SeremoError
from seremo.folds import describe_folds, group_folds
from seremo.folds import plan_nested as tune_folds
from seremo.folds import plan_validated as train_folds
from seremo.train import TrainSettings, load_settings
from seremo.tune import settings_from_dict

GROUPS = np.repeat([f"s{i}" for i in range(10)], 6)


def _yaml(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


RESULTS = {"report.md", "metrics.json", "ray", "model", "trials.parquet", "predictions.parquet"}


def _no_results(out: Path) -> None:
    """Nothing a run produces is in ``out`` (the dir may exist, holding only its owner marker)."""
    assert not out.exists() or not {p.name for p in out.iterdir()} & RESULTS


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# --------------------------------------------------------------------------- without data


def test_folds_are_described_as_they_ran():
    assert (
        describe_folds(group_folds(GROUPS), GROUPS)
        == "leave-one-group-out"
    )
    assert (
        describe_folds(group_folds(GROUPS, 10), GROUPS)
        == "leave-one-group-out"
    )
    assert describe_folds(group_folds(GROUPS, 3), GROUPS) == "3 grouped folds"


def test_more_folds_than_groups_is_never_a_quiet_fallback():
    with pytest.raises(
        ConfigError, match=r"^tune\.outer_folds: 50 folds asked for, but the data has 10 groups"
    ):
        tune_folds(GROUPS, 50, 3)
    with pytest.raises(
        ConfigError, match=r"^tune\.inner_folds: 10 folds .* smallest outer training set has 9"
    ):
        tune_folds(GROUPS, None, 10)
    with pytest.raises(ConfigError, match=r"^tune\.inner_folds: 7 .* has 6 groups"):
        tune_folds(GROUPS, 3, 7)  # 3 grouped folds of 10 speakers: the smallest training side has 6
    outer, inner = tune_folds(GROUPS, 3, 6)
    assert len(outer) == 3 and {len(f) for f in inner} == {6}
    # only the default inner count shrinks to what a small corpus has (and is reported as it ran)
    outer, inner = tune_folds(GROUPS[:18], None, 3, inner_is_default=True)  # 3 speakers: 2 per training side
    assert {len(f) for f in inner} == {2}
    with pytest.raises(SeremoError, match="only 10 groups"):
        group_folds(GROUPS, 11)


@pytest.mark.parametrize(
    "raw, needle",
    [
        ({"inner_folds": 99999999999999999999999}, "tune.inner_folds"),
        ({"outer_folds": 1}, "tune.outer_folds"),
        ({"outer_folds": 10**30}, "tune.outer_folds"),
    ],
)
def test_absurd_fold_counts_are_refused_at_load(raw, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        settings_from_dict(raw, "x.yaml")
    assert "\n" not in str(info.value)


def test_train_folds_and_validation_share_checked_against_groups():
    three = np.repeat(["a", "b", "c"], 4)
    with pytest.raises(
        ConfigError, match=r"^train\.folds: 4 folds asked for, but the data has 3 groups"
    ):
        train_folds(three, TrainSettings(folds=4))
    # the default (5) shrinks to what the data has: leave-one-group-out on 4 speakers
    assert len(train_folds(np.repeat(list("abcd"), 4), TrainSettings())) == 4
    # two folds of three speakers: one holds out two, leaving one to train and validate on
    with pytest.raises(ConfigError, match=r"^train\.folds: fold 1 of 2 leaves 1 group"):
        train_folds(three, TrainSettings(folds=2))
    with pytest.raises(
        ConfigError, match=r"^train\.val_fraction: 0\.9 .* leaving none to train on"
    ):
        train_folds(three, TrainSettings(folds=3, val_fraction=0.9))
    assert len(train_folds(three, TrainSettings(folds=3))) == 3


def test_unknown_arch_key_names_the_key_and_what_the_model_takes(tmp_path):
    path = _yaml(tmp_path, "t.yaml", "train:\n  arch: {hiddn: 64}\n")
    with pytest.raises(
        ConfigError, match=r"train\.arch\.hiddn: bilstm .* hidden, layers, dropout, stack"
    ):
        load_settings(path, model="bilstm")
    with pytest.raises(ConfigError, match=r"train\.arch\.hiddn: cnn .* channels, dropout"):
        load_settings(path, model="cnn")
    with pytest.raises(ConfigError, match=r"train\.arch\.in_dim: .* from the data"):
        load_settings(_yaml(tmp_path, "d.yaml", "arch: {in_dim: 3}\n"))
    with pytest.raises(ValueError, match="hiddn"):  # settings built in code are checked too
        TrainSettings(model="mlp", arch={"hiddn": 3})
    ok = load_settings(_yaml(tmp_path, "ok.yaml", "arch: {hidden: 8, stack: 2}\n"))
    assert ok.arch == {"hidden": 8, "stack": 2}


# --------------------------------------------------------------------------- tune on EmoDB


@pytest.mark.parametrize(
    "text, needle",
    [
        (
            "tune:\n  outer_folds: 50\n",
            "tune.outer_folds: 50 folds asked for, but the data has 10 groups",
        ),
        ("tune:\n  inner_folds: 99999999999999999999999\n", "tune.inner_folds"),
        ("tune:\n  inner_folds: 10\n", "tune.inner_folds: 10 folds asked for"),
    ],
)
def test_tune_fold_counts_the_data_cannot_give_are_one_line(
    emodb_features, tmp_path, capsys, text, needle
):
    out = tmp_path / "run"
    argv = ["tune", emodb_features, "--out", str(out), "--config", _yaml(tmp_path, "t.yaml", text)]
    assert main(argv) == 2
    assert needle in _one_line(capsys)
    _no_results(out)


@pytest.mark.parametrize(
    "extra, outer",
    [("  outer_folds: 3\n", "3 grouped folds"), ("", "leave-one-group-out")],
)
def test_tune_reports_the_folds_it_ran(emodb_features, tmp_path, capsys, extra, outer):
    text = "tune:\n  models:\n    logreg: {C: [1.0]}\n  inner_folds: 2\n" + extra
    out = tmp_path / "run"
    argv = ["tune", emodb_features, "--out", str(out), "--config", _yaml(tmp_path, "t.yaml", text)]
    assert main(argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["protocol"]["outer"] == outer
    assert m["protocol"]["inner"] == "2 grouped folds inside each outer training set"
    assert len(m["per_fold"]) == m["protocol"]["outer_folds"] == (3 if extra else 10)
    ran = outer if extra else f"{outer} (10 folds)"
    assert f"outer {ran};" in (out / "report.md").read_text()
    assert ran in capsys.readouterr().out


# --------------------------------------------------------------------------- train on EmoDB


@pytest.fixture(scope="module")
def tiny_seq(emodb_manifest, ray_session, tmp_path_factory) -> str:
    """mfcc_seq for 5 utterances of each of 3 EmoDB speakers: enough for the checks, quick."""
    from seremo import features, manifest
    from seremo.extract import extract

    t = manifest.read(emodb_manifest)
    groups = t.column("group").to_pylist()
    keep = np.zeros(len(groups), bool)
    for g in ("emodb/03", "emodb/08", "emodb/09"):
        keep[[i for i, x in enumerate(groups) if x == g][:5]] = True
    out = tmp_path_factory.mktemp("tiny_seq") / "mfcc_seq"
    extract(t.filter(keep), features.get("mfcc_seq"), str(out))
    return str(out)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("train:\n  arch: {hiddn: 64}\n", "train.arch.hiddn: bilstm has no argument 'hiddn'"),
        ("train:\n  folds: 3\n  arch: {hidden: '64'}\n", "train.arch: bilstm with arch"),
        ("train:\n  folds: 3\n  arch: {dropout: 2.0}\n", "train.arch: bilstm with arch"),
        ("train:\n  folds: 4\n", "train.folds: 4 folds asked for, but the data has 3 groups"),
        ("train:\n  folds: 3\n  val_fraction: 0.9\n", "train.val_fraction: 0.9"),
    ],
)
def test_train_settings_the_data_cannot_take_fail_before_ray_train(
    tiny_seq, tmp_path, capsys, text, needle
):
    out = tmp_path / "run"
    argv = [
        "train",
        tiny_seq,
        "--model",
        "bilstm",
        "--out",
        str(out),
        "--config",
        _yaml(tmp_path, "t.yaml", text),
    ]
    started = time.perf_counter()
    assert main(argv) == 2
    assert time.perf_counter() - started < 30  # no TorchTrainer was started
    assert needle in _one_line(capsys)
    _no_results(out)  # in particular no ray/: no TorchTrainer ran
