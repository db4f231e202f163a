"""seremo score on a simulated call archive built from real EmoDB utterances."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from conftest import kill_tree

from seremo import bundle, classical, features, manifest
from seremo.cli import main
from seremo.errors import SeremoError
from seremo.extract import extract
from seremo.score import ScoreSettings, score
from seremo.shards import read_features
from seremo.simulate import Utterance, make_calls, telephone_copies

ARCHIVE_SPEAKERS = ("emodb/13", "emodb/14", "emodb/15", "emodb/16")


@pytest.fixture(scope="module")
def phone_bundle(emodb_manifest, ray_session, tmp_path_factory) -> Path:
    """A telephone-band (8 kHz) logistic regression trained on the six speakers not in the archive,
    on telephone copies of their utterances."""
    t = manifest.read(emodb_manifest)
    train = t.filter(np.array([g not in ARCHIVE_SPEAKERS for g in t.column("group").to_pylist()]))
    root = tmp_path_factory.mktemp("phone")
    # A call-centre model is trained on telephone audio: the same channel the archive goes through.
    phone_paths = telephone_copies(train.column("path").to_pylist(), root / "wav", seed=7)
    train = train.set_column(train.column_names.index("path"), "path", pa.array(phone_paths))
    fs = features.get("seremo", sample_rate=8000)
    extract(train, fs, str(root / "features"))
    feats = read_features(str(root / "features"))
    y = np.asarray(feats.table.column("label").to_pylist())
    model = classical.fit("logreg", {"C": 0.1}, feats.matrix(), y)
    meta = bundle.base_meta(model_kind="sklearn", model_name="logreg", params={"C": 0.1},
                            feature_set=feats.feature_set, classes=list(model.classes_),
                            training={"corpora": ["emodb"], "utterances": len(y), "groups": 6}, metrics={})  # fmt: skip
    return bundle.save_classical(root / "model", model, meta)


@pytest.fixture(scope="module")
def archive(emodb_manifest, tmp_path_factory) -> tuple[Path, object]:
    t = manifest.read(emodb_manifest)
    rows = [r for r in t.to_pylist() if r["group"] in ARCHIVE_SPEAKERS]
    utts = [Utterance(r["path"], r["label"], r["speaker"]) for r in rows]
    root = tmp_path_factory.mktemp("archive") / "calls"
    truth = make_calls(utts, root, n_calls=2, utterances_per_call=24, copies=("flac", "mp3"), seed=1)
    (root / "corrupt.wav").write_bytes(os.urandom(4096))
    (root / "empty.wav").write_bytes(b"")
    (root / "notes.txt").write_text("call centre export, batch 7\n")
    sf.write(root / "zero_length.wav", np.zeros((0, 2), np.float32), 8000, subtype="ULAW")
    (root / "nested").mkdir()
    os.replace(root / "call0001.flac", root / "nested" / "call0001.flac")
    truth = truth.to_pandas()
    truth.loc[truth["path"] == str(root / "call0001.flac"), "path"] = str(root / "nested" / "call0001.flac")
    return root, truth


@pytest.fixture(scope="module")
def scored(archive, phone_bundle, ray_session, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scored") / "out"
    assert main(["score", str(archive[0]), "--model", str(phone_bundle), "--out", str(out), "--files-per-task", "2"]) == 0
    return out


def test_every_input_appears_exactly_once(scored, archive):
    root, _ = archive
    inputs = sorted(str(p) for p in root.rglob("*") if p.is_file())
    files = pq.read_table(scored / "files.parquet").to_pandas()
    errors = pq.read_table(scored / "errors.parquet").to_pandas()
    assert sorted(files["path"].tolist() + errors["path"].tolist()) == inputs
    by_path = errors.set_index("path")["error"]
    assert by_path[str(root / "empty.wav")] == "empty"
    assert by_path[str(root / "zero_length.wav")] == "empty"
    assert by_path[str(root / "notes.txt")] == "unsupported"
    assert by_path[str(root / "corrupt.wav")] in ("unsupported", "corrupt")
    assert len(files) == 6 and (files["channels"] == 2).all() and (files["duration_s"] > 100).all()
    summary = json.loads((scored / "score.json").read_text())
    assert (summary["inputs"], summary["files"], summary["errors"]) == (10, 6, 4)
    # the throughput counts each stereo call's length once (files.parquet's duration_s), not once per channel
    assert summary["audio_hours_this_run"] == pytest.approx(files["duration_s"].sum() / 3600)
    assert summary["x_realtime_per_core"] == pytest.approx(files["duration_s"].sum() / summary["wall_s"] / summary["cores"])
    assert "x real time per CPU core in the job" in (scored / "report.md").read_text()


def _match(truth_rows, segs, tol: float) -> tuple[float, list[tuple[str, str]]]:
    """Share of utterances whose covering segments start and end within ``tol``; (truth, predicted) labels."""
    hits, pairs = 0, []
    for u in truth_rows.itertuples():
        mine = segs[(segs["channel"] == u.channel) & (segs["end_s"] > u.start_s) & (segs["start_s"] < u.end_s)]
        if len(mine) == 0:
            continue
        if abs(mine["start_s"].min() - u.start_s) <= tol and abs(mine["end_s"].max() - u.end_s) <= tol:
            hits += 1
        weights = (np.minimum(mine["end_s"], u.end_s) - np.maximum(mine["start_s"], u.start_s)).clip(0)
        probs = (mine[[c for c in mine.columns if c.startswith("p_")]].to_numpy() * weights.to_numpy()[:, None]).sum(0)
        pairs.append((u.label, [c[2:] for c in mine.columns if c.startswith("p_")][int(np.argmax(probs))]))
    return hits / len(truth_rows), pairs


def test_segments_line_up_and_labels_beat_chance(scored, archive):
    _, truth = archive
    segs = pq.read_table(scored / "segments").to_pandas()
    assert {"path", "channel", "start_s", "end_s", "label", "confidence", "model_id"} <= set(segs.columns)
    assert np.allclose(segs[[c for c in segs.columns if c.startswith("p_")]].sum(axis=1), 1, atol=1e-4)
    pairs_all = []
    for path in sorted(truth["path"].unique()):
        rows = truth[truth["path"] == path]
        aligned, pairs = _match(rows, segs[segs["path"] == path], tol=0.3)
        assert aligned >= 0.75, (path, aligned)
        pairs_all += pairs
    agree = np.mean([a == b for a, b in pairs_all])
    chance = max(truth["label"].value_counts(normalize=True))  # always guessing the commonest label
    assert agree > chance + 0.15, (agree, chance)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_rows(archive, phone_bundle, scored, ray_session, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "seremo.cli", "score", str(archive[0]), "--model", str(phone_bundle),
           "--out", str(out), "--files-per-task", "1"]  # fmt: skip
    log_path = tmp_path / "killed_run.log"
    log_file = open(log_path, "w")  # noqa: SIM115 - closed below; the run's own words if it fails
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=log_file, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((out / "_parts" / "done").glob("*.parquet"))) < 3:
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    log_file.close()
    tail = "\n".join(log_path.read_text().splitlines()[-15:])
    assert proc.poll() is None, f"the run ended (exit {proc.poll()}) before it could be killed:\n{tail}"
    kill_tree(proc, whole_group=True)  # the whole run at once, Ray's processes included
    assert not (out / "files.parquet").exists()
    score(str(archive[0]), str(phone_bundle), str(out), ScoreSettings(files_per_task=2))

    def rows(d: Path, name: str, keys: list[str]):
        return pq.read_table(d / name).to_pandas().sort_values(keys).reset_index(drop=True)

    seg_keys = ["path", "channel", "start_s"]
    a, b = rows(scored, "segments", seg_keys), rows(out, "segments", seg_keys)
    assert len(a) == len(b)
    assert (a.drop(columns=["model_id"]).round(6) == b.drop(columns=["model_id"]).round(6)).all().all()
    fa, fb = rows(scored, "files.parquet", ["path"]), rows(out, "files.parquet", ["path"])
    assert fa.round(6).equals(fb.round(6))
    assert rows(scored, "errors.parquet", ["path"]).equals(rows(out, "errors.parquet", ["path"]))


@pytest.mark.parametrize("argv, needle", [(["--min-s", "-1"], "min_s"), (["--hop-s", "0"], "hop_s")])
def test_bad_segment_options_are_one_line(argv, needle, archive, phone_bundle, tmp_path, capsys):
    out = tmp_path / "bad"
    assert main(["score", str(archive[0]), "--model", str(phone_bundle), "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not (out / "segments").exists()


def test_an_input_committed_twice_is_kept_once(scored, tmp_path):
    """A killed run's worker may commit a task the re-run redoes: consolidation keeps one copy."""
    import shutil

    out = tmp_path / "dup"
    shutil.copytree(scored, out)
    done = sorted((out / "_parts" / "done").glob("*.parquet"))[0]
    key = done.stem
    for sub, name in (("segments", f"part-{key}.parquet"), ("_parts/files", f"{key}.parquet"),
                      ("_parts/errors", f"{key}.parquet"), ("_parts/done", f"{key}.parquet")):  # fmt: skip
        shutil.copy(out / sub / name, out / sub / name.replace(key, "zzzzz-dup"))
    from seremo.scoring.sink import consolidate

    files, errors = consolidate(out, json.loads((scored / "score.json").read_text())["classes"])
    assert files.num_rows + errors.num_rows == 10
    a = pq.read_table(scored / "segments").num_rows
    assert pq.read_table(out / "segments").num_rows == a


@pytest.mark.slow
def test_two_hour_file_stays_under_1_gib(phone_bundle, emodb_wavs, tmp_path):
    """Featurize + predict a 2-hour stereo 8 kHz call in one process; peak RSS stays bounded."""
    long = tmp_path / "two_hours.wav"
    speech = [sf.read(p, dtype="float32")[0][::2] for p in emodb_wavs[:20]]  # crude 8 kHz copies
    rng = np.random.default_rng(0)
    with sf.SoundFile(long, "w", samplerate=8000, channels=2, subtype="ULAW") as f:
        written = 0
        while written < 2 * 3600 * 8000:
            block = (rng.standard_normal((8000 * 60, 2)) * 3e-4).astype(np.float32)
            y = speech[rng.integers(len(speech))]
            block[8000 : 8000 + len(y), written // (8000 * 60) % 2] += y  # one utterance a minute
            f.write(block)
            written += len(block)
    code = (
        "import resource, sys, pyarrow as pa; from seremo import bundle;"
        "from seremo.score import featurize_files, Predictor;"
        "b = bundle.load(sys.argv[2]);"
        "t = featurize_files(pa.table({'path': [sys.argv[1]]}), b.feature_set, {'channels': 'split', 'segment': {}});"
        "assert t.column('error')[0].as_py() is None, t.column('message')[0];"
        "out = Predictor(sys.argv[2])(t); n = len(out.column('segments')[0].as_py());"
        # VmHWM: this process's own peak. ru_maxrss is not: Linux carries the parent's peak across fork +
        # exec, so inside a long pytest session it read pytest's own size (1165 MiB once for a 351 MiB run).
        "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')];"
        "print(n, t.column('duration_s')[0].as_py(), hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    res = subprocess.run([sys.executable, "-c", code, str(long), str(phone_bundle)], capture_output=True, text=True, check=True)
    n_segments, duration, peak_kib = res.stdout.split()
    assert float(duration) == pytest.approx(7200, abs=60)
    assert int(n_segments) >= 100  # about one utterance a minute, found
    assert int(peak_kib) * 1024 < 1024**3, f"peak RSS {int(peak_kib) / 1024:.0f} MiB"


def test_an_out_dir_of_another_model_or_segmentation_is_refused_not_mixed(scored, archive, phone_bundle, capsys):
    """Resuming is for the same model and segmentation: rows of two runs must never mix in one output."""
    before = {p.name: p.stat().st_mtime_ns for p in (scored / "_parts" / "done").glob("*.parquet")}
    argv = ["score", str(archive[0]), "--model", str(phone_bundle), "--out", str(scored), "--segment", "fixed"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "other channel/segment settings" in err and "new --out" in err and len(err.splitlines()) == 1
    assert {p.name: p.stat().st_mtime_ns for p in (scored / "_parts" / "done").glob("*.parquet")} == before


def test_the_archive_report_matches_the_parquet_it_summarises(scored):
    """report.json's figures, recomputed here from segments/, files.parquet and errors.parquet."""
    from seremo.labels import NEGATIVE
    from seremo.scoring.report import REPORT_FILES

    fig = json.loads((scored / "report.json").read_text())
    segs = pq.read_table(scored / "segments").to_pandas()
    segs["dur"] = segs["end_s"] - segs["start_s"]
    assert fig["segments"] == len(segs) and fig["files"] == pq.read_metadata(scored / "files.parquet").num_rows
    assert fig["errors"] == pq.read_metadata(scored / "errors.parquet").num_rows
    assert sorted(fig["label_shares"]) == ["0", "1"]  # a stereo archive, channels split
    for ch, g in segs.groupby("channel"):
        shares = fig["label_shares"][str(ch)]
        assert shares["speech_s"] == pytest.approx(g["dur"].sum()) and shares["segments"] == len(g)
        for label in fig["classes"]:
            assert shares[label] == pytest.approx(g.loc[g["label"] == label, "dur"].sum() / g["dur"].sum())
    neg = segs[segs["label"].isin(NEGATIVE)].groupby("path")["dur"].sum().sort_values(ascending=False)
    top = fig["most_negative"]
    assert [t["path"] for t in top] == neg.index[: len(top)].tolist()
    assert [t["negative_s"] for t in top] == pytest.approx(neg.iloc[: len(top)].tolist())
    assert fig["confidence"]["mean"] == pytest.approx(segs["confidence"].mean())
    md = (scored / "report.md").read_text()
    assert md.startswith("# seremo score report") and top[0]["path"] in md
    for name in REPORT_FILES:
        if name.endswith(".png") and f"({name})" in md:
            assert (scored / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (scored / "label_shares.png").is_file() and (scored / "timeline_1.png").is_file()


def test_an_actor_pool_scores_exactly_what_the_fused_tasks_score(scored, archive, phone_bundle, tmp_path):
    """--actors 1 gets the driver's bundle through the object store as the fused tasks do: same rows, same figures."""
    out = tmp_path / "actors"
    score(str(archive[0]), str(phone_bundle), str(out), ScoreSettings(actors=1))
    keys = ["path", "channel", "start_s"]
    a = pq.read_table(scored / "segments").to_pandas().sort_values(keys).reset_index(drop=True)
    b = pq.read_table(out / "segments").to_pandas().sort_values(keys).reset_index(drop=True)
    assert len(a) == len(b) > 0
    assert a.equals(b)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_failed_afresh_rerun_leaves_the_earlier_scores_as_they_were(scored, archive, phone_bundle, tmp_path):
    """Other settings or another model score afresh (``seremo run``): beside the finished run, swapped in
    only when the new one has succeeded; a user's file in the folder stays through both."""
    out = tmp_path / "out"
    shutil.copytree(scored, out)
    (out / "my_notes.txt").write_text("mine\n")
    before = _snapshot(out)
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(2):
        (broken / f"call{i}.wav").write_bytes(os.urandom(2048))
    with pytest.raises(SeremoError, match="every one of the 2 inputs failed.*earlier scores are kept"):
        score(str(broken), str(phone_bundle), str(out), ScoreSettings(), afresh=True)
    assert _snapshot(out) == before, "a failed re-run changed the finished one"

    fixed = ScoreSettings(segment={"mode": "fixed"})
    summary = score(str(archive[0]), str(phone_bundle), str(out), fixed, afresh=True)
    assert (summary["inputs"], summary["files"], summary["errors"]) == (10, 6, 4)
    assert (out / "my_notes.txt").read_text() == "mine\n"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".seremo-staging-")]
    files = pq.read_table(out / "files.parquet").to_pandas()
    segs = pq.read_table(out / "segments").to_pandas()
    assert sorted(files["path"]) == sorted(set(segs["path"])) and len(files) == 6  # the new run's rows only
    assert json.loads((out / "score.json").read_text())["settings"]["segment"] == {"mode": "fixed"}
