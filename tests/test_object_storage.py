"""Every stage into a bucket on a real S3 API (moto's server on 127.0.0.1), as on a Ray cluster.

The stages run as the command a user types, each in its own process, with the
endpoint and credentials in the standard AWS variables; nothing may land on the
local disk, and a killed `seremo score` into the bucket resumes to the rows of
an uninterrupted run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import kill_tree

from seremo import manifest, storage
from seremo.simulate import Utterance, make_calls

moto_server = pytest.importorskip("moto.server", reason="moto[server] not installed: pip install -e '.[dev]'")
BUCKET = "seremo-test"


@pytest.fixture(scope="module")
def s3():
    """A local S3 server and the environment that points every AWS client (pyarrow's too) at it."""
    import logging

    import boto3

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    try:
        yield {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **env}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def seremo(env: dict, cwd: Path, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "seremo.cli", *argv], env=env, cwd=cwd, capture_output=True,
                         text=True, timeout=timeout)  # fmt: skip
    assert res.returncode == 0, f"seremo {' '.join(argv)}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def uri(*parts: str) -> str:
    return "/".join([f"s3://{BUCKET}", *parts])


def upload(local: Path, to: str) -> str:
    storage.write_bytes(to, local.read_bytes())
    return to


@pytest.fixture(scope="module")
def small_emodb(emodb_root, tmp_path_factory) -> Path:
    """An EmoDB-shaped folder: 8 utterances of each of the 10 speakers (real audio)."""
    root = tmp_path_factory.mktemp("small-emodb")
    (root / "wav").mkdir()
    by_speaker: dict[str, list[Path]] = {}
    for wav in sorted((emodb_root / "wav").glob("*.wav")):
        by_speaker.setdefault(wav.name[:2], []).append(wav)
    for wavs in by_speaker.values():
        for wav in wavs[::max(1, len(wavs) // 8)][:8]:
            shutil.copy(wav, root / "wav" / wav.name)
    return root


@pytest.fixture(scope="module")
def archive_in_bucket(s3, small_emodb, tmp_path_factory) -> list[str]:
    """Simulated stereo calls of real utterances, a corrupt file and a note, uploaded under archive/."""
    local = tmp_path_factory.mktemp("archive")
    wavs = sorted((small_emodb / "wav").glob("*.wav"))
    utts = [Utterance(str(w), "neutral", w.name[:2]) for w in wavs]
    make_calls(utts, local / "calls", n_calls=5, utterances_per_call=4, seed=3)
    (local / "calls" / "corrupt.wav").write_bytes(os.urandom(2048))
    (local / "calls" / "notes.txt").write_text("export of batch 7\n")
    return [upload(f, uri("archive", "calls", f.name)) for f in sorted((local / "calls").iterdir())]


def _rows(prefix: str, keys: list[str]):
    return storage.read_parquet(prefix).to_pandas().sort_values(keys).reset_index(drop=True)


@pytest.mark.slow
def test_prepare_extract_tune_score_with_every_output_in_the_bucket(s3, small_emodb, archive_in_bucket, tmp_path):
    (tmp_path / "tune.yaml").write_text("tune:\n  models: {logreg: {C: [0.1]}}\n  outer_folds: 2\n  inner_folds: 2\n")
    seremo(s3, tmp_path, "prepare", "emodb", str(small_emodb), "--out", uri("run", "manifest.parquet"))
    seremo(s3, tmp_path, "extract", uri("run", "manifest.parquet"), "--features", "compact8",
           "--out", uri("run", "features"))  # fmt: skip
    tuned = seremo(s3, tmp_path, "tune", uri("run", "features"), "--out", uri("run", "tune"), "--config", "tune.yaml")
    scored = seremo(s3, tmp_path, "score", uri("archive") + "/", "--model", uri("run", "tune", "model"),
                    "--out", uri("run", "score"), "--files-per-task", "2")  # fmt: skip

    assert sorted(p.name for p in tmp_path.iterdir()) == ["tune.yaml"]  # nothing written locally (no "s3:" folder)
    rows = storage.read_parquet(uri("run", "manifest.parquet")).num_rows
    assert rows == 80
    summary = storage.read_json(uri("run", "features", "extract.json"))
    assert summary["rows"] == rows and summary["errors"] == 0
    metrics = storage.read_json(uri("run", "tune", "metrics.json"))
    assert 0.0 < metrics["uar"] <= 1.0 and f"report: {uri('run', 'tune')}/report.md" in tuned.stdout
    assert storage.is_file(uri("run", "tune", "model", "bundle.json"))

    files, errors = storage.read_parquet(uri("run", "score", "files.parquet")), storage.read_parquet(
        uri("run", "score", "errors.parquet"))  # fmt: skip
    assert files.num_rows == 5 and errors.num_rows == 2  # inputs = files + errors
    assert sorted(files.column("path").to_pylist() + errors.column("path").to_pylist()) == archive_in_bucket
    assert {p.rsplit("/", 1)[-1] for p in errors.column("path").to_pylist()} == {"corrupt.wav", "notes.txt"}
    assert all(errors.column("message").to_pylist())
    segs = _rows(uri("run", "score", "segments"), ["path", "channel", "start_s"])
    assert len(segs) == sum(files.column("segments").to_pylist()) > 0
    assert not segs.duplicated(["path", "channel", "start_s"]).any()
    assert "inputs" in scored.stdout and storage.read_json(uri("run", "score", "score.json"))["inputs"] == 7


@pytest.mark.slow
def test_a_killed_score_into_the_bucket_resumes_to_the_same_rows(s3, archive_in_bucket, tmp_path):
    model = uri("run", "tune", "model")
    if not storage.is_file(f"{model}/bundle.json"):
        pytest.skip("needs the bundle the pipeline test tunes into the bucket")
    out = uri("killed")
    argv = [sys.executable, "-m", "seremo.cli", "score", uri("archive") + "/", "--model", model, "--out", out,
            "--files-per-task", "1"]  # fmt: skip
    log_path = tmp_path / "killed.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, env=s3, cwd=tmp_path, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and len(storage.list_files(f"{out}/_parts/done")) < 2:
            time.sleep(0.2)
    assert proc.poll() is None, f"the run ended before it was killed:\n{log_path.read_text()[-2000:]}"
    kill_tree(proc, whole_group=True)
    assert not storage.exists(f"{out}/files.parquet")
    committed = len(storage.list_files(f"{out}/_parts/done"))
    assert 2 <= committed < 7

    resumed = seremo(s3, tmp_path, "score", uri("archive") + "/", "--model", model, "--out", out)
    assert "resuming:" in resumed.stdout
    keys = ["path", "channel", "start_s"]
    a, b = _rows(uri("run", "score", "segments"), keys), _rows(f"{out}/segments", keys)
    assert len(a) == len(b) and not b.duplicated(keys).any()
    assert np.allclose(a[["start_s", "end_s", "confidence"]], b[["start_s", "end_s", "confidence"]], atol=1e-6)
    assert (a["label"] == b["label"]).all()
    fa, fb = _rows(uri("run", "score", "files.parquet"), ["path"]), _rows(f"{out}/files.parquet", ["path"])
    assert fa["path"].tolist() == fb["path"].tolist() and np.allclose(fa["speech_s"], fb["speech_s"])
    ea, eb = _rows(uri("run", "score", "errors.parquet"), ["path"]), _rows(f"{out}/errors.parquet", ["path"])
    assert ea["path"].tolist() == eb["path"].tolist()
    assert len(fb) + len(eb) == len(archive_in_bucket)
    assert not storage.list_files(f"{out}/_parts/segments")  # staged parts published or removed


@pytest.mark.slow
def test_a_manifest_naming_object_uris_is_extracted(s3, small_emodb, tmp_path):
    wavs = sorted((small_emodb / "wav").glob("*.wav"))[:6]
    table = manifest.from_rows([{"utterance_id": w.stem, "path": upload(w, uri("corpus", w.name)), "corpus": "emodb",
                                 "speaker": w.name[:2], "group": w.name[:2], "label": "neutral"} for w in wavs])
    table = table.set_column(table.column_names.index("path"), "path",
                             pa.array(table.column("path").to_pylist()))  # fmt: skip
    manifest.write(table, str(tmp_path / "uris.parquet"))
    seremo(s3, tmp_path, "extract", str(tmp_path / "uris.parquet"), "--features", "compact8",
           "--out", uri("uri-features"))  # fmt: skip
    summary = storage.read_json(uri("uri-features", "extract.json"))
    assert summary["rows"] == 6 and summary["errors"] == 0
