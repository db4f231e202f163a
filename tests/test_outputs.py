"""Nothing lost, nothing mixed: output ownership, leases, resume keys, failure budgets.

Every output path is tried on a folder that already holds other things, twice.
The archive is a handful of real EmoDB utterances; the bundle a logistic
regression on the default feature set of all of EmoDB (accuracy is not the point).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_failed_reruns_keep, kill_tree, tree_digest

from seremo import bundle, classical, manifest, outputs, shards
from seremo.cli import main
from seremo.errors import SeremoError
from seremo.score import ScoreSettings, score

N_CALLS = 8


@pytest.fixture(scope="module")
def model16(emodb_features, tmp_path_factory) -> Path:
    feats = shards.read_features(emodb_features)
    y = np.asarray(feats.table.column("label").to_pylist())
    model = classical.fit("logreg", {"C": 0.1}, feats.matrix(), y)
    meta = bundle.base_meta(model_kind="sklearn", model_name="logreg", params={"C": 0.1},
                            feature_set=feats.feature_set, classes=list(model.classes_),
                            training={"corpora": ["emodb"], "utterances": len(y), "groups": 10}, metrics={})  # fmt: skip
    return bundle.save_classical(tmp_path_factory.mktemp("model16") / "model", model, meta)


@pytest.fixture()
def calls(emodb_wavs, tmp_path) -> Path:
    root = tmp_path / "calls"
    root.mkdir()
    for wav in emodb_wavs[:N_CALLS]:
        shutil.copy(wav, root / wav.name)
    return root


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def _segments(out: Path) -> pa.Table:
    """The published segment parts (not whatever else a user keeps in segments/)."""
    return pa.concat_tables([pq.read_table(p) for p in sorted((out / "segments").glob("part-*.parquet"))])


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# --------------------------------------------------------------------------- score


def test_user_files_under_out_survive_two_runs(calls, model16, ray_session, tmp_path, capsys, monkeypatch):
    out = tmp_path / "mine"
    (out / "segments").mkdir(parents=True)
    (out / "notes.txt").write_text("mine\n")
    # seremo never marked this folder, and it already holds segments/: refused, nothing touched
    assert main(["score", str(calls), "--model", str(model16), "--out", str(out)]) == 2
    assert "segments" in _one_line(capsys)
    (out / "segments").rmdir()
    assert main(["score", str(calls), "--model", str(model16), "--out", str(out)]) == 0
    (out / "segments" / "keep.txt").write_text("also mine\n")
    first = _segments(out).num_rows
    assert main(["score", str(calls), "--model", str(model16), "--out", str(out)]) == 0  # resumes: nothing to do
    assert "resuming: 8 of 8" in capsys.readouterr().out
    assert (out / "notes.txt").read_text() == "mine\n"
    assert (out / "segments" / "keep.txt").read_text() == "also mine\n"
    assert _segments(out).num_rows == first
    files = pq.read_table(out / "files.parquet")
    assert files.num_rows == N_CALLS and len(set(files.column("path").to_pylist())) == N_CALLS
    assert_failed_reruns_keep(out, ["score", str(calls), "--model", str(model16), "--out", str(out)], 1,
                              monkeypatch, capsys)  # fmt: skip


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_out_and_input_apart(where, calls, model16, capsys):
    before = _tree_digest(calls)
    if where == "around":  # the input folder inside --out
        out, source = calls.parent, calls
    else:
        out, source = (calls if where == "same" else calls / "scores"), calls
    assert main(["score", str(source), "--model", str(model16), "--out", str(out)]) == 2
    err = _one_line(capsys)
    assert ("inside the input folder" in err) if where != "around" else ("holds the input" in err)
    assert _tree_digest(calls) == before


def test_same_archive_typed_two_ways_resumes_without_duplicates(calls, model16, ray_session, tmp_path,
                                                                monkeypatch, capsys):  # fmt: skip
    out = tmp_path / "two-ways"
    monkeypatch.chdir(calls.parent)
    assert main(["score", "calls", "--model", str(model16), "--out", str(out)]) == 0
    rows = _segments(out).num_rows
    capsys.readouterr()
    assert main(["score", f"{os.getcwd()}/./calls/", "--model", str(model16), "--out", str(out)]) == 0
    assert "resuming: 8 of 8" in capsys.readouterr().out
    assert _segments(out).num_rows == rows
    keys = _segments(out).select(["path", "channel", "start_s"]).to_pylist()
    assert len({tuple(k.values()) for k in keys}) == len(keys)
    assert all(os.path.isabs(p) and "/./" not in p for p in pq.read_table(out / "files.parquet").column("path").to_pylist())


def test_another_archive_into_the_same_out_is_refused_before_work(calls, model16, ray_session, tmp_path, capsys):
    out = tmp_path / "one-archive"
    assert main(["score", str(calls), "--model", str(model16), "--out", str(out)]) == 0
    other = tmp_path / "other"
    shutil.copytree(calls, other)
    (other / next(iter(sorted(p.name for p in other.iterdir())))).unlink()
    before = _tree_digest(out)
    started = time.perf_counter()
    assert main(["score", str(other), "--model", str(model16), "--out", str(out)]) == 2
    assert "another input set" in _one_line(capsys)
    assert time.perf_counter() - started < 30  # refused up front, not after scoring (generous: a noisy machine)
    assert _tree_digest(out) == before


def test_every_input_failing_exits_non_zero_after_writing_errors(model16, ray_session, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"x{i}.wav").write_bytes(os.urandom(2048))
    out = tmp_path / "bad-out"
    assert main(["score", str(bad), "--model", str(model16), "--out", str(out)]) == 2
    assert "every one of the 3 inputs failed" in _one_line(capsys)
    assert pq.read_table(out / "errors.parquet").num_rows == 3


def test_failures_that_are_not_the_inputs_own_spend_a_budget():
    """A bug that fails some inputs (not their fault) ends the run non-zero past the budget;
    inputs that are themselves bad (missing, corrupt ...) do not, unless every input fails."""
    from seremo.errors import check_failures

    with pytest.raises(SeremoError, match="not the input's own"):
        check_failures("out", 10, 5, ["RuntimeError"] * 3 + ["missing"] * 2, ["feature bug"], 0.05)
    check_failures("out", 10, 8, ["missing", "truncated"], ["no such file"], 0.05)
    check_failures("out", 100, 96, ["RuntimeError"] * 4, ["feature bug"], 0.05)  # within 5 %
    with pytest.raises(SeremoError, match="every one of the 2 inputs failed"):
        check_failures("out", 2, 0, ["missing"] * 2, ["no such file"], 0.05)


# --------------------------------------------------------------------------- leases and killed workers


def _start_stopping_run(calls: Path, model: Path, out: Path, stop_at: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "SEREMO_TEST_STOP_BEFORE_COMMIT": str(stop_at)}
    cmd = [sys.executable, "-m", "seremo.cli", "score", str(calls), "--model", str(model), "--out", str(out),
           "--files-per-task", "1"]  # fmt: skip
    return subprocess.Popen(cmd, env=env, start_new_session=True, stdout=open(log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115


def _wait_for_stopped_worker(proc: subprocess.Popen, log: Path, timeout: float = 240):
    import psutil

    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                if child.status() == psutil.STATUS_STOPPED:
                    return child
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.2)
    raise AssertionError(f"no worker stopped before its commit:\n{log.read_text()[-3000:]}")


ZOMBIE = """
import json, sys, types, pyarrow as pa
from seremo import bundle
from seremo.score import Predictor, ScoreSettings, ScoreSink, featurize_files
out, model, path, token = sys.argv[1:5]
b = bundle.load(model)
t = Predictor(model)(featurize_files(pa.table({"path": [path]}), b.feature_set, ScoreSettings().model_dump()))
print(json.dumps(ScoreSink(out, b.classes, b.model_id, token).write([t], types.SimpleNamespace(task_idx=0))))
"""


@pytest.mark.slow
def test_a_killed_runs_worker_waking_after_the_rerun_starts_loses_and_duplicates_nothing(
    calls, model16, ray_session, tmp_path, capsys
):
    """A run is killed while a worker is frozen before its commit; the re-run starts; the worker wakes.
    (And while the run still lives, a second concurrent run into its --out is refused.)

    Ray kills the workers of a local instance with the instance, so the frozen worker that outlives
    the killed run is the sink's own code in a process of its own (what a worker on a surviving
    node runs), holding the killed run's lease token and stopped (SIGSTOP) just before its commit.
    """
    baseline = tmp_path / "baseline"
    score(str(calls), str(model16), str(baseline), ScoreSettings())
    out = tmp_path / "zombie"
    stop_at = sorted(calls.iterdir())[4]
    proc = _start_stopping_run(calls, model16, out, stop_at, tmp_path / "killed.log")
    worker = _wait_for_stopped_worker(proc, tmp_path / "killed.log")
    staged = [p for p in (out / "_parts" / "files").glob("*.parquet")
              if str(stop_at) in pq.read_table(p).column("path").to_pylist()]  # fmt: skip
    assert staged, "the stopped worker had staged its part: it was about to commit"
    # While the first run lives (its worker frozen), a second run into the same --out is refused
    assert main(["score", str(calls), "--model", str(model16), "--out", str(out)]) == 2
    err = _one_line(capsys)
    assert "being written by another `seremo score` run" in err and str(proc.pid) in err
    old_token = json.loads((out / outputs.LEASE).read_text())["token"]
    kill_tree(proc, keep=worker)
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        worker.kill()  # Ray's worker goes with its instance ...
    env = {**os.environ, "SEREMO_TEST_STOP_BEFORE_COMMIT": str(stop_at)}
    zombie = subprocess.Popen([sys.executable, "-c", ZOMBIE, str(out), str(model16), str(stop_at), old_token],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 120  # ... this one, of the same run, is frozen before its commit
    while psutil.Process(zombie.pid).status() != psutil.STATUS_STOPPED:
        assert zombie.poll() is None and time.time() < deadline, zombie.communicate()
        time.sleep(0.1)

    def wake_when_taken_over() -> None:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if json.loads((out / outputs.LEASE).read_text())["token"] != old_token:
                    break
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                pass
            time.sleep(0.02)
        zombie.send_signal(signal.SIGCONT)

    waker = threading.Thread(target=wake_when_taken_over)
    waker.start()
    score(str(calls), str(model16), str(out), ScoreSettings(files_per_task=2))
    waker.join()
    said, err = zombie.communicate(timeout=60)
    assert zombie.returncode == 0, err[-2000:]
    assert json.loads(said.strip().splitlines()[-1]).get("fenced") == 1  # it woke, and was refused its commit
    score(str(calls), str(model16), str(out), ScoreSettings())  # and once more: still the same rows

    def rows(d: Path, name: str, keys: list[str]):
        t = _segments(d) if name == "segments" else pq.read_table(d / name)
        return t.to_pandas().sort_values(keys).reset_index(drop=True)

    keys = ["path", "channel", "start_s"]
    a, b = rows(baseline, "segments", keys), rows(out, "segments", keys)
    assert len(a) == len(b) and not b.duplicated(keys).any()
    assert (a.drop(columns=["model_id"]).round(6) == b.drop(columns=["model_id"]).round(6)).all().all()
    assert rows(baseline, "files.parquet", ["path"]).round(6).equals(rows(out, "files.parquet", ["path"]).round(6))
    owners = [pq.read_table(p).column("path").to_pylist() for p in (out / "_parts" / "done").glob("*.parquet")]
    assert sum(str(stop_at) in paths for paths in owners) == 1  # only the re-run's commit holds it
    assert not list((out / "_parts" / "files").glob(".*tmp"))


# --------------------------------------------------------------------------- extract


def test_extract_into_a_folder_of_other_things_twice(emodb_manifest, ray_session, tmp_path, capsys, monkeypatch):
    m = manifest.read(emodb_manifest).slice(0, 12)
    path = tmp_path / "m.parquet"
    manifest.write(m, str(path))
    out = tmp_path / "feats"
    out.mkdir()
    (out / "readme.txt").write_text("mine\n")
    for _ in range(2):
        assert main(["extract", str(path), "--features", "compact8", "--out", str(out)]) == 0
    assert "skipped" in capsys.readouterr().out
    assert (out / "readme.txt").read_text() == "mine\n"
    assert shards.read_features(str(out)).table.num_rows == 12
    argv = ["extract", str(path), "--features", "compact8", "--out", str(out), "--overwrite"]
    assert_failed_reruns_keep(out, argv, 1, monkeypatch, capsys)
    # --overwrite interrupted late (its shards written, its errors table not yet): the finished one stays
    before = tree_digest(out)
    with monkeypatch.context() as m:
        m.setattr(shards, "write_errors", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
        assert main(argv) == 130
    assert tree_digest(out) == before
    assert main(argv) == 0  # and when it succeeds, the new extraction replaces the old one whole
    assert shards.read_features(str(out)).table.num_rows == 12 and (out / "readme.txt").read_text() == "mine\n"
    assert not list(out.glob(".seremo-staging-*")) and len(list((out / "shards").glob("*.parquet"))) >= 1


def test_a_manifest_of_unreachable_paths_exits_non_zero(emodb_manifest, ray_session, tmp_path, monkeypatch, capsys):
    """Relative paths written by hand, extracted from another folder: every input missing."""
    rows = manifest.read(emodb_manifest).slice(0, 5).to_pylist()
    for r in rows:
        r["path"] = "wav/" + Path(r["path"]).name
    table = pa.Table.from_pylist(rows, schema=manifest.SCHEMA)
    pq.write_table(table, tmp_path / "relative.parquet")
    monkeypatch.chdir(tmp_path)
    assert main(["extract", "relative.parquet", "--features", "compact8", "--out", "feats"]) == 2
    assert "every one of the 5 inputs failed (missing x5" in _one_line(capsys)
    assert pq.read_table(tmp_path / "feats" / "errors.parquet").num_rows == 5


def test_a_lost_or_copied_shard_and_a_changed_manifest_are_caught(emodb_manifest, ray_session, tmp_path, capsys):
    m = manifest.read(emodb_manifest).slice(0, 40)
    path = tmp_path / "m.parquet"
    manifest.write(m, str(path))
    out = tmp_path / "feats"
    assert main(["extract", str(path), "--features", "compact8", "--out", str(out), "--batch-size", "10"]) == 0
    parts = sorted((out / "shards").glob("*.parquet"))
    assert len(parts) == 4

    lost = tmp_path / "lost"
    shutil.copytree(out, lost)
    next(iter(sorted((lost / "shards").glob("*.parquet")))).unlink()
    with pytest.raises(SeremoError, match="is missing") as exc:
        shards.read_features(str(lost))
    assert len(str(exc.value).splitlines()) == 1
    assert main(["tune", str(lost), "--out", str(tmp_path / "t")]) == 2
    assert "is missing" in _one_line(capsys)

    copied = tmp_path / "copied"
    shutil.copytree(out, copied)
    shutil.copy(parts[0], copied / "shards" / "part-99999-copy.parquet")
    with pytest.raises(SeremoError, match="not written by this extraction"):
        shards.read_features(str(copied))

    # Re-prepared: the same number of rows, another label on one of them. Never skipped as "done".
    labels = m.column("label").to_pylist()
    labels[0] = "sad" if labels[0] != "sad" else "angry"
    manifest.write(m.set_column(m.column_names.index("label"), "label", pa.array(labels)), str(path))
    capsys.readouterr()
    assert main(["extract", str(path), "--features", "compact8", "--out", str(out)]) == 2
    assert "different finished extraction" in _one_line(capsys)


# --------------------------------------------------------------------------- tune and train run dirs


TINY_TUNE = "outer_folds: 2\ninner_folds: 2\nmodels:\n  logreg:\n    C: [1.0]\n"


def test_run_dirs_belong_to_one_verb_and_model(emodb_features, emodb_manifest, ray_session, tmp_path, capsys,
                                               monkeypatch):  # fmt: skip
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_TUNE)
    run = tmp_path / "run"
    run.mkdir()
    (run / "readme.txt").write_text("mine\n")
    argv = ["tune", emodb_features, "--out", str(run), "--config", str(cfg)]
    for _ in range(2):  # twice into a folder of other things
        assert main(argv) == 0
    assert (run / "readme.txt").read_text() == "mine\n"
    assert bundle.load(run / "model").meta.model_name == "logreg"
    assert not list(run.glob(".seremo-staging-*"))
    assert_failed_reruns_keep(run, argv, 1, monkeypatch, capsys)
    # outputs never land inside another output or a bundle, nor on an input
    for verb in (["evaluate", str(run / "model"), emodb_features], ["tune", emodb_features],
                 ["prepare", "parquet", emodb_manifest]):  # fmt: skip
        for out in (run / "model", run / "nested", Path(emodb_features) / "shards" / "part-0.parquet"):
            assert main([*verb, "--out", str(out)]) == 2
            assert "write the output" in _one_line(capsys)
    assert main(["prepare", "parquet", emodb_manifest, "--class-set", "core4", "--out", emodb_manifest]) == 2
    assert "is the corpus" in _one_line(capsys)
    before = _tree_digest(run)
    capsys.readouterr()
    assert main(["train", emodb_features, "--model", "mlp", "--out", str(run)]) == 2
    assert "holds the output of `seremo tune`" in _one_line(capsys)
    assert _tree_digest(run) == before
    assert main(["extract", emodb_manifest, "--out", str(run)]) == 2
    assert "seremo tune" in _one_line(capsys)

    # A forged bundle listing a file outside itself (checksum recomputed) is refused before anything is
    # read or removed: a re-run of its run dir must not delete the file it names.
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    meta = json.loads((run / "model" / "bundle.json").read_text())
    meta["files"]["../../victim.txt"] = hashlib.sha256(victim.read_bytes()).hexdigest()
    meta["bundle_sha256"] = bundle.meta_digest(meta)
    (run / "model" / "bundle.json").write_text(json.dumps(meta))
    before = _tree_digest(run)
    with pytest.raises(SeremoError, match="outside the bundle folder"):
        bundle.load(run / "model")
    assert main(argv) == 2
    assert "a name outside the bundle" in _one_line(capsys)
    assert victim.read_text() == "keep me" and _tree_digest(run) == before


def test_a_killed_runs_staging_goes_when_the_next_run_stages_and_nothing_else_does(tmp_path):
    out = tmp_path / "run"
    stale = out / (outputs.STAGING + "a" * 32)
    (stale / "model").mkdir(parents=True)
    (out / ".seremo-staging-mine").mkdir()  # not a seremo staging name: the user's
    run = outputs.stage(str(out), "b" * 32)
    assert not stale.exists() and (out / ".seremo-staging-mine").is_dir() and run.local.is_dir()
    (run.local / "metrics.json").write_text("{}")
    outputs.discard(run)
    assert sorted(p.name for p in out.iterdir()) == [".seremo-staging-mine"]


def test_a_live_lease_is_refused_and_a_dead_one_taken_over(tmp_path):
    out = str(tmp_path / "leased")
    with outputs.Lease(out, "score"):
        with pytest.raises(SeremoError, match="being written by another"):
            outputs.Lease(out, "score").acquire()
    # a lease left by a process that is gone from this host is taken over at once
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    held = json.loads(Path(out, outputs.LEASE).read_text()) if Path(out, outputs.LEASE).exists() else None
    assert held is None  # released on exit
    Path(out, outputs.LEASE).write_text(json.dumps({"token": "x", "verb": "score", "host": os.uname().nodename,
                                                    "pid": dead.pid, "heartbeat": time.time(), "ttl_s": 60}))  # fmt: skip
    with outputs.Lease(out, "score") as lease:
        assert outputs.holds(out, lease.token)
    # and one whose heartbeat is older than its time-to-live, from another host
    Path(out, outputs.LEASE).write_text(json.dumps({"token": "y", "verb": "score", "host": "elsewhere",
                                                    "pid": 1, "heartbeat": time.time() - 120, "ttl_s": 60}))  # fmt: skip
    with outputs.Lease(out, "score") as lease:
        assert not outputs.holds(out, "y")


def test_progress_is_drawn_on_a_terminal_only(tmp_path):
    import io

    from seremo.progress import NewFiles, Progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    (tmp_path / "old").write_text("7")
    count = NewFiles(lambda: sorted(str(p) for p in tmp_path.iterdir()), lambda p: int(Path(p).read_text()))
    count.skip_existing()
    tty, log = Tty(), io.StringIO()
    with Progress("score", 10, count, "inputs", interval_s=0.05, stream=tty):
        for i in range(3):
            (tmp_path / f"new{i}").write_text("2")
            time.sleep(0.2)
    with Progress("score", 10, count, "inputs", interval_s=0.05, stream=log):
        time.sleep(0.2)
    assert "score: 6/10 inputs (60%)" in tty.getvalue() and tty.getvalue().endswith("\n")
    assert log.getvalue() == ""


def test_prepare_never_replaces_a_file_that_is_not_a_manifest(emodb_root, tmp_path, capsys, monkeypatch):
    mine = tmp_path / "m.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), mine)
    before = mine.read_bytes()
    assert main(["prepare", "emodb", str(emodb_root), "--out", str(mine)]) == 2
    assert "not a seremo manifest" in _one_line(capsys)
    assert mine.read_bytes() == before
    out = tmp_path / "ok.parquet"
    for _ in range(2):  # re-preparing over its own manifest is fine
        assert main(["prepare", "emodb", str(emodb_root), "--out", str(out)]) == 0
    assert pq.read_metadata(out).num_rows == 535
    import seremo.prepare

    assert_failed_reruns_keep(tmp_path, ["prepare", "emodb", str(emodb_root), "--out", str(out)], 2, monkeypatch,
                              capsys, interrupt=(seremo.prepare, "prepare_corpora"))  # fmt: skip
