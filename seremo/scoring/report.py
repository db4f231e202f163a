"""The archive report of a ``seremo score`` output: what an analytics team opens first.

Built after the job from the Parquet it wrote (``segments/``, ``files.parquet``,
``errors.parquet``), never from the job's memory, so it costs the job nothing and
can be rebuilt for any finished output::

    report.md            label shares per channel, confidence, the most negative calls, errors
    report.json          the same figures, for programs (and the tests)
    label_shares.png     speech time per label, per channel
    confidence.png       distribution of segment confidence, per label
    timeline_N.png       label and confidence over time for each of the most negative calls

Shares are by speech time (segment durations), not by segment count: a long
angry stretch weighs more than a short angry word.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
import pyarrow as pa

from seremo import speed, storage
from seremo.labels import NEGATIVE

log = logging.getLogger(__name__)

TOP_CALLS = 10  # rows of the most-negative table
TIMELINES = 3  # of which plotted
REPORT_FILES = ("report.md", "report.json", "label_shares.png", "confidence.png",
                *(f"timeline_{i}.png" for i in range(1, TIMELINES + 1)))  # fmt: skip


def summarise(segments: pa.Table, files: pa.Table, errors: pa.Table, classes: list[str]) -> dict[str, Any]:
    """The report's figures from the written tables."""
    seg = {k: np.asarray(segments.column(k).to_pylist()) for k in ("path", "channel", "label", "confidence")}
    dur = np.asarray(segments.column("end_s").to_pylist(), float) - np.asarray(segments.column("start_s").to_pylist(), float)
    dur = np.where(np.isnan(dur), 1.0, dur)  # a segment without times (a text-only manifest row) weighs 1, as in files.parquet
    channels = sorted({int(c) for c in seg["channel"]}) if len(dur) else []
    shares = {}
    for ch in channels:
        on = seg["channel"] == ch
        speech = float(dur[on].sum())
        shares[str(ch)] = {"speech_s": speech, "segments": int(on.sum()),
                           **{c: float(dur[on & (seg["label"] == c)].sum()) / speech if speech else 0.0 for c in classes}}  # fmt: skip
    negative = np.isin(seg["label"], [c for c in classes if c in NEGATIVE])
    per_call: dict[str, dict[str, float]] = {}
    for path, d, neg in zip(seg["path"], dur, negative, strict=True):
        row = per_call.setdefault(str(path), {"speech_s": 0.0, "negative_s": 0.0})
        row["speech_s"] += float(d)
        row["negative_s"] += float(d) if neg else 0.0
    ranked = sorted(per_call.items(), key=lambda kv: (-kv[1]["negative_s"], kv[0]))
    top = [{"path": p, "negative_s": v["negative_s"], "speech_s": v["speech_s"],
            "negative_share": v["negative_s"] / v["speech_s"] if v["speech_s"] else 0.0}
           for p, v in ranked[:TOP_CALLS] if v["negative_s"] > 0]  # fmt: skip
    conf = seg["confidence"].astype(float) if len(dur) else np.zeros(0)
    error_kinds: dict[str, int] = {}
    for kind in errors.column("error").to_pylist():
        error_kinds[kind] = error_kinds.get(kind, 0) + 1
    return {
        "files": files.num_rows, "errors": errors.num_rows, "error_kinds": error_kinds,
        "segments": len(dur), "speech_h": float(dur.sum()) / 3600,
        "audio_h": float(np.nansum(np.asarray(files.column("duration_s").to_pylist(), float))) / 3600 if files.num_rows else 0.0,
        "classes": classes, "label_shares": shares,
        "confidence": {"mean": float(conf.mean()) if len(conf) else None,
                       "quantiles": {q: float(np.quantile(conf, float(q))) for q in ("0.1", "0.5", "0.9")} if len(conf) else {},
                       "below_0.5": float((conf < 0.5).mean()) if len(conf) else None},
        "most_negative": top,
    }  # fmt: skip


def write(out: str, classes: list[str], parts: list[str], run: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read ``out``'s tables (``parts``: the committed segment parts), write the report beside them;
    ``run``: the run's ``score.json`` (its throughput, in :mod:`seremo.speed`'s unit).

    Returns the figures (what ``report.json`` holds).
    """
    segments = _read_segments(parts)
    files = storage.read_parquet(storage.join(out, "files.parquet"))
    errors = storage.read_parquet(storage.join(out, "errors.parquet"))
    fig = summarise(segments, files, errors, classes)
    if run is not None:
        fig["speed"] = {k: run.get(k) for k in ("audio_hours_this_run", *speed.FIELDS)}
    plots = _plots(segments, fig, classes)
    for name, png in plots.items():
        storage.write_bytes(storage.join(out, name), png)
    storage.write_bytes(storage.join(out, "report.md"), _markdown(fig, list(plots)).encode())
    storage.write_json(storage.join(out, "report.json"), fig)
    return fig


def _read_segments(parts: list[str]) -> pa.Table:
    if not parts:
        return pa.table({"path": pa.array([], pa.string()), "channel": pa.array([], pa.int32()),
                         "start_s": pa.array([], pa.float64()), "end_s": pa.array([], pa.float64()),
                         "label": pa.array([], pa.string()), "confidence": pa.array([], pa.float64())})  # fmt: skip
    return pa.concat_tables([storage.read_parquet(p) for p in parts], promote_options="default")


def _speed_lines(run: dict[str, Any] | None) -> list[str]:
    if not run or not run.get("x_realtime_per_core"):
        return []
    return ["", f"This run scored {run['audio_hours_this_run']:.2f} h of calls at {speed.describe(run)}."]


def _markdown(fig: dict[str, Any], plots: list[str]) -> str:
    from seremo.report import md_table

    classes = fig["classes"]
    lines = [
        "# seremo score report",
        "",
        f"{fig['files']} files scored ({fig['audio_h']:.2f} h of audio, {fig['speech_h']:.2f} h of speech in "
        f"{fig['segments']} segments); {fig['errors']} inputs failed.",
        *_speed_lines(fig.get("speed")),
        "",
        "## Label shares per channel (share of speech time)",
        "",
        md_table(["channel", "speech h", "segments", *classes],
                 [[ch, v["speech_s"] / 3600, v["segments"], *(v[c] for c in classes)]
                  for ch, v in fig["label_shares"].items()]),  # fmt: skip
        "",
        "In `--channels split` mode each channel is one side of the call (in most call-centre exports "
        "channel 0 is the agent, channel 1 the customer); in `mix` mode there is one channel.",
    ]
    if "label_shares.png" in plots:
        lines += ["", "![label shares](label_shares.png)"]
    c = fig["confidence"]
    if c["mean"] is not None:
        q = c["quantiles"]
        lines += ["", "## Confidence", "",
                  f"Mean {c['mean']:.3f}; 10th/50th/90th percentiles {q['0.1']:.3f} / {q['0.5']:.3f} / {q['0.9']:.3f}; "
                  f"{c['below_0.5']:.1%} of segments below 0.5 (read their labels as uncertain).",
                  "", "![confidence](confidence.png)"]  # fmt: skip
    lines += ["", "## Calls with the most negative speech", ""]
    if fig["most_negative"]:
        lines.append(md_table(["call", "negative s", "speech s", "negative share"],
                              [[t["path"], t["negative_s"], t["speech_s"], t["negative_share"]]
                               for t in fig["most_negative"]]))  # fmt: skip
        lines += ["", f"Negative labels: {', '.join(c for c in classes if c in NEGATIVE) or 'none'}."]
        lines += [f"\n![timeline {i}](timeline_{i}.png)" for i in range(1, TIMELINES + 1) if f"timeline_{i}.png" in plots]
    else:
        lines.append("No segment has a negative label.")
    if fig["errors"]:
        lines += ["", "## Inputs that failed", "",
                  md_table(["error", "inputs"], sorted(fig["error_kinds"].items())), "",
                  "Each is a row of `errors.parquet` with the reason."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _plots(segments: pa.Table, fig: dict[str, Any], classes: list[str]) -> dict[str, bytes]:
    if not segments.num_rows:
        return {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {c: f"C{i}" for i, c in enumerate(classes)}
    plots = {}
    shares = fig["label_shares"]
    f, ax = plt.subplots(figsize=(7, 1 + 0.6 * len(shares)))
    for row, v in enumerate(shares.values()):
        left = 0.0
        for c in classes:
            ax.barh(row, v[c], left=left, color=colours[c], label=c if row == 0 else None)
            left += v[c]
    ax.set_yticks(range(len(shares)), [f"channel {ch}" for ch in shares])
    ax.set_xlabel("share of speech time")
    ax.legend(ncol=min(len(classes), 4), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.35 - 0.1 * len(shares)))
    plots["label_shares.png"] = _png(f)

    labels = np.asarray(segments.column("label").to_pylist())
    conf = np.asarray(segments.column("confidence").to_pylist(), float)
    f, ax = plt.subplots(figsize=(7, 3))
    present = [c for c in classes if (labels == c).any()]
    ax.hist([conf[labels == c] for c in present], bins=20, range=(0, 1), stacked=True,
            color=[colours[c] for c in present], label=present)  # fmt: skip
    ax.set_xlabel("confidence (probability of the predicted label)")
    ax.set_ylabel("segments")
    ax.legend(fontsize=8)
    plots["confidence.png"] = _png(f)

    paths = np.asarray(segments.column("path").to_pylist())
    channel = np.asarray(segments.column("channel").to_pylist())
    start = np.asarray(segments.column("start_s").to_pylist(), float)
    end = np.asarray(segments.column("end_s").to_pylist(), float)
    for i, call in enumerate(fig["most_negative"][:TIMELINES], 1):
        on = paths == call["path"]
        lanes = sorted(set(channel[on].tolist()))
        f, ax = plt.subplots(figsize=(9, 0.8 + 0.7 * len(lanes)))
        for lane, ch in enumerate(lanes):
            for j in np.flatnonzero(on & (channel == ch)):
                ax.barh(lane, end[j] - start[j], left=start[j], color=colours[labels[j]], alpha=0.3 + 0.7 * conf[j])
        ax.set_yticks(range(len(lanes)), [f"channel {ch}" for ch in lanes])
        ax.set_xlabel("time (s); colour = label, opacity = confidence")
        ax.set_title(call["path"].rsplit("/", 1)[-1], fontsize=9)
        handles = [plt.Rectangle((0, 0), 1, 1, color=colours[c]) for c in classes]
        ax.legend(handles, classes, ncol=min(len(classes), 7), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.6))
        plots[f"timeline_{i}.png"] = _png(f)
    return plots
