"""seremo run / download / submit: experiment configs, stage skipping, one-line config errors."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO, assert_failed_reruns_keep, tree_digest

from seremo import pipeline
from seremo.cli import main


def write_config(path: Path, doc: dict) -> str:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def small_config(data_root: Path, out: Path, **extra) -> dict:
    """Every stage, kept small: compact features, a two-point logreg grid, an MLP for 3 epochs on one worker."""
    return {
        "name": "small",
        "data_root": str(data_root),
        "out": str(out),
        "stages": ["prepare", "extract", "tune", "train", "score"],
        "prepare": {"corpus": "emodb", "root": "emodb"},
        "extract": [{"features": "compact8"}],
        "tune": {"features": "compact8", "models": {"logreg": {"C": [0.1, 1.0]}}, "outer_folds": 2, "inner_folds": 2},
        "train": [{"features": "compact8", "model": "mlp", "folds": 2, "epochs": 3, "workers": 1}],
        "score": {"input": "emodb/wav/03a01*.wav", "model": "tune"},
        **extra,
    }


def one_error_line(capsys, argv: list[str]) -> str:
    """Run the CLI expecting a user error: exit 2 and exactly one line on stderr, which is returned."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_every_shipped_config_validates_and_plans_its_stages():
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert {c.stem for c in configs} >= {"emodb", "ravdess", "iemocap4", "score-archive"}
    for path in configs:
        cfg = pipeline.load(str(path))
        steps = pipeline.plan(cfg, None)
        stages = [s.stage for s in steps]
        assert stages == sorted(stages, key=pipeline.STAGES.index) and set(stages) == set(cfg.stages), path


def test_prepare_takes_one_corpus_or_a_list(tmp_path):
    doc = small_config(tmp_path, tmp_path / "out")
    one = pipeline.from_dict(doc, "one.yaml")
    doc["prepare"] = [{"corpus": "emodb", "root": "emodb"}, {"corpus": "emovo", "root": "emovo", "class_set": "core4"}]
    two = pipeline.from_dict({**doc, "data_root": "/data"}, "two.yaml")
    assert len(one.prepare) == 1 and [p.corpus for p in two.prepare] == ["emodb", "emovo"]
    step = pipeline.plan(two, None)[0]
    assert step.stage == "prepare" and [c["root"] for c in step.settings["corpora"]] == ["/data/emodb", "/data/emovo"]
    assert pipeline.plan(one, None)[0].settings["corpus"] == "emodb"  # one corpus: the settings it always had


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["tune"].update(learning_rate=1), "tune.learning_rate: Extra inputs are not permitted"),
        (lambda d: d["train"][0].update(epochs="many"), "train.0.epochs: Input should be a valid integer"),
        (lambda d: d.update(stagse=["prepare"]), "stagse: Extra inputs are not permitted"),
        (lambda d: d.update(stages=["prepare", "deploy"]), "stages.1: Input should be"),
        (lambda d: d.pop("tune"), "stage 'tune' is listed but the config has no `tune:` section"),
        (lambda d: d["train"][0].update(features="logmel"), "reads features 'logmel', which no extract entry makes"),
        (lambda d: d["tune"]["models"].update(logreg={"gamma": [1]}), "model 'logreg' has no hyperparameter(s) ['gamma']"),
        (lambda d: d.update(prepare=[{**d["prepare"], "class_set": "core4"}, {**d["prepare"], "class_set": "shared7"}]),
         "prepare entries name different class sets (core4, shared7)"),
    ],
)
def test_a_bad_config_is_one_line_naming_the_key_and_file(tmp_path, capsys, mutate, expected):
    doc = small_config(tmp_path, tmp_path / "out")
    mutate(doc)
    path = write_config(tmp_path / "bad.yaml", doc)
    line = one_error_line(capsys, ["run", path])
    assert line.startswith(f"seremo run: error: {path}: ") and expected in line


def test_a_missing_data_root_is_one_line_that_says_how_to_point_at_it(tmp_path, capsys):
    path = write_config(tmp_path / "c.yaml", small_config(tmp_path / "nowhere", tmp_path / "out"))
    line = one_error_line(capsys, ["run", path])
    assert "prepare.root" in line and "nowhere" in line and "--data-root" in line
    assert not (tmp_path / "out").exists()  # nothing was started


def test_an_unreachable_address_is_one_line_in_seconds(tmp_path, capsys, emodb_root):
    path = write_config(tmp_path / "c.yaml", small_config(emodb_root.parent, tmp_path / "out"))
    line = one_error_line(capsys, ["run", path, "--address", "127.0.0.1:1", "--stages", "extract"])
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in line
    line = one_error_line(capsys, ["submit", path, "--address", "http://127.0.0.1:1", "--out", str(tmp_path)])
    assert "cannot reach the Ray dashboard at http://127.0.0.1:1" in line


def test_run_refuses_an_out_inside_another_output_or_a_corpus(tmp_path, capsys, emodb_root):
    feats = tmp_path / "feats"
    feats.mkdir()
    (feats / "seremo-output.json").write_text('{"verb": "extract", "identity": {}}')
    for out in (feats / "run", emodb_root / "run"):
        path = write_config(tmp_path / "c.yaml", small_config(emodb_root.parent, out))
        assert "write the output" in one_error_line(capsys, ["run", path])
        assert not out.exists()


def test_submit_wants_cluster_visible_paths(tmp_path, capsys, emodb_root):
    path = write_config(tmp_path / "c.yaml", small_config(emodb_root.parent, Path("runs/relative")))
    line = one_error_line(capsys, ["submit", path, "--address", "http://127.0.0.1:1"])
    assert "out 'runs/relative' is relative" in line and "--out" in line


@pytest.mark.slow
def test_run_does_every_stage_then_skips_what_is_complete(tmp_path, capsys, emodb_root, ray_session, monkeypatch):
    out = tmp_path / "run"
    path = write_config(tmp_path / "small.yaml", small_config(emodb_root.parent, out))
    assert main(["run", path]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out}/tune/report.md" in printed and f"report: {out}/train/mlp/report.md" in printed
    assert pq.read_metadata(out / "manifest.parquet").num_rows == 535
    summary = json.loads((out / "features/compact8/extract.json").read_text())
    assert summary["rows"] + summary["errors"] == 535
    for run_dir in (out / "tune", out / "train/mlp"):
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert 0.0 < metrics["uar"] <= 1.0 and (run_dir / "model/bundle.json").is_file()
    assert pq.read_table(out / "score/files.parquet").num_rows == len(list((emodb_root / "wav").glob("03a01*.wav")))
    stamps = {p: p.stat().st_mtime_ns for p in (out / "tune/metrics.json", out / "train/mlp/metrics.json")}

    assert main(["run", path]) == 0  # the second run finds everything complete
    printed = capsys.readouterr().out
    assert printed.count("complete, skipped") == 5 and "running" not in printed
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())

    doc = small_config(emodb_root.parent, out)  # one stage's settings change: that stage and what reads it rerun
    doc["tune"]["models"]["logreg"]["C"] = [0.1, 1.0, 3.0]
    assert main(["run", write_config(tmp_path / "small.yaml", doc)]) == 0
    printed = capsys.readouterr().out
    assert "tune: running" in printed and "score: running" in printed
    assert "train/mlp: complete, skipped" in printed and "extract/compact8: complete, skipped" in printed
    assert json.loads((out / "pipeline/tune.json").read_text())["result"]["uar"] > 0

    # A score stage whose model has a typo: the earlier scores stay as they were (cleared only once the new
    # bundle has loaded); then three failing re-runs with work to do leave the whole finished pipeline as it was.
    scores = tree_digest(out / "score")
    typo = {**doc, "score": {**doc["score"], "model": str(out / "tune" / "modell")}}
    assert "not a model bundle" in one_error_line(capsys, ["run", write_config(tmp_path / "typo.yaml", typo)])
    assert tree_digest(out / "score") == scores
    doc["tune"]["models"]["logreg"]["C"] = [0.3]
    assert_failed_reruns_keep(out, ["run", write_config(tmp_path / "changed.yaml", doc)], 1, monkeypatch, capsys)


# --------------------------------------------------------------------------- download


@pytest.fixture()
def archive_server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/www; yields its base URL."""
    www = tmp_path / "www"
    www.mkdir()
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep stderr for the CLI's own line
            pass

    handler = functools.partial(Quiet, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def build_emodb_zip(path: Path, wavs: list[Path], tamper: str | None = None) -> str:
    """An archive laid out like the public EmoDB download (wav/ beside other folders); returns its sha256."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for wav in wavs:
            data = wav.read_bytes()
            if wav.name == tamper:
                data = data[:-2] + bytes([data[-2] ^ 1, data[-1]])
            zf.writestr(f"wav/{wav.name}", data)
        zf.writestr("lablaut/03a01Fa.lab", "0.0 1.0 x\n")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_verifies_every_file_against_the_pinned_checksums(tmp_path, capsys, archive_server, emodb_wavs):
    www, base = archive_server
    digest = build_emodb_zip(www / "download.zip", emodb_wavs)
    out = tmp_path / "emodb"
    assert main(["download", "emodb", "--out", str(out), "--url", f"{base}/download.zip", "--sha256", digest]) == 0
    assert "535 files verified" in capsys.readouterr().out
    assert len(list((out / "wav").glob("*.wav"))) == 535 and (out / "lablaut/03a01Fa.lab").is_file()
    assert not list(out.glob("*.zip*"))  # the archive is removed unless --keep-archive
    assert main(["prepare", "emodb", str(out), "--out", str(tmp_path / "m.parquet")]) == 0  # ready to use
    assert pq.read_metadata(tmp_path / "m.parquet").num_rows == 535
    assert main(["download", "emodb", "--out", str(out), "--url", f"{base}/download.zip"]) == 0  # done: no refetch
    assert "already downloaded and verified" in capsys.readouterr().out


@pytest.mark.parametrize("problem", ["tampered", "incomplete", "archive sha256", "not a zip", "404"])
def test_a_bad_download_is_one_line(tmp_path, capsys, archive_server, emodb_wavs, problem):
    www, base = archive_server
    wavs = emodb_wavs[:-1] if problem == "incomplete" else emodb_wavs
    build_emodb_zip(www / "download.zip", wavs, tamper="03a01Fa.wav" if problem == "tampered" else None)
    if problem == "not a zip":
        (www / "download.zip").write_text("<html>moved</html>")
    argv = ["download", "emodb", "--out", str(tmp_path / "emodb"), "--url", f"{base}/download.zip"]
    if problem == "archive sha256":
        argv += ["--sha256", "0" * 64]
    if problem == "404":
        argv[-1] = f"{base}/gone.zip"
    line = one_error_line(capsys, argv)
    expected = {
        "tampered": "wav/03a01Fa.wav fails its checksum",
        "incomplete": "1 of 535 files of wav/ are missing",
        "archive sha256": "is not the expected 0000",
        "not a zip": "not a zip archive",
        "404": "the server answered 404",
    }[problem]
    assert expected in line
    assert not (tmp_path / "emodb" / "DOWNLOAD.json").exists()


@pytest.mark.slow
def test_outputs_can_go_to_a_filesystem_uri(tmp_path, capsys, emodb_root, ray_session):
    """A URI `out` (file:// here, s3:// on a cluster): shards written through pyarrow, run dirs uploaded."""
    doc = small_config(emodb_root.parent, tmp_path / "unused")
    doc.update(out=f"file://{tmp_path}/uri-out", stages=["prepare", "extract", "tune"])
    path = write_config(tmp_path / "uri.yaml", doc)
    assert main(["run", path]) == 0
    assert f"report: file://{tmp_path}/uri-out/tune/report.md" in capsys.readouterr().out
    out = tmp_path / "uri-out"
    assert json.loads((out / "tune/metrics.json").read_text())["uar"] > 0
    assert (out / "tune/model/bundle.json").is_file() and (out / "pipeline/tune.json").is_file()
    assert main(["run", path]) == 0
    assert capsys.readouterr().out.count("complete, skipped") == 3
