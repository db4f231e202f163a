"""The one commit protocol (seremo.commit): unique names, commit by marker, fence by lease.

No Ray here: the sinks' ``write`` is what a task runs; these tests run the protocol's
steps the way two tasks, a stale worker and a killed run would.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from seremo import commit, outputs, storage

PARTS = ("rows", "errors")


def _stage(staging: commit.Staging, task_idx: int, paths: list[str]) -> tuple[str, list[str]]:
    key = commit.new_key(task_idx)
    staged = [staging.part(sub, key) for sub in PARTS]
    for f in staged:
        storage.write_parquet(pa.table({"path": paths}), f)
    return key, staged


def _complete(staging: commit.Staging):
    return lambda key: all(storage.is_file(staging.part(sub, key)) for sub in PARTS)


def test_two_writers_of_one_task_index_never_overwrite_each_other(tmp_path):
    out = str(tmp_path / "out")
    staging = commit.Staging(out, PARTS)
    with outputs.Lease(out, "score") as lease:
        a, staged_a = _stage(staging, 0, ["a.wav"])
        b, staged_b = _stage(staging, 0, ["b.wav"])
        assert a != b
        assert staging.commit(a, pa.table({"path": ["a.wav"]}), lease.token, staged_a)
        assert staging.commit(b, pa.table({"path": ["b.wav"]}), lease.token, staged_b)
        commits = staging.commits(_complete(staging))
    assert {k: t.column("path").to_pylist() for k, t in commits.items()} == {a: ["a.wav"], b: ["b.wav"]}
    assert all(commit.commit_token(t) == lease.token for t in commits.values())


def test_a_fenced_stale_writer_commits_nothing_and_removes_what_it_staged(tmp_path):
    out = str(tmp_path / "out")
    staging = commit.Staging(out, PARTS)
    with outputs.Lease(out, "score"):
        key, staged = _stage(staging, 3, ["a.wav"])
        assert not staging.commit(key, pa.table({"path": ["a.wav"]}), "a-killed-runs-token", staged)
        assert not any(storage.exists(f) for f in staged)
        assert staging.markers() == [] and staging.commits(_complete(staging)) == {}


def test_the_fence_is_the_outputs_lease_when_staging_lives_elsewhere(tmp_path):
    out, staged_run = str(tmp_path / "out"), str(tmp_path / "out" / ".seremo-staging-x")
    staging = commit.Staging(staged_run, PARTS, lease_at=out)
    with outputs.Lease(out, "extract") as lease:
        key, staged = _stage(staging, 0, ["a.wav"])
        assert staging.commit(key, pa.table({"path": ["a.wav"]}), lease.token, staged)


def test_a_killed_runs_leftovers_go_and_commits_stay(tmp_path):
    out = str(tmp_path / "out")
    staging = commit.Staging(out, PARTS)
    with outputs.Lease(out, "score") as lease:
        kept, staged = _stage(staging, 0, ["a.wav"])
        staging.commit(kept, pa.table({"path": ["a.wav"]}), lease.token, staged)
        _, left = _stage(staging, 1, ["b.wav"])  # staged, never committed: its run was killed
        staging.remove_uncommitted()
    assert not any(storage.exists(f) for f in left)
    assert list(staging.commits(_complete(staging))) == [kept]


def test_a_run_takes_only_its_own_commits_when_asked(tmp_path):
    out = str(tmp_path / "out")
    staging = commit.Staging(out, PARTS)
    with outputs.Lease(out, "extract") as first:
        old, staged = _stage(staging, 0, ["a.wav"])
        staging.commit(old, pa.table({"path": ["a.wav"]}), first.token, staged)
    with outputs.Lease(out, "extract") as second:
        new, staged = _stage(staging, 0, ["a.wav"])
        staging.commit(new, pa.table({"path": ["a.wav"]}), second.token, staged)
        assert list(staging.commits(_complete(staging), token=second.token)) == [new]
        assert sorted(staging.commits(_complete(staging))) == sorted([old, new])


def test_a_commit_missing_a_part_is_not_taken(tmp_path):
    out = str(tmp_path / "out")
    staging = commit.Staging(out, PARTS)
    with outputs.Lease(out, "score") as lease:
        key, staged = _stage(staging, 0, ["a.wav"])
        staging.commit(key, pa.table({"path": ["a.wav"]}), lease.token, staged)
        storage.delete_file(staged[1])
        assert staging.commits(_complete(staging)) == {}


def test_publish_moves_a_part_or_writes_what_the_commit_owns(tmp_path):
    out = str(tmp_path / "out")
    staging = commit.Staging(out, PARTS)
    with outputs.Lease(out, "score") as lease:
        key, staged = _stage(staging, 0, ["a.wav", "b.wav"])
        staging.commit(key, pa.table({"path": ["a.wav", "b.wav"]}), lease.token, staged)
    staging.publish("rows", key, str(tmp_path / "out" / "rows" / f"part-{key}.parquet"))
    staging.publish("errors", key, str(tmp_path / "out" / "errors" / f"part-{key}.parquet"),
                    table=pa.table({"path": ["a.wav"]}))  # fmt: skip
    assert not any(storage.exists(f) for f in staged)
    assert pq.read_table(tmp_path / "out" / "rows" / f"part-{key}.parquet").num_rows == 2
    assert pq.read_table(tmp_path / "out" / "errors" / f"part-{key}.parquet").num_rows == 1


def test_clear_in_a_folder_that_holds_other_things_twice(tmp_path):
    out = tmp_path / "out"
    (out / "mine").mkdir(parents=True)
    (out / "mine" / "notes.txt").write_text("the user's\n")
    (out / "keep.parquet").write_text("not seremo's\n")
    staging = commit.Staging(str(out), PARTS)
    for _ in range(2):
        with outputs.Lease(str(out), "score") as lease:
            key, staged = _stage(staging, 0, ["a.wav"])
            staging.commit(key, pa.table({"path": ["a.wav"]}), lease.token, staged)
            staging.clear()
        assert not (out / commit.PARTS).exists()
        assert sorted(p.name for p in Path(out).rglob("*")) == ["keep.parquet", "mine", "notes.txt"]
