"""Issue 30: every input accounted, one clear line for every mistake.

Symlinks that lead nowhere are inputs (error rows, never dropped), containers cut
short are ``truncated``, a prepare where no file is readable fails, and a URI
with a slash missing is refused before anything is written.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from seremo import audio, storage
from seremo.cli import main
from seremo.errors import AudioError, SeremoError
from seremo.manifest import read as manifest_read

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


# --------------------------------------------------------------------------- containers cut short


@pytest.mark.parametrize(("fmt", "ext"), [("AIFF", "aiff"), ("CAF", "caf"), ("W64", "w64"), ("AU", "au"),
                                          ("RF64", "rf64"), ("SVX", "iff")])  # fmt: skip
def test_a_container_cut_in_half_is_truncated(tmp_path, emodb_wavs, fmt, ext):
    """A half AIFF (or CAF, W64, AU, RF64, 8SVX) once scored as a shorter file, with no error row."""
    y, sr = sf.read(emodb_wavs[0], dtype="int16")
    whole = tmp_path / f"whole.{ext}"
    sf.write(whole, y, sr, format=fmt, subtype="PCM_16")
    assert audio.info(whole).frames == len(y)
    assert sum(b.shape[1] for _, b in audio.stream(whole, block_s=0.5)) == len(y)
    data = whole.read_bytes()
    half = tmp_path / f"half.{ext}"
    half.write_bytes(data[: len(data) // 2])
    for source, name in ((half, None), (data[: len(data) // 2], f"half.{ext}"), (half.as_uri(), None)):
        for fn in (audio.load, audio.info, lambda s, name=None: list(audio.stream(s, block_s=0.5, name=name))):
            with pytest.raises(AudioError) as exc:
                fn(source, name=name)
            assert exc.value.kind == "truncated" and "header promises" in exc.value.reason, exc.value


# --------------------------------------------------------------------------- symlinks that lead nowhere


def _tree_with_broken_links(root: Path, wavs: list[Path], outside: Path) -> set[str]:
    """Real audio, a note, a hidden file, a dangling link, two kinds of file loop, a folder loop and a
    link out of the tree; returns the names that are inputs (every one that is not a folder)."""
    (root / "nested").mkdir(parents=True)
    shutil.copy(wavs[0], root / "a.wav")
    shutil.copy(wavs[1], root / "nested" / "b.wav")
    (root / "notes.txt").write_text("export batch 7\n")
    (root / ".hidden.wav").write_bytes(b"")
    os.symlink(root / "gone.wav", root / "dangling.wav")
    os.symlink("self.wav", root / "self.wav")  # a link to itself
    os.symlink("pong.wav", root / "ping.wav")  # two links to each other
    os.symlink("ping.wav", root / "pong.wav")
    os.symlink("..", root / "nested" / "up")  # a folder loop: its files are the tree's own
    shutil.copy(wavs[2], outside / "c.wav")
    os.symlink(outside, root / "elsewhere")  # a folder out of the tree: followed
    names = ["a.wav", "nested/b.wav", "notes.txt", "dangling.wav", "self.wav", "ping.wav", "pong.wav", "elsewhere/c.wav"]
    return {str(root / n) for n in names}


def test_score_lists_broken_symlinks_and_each_becomes_an_error_row(tmp_path, emodb_wavs):
    """A dangling link and a loop were once neither in files.parquet nor errors.parquet."""
    from seremo import features
    from seremo.manifest import normalise_path
    from seremo.score import featurize_files, list_inputs

    root, outside = tmp_path / "calls", tmp_path / "outside"
    outside.mkdir()
    expected = _tree_with_broken_links(root, emodb_wavs, outside)
    listed = list_inputs(str(root))
    assert listed == list_inputs(str(root))  # the same set, listed twice
    assert listed == sorted(normalise_path(p) for p in expected)
    assert str(root / "dangling.wav") in listed and str(root / "self.wav") in listed  # their own names
    scored = featurize_files(pa.table({"path": listed}), features.get("seremo", sample_rate=8000),
                             {"channels": "mix", "segment": {}}).to_pylist()  # fmt: skip
    assert [r["path"] for r in scored] == listed  # one row per input: a file's, or its error
    failed = {Path(r["path"]).name: (r["stage"], r["error"], r["message"]) for r in scored if r["error"]}
    assert failed["dangling.wav"] == ("decode", "missing", f"a dangling symlink: it points to {root / 'gone.wav'}, which is not there")
    for loop in ("self.wav", "ping.wav", "pong.wav"):
        assert failed[loop] == ("decode", "missing", "a symlink loop: its links never reach a file")
    assert failed["notes.txt"][1] == "unsupported"
    assert not {"a.wav", "b.wav", "c.wav"} & set(failed)


def test_prepare_folder_counts_broken_symlinks_as_errors(tmp_path, emodb_wavs, capsys):
    root, out = tmp_path / "mine", tmp_path / "manifests"
    (root / "angry" / "spk1").mkdir(parents=True)
    (root / "sad" / "spk1").mkdir(parents=True)
    shutil.copy(emodb_wavs[0], root / "angry" / "spk1" / "a.wav")
    shutil.copy(emodb_wavs[1], root / "sad" / "spk1" / "b.wav")
    os.symlink(root / "gone.wav", root / "angry" / "spk1" / "dangling.wav")
    os.symlink("loop.wav", root / "sad" / "spk1" / "loop.wav")
    os.symlink("..", root / "sad" / "spk1" / "up")  # a folder loop must not recurse forever
    out.mkdir()
    (out / "other.txt").write_text("already here\n")
    for _ in range(2):
        assert main(["prepare", "folder", str(root), "--out", str(out / "m.parquet")]) == 0
        assert manifest_read(out / "m.parquet").num_rows == 2
        errors = pq.read_table(out / "m.errors.parquet").to_pylist()
        assert sorted((Path(e["path"]).name, e["stage"], e["error"]) for e in errors) == [
            ("dangling.wav", "prepare", "missing"), ("loop.wav", "prepare", "missing")]  # fmt: skip
    assert "errors:   " in capsys.readouterr().out
    assert (out / "other.txt").read_text() == "already here\n"


# --------------------------------------------------------------------------- nothing readable


def test_prepare_where_no_file_is_readable_fails_in_one_line(tmp_path, emodb_wavs, capsys):
    """It once exited 0 with a 0-row manifest (extract and score exit 2 in the same case)."""
    good, bad, out = tmp_path / "good", tmp_path / "bad", tmp_path / "out"
    (good / "angry" / "spk1").mkdir(parents=True)
    shutil.copy(emodb_wavs[0], good / "angry" / "spk1" / "a.wav")
    (bad / "angry" / "spk1").mkdir(parents=True)
    (bad / "angry" / "spk1" / "noise.wav").write_bytes(os.urandom(2048))
    (bad / "angry" / "spk1" / "empty.wav").write_bytes(b"")
    os.symlink(bad / "gone.wav", bad / "angry" / "spk1" / "dangling.wav")
    assert main(["prepare", "folder", str(good), "--out", str(out / "m.parquet")]) == 0
    before = (out / "m.parquet").read_bytes()
    capsys.readouterr()
    for _ in range(2):
        assert main(["prepare", "folder", str(bad), "--out", str(out / "m.parquet")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(bad) in err[0] and "every one of the 3 audio files" in err[0]
        assert str(out / "m.errors.parquet") in err[0]
        assert (out / "m.parquet").read_bytes() == before  # the manifest there is kept
        assert pq.read_table(out / "m.errors.parquet").num_rows == 3
    assert main(["prepare", "folder", str(bad), "--out", str(out / "new.parquet")]) == 2
    assert not (out / "new.parquet").exists() and (out / "new.errors.parquet").exists()
