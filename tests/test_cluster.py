"""cluster/: the manifests match the pinned Ray, and a real two-node cluster with token auth runs submitted jobs."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
import yaml
from conftest import REPO

CLUSTER = REPO / "cluster"


def pinned_ray() -> str:
    match = re.search(r'"ray\[[^\]]*\]==([0-9.]+)"', (REPO / "pyproject.toml").read_text())
    assert match, "pyproject.toml must pin ray with =="
    return match.group(1)


def images(doc) -> list[str]:
    """Every `image:`/`worker_image:` value anywhere in a parsed YAML document."""
    found = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key in ("image", "worker_image") and isinstance(value, str):
                found.append(value)
            else:
                found += images(value)
    elif isinstance(doc, list):
        for value in doc:
            found += images(value)
    return found


def test_the_installed_ray_is_the_pinned_one():
    assert ray.__version__ == pinned_ray()


def test_the_image_recipe_builds_on_the_pinned_ray():
    version = pinned_ray()
    text = (CLUSTER / "Dockerfile").read_text()
    assert re.search(rf"^ARG BASE=rayproject/ray:{re.escape(version)}-py\d+-cpu$", text, re.M)
    assert f"rayproject/ray:{version}-py311-gpu" in text  # the GPU variant's build arg
    assert f"ray.__version__ == '{version}'" in text  # the build fails if pip moved Ray


def test_the_launcher_config_has_cpu_head_cpu_and_gpu_workers_on_the_pinned_image():
    version = pinned_ray()
    cfg = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    types = cfg["available_node_types"]
    assert set(types) == {"head", "cpu_workers", "gpu_workers"} and cfg["head_node_type"] == "head"
    assert types["head"]["resources"] == {"CPU": 0}  # drivers only
    assert "--gpus all" in types["gpu_workers"]["docker"]["worker_run_options"]
    assert cfg["max_workers"] >= sum(t.get("max_workers", 0) for t in types.values())
    tags = images(cfg)
    assert tags and all(t.endswith((f":{version}-cpu", f":{version}-gpu")) for t in tags), tags
    assert types["gpu_workers"]["docker"]["worker_image"].endswith("-gpu")
    assert all("RAY_AUTH_MODE=token" in c for c in cfg["head_start_ray_commands"][1:] + cfg["worker_start_ray_commands"][1:])


def test_the_kuberay_manifests_share_node_groups_and_the_pinned_version():
    version = pinned_ray()
    cluster = yaml.safe_load((CLUSTER / "kuberay-raycluster.yaml").read_text())
    job = yaml.safe_load((CLUSTER / "kuberay-rayjob.yaml").read_text())
    assert (cluster["apiVersion"], cluster["kind"], job["kind"]) == ("ray.io/v1", "RayCluster", "RayJob")
    spec = cluster["spec"]
    assert spec["rayVersion"] == version
    assert job["spec"]["rayClusterSpec"] == spec  # the same node groups, images and auth
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu-workers", "gpu-workers"}
    gpu = groups["gpu-workers"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] and gpu["image"].endswith(f":{version}-gpu")
    for doc in (cluster, job):
        tags = images(doc)
        assert tags and all(t.endswith((f":{version}-cpu", f":{version}-gpu")) for t in tags), tags
    env = {e["name"]: e for e in spec["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token" and "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
    entry = job["spec"]["entrypoint"].split()
    assert entry[1].endswith("jobs/pipeline.py") and (REPO / "configs" / Path(entry[entry.index("--config") + 1]).name).is_file()


# --------------------------------------------------------------------------- a real two-node cluster


def free_port_base() -> int:
    """A GCS port whose neighbours (dashboard, client, the nodes' agent ports) are free too."""
    for base in range(21000, 30000, 200):
        wanted = [base, base + 1, base + 2, *range(base + 100, base + 116)]
        try:
            for port in wanted:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port range for a local cluster")


@pytest.fixture(scope="module")
def local_cluster():
    """cluster/local.sh start ... stop, with its own state dir and ports; stopped even when the test fails."""
    state = tempfile.mkdtemp(prefix="sc-", dir="/tmp")  # short: Ray's socket paths live under it
    base = free_port_base()
    bindir = str(Path(sys.executable).parent)
    env = {
        **os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "RAY": f"{bindir}/ray",
        "SEREMO_CLUSTER_DIR": state, "SEREMO_GCS_PORT": str(base), "SEREMO_DASHBOARD_PORT": str(base + 2),
    }  # fmt: skip
    for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_MODE"):
        env.pop(key, None)
    try:
        started = subprocess.run(["bash", str(CLUSTER / "local.sh"), "start"], env=env, capture_output=True,
                                 text=True, timeout=300)  # fmt: skip
        assert started.returncode == 0, started.stderr + started.stdout
        yield {"dashboard": f"http://127.0.0.1:{base + 2}", "token": Path(state, "token").read_text().strip(), "env": env}
    finally:
        subprocess.run(["bash", str(CLUSTER / "local.sh"), "stop"], env=env, capture_output=True, timeout=120)


@pytest.mark.slow
def test_a_two_node_cluster_with_token_auth_runs_submitted_extraction_and_tune(local_cluster, emodb_root, tmp_path):
    out = tmp_path / "out"
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump({
        "name": "cluster-test", "data_root": str(emodb_root.parent), "out": str(out),
        "out_is_shared": True,  # both nodes are on this machine
        "stages": ["prepare", "extract", "tune"],
        "prepare": {"corpus": "emodb", "root": emodb_root.name},
        "extract": [{"features": "compact8"}],
        "tune": {"features": "compact8", "models": {"logreg": {"C": [0.1, 1.0]}}, "outer_folds": 2, "inner_folds": 2},
    }))  # fmt: skip
    seremo = [sys.executable, "-m", "seremo.cli", "submit", str(config), "--address", local_cluster["dashboard"]]

    refused = subprocess.run(seremo, env=local_cluster["env"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "wants a token" in refused.stderr.strip()
    assert len(refused.stderr.strip().splitlines()) == 1

    authed = {**local_cluster["env"], "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": local_cluster["token"]}
    done = subprocess.run(seremo, env=authed, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout and f"report: {out}/tune/report.md" in done.stdout  # the job's logs streamed

    assert pq.read_metadata(out / "manifest.parquet").num_rows == 535
    summary = json.loads((out / "features/compact8/extract.json").read_text())
    assert summary["rows"] + summary["errors"] == 535 and summary["rows"] > 500
    assert summary["cores"] == 2  # the head's CPU and the worker node's
    shards = list((out / "features/compact8/shards").glob("*.parquet"))
    assert sum(pq.read_metadata(s).num_rows for s in shards) == summary["rows"]
    metrics = json.loads((out / "tune/metrics.json").read_text())
    assert 0.2 < metrics["uar"] <= 1.0 and (out / "tune/model/bundle.json").is_file()


@pytest.mark.slow
def test_a_wrong_or_missing_token_on_a_verb_is_one_line_about_the_token(local_cluster, emodb_manifest, tmp_path):
    """`--address` of a token-auth cluster with a wrong token: the token, not "is it running?", in one line."""
    gcs = f"127.0.0.1:{int(local_cluster['dashboard'].rsplit(':', 1)[1]) - 2}"
    argv = [sys.executable, "-m", "seremo.cli", "extract", emodb_manifest, "--features", "compact8",
            "--out", str(tmp_path / "f"), "--address", gcs]  # fmt: skip
    for env in ({**local_cluster["env"], "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-token"},
                local_cluster["env"]):  # fmt: skip
        res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 2, res.stderr[-2000:]
        errors = [line for line in res.stderr.splitlines() if line.startswith("seremo extract: error:")]
        assert len(errors) == 1 and "token" in errors[0] and "is it running" not in errors[0], res.stderr[-2000:]
        # the rest is two INFO lines about connecting: no traceback, no repeated C++ log lines
        assert "Traceback" not in res.stderr and "gcs_client.cc" not in res.stderr, res.stderr[-2000:]
        assert len(res.stderr.strip().splitlines()) <= 3, res.stderr[-2000:]
        assert not (tmp_path / "f" / "shards").exists()


@pytest.mark.slow
def test_standalone_extract_and_score_refuse_a_local_out_on_two_nodes(local_cluster, emodb_manifest, tmp_path):
    """Each node would write its own disk: one line naming a URI or --out-is-shared, and nothing written."""
    import numpy as np

    from seremo import bundle, classical, features

    fs = features.get("compact8")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, len(fs.feature_names()))), np.repeat(["angry", "neutral"], 20)
    model = classical.fit("logreg", {"C": 1.0}, X, y)
    meta = bundle.base_meta(model_kind="sklearn", model_name="logreg", params={"C": 1.0}, feature_set=fs.describe(),
                            classes=list(model.classes_), training={"corpora": ["x"], "utterances": 40, "groups": 2},
                            metrics={})  # fmt: skip
    model_dir = bundle.save_classical(tmp_path / "model", model, meta)
    gcs = f"127.0.0.1:{int(local_cluster['dashboard'].rsplit(':', 1)[1]) - 2}"
    env = {**local_cluster["env"], "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": local_cluster["token"]}
    wav = pq.read_table(emodb_manifest).column("path")[0].as_py()
    for verb, argv in (("extract", ["extract", emodb_manifest, "--features", "compact8"]),
                       ("score", ["score", wav, "--model", str(model_dir)])):  # fmt: skip
        out = tmp_path / f"{verb}-out"
        res = subprocess.run([sys.executable, "-m", "seremo.cli", *argv, "--out", str(out), "--address", gcs],
                             env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
        errors = [line for line in res.stderr.splitlines() if line.startswith(f"seremo {verb}: error:")]
        assert len(errors) == 1 and "2 nodes" in errors[0] and "--out-is-shared" in errors[0], res.stderr[-2000:]
        assert "Traceback" not in res.stderr and not out.exists()

    out = tmp_path / "score-shared"  # declared shared (both nodes are this machine): it runs
    res = subprocess.run([sys.executable, "-m", "seremo.cli", "score", wav, "--model", str(model_dir), "--out", str(out),
                          "--address", gcs, "--out-is-shared"], env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert pq.read_table(out / "files.parquet").num_rows == 1
