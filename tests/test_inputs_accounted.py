"""Issue 30: every input accounted, one clear line for every mistake.

Symlinks that lead nowhere are inputs (error rows, never dropped), containers cut
short are ``truncated``, a prepare where no file is readable fails, and a URI
with a slash missing is refused before anything is written.
"""

from __future__ import annotations

import pytest
import soundfile as sf

from seremo import audio, storage
from seremo.cli import main
from seremo.errors import AudioError, SeremoError

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
