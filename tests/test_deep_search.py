"""``seremo tune --model``: deep models searched on Ray Tune over Ray Train runs, nested, ASHA, resumable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import assert_failed_reruns_keep

from seremo import bundle, dataset, deep_search, spaces
from seremo.cli import main
from seremo.errors import ConfigError
from seremo.folds import split_validation
from seremo.settings import load_deep_search

SMALL = """tune:
  outer_folds: 2
  num_samples: {samples}
  grace_period: 1
  epochs: 3
  patience: 3
  workers: 1
  space:
    arch.hidden: {{choice: [16, 32]}}
    lr: {{loguniform: [0.001, 0.01]}}
    weight_decay: null
    batch_size: 32
"""


def _config(tmp_path: Path, samples: int) -> str:
    path = tmp_path / f"search{samples}.yaml"
    path.write_text(SMALL.format(samples=samples))
    return str(path)


def test_the_search_space_reads_in_one_place_and_a_typo_is_one_line(tmp_path):
    settings = load_deep_search(_config(tmp_path, 2), "mlp")
    space = spaces.search_space(settings)
    assert space["arch.hidden"] == {"choice": [16, 32]} and "weight_decay" not in space and space["batch_size"] == 32
    assert settings.train.epochs == 3 and settings.train.model == "mlp" and settings.outer_folds == 2
    trial = spaces.trial_settings(settings.train, {"arch.hidden": 16, "masking.time_width": 5, "lr": 0.002})
    assert trial.arch == {"hidden": 16} and trial.masking.time_width == 5 and trial.lr == 0.002
    bad = tmp_path / "bad.yaml"
    bad.write_text("tune:\n  space:\n    arch.hiden: {choice: [1, 2]}\n")
    with pytest.raises(ConfigError, match="tune.space.arch.hiden") as info:
        spaces.check_space(load_deep_search(str(bad), "mlp"))
    assert len(str(info.value).splitlines()) == 1
    bad.write_text("tune:\n  search: grid\n  space:\n    lr: {uniform: [0.001, 0.01]}\n")
    with pytest.raises(ConfigError, match="grid takes choice lists only"):
        spaces.check_space(load_deep_search(str(bad), "mlp"))
    bad.write_text("tune:\n  epoch: 3\n")  # not a search key, so a train setting: which it is not either
    with pytest.raises(ConfigError, match="tune.epoch"):
        load_deep_search(str(bad), "mlp")
    try:
        import optuna  # noqa: F401
    except ImportError:  # the optional extra is missing: one line that says how to get it
        from seremo.selection import optuna_search

        with pytest.raises(ConfigError, match=r"pip install -e '.\[optuna\]'"):
            optuna_search(0)


@pytest.mark.slow
def test_a_killed_search_resumes_and_no_outer_test_speaker_reaches_a_trial(emodb_features, ray_session, tmp_path,
                                                                          monkeypatch, capsys):  # fmt: skip
    """The driver is killed mid-search (SIGKILL); the same command resumes: finished trials keep their results (their
    files are untouched) and the final table holds every trial once. The resumed run's trials receive the
    outer training rows only (spied on the driver, where the one object every trial reads is built), and
    the run writes the nested figures, the trials and the bundle."""
    out = tmp_path / "resumed"
    config = _config(tmp_path, 2)
    # one trial at a time: when the first has ended the second is running, so the kill lands inside fold 1
    Path(config).write_text(Path(config).read_text() + "  max_concurrent_trials: 1\n")
    cmd = [sys.executable, "-m", "seremo.cli", "tune", emodb_features, "--model", "mlp", "--out", str(out),
           "--config", config]  # fmt: skip
    # the driver joins the session's Ray (as on a cluster, where a driver dies and the cluster stays)
    env = {**os.environ, "SEREMO_LEASE_TTL_S": "5", "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    log = tmp_path / "killed.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    fold1 = out / "search" / "fold1"
    deadline = time.time() + 400
    finished: dict[str, float] = {}
    while time.time() < deadline and not finished and proc.poll() is None:
        time.sleep(0.5)
        finished = {name: _trial_evidence(fold1, name) for name in _terminated(fold1)}
    assert finished and proc.poll() is None, "no trial finished before the run ended: " + log.read_text()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)  # the driver; Ray ends what it started
    proc.wait()
    time.sleep(6)  # its lease expires

    received: list[tuple[list[str], set[str]]] = []
    real = deep_search.search_inputs

    def spy(data, rows, fit, val, settings):
        shipped = real(data, rows, fit, val, settings)
        local = __import__("ray").get(shipped.data_ref)
        assert len(local.items) == len(rows) == len(shipped.ids)  # nothing but the outer training rows
        held = set(np.setdiff1d(np.arange(len(data.ids)), rows).tolist())
        received.append((shipped.ids, {data.ids[i] for i in held}))
        return shipped

    monkeypatch.setattr(deep_search, "search_inputs", spy)
    capsys.readouterr()
    assert main(["tune", emodb_features, "--model", "mlp", "--out", str(out), "--config", config]) == 0
    printed = capsys.readouterr().out
    for name, evidence in finished.items():  # not run again: no new epoch reported, no new Train checkpoint
        assert _trial_evidence(fold1, name) == evidence, name
    assert "resuming the search" in printed and "[fold 2/2] [1/2]" in printed and "best validation UAR" in printed
    assert len(received) == 2
    for ids, held in received:
        assert held and not set(ids) & held  # no outer test speaker's utterance reached the search
    trials = pq.read_table(out / "trials.parquet").to_pylist()
    ids = [t["trial_id"] for t in trials]
    assert len(ids) == len(set(ids)) == 4 and sorted(t["fold"] for t in trials) == [1, 1, 2, 2]
    assert all(t["status"] == "ok" and 1 <= t["epochs"] <= 3 and len(t["val_curve"]) == t["epochs"] for t in trials)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"]["search"] == "nested" and len(metrics["per_fold"]) == 2 and 0 <= metrics["uar"] <= 1
    for name in ("report.md", "hyperparameters.png", "predictions.parquet", "confusion_matrix.png"):
        assert (out / name).exists(), name
    assert "Chosen configuration per outer fold" in (out / "report.md").read_text()
    model = bundle.load(out / "model")
    assert model.meta.model_name == "mlp" and model.meta.params["arch"]["hidden"] in (16, 32)
    oof = pq.read_table(out / "predictions.parquet")
    assert oof.num_rows == metrics["n"] and sorted(set(oof.column("fold").to_pylist())) == [1, 2]
    assert model.training_ids() == {bundle.id_hash(u) for u in oof.column("utterance_id").to_pylist()}
    assert not list(out.glob(".seremo-staging-*"))  # the killed run's staging went when the resumed run took over
    assert_failed_reruns_keep(out, ["tune", emodb_features, "--model", "mlp", "--out", str(out), "--config", config],
                              1, monkeypatch, capsys)  # fmt: skip


@pytest.mark.slow
def test_a_search_cut_off_before_it_made_its_trials_is_topped_up(emodb_features, ray_session, tmp_path, capsys):
    """The trials are drawn before the search runs (seeded, one after another): a restored experiment that
    holds fewer than were drawn (Tune's restore of a search killed as it began) gets the missing ones in one
    more experiment, and the ones it holds are not run again. Here the experiment of the first of two draws
    stands for the cut-off search. Every trial ASHA stopped carries its mark; none is put down to a
    time budget, since there is none."""
    one, two, four = (load_deep_search(_config(tmp_path, n), "mlp") for n in (1, 2, 4))
    drawn = spaces.sample_configs(four, 7)
    assert drawn == spaces.sample_configs(four, 7) and drawn[:2] == spaces.sample_configs(two, 7)
    assert drawn != spaces.sample_configs(four, 8) and all(c["batch_size"] == 32 for c in drawn)
    drawn = drawn[:2]
    assert all(c["arch.hidden"] in (16, 32) and 0.001 <= c["lr"] <= 0.01 and len(c) == 4 for c in drawn)
    data = dataset.load(emodb_features, two.train.class_set, model=two.train.model)
    rows = np.arange(len(data.labels))
    fit, val = split_validation(data.groups, rows, 0.25, 0)
    inputs = deep_search.search_inputs(data, rows, fit, val, one)
    where = tmp_path / "search" / "fold1"
    first = deep_search.run_search("fold 1/1", inputs, one, str(where), seed=7)
    assert [t["sample"] for t in first] == [0] and [t["config"] for t in first] == drawn[:1]
    evidence = {name: _trial_evidence(where, name) for name in _terminated(where)}
    capsys.readouterr()
    again = deep_search.run_search("fold 1/1", inputs, two, str(where), seed=7)
    printed = capsys.readouterr().out
    assert "1 of 2 trials were never made" in printed and "fold1_rest1" in printed
    assert sorted(t["sample"] for t in again) == [0, 1]
    assert {t["sample"]: t["config"] for t in again} == dict(enumerate(drawn))
    assert {t["trial_id"] for t in first} < {t["trial_id"] for t in again}
    for name, before in evidence.items():
        assert _trial_evidence(where, name) == before, name  # not run again
    marks = {p.name for p in (tmp_path / "search" / "fold1_train" / "asha_stopped").glob("*")}
    for t in again:
        assert t["status"] == "ok" and t["stopped"] in ("finished", "early", "asha") and len(t["val_curve"]) == t["epochs"]
        assert (t["stopped"] == "asha") == (t["trial_id"] in marks)
        assert t["stopped"] != "asha" or t["epochs"] < 3


def _trial_evidence(experiment: Path, name: str) -> tuple[int, list[str]]:
    """(results the trial reported, its Ray Train run's checkpoints): both grow if the trial runs again.
    (Tune rewrites every result file on a restore, so their times say nothing.)"""
    trial_id = "_".join(name.split("_")[2:4])  # _trial_<experiment>_<number>_...
    results = (experiment / name / "result.json").read_text().splitlines()
    train_run = experiment.parent / f"{experiment.name}_train" / f"trial_{trial_id}"
    return len(results), sorted(p.name for p in train_run.glob("checkpoint_*"))


def _terminated(experiment: Path) -> list[str]:
    """The trial dirs the experiment's saved state records as finished (what a restore keeps)."""
    states = sorted(experiment.glob("experiment_state-*.json"))
    if not states:
        return []
    try:
        trial_data = json.loads(states[-1].read_text())["trial_data"]
    except (json.JSONDecodeError, KeyError):  # caught mid-write
        return []
    trials = [json.loads(t[0]) for t in trial_data]
    return [t["relative_logdir"] for t in trials if t["status"] == "TERMINATED"]


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU")
def test_trials_share_a_gpu_in_fractions(request, tmp_path):
    """Four one-worker trials on one GPU (gpu_fraction 0.25), bf16; SEREMO_TEST_VECTOR_FEATURES: a vector set
    extracted elsewhere (a GPU box may lack the audio stack)."""
    features = os.environ.get("SEREMO_TEST_VECTOR_FEATURES") or request.getfixturevalue("emodb_features")
    config = tmp_path / "gpu.yaml"
    config.write_text(SMALL.format(samples=4) + "  gpu_fraction: 0.25\n")
    settings = load_deep_search(str(config), "mlp")
    assert settings.train.gpu
    metrics = deep_search.search_run(features, str(tmp_path / "gpu"), settings)
    assert deep_search.concurrency(settings) >= 4  # four trials' workers fit one GPU at once
    assert metrics["gpu"] and metrics["trials"]["ok"] == 8 and 0 <= metrics["uar"] <= 1
