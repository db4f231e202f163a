"""seremo extract: the Ray Data pipeline on real EmoDB audio, its outputs and its error paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import feature_set_params

from seremo import features, manifest, shards
from seremo.cli import main
from seremo.errors import SeremoError
from seremo.extract import extract
from seremo.settings import ExtractSettings


def test_extract_emodb_all_rows_no_errors(emodb_features, capsys):
    summary = json.loads(open(f"{emodb_features}/extract.json").read())
    assert (summary["inputs"], summary["rows"], summary["errors"]) == (535, 535, 0)
    assert summary["feature_set"]["name"] == "seremo"
    assert summary["audio_hours"] == pytest.approx(24.8 / 60, rel=0.01)
    assert pq.read_table(f"{emodb_features}/errors.parquet").num_rows == 0
    # one throughput unit (seremo.speed): the input audio per wall second per core, in the job and since start
    assert summary["cores"] == 2 and summary["since_start_s"] >= summary["wall_s"] > 0
    assert summary["x_realtime_per_core"] == pytest.approx(summary["audio_hours"] * 3600 / summary["wall_s"] / 2)
    assert summary["x_realtime_per_core_end_to_end"] <= summary["x_realtime_per_core"]


def test_shards_load_with_pyarrow_pandas_and_ray(emodb_features, ray_session):
    shard_dir = f"{emodb_features}/shards"
    t = pq.read_table(shard_dir)
    assert t.num_rows == 535
    meta = json.loads(t.schema.metadata[b"seremo.feature_set"])
    assert meta["name"] == "seremo" and meta["version"] == features.get("seremo").version
    assert t.schema.field("features").type == pa.list_(pa.float32())
    df = pd.read_parquet(shard_dir)
    assert len(df) == 535 and set(manifest.COLUMNS) <= set(df.columns)
    ds = ray_session.data.read_parquet(shard_dir)
    assert ds.count() == 535
    row = ds.take(1)[0]
    assert len(row["features"]) == row["shape"][0]
    loaded = shards.read_features(emodb_features)
    X = loaded.matrix()
    assert X.shape == (535, len(features.get("seremo").feature_names()))
    assert np.isfinite(X).all()


def test_extract_is_deterministic(emodb_manifest, emodb_features, ray_session, tmp_path):
    subset = manifest.read(emodb_manifest).slice(0, 40)
    extract(subset, features.get("seremo"), str(tmp_path / "again"))
    first = shards.read_features(emodb_features).table
    again = shards.read_features(str(tmp_path / "again")).table
    by_id = dict(zip(first.column("utterance_id").to_pylist(), first.column("features").to_pylist(), strict=True))
    for uid, feats in zip(again.column("utterance_id").to_pylist(), again.column("features").to_pylist(), strict=True):
        assert np.asarray(feats, np.float32).tobytes() == np.asarray(by_id[uid], np.float32).tobytes()


@pytest.mark.parametrize("name", feature_set_params(["compact8", "lld_stats", "mfcc_seq", "logmel", "egemaps"]))
def test_every_feature_set_through_the_pipeline(name, emodb_manifest, ray_session, tmp_path):
    subset = manifest.read(emodb_manifest).slice(100, 24)
    fs = features.get(name)
    result = extract(subset, fs, str(tmp_path / name), ExtractSettings(batch_size=8))
    assert (result.summary["rows"], result.summary["errors"]) == (24, 0)
    loaded = shards.read_features(str(tmp_path / name))
    arrays = loaded.arrays()
    assert loaded.kind == fs.kind and len(arrays) == 24
    assert all(np.isfinite(a).all() for a in arrays)
    if fs.kind == "vector":
        assert len({a.shape for a in arrays}) == 1
    elif fs.kind == "sequence":
        assert all(a.ndim == 2 and a.shape[1] == 32 for a in arrays)
    else:
        assert all(a.ndim == 2 and a.shape[0] == 64 for a in arrays)


def test_bad_inputs_become_error_rows(emodb_manifest, ray_session, tmp_path, capsys):
    good = manifest.read(emodb_manifest).slice(0, 20)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage" * 3)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("this is not audio\n")
    bad_rows = [
        {"utterance_id": f"bad/{n}", "path": str(tmp_path / f"{n}.wav"), "corpus": "bad",
         "speaker": "x", "group": "x", "label": "neutral"}
        for n in ("corrupt", "empty", "text", "missing")
    ]  # fmt: skip
    beyond = {**good.slice(0, 1).to_pylist()[0], "utterance_id": "bad/beyond", "start_s": 50.0, "end_s": 51.0}
    table = pa.concat_tables([good, manifest.from_rows(bad_rows + [beyond])])
    path = tmp_path / "m.parquet"
    manifest.write(table, str(path))
    out = tmp_path / "feats"
    assert main(["extract", str(path), "--features", "seremo", "--out", str(out), "--batch-size", "4"]) == 0
    printed = capsys.readouterr().out
    errors = pq.read_table(out / "errors.parquet").to_pandas().set_index("utterance_id")
    assert set(errors.index) == {"bad/corrupt", "bad/empty", "bad/text", "bad/missing", "bad/beyond"}
    assert errors.loc["bad/empty", "error"] == "empty"
    assert errors.loc["bad/missing", "error"] == "missing"
    assert errors.loc["bad/beyond", "error"] == "too_short"
    assert errors.loc["bad/text", "error"] in ("unsupported", "corrupt")
    assert errors.loc["bad/corrupt", "error"] in ("unsupported", "corrupt")
    assert (errors["stage"] == "decode").all() and errors["message"].str.len().gt(0).all()
    rows = pq.read_table(out / "shards")
    assert sorted(rows.column("utterance_id").to_pylist()) == sorted(good.column("utterance_id").to_pylist())
    summary = json.loads((out / "extract.json").read_text())
    assert (summary["inputs"], summary["rows"], summary["errors"]) == (25, 20, 5)
    assert "25" in printed and "missing" in printed


def test_finished_output_is_skipped_or_protected(emodb_features, emodb_manifest, capsys):
    before = sorted(p.name for p in Path(emodb_features, "shards").iterdir())
    assert main(["extract", emodb_manifest, "--features", "seremo", "--out", emodb_features]) == 0  # up to date
    assert "skipped" in capsys.readouterr().out
    assert sorted(p.name for p in Path(emodb_features, "shards").iterdir()) == before
    assert main(["extract", emodb_manifest, "--out", emodb_features, "--features", "compact8"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_read_features_errors(tmp_path, emodb_manifest, emodb_features, ray_session):
    with pytest.raises(SeremoError, match="not found"):
        shards.read_features(str(tmp_path / "nope"))
    (tmp_path / "empty" / "shards").mkdir(parents=True)
    with pytest.raises(SeremoError, match="no feature shards"):
        shards.read_features(str(tmp_path / "empty"))
    mixed = tmp_path / "mixed"
    extract(manifest.read(emodb_manifest).slice(0, 4), features.get("compact8"), str(mixed))
    first = sorted((tmp_path / "mixed" / "shards").glob("*.parquet"))[0]
    other = sorted((Path(emodb_features) / "shards").glob("*.parquet"))[0]
    (mixed / "shards" / "zz-other.parquet").write_bytes(other.read_bytes())
    assert first.exists()
    with pytest.raises(SeremoError, match="mix feature sets"):
        shards.read_features(str(mixed))
