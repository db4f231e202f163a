"""Issue 30: every input accounted, one clear line for every mistake.

Symlinks that lead nowhere are inputs (error rows, never dropped), containers cut
short are ``truncated``, a prepare where no file is readable fails, and a URI
with a slash missing is refused before anything is written.
"""

from __future__ import annotations

import pytest

from seremo import storage
from seremo.cli import main
from seremo.errors import SeremoError

# --------------------------------------------------------------------------- mistyped URIs


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("s3:/bucket/scores", "s3://bucket/scores"), ("gs:/x", "gs://x"), ("s3:x", "s3://x"),
     ("hdfs:/x", "hdfs://x"), ("file:/x", "file:///x"), ("abfs:/container/x", "abfs://container/x")],
)  # fmt: skip
def test_a_mistyped_uri_is_refused_in_one_line(typed, meant):
    with pytest.raises(SeremoError) as exc:
        storage.is_uri(typed)
    line = str(exc.value)
    assert "\n" not in line and line.startswith(f"{typed}: looks like a mistyped URI") and f"did you mean {meant}?" in line
    with pytest.raises(SeremoError):
        storage.filesystem(typed)


@pytest.mark.parametrize("path", ["runs/a:b", "a:b", "./s3:/x", "s3data:/x", "/tmp/s3:/x", "s3://bucket/x"])
def test_paths_with_a_colon_elsewhere_are_kept(path):
    assert storage.check_path(path) == path


def test_every_verb_refuses_a_mistyped_out_before_writing(tmp_path, monkeypatch, capsys, emodb_root):
    """``--out s3:/bucket/...`` once wrote a local folder ``./s3:`` and exited 0."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("a folder that already holds things\n")
    for _ in range(2):
        assert main(["prepare", "emodb", str(emodb_root), "--out", "s3:/bucket/m.parquet"]) == 2
        assert main(["score", str(emodb_root / "wav"), "--model", "s3:/bucket/model", "--out", "out"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all("looks like a mistyped URI" in line for line in err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
