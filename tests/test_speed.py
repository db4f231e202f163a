"""seremo.speed: the one throughput unit of extract.json, score.json and the reports."""

from __future__ import annotations

import time

import pytest

from seremo import speed


def test_process_start_is_before_this_test_and_after_boot():
    started = speed.process_started()
    assert started <= time.time()
    with open("/proc/uptime") as fh:
        boot = time.time() - float(fh.read().split()[0])
    assert started >= boot - 1


def test_figures_per_core_in_the_job_and_end_to_end():
    f = speed.figures(audio_s=7200.0, job_s=36.0, cores=2)
    assert f["x_realtime_per_core"] == pytest.approx(100.0)
    assert f["since_start_s"] >= 36.0  # never shorter than the job it holds
    assert f["x_realtime_per_core_end_to_end"] == pytest.approx(7200.0 / f["since_start_s"] / 2)
    assert "gpus" not in f
    g = speed.figures(audio_s=7200.0, job_s=10.0, cores=16, gpus=0.5)
    assert g["x_realtime_per_gpu"] == pytest.approx(1440.0)


def test_nothing_done_has_no_rate_and_older_summaries_print_dashes():
    assert speed.figures(0.0, 5.0, 2)["x_realtime_per_core"] is None
    assert speed.row({"wall_s": 3.0}) == [3.0, "-", "-", "-"]


def test_a_later_step_of_seremo_run_counts_from_its_own_start(monkeypatch):
    monkeypatch.setattr(speed, "_STEP_STARTED", None)
    assert speed.figures(3600.0, 1.0, 2)["since_start_s"] >= time.time() - speed.process_started() - 1
    speed.step_started()
    assert speed.figures(3600.0, 1.0, 2)["since_start_s"] < 1.5  # the job's 1 s, not the process's age
