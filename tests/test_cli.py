"""The CLI: summaries on real data, and one clear line (exit 2) for a user's mistake."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from seremo.cli import main


def test_prepare_emodb_prints_summary_and_writes_manifest(emodb_root, tmp_path, capsys):
    out = tmp_path / "m.parquet"
    assert main(["prepare", "emodb", str(emodb_root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    t = pq.read_table(out)
    assert t.num_rows == 535
    assert len(set(t.column("speaker").to_pylist())) == 10
    counts = t.group_by("label").aggregate([("label", "count")]).to_pydict()
    assert dict(zip(counts["label"], counts["label_count"], strict=True)) == {
        "angry": 127, "bored": 81, "disgust": 46, "fearful": 69,
        "happy": 71, "neutral": 79, "sad": 62,
    }  # fmt: skip
    assert pq.read_table(tmp_path / "m.errors.parquet").num_rows == 0
    assert " 535 " in printed and "angry" in printed and "127" in printed
    # every path is absolute, so later stages can run from any folder
    assert all(p.startswith("/") for p in t.column("path").to_pylist())


def test_prepare_with_class_set_reports_exclusions(emodb_root, tmp_path, capsys):
    out = tmp_path / "m4.parquet"
    assert main(["prepare", "emodb", str(emodb_root), "--out", str(out), "--class-set", "core4"]) == 0
    t = pq.read_table(out)
    assert sorted(set(t.column("label").to_pylist())) == ["angry", "happy", "neutral", "sad"]
    assert t.num_rows == 127 + 71 + 79 + 62
    assert "excluded by class set" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["prepare", "emodb", "/no/such/dir", "--out", "x.parquet"], "not a directory"),
        (["prepare", "nosuchcorpus", "/tmp", "--out", "x.parquet"], "unknown corpus"),
        (["prepare", "emodb", "/tmp", "--out", "x.parquet", "--class-set", "bogus"], "unknown class set"),
        (["prepare", "emodb", "/tmp", "--out", "x.parquet", "--opt", "novalue"], "KEY=VALUE"),
    ],
)
def test_user_mistakes_are_one_line(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_extract_defaults_to_the_default_feature_set():
    from seremo import cli, features

    assert cli.DEFAULT_FEATURES == features.DEFAULT
    args = cli.build_parser().parse_args(["extract", "m.parquet", "--out", "x"])
    assert args.features == features.DEFAULT
