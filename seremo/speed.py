"""One throughput unit for every job seremo reports: x real time per CPU core.

**Audio seconds of the input files** (a stereo call counts its length once, not once per channel; a
manifest row its span) **per wall-clock second, per CPU core** of the Ray cluster the job ran on, given
two ways:

- ``in_job``: over the job's own window (the Ray Data job, from its first block to its last commit);
- ``end_to_end``: from the start of this process (the command's start: imports, Ray's start-up, the
  listing and checks included; in ``seremo run``, a later step's own start) to the moment the summary
  is written. Ray's shutdown and the
  interpreter's exit come after and are not in it (about 1.5 s on a local instance;
  ``benchmarks/extract_throughput.py`` times the whole command from outside).

Where the job ran on GPUs, ``per_gpu`` gives audio seconds per wall-clock second per GPU instead.
``extract.json``, ``score.json``, the archive report and the README's tables all use these fields.
"""

from __future__ import annotations

import os
import time
from typing import Any

_IMPORTED = time.time()  # fallback for "the process start" where /proc is not there
_STEP_STARTED: float | None = None  # set by `seremo run` for each step after the first (step_started)


def step_started() -> None:
    """From now on "end to end" counts from here: a pipeline's later step (``seremo run``), not the process."""
    global _STEP_STARTED
    _STEP_STARTED = time.time()


def process_started() -> float:
    """The wall-clock time (``time.time()``) this process started: Linux's /proc, else this module's import."""
    try:
        with open("/proc/self/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22: start time, clock ticks after boot
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return _IMPORTED


def figures(audio_s: float, job_s: float, cores: float | None, gpus: float = 0.0) -> dict[str, Any]:
    """The throughput fields of a summary (see the module's docstring) for ``audio_s`` seconds of input audio
    done in ``job_s`` seconds of job; ``None`` where a figure is undefined (nothing done)."""
    since_start = max(time.time() - (_STEP_STARTED or process_started()), job_s)

    def rate(seconds: float, units: float | None) -> float | None:
        return audio_s / seconds / units if audio_s and seconds > 0 and units else None

    out = {
        "wall_s": job_s,
        "since_start_s": since_start,
        "cores": cores,
        "x_realtime_per_core": rate(job_s, cores),
        "x_realtime_per_core_end_to_end": rate(since_start, cores),
    }
    if gpus:
        out.update(gpus=gpus, x_realtime_per_gpu=rate(job_s, gpus),
                   x_realtime_per_gpu_end_to_end=rate(since_start, gpus))  # fmt: skip
    return out


FIELDS = ("wall_s", "since_start_s", "cores", "x_realtime_per_core", "x_realtime_per_core_end_to_end", "gpus",
          "x_realtime_per_gpu", "x_realtime_per_gpu_end_to_end")


def describe(summary: dict[str, Any]) -> str:
    """One phrase for a report: "312x real time per CPU core in the job (2 cores), 250x end to end"."""
    text = (f"{summary['x_realtime_per_core']:.0f}x real time per CPU core in the job ({summary['cores']:g} cores), "
            f"{summary['x_realtime_per_core_end_to_end']:.0f}x end to end")
    if summary.get("x_realtime_per_gpu"):
        text += f"; {summary['x_realtime_per_gpu']:.0f}x per GPU in the job ({summary['gpus']:g} GPUs)"
    return text + " (audio hours of the input files per wall-clock hour; seremo.speed)"


HEADERS = ["wall s", "cores", "x RT/core job", "x RT/core end to end"]


def row(summary: dict[str, Any]) -> list[Any]:
    """The summary's figures under :data:`HEADERS` ("-" where an older summary lacks a field)."""

    def r(key: str) -> Any:
        value = summary.get(key)
        return round(value, 1) if isinstance(value, int | float) else "-"

    cores = summary.get("cores")
    return [r("wall_s"), f"{cores:g}" if cores else "-", r("x_realtime_per_core"), r("x_realtime_per_core_end_to_end")]
