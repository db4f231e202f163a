"""Deep models: padding invariance, bucketing, real DDP on 2 CPU workers, resume after a worker dies."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_failed_reruns_keep

from seremo import bundle, nets
from seremo.train import TrainSettings, train_run


def _items(kind: str, lengths: list[int], dim: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    if kind.endswith("+text"):  # fusion pairs: word counts that do not follow the frame counts
        audio = _items(nets.audio_kind(kind), lengths, dim, seed)
        return [(a, rng.integers(1, 40, size=int(rng.integers(1, 30)))) for a in audio]
    if kind == "sequence":
        return [rng.normal(size=(n, dim)).astype(np.float32) for n in lengths]
    return [rng.normal(size=(dim, n)).astype(np.float32) for n in lengths]


@pytest.mark.parametrize(
    "name, kind, dim",
    [("bilstm", "sequence", 32), ("cnn", "image", 64), ("cnn_lstm", "image", 64),
     ("fusion_bilstm", "sequence+text", 32), ("fusion_cnn", "image+text", 64)],
)  # fmt: skip
def test_padding_never_changes_a_prediction(name, kind, dim):
    torch.manual_seed(0)
    model = nets.build(name, [dim, 40] if kind.endswith("+text") else dim, 5).eval()
    assert model.kind == kind
    model.norm.set(np.full(dim, 0.3), np.full(dim, 1.7))  # non-trivial normalisation: pads must stay masked
    items = _items(kind, [37, 120, 9, 64, 121], dim)
    with torch.no_grad():
        for i, item in enumerate(items):
            x, lengths = nets.collate([item], kind)
            alone = model(x, lengths)
            xb, lb = nets.collate(items, kind)  # padded to the longest (121 frames)
            batched = model(xb, lb)[i : i + 1]
            assert torch.allclose(alone, batched, atol=1e-5), (name, i)


def test_attention_gives_padding_zero_weight():
    pool = nets.AttentionPool(8)
    h = torch.randn(2, 10, 8)
    mask = nets.time_mask(torch.tensor([4, 10]), 10)
    out = pool(h, mask)
    h2 = h.clone()
    h2[0, 4:] = 1e6  # garbage in the padding
    assert torch.allclose(pool(h2, mask), out)


def test_bucketing_groups_similar_lengths_and_shuffles_batches():
    rng = np.random.default_rng(0)
    lengths = rng.integers(50, 900, size=400)
    batches = nets.bucket_batches(lengths, 32, shuffle=True, seed=1)
    assert sorted(i for b in batches for i in b) == list(range(400))
    spreads = [np.ptp(lengths[b]) for b in batches]
    random_spread = np.mean([np.ptp(rng.choice(lengths, 32)) for _ in range(50)])
    assert np.median(spreads) < 0.1 * random_spread
    firsts = [lengths[b[0]] for b in batches]
    assert firsts != sorted(firsts)  # batch order is shuffled
    assert nets.bucket_batches(lengths, 32, True, 2) != batches  # and differs between epochs
    shards = [nets.shard_batches(batches, r, 3) for r in range(3)]
    assert len(shards[0]) == len(shards[1]) == len(shards[2]) == len(batches)  # one step per batch on every rank
    for k, batch in enumerate(batches):  # the ranks' slices of a step partition its batch
        assert sorted(shards[0][k] + shards[1][k] + shards[2][k]) == sorted(batch)
        assert max(len(s[k]) for s in shards) - min(len(s[k]) for s in shards) <= 1


def test_stacking_matches_between_alone_and_batch():
    x = torch.randn(1, 10, 4)
    lone, lone_len = nets.stack_frames(x, torch.tensor([10]), 3)
    padded = torch.nn.functional.pad(x, (0, 0, 0, 5))
    batch, batch_len = nets.stack_frames(padded, torch.tensor([10]), 3)
    assert lone_len.item() == batch_len.item() == 4
    assert torch.equal(lone[0, :4], batch[0, :4])


@pytest.mark.parametrize("kind", ["sequence", "image"])
def test_spec_mask_sets_spans_to_the_fill_within_real_frames(kind):
    dim, lengths = 32, [40, 100, 7]
    x, L = nets.collate(_items(kind, lengths, dim), kind)
    fill = np.linspace(-1, 1, dim).astype(np.float32)
    rng = np.random.default_rng(3)
    out = nets.spec_mask(x, L, kind, fill, rng, time_masks=2, time_width=10, freq_masks=1, freq_width=4)
    seq = out if kind == "sequence" else out.transpose(1, 2)  # (batch, time, dim)
    orig = x if kind == "sequence" else x.transpose(1, 2)
    changed = seq != orig
    assert changed.any()
    fills = torch.as_tensor(fill)[None, None, :].expand_as(seq)
    assert torch.equal(seq[changed], fills[changed])  # masked cells hold the fill, nothing else moves
    for b, n in enumerate(lengths):
        whole_frames = changed[b].all(dim=1)  # time-masked frames
        assert int(whole_frames[:n].sum()) <= 20  # at most two spans of at most 10 frames
        bands = changed[b, :n].all(dim=0)
        assert int(bands.sum()) <= 4
    again = nets.spec_mask(x, L, kind, fill, np.random.default_rng(3), time_masks=2, time_width=10, freq_masks=1,
                           freq_width=4)  # fmt: skip
    assert torch.equal(again, out)  # a seeded generator gives the same masks (resume reproduces an epoch)
    off = nets.spec_mask(x, L, kind, fill, rng, time_masks=0, freq_masks=0)
    assert torch.equal(off, x)


@pytest.fixture(scope="module")
def seq_features(emodb_manifest, ray_session, tmp_path_factory) -> str:
    """mfcc_seq for 4 EmoDB speakers (enough for train / validation / test groups)."""
    from seremo import features, manifest
    from seremo.extract import extract

    t = manifest.read(emodb_manifest)
    keep = np.array([g in ("emodb/03", "emodb/08", "emodb/09", "emodb/10") for g in t.column("group").to_pylist()])
    out = tmp_path_factory.mktemp("seq") / "mfcc_seq"
    extract(t.filter(keep), features.get("mfcc_seq"), str(out))
    return str(out)


def _small(**kw) -> TrainSettings:
    base = {"model": "bilstm", "folds": 2, "epochs": 2, "patience": 5, "batch_size": 16,
            "arch": {"hidden": 16, "layers": 1}, "workers": 2, "final_fit": True}  # fmt: skip
    return TrainSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def ddp_run(seq_features, tmp_path_factory) -> tuple[Path, dict]:
    """One DDP training on 2 CPU workers (one epoch: the all-reduce is checked on it), run once: the round
    trip checks it, and the re-run test takes it as the earlier run in its dir."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    return out, train_run(seq_features, str(out), _small(epochs=1))


@pytest.mark.slow
def test_ddp_on_two_cpu_workers_and_bundle_round_trip(seq_features, ddp_run):
    out, metrics = ddp_run
    assert len(metrics["per_fold"]) == 2 and 0.0 <= metrics["uar"] <= 1.0
    for name in ("metrics.json", "report.md", "confusion_matrix.png", "curves.png", "predictions.parquet"):
        assert (out / name).exists(), name
    # Real DDP: two processes, each saw different utterances, parameters identical after all-reduce.
    state = json.loads((out / "metrics.json").read_text())
    hist = _history(out, "fold1")
    last = hist[-1]
    assert last["world_size"] == 2
    assert all(n > 0 for n in last["rank_samples"])
    assert last["rank_id_checksums"][0] != last["rank_id_checksums"][1]
    assert last["rank_param_checksums"][0] == pytest.approx(last["rank_param_checksums"][1], rel=1e-12)
    assert state["workers"] == 2
    import pyarrow.parquet as pq

    # out-of-fold predictions for `seremo ensemble`: each row's fold, and its fold model's probabilities
    oof = pq.read_table(out / "predictions.parquet")
    assert sorted(set(oof.column("fold").to_pylist())) == [1, 2]
    proba = np.column_stack([oof.column(f"p_{c}").to_numpy() for c in state["classes"]])
    assert np.allclose(proba.sum(axis=1), 1, atol=1e-4)
    assert (np.asarray(state["classes"])[proba.argmax(axis=1)] == np.asarray(oof.column("predicted").to_pylist())).all()
    # The bundle predicts exactly what the run predicted.

    from seremo import shards

    b = bundle.load(out / "model")
    X = shards.read_features(seq_features).arrays()
    ref = pq.read_table(out / "model_predictions.parquet").to_pandas()
    assert np.allclose(b.predict_proba(X), ref[[f"p_{c}" for c in b.classes]].to_numpy(), atol=1e-6)
    assert b.meta.model_kind == "torch" and b.feature_set.name == "mfcc_seq"
    # its training rows (every row: the final fit's early-stopping rows too), as evaluate reads them
    assert b.training_ids() == {bundle.id_hash(u) for u in ref["utterance_id"]}


def _history(out: Path, name: str) -> list[dict]:
    ckpts = sorted(p for p in (out / "ray" / name).glob("checkpoint_*") if p.is_dir())
    state = torch.load(ckpts[-1] / "state.pt", weights_only=True)
    return json.loads(state["history"])


def _train_worker_pids() -> list[int]:
    """PIDs of this test session's Ray Train workers (titles ``ray::RayTrainWorker...``).

    Only descendants of this process: other Ray instances on the machine are not ours to kill.
    """
    import psutil

    pids = []
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            cmd = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if cmd.startswith("ray::RayTrainWorker"):
            pids.append(proc.pid)
    return pids


def _registered_checkpoints(run: Path) -> int:
    """Checkpoints Ray Train has committed (a directory alone may still be mid-upload)."""
    snapshot = run / "checkpoint_manager_snapshot.json"
    try:
        return len(json.loads(snapshot.read_text()).get("checkpoint_results", []))
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


@pytest.mark.slow
def test_a_rerun_into_the_same_dir_trains_afresh(seq_features, ddp_run, tmp_path, monkeypatch, capsys):
    """An earlier run's checkpoints in the run dir must not be resumed by a run with other settings;
    a re-run that fails leaves the finished run as it was. (The earlier run: a copy of ``ddp_run``.)"""
    import shutil

    out = str(tmp_path / "again")
    shutil.copytree(ddp_run[0], out)
    assert list(Path(out, "ray", "fold1").glob("checkpoint_*"))  # checkpoints there to be (wrongly) resumed
    metrics = train_run(seq_features, out, _small(epochs=2, final_fit=False))
    assert [f["epochs"] for f in metrics["per_fold"]] == [2, 2]
    assert all(f["restarts"] == 0 for f in metrics["per_fold"])  # a resumed run counts a restart
    assert_failed_reruns_keep(Path(out), ["train", seq_features, "--model", "bilstm", "--out", out], 1,
                              monkeypatch, capsys)  # fmt: skip


@pytest.mark.slow
def test_run_survives_a_worker_dying(seq_features, tmp_path):
    """Kill one Ray Train worker after the first checkpoint; the run resumes and finishes."""
    out = tmp_path / "run"
    killed: list[int] = []
    problems: list[BaseException] = []

    def killer() -> None:
        try:
            deadline = time.time() + 240
            while time.time() < deadline:
                staged = list(out.glob(".seremo-staging-*/ray/fold1"))  # the run is staged until it succeeds
                if staged and _registered_checkpoints(staged[0]):
                    pids = _train_worker_pids()
                    if pids:
                        os.kill(pids[-1], signal.SIGKILL)
                        killed.append(pids[-1])
                        return
                time.sleep(0.2)
        except BaseException as exc:  # surfaced below: a silent thread would hide a broken test
            problems.append(exc)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    metrics = train_run(seq_features, str(out), _small(epochs=6, final_fit=False, max_failures=2))
    thread.join(timeout=5)
    assert not problems, problems
    assert killed, "no worker was killed: the test did not exercise recovery"
    first = metrics["per_fold"][0]
    assert first["restarts"] >= 1 and first["epochs"] == 6
    hist = _history(out, "fold1")
    assert [h["epoch"] for h in hist] == list(range(1, 7))  # resumed, not restarted from scratch


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_training_with_bf16(request, tmp_path):
    # SEREMO_TEST_SEQ_FEATURES: an mfcc_seq directory extracted elsewhere (a GPU box may lack the audio stack).
    features = os.environ.get("SEREMO_TEST_SEQ_FEATURES") or request.getfixturevalue("seq_features")
    metrics = train_run(features, str(tmp_path / "gpu"), _small(workers=1, gpu=True, final_fit=False))
    assert metrics["gpu"] and metrics["samples_per_s"] > 0


def test_every_model_is_offered_by_the_cli_and_the_settings():
    from typing import get_args

    from seremo.cli import TRAIN_MODELS

    assert set(TRAIN_MODELS) == set(nets.MODELS) == set(get_args(TrainSettings.model_fields["model"].annotation))
