"""The one commit protocol (seremo.commit): unique names, commit by marker, fence by lease.

No Ray here: the sinks' ``write`` is what a task runs; these tests run the protocol's
steps the way two tasks, a stale worker and a killed run would.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seremo import commit, outputs, storage

PARTS = ("rows", "errors")


def _stage(staging: commit.Staging, task_idx: int, paths: list[str]) -> tuple[str, list[str]]:
    key = commit.new_key(task_idx)
    staged = [staging.part(sub, key) for sub in PARTS]
    for f in staged:
        storage.write_parquet(pa.table({"path": paths}), f)
    return key, staged


def _committed(staging: commit.Staging, task_idx: int, paths: list[str], token: str) -> str:
    """A task that staged ``paths`` and committed them under ``token``: its key."""
    key, staged = _stage(staging, task_idx, paths)
    assert staging.commit(key, pa.table({"path": paths}), token, staged)
    return key


def _complete(staging: commit.Staging):
    return lambda key: all(storage.is_file(staging.part(sub, key)) for sub in PARTS)


@pytest.fixture
def staging(tmp_path) -> commit.Staging:
    return commit.Staging(str(tmp_path / "out"), PARTS)


def test_two_writers_of_one_task_index_never_overwrite_each_other(staging):
    with outputs.Lease(staging.out, "score") as lease:
        a = _committed(staging, 0, ["a.wav"], lease.token)
        b = _committed(staging, 0, ["b.wav"], lease.token)
        commits = staging.commits(_complete(staging))
    assert a != b
    assert {k: t.column("path").to_pylist() for k, t in commits.items()} == {a: ["a.wav"], b: ["b.wav"]}
    assert all(commit.commit_token(t) == lease.token for t in commits.values())


def test_a_fenced_stale_writer_commits_nothing_and_removes_what_it_staged(staging):
    with outputs.Lease(staging.out, "score"):
        key, staged = _stage(staging, 3, ["a.wav"])
        assert not staging.commit(key, pa.table({"path": ["a.wav"]}), "a-killed-runs-token", staged)
        assert not any(storage.exists(f) for f in staged)
        assert staging.markers() == [] and staging.commits(_complete(staging)) == {}


def test_the_fence_is_the_outputs_lease_when_staging_lives_elsewhere(tmp_path):
    out = str(tmp_path / "out")
    elsewhere = commit.Staging(str(tmp_path / "out" / ".seremo-staging-x"), PARTS, lease_at=out)
    with outputs.Lease(out, "extract") as lease:
        _committed(elsewhere, 0, ["a.wav"], lease.token)


def test_a_killed_runs_leftovers_go_and_commits_stay(staging):
    with outputs.Lease(staging.out, "score") as lease:
        kept = _committed(staging, 0, ["a.wav"], lease.token)
        _, left = _stage(staging, 1, ["b.wav"])  # staged, never committed: its run was killed
        staging.remove_uncommitted()
    assert not any(storage.exists(f) for f in left)
    assert list(staging.commits(_complete(staging))) == [kept]


def test_a_run_takes_only_its_own_commits_when_asked(staging):
    with outputs.Lease(staging.out, "extract") as first:
        old = _committed(staging, 0, ["a.wav"], first.token)
    with outputs.Lease(staging.out, "extract") as second:
        new = _committed(staging, 0, ["a.wav"], second.token)
        assert list(staging.commits(_complete(staging), token=second.token)) == [new]
        assert sorted(staging.commits(_complete(staging))) == sorted([old, new])


def test_a_commit_missing_a_part_is_not_taken(staging):
    with outputs.Lease(staging.out, "score") as lease:
        key = _committed(staging, 0, ["a.wav"], lease.token)
    storage.delete_file(staging.part(PARTS[1], key))
    assert staging.commits(_complete(staging)) == {}


def test_publish_moves_a_part_or_writes_what_the_commit_owns(staging):
    out = Path(staging.out)
    with outputs.Lease(staging.out, "score") as lease:
        key = _committed(staging, 0, ["a.wav", "b.wav"], lease.token)
    staging.publish("rows", key, str(out / "rows" / f"part-{key}.parquet"))
    staging.publish("errors", key, str(out / "errors" / f"part-{key}.parquet"), table=pa.table({"path": ["a.wav"]}))
    assert not any(storage.exists(staging.part(sub, key)) for sub in PARTS)
    assert pq.read_table(out / "rows" / f"part-{key}.parquet").num_rows == 2
    assert pq.read_table(out / "errors" / f"part-{key}.parquet").num_rows == 1


def test_clear_in_a_folder_that_holds_other_things_twice(staging):
    out = Path(staging.out)
    (out / "mine").mkdir(parents=True)
    (out / "mine" / "notes.txt").write_text("the user's\n")
    (out / "keep.parquet").write_text("not seremo's\n")
    for _ in range(2):
        with outputs.Lease(staging.out, "score") as lease:
            _committed(staging, 0, ["a.wav"], lease.token)
            staging.clear()
        assert not (out / commit.PARTS).exists()
        assert sorted(p.name for p in out.rglob("*")) == ["keep.parquet", "mine", "notes.txt"]


# --------------------------------------------------------------------------- extract's sink on the protocol


def _rows(ids: list[str], failed: tuple[str, ...] = ()) -> pa.Table:
    """What extract's UDF hands the sink: manifest columns, features, and the in-flight error columns."""
    from seremo import manifest, shards

    table = pa.Table.from_pylist(
        [{"utterance_id": u, "path": f"/a/{u}.wav", "corpus": "c", "speaker": "s", "group": "g", "duration_s": 1.0,
          "features": [0.0, 1.0], "shape": [2]} for u in ids],  # fmt: skip
        schema=shards.shard_schema({"name": "x"}).remove_metadata(),
    )
    assert set(manifest.SCHEMA.names) <= set(table.column_names)
    bad = [u in failed for u in ids]
    return (table.append_column(shards.ERROR_KIND, pa.array(["missing" if b else None for b in bad], pa.string()))
            .append_column(shards.ERROR_MESSAGE, pa.array(["gone" if b else None for b in bad], pa.string()))
            .append_column(shards.ERROR_STAGE, pa.array(["decode" if b else None for b in bad], pa.string())))  # fmt: skip


def _write(sink, task_idx: int, table: pa.Table) -> dict:
    import types

    return sink.write([table], types.SimpleNamespace(task_idx=task_idx))


def test_extract_publishes_its_own_commits_and_never_a_stale_or_killed_runs(tmp_path):
    from seremo import shards

    out = str(tmp_path / "features")
    desc = {"name": "x", "kind": "vector", "version": "1"}
    with outputs.Lease(out, "extract") as killed:  # a killed run: committed one task, staged another
        sink = shards.FeatureShardSink(out, desc, killed.token)
        _write(sink, 0, _rows(["k1"]))
        key = commit.new_key(1)
        storage.write_parquet(pa.table({"x": [1]}), sink.staging.part(shards.SHARDS, key))
    with outputs.Lease(out, "extract") as lease:
        sink = shards.FeatureShardSink(out, desc, lease.token)
        returns = [_write(sink, 0, _rows(["a", "b"], failed=("b",))), _write(sink, 1, _rows(["c"], failed=("c",)))]
        stale = shards.FeatureShardSink(out, desc, killed.token)  # the killed run's worker, waking late
        assert _write(stale, 2, _rows(["z"])).get("fenced")
        sink.on_write_complete(type("R", (), {"write_returns": returns})())
        listed = sink.publish()
    assert [s["rows"] for s in listed] == [1]  # task 1 failed every row: committed, no shard
    assert sorted(p.name for p in (tmp_path / "features" / shards.SHARDS).iterdir()) == [listed[0]["name"]]
    assert pq.read_table(tmp_path / "features" / shards.SHARDS / listed[0]["name"]).column("utterance_id").to_pylist() == ["a"]
    assert [e["utterance_id"] for e in sink.errors] == ["b", "c"] and sink.rows == 1
    assert not (tmp_path / "features" / commit.PARTS).exists()  # the killed run's parts went with the staging
