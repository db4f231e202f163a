"""Fitting a net with Ray Train: what ``seremo train`` and the deep search (``seremo tune --model``) share.

A fit is one ``TorchTrainer`` run (``fit_one``) of ``train_loop`` on every worker:
DDP over gloo on CPU workers or NCCL on GPUs, bucketed batches sharded across
ranks, class-weighted loss, bf16 autocast on GPU, a checkpoint every epoch through
``ray.train.report`` and a ``FailureConfig`` so a run survives a worker dying and
resumes from its last checkpoint. ``model_view`` is the data as a net sees it
(normalised, transcripts as word ids), fitted on the training rows only.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from seremo import measure, nets, normalisation
from seremo.dataset import FeatureTable
from seremo.errors import ConfigError, SeremoError
from seremo.settings import TrainSettings

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- the worker loop


def train_loop(config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker: one rank of a DDP training with resume."""
    import ray
    import ray.train
    import ray.train.torch
    import torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    data = ray.get(config["data_ref"])
    s = config["settings"]
    items, labels, kind = data.items, data.labels, data.kind
    train_idx, val_idx = np.asarray(config["train_idx"]), np.asarray(config["val_idx"])
    torch.manual_seed(s["seed"])
    model = nets.build(s["model"], data.in_dim, len(data.classes), **s["arch"])
    model.norm.set(*config["norm"])
    if nets.reads_text(kind):  # the fold's vocabulary; pretrained vectors, where given, start its embeddings
        model.vocab = data.vocab
        model.set_vectors(data.vectors or {})
    state = _resumed_state(model, rank)
    device = ray.train.torch.get_device()
    model = ray.train.torch.prepare_model(model)  # DDP: gradients all-reduced every step
    core = model.module if hasattr(model, "module") else model
    opt = torch.optim.AdamW(model.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
    if state["optimizer"] is not None:
        opt.load_state_dict(state["optimizer"])
    counts = np.bincount(labels[train_idx], minlength=len(data.classes)).astype(np.float64)
    weights = torch.as_tensor(len(train_idx) / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights.to(device))
    lengths = np.array([nets.frames_of(items[i], kind) for i in train_idx])
    steps = len(nets.shard_batches(nets.bucket_batches(lengths, s["batch_size"], True, 0), rank, world))
    sched = None
    if s["schedule"] == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s["lr"], total_steps=max(s["epochs"] * steps, 20),
                                                    pct_start=0.1)  # fmt: skip
        if state["scheduler"] is not None:
            sched.load_state_dict(state["scheduler"])
    step = {"model": model, "opt": opt, "sched": sched, "loss_fn": loss_fn, "device": device,
            "masking": TrainSettings.model_validate(s).masking.kwargs(nets.audio_kind(kind)), "fill": config["norm"][0],
            "bf16": device.type == "cuda", "items": items, "labels": labels, "kind": kind}  # fmt: skip

    for epoch in range(state["epoch"], s["epochs"]):
        started = time.perf_counter()
        batches = nets.shard_batches(nets.bucket_batches(lengths, s["batch_size"], True, s["seed"] + epoch), rank, world)
        total = _train_epoch(step, train_idx, batches, np.random.default_rng([s["seed"], epoch, rank]))
        seconds = time.perf_counter() - started
        per_rank, checksums = _gather_ranks(total, core, world)
        samples = sum(float(t[1]) for t in per_rank)
        val_uar, val_loss = _validate(core, items, labels, val_idx, step["bf16"])
        if val_uar > state["best"]:
            state["best"], state["stale"] = val_uar, 0
            state["best_model"] = {k: v.detach().cpu().clone() for k, v in core.state_dict().items()}
        else:
            state["stale"] += 1
        record = {
            "epoch": epoch + 1,
            "train_loss": sum(float(t[0]) for t in per_rank) / max(samples, 1),
            "val_loss": val_loss,
            "val_uar": val_uar,
            "best_val_uar": state["best"],
            "samples_per_s": samples / max(seconds, 1e-9),
            "world_size": world,
            "rank_samples": [int(t[1]) for t in per_rank],
            "rank_id_checksums": [float(t[2]) for t in per_rank],
            "rank_param_checksums": [float(c) for c in checksums],
            "restarts": state["restarts"],
            "placement_group": _placement_group(),
        }
        state["history"].append(record)
        stop = (state["stale"] >= s["patience"] and epoch + 1 >= s["min_epochs"]) or epoch + 1 == s["epochs"]
        _checkpoint_and_report(state, record, epoch, stop, core, opt, sched, rank)
        if stop:
            break


def _placement_group() -> str | None:
    """This worker group's placement group (hex id): a search removes it once its trial ends
    (``release_trial_resources``)."""
    from ray.util import get_current_placement_group

    pg = get_current_placement_group()
    return pg.id.hex() if pg is not None else None


def _resumed_state(model: Any, rank: int) -> dict[str, Any]:
    """The loop's state from the last checkpoint (a restarted worker group), or a fresh one."""
    import ray.train
    import torch

    state = {"optimizer": None, "scheduler": None, "epoch": 0, "history": [], "best": -1.0, "best_model": None,
             "stale": 0, "restarts": 0}  # fmt: skip
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return state
    with checkpoint.as_directory() as d:
        saved = torch.load(Path(d) / "state.pt", weights_only=True)
    model.load_state_dict(saved["model"])
    state.update(optimizer=saved["optimizer"], scheduler=saved["scheduler"], epoch=saved["epoch"] + 1,
                 history=json.loads(saved["history"]), best=saved["best"], stale=saved["stale"],
                 restarts=saved["restarts"] + 1, best_model=saved["best_model"])  # fmt: skip
    if rank == 0:
        print(f"resuming at epoch {state['epoch'] + 1} from the checkpoint of epoch {state['epoch']}", flush=True)
    return state


def _train_epoch(step: dict[str, Any], train_idx: np.ndarray, batches: list, rng: np.random.Generator) -> Any:
    """One pass over this rank's batches; (loss sum, samples, id checksum) as a float64 tensor."""
    import torch

    model, items, labels, kind = step["model"], step["items"], step["labels"], step["kind"]
    model.train()
    total = torch.zeros(3, dtype=torch.float64)
    for batch in batches:
        rows = train_idx[batch]
        x, L = nets.collate([items[i] for i in rows], kind)
        x = nets.spec_mask(x, L, kind, step["fill"], rng, **step["masking"])
        y = torch.as_tensor(labels[rows], dtype=torch.long)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=step["bf16"]):
            logits = model(nets.to_device(x, step["device"]), nets.to_device(L, step["device"]))
            loss = step["loss_fn"](logits.float(), y.to(step["device"]))
        step["opt"].zero_grad(set_to_none=True)
        loss.backward()
        step["opt"].step()
        if step["sched"] is not None:
            step["sched"].step()
        total += torch.tensor([loss.item() * len(rows), len(rows), float(rows.sum())], dtype=torch.float64)
    return total


def _gather_ranks(total: Any, core: Any, world: int) -> tuple[list, list]:
    """Every rank's epoch totals and parameter checksum (the evidence that DDP kept the ranks in step)."""
    import torch
    import torch.distributed as dist

    per_rank = [total.clone() for _ in range(world)]
    if world > 1:
        dist.all_gather(per_rank, total)
    checksum = torch.tensor([sum(float(p.detach().double().sum()) for p in core.parameters())], dtype=torch.float64)
    checksums = [checksum.clone() for _ in range(world)]
    if world > 1:
        dist.all_gather(checksums, checksum)
    return per_rank, checksums


def _validate(core: Any, items: list, labels: np.ndarray, val_idx: np.ndarray, bf16: bool) -> tuple[float, float]:
    """(UAR, loss) on the validation speakers; every rank scores all of them, so all stop alike."""
    import torch

    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=bf16):
        proba = nets.predict_proba(core, [items[i] for i in val_idx])
    val_uar = measure.uar(labels[val_idx], proba.argmax(axis=1))
    val_loss = float(-np.mean(np.log(np.maximum(proba[np.arange(len(val_idx)), labels[val_idx]], 1e-9))))
    return val_uar, val_loss


def _checkpoint_and_report(state: dict[str, Any], record: dict[str, Any], epoch: int, stop: bool, core: Any,
                           opt: Any, sched: Any, rank: int) -> None:  # fmt: skip
    """Report the epoch to Ray Train; rank 0 attaches the checkpoint a restarted group resumes from."""
    import ray.train
    import torch

    with tempfile.TemporaryDirectory() as d:
        ckpt = None
        if rank == 0:
            torch.save(
                {
                    "model": core.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "history": json.dumps(state["history"]), "best": state["best"], "stale": state["stale"],
                    "restarts": state["restarts"], "best_model": state["best_model"],
                },
                Path(d) / "state.pt",
            )  # fmt: skip
            ckpt = ray.train.Checkpoint.from_directory(d)
        # "finished": the loop stopped by itself (patience or the last epoch); not Tune's reserved "done"
        ray.train.report({**record, "finished": stop, "history": json.dumps(state["history"])}, checkpoint=ckpt)


def texts_of(items: list[Any], kind: str) -> list[str]:
    """The transcripts of a text model's or a fusion model's items."""
    return list(items) if kind == "text" else nets.split_items(items, kind)[1]


def with_vocabulary(items: list[Any], kind: str, vocab: list[str]) -> list[Any]:
    """Items with their transcripts as word ids of ``vocab`` (a fusion pair keeps its audio)."""
    ids = nets.encode(texts_of(items, kind), vocab)
    return ids if kind == "text" else list(zip(nets.split_items(items, kind)[0], ids, strict=True))


def read_vectors(settings: TrainSettings, data: FeatureTable) -> dict[str, np.ndarray] | None:
    """The pretrained vectors (``text.vectors``) of every word the transcripts hold, read once on the driver."""
    if not settings.text.vectors:
        return None
    words = {w for text in texts_of(data.items, data.kind) for w in nets.tokens(text)}
    found = nets.read_vectors(settings.text.vectors, words, int(settings.arch.get("embed", 100)))
    print(f"word vectors: {len(found)} of {len(words)} words found in {settings.text.vectors}", flush=True)
    return found


def norm_stats(items: list[np.ndarray], idx: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean/std over the training items' frames (bands for images); text has none.
    A fusion model's statistics are its audio's."""
    if kind == "text":
        return np.zeros(1), np.ones(1)
    if kind.endswith("+text"):
        return norm_stats(nets.split_items(items, kind)[0], idx, nets.audio_kind(kind))
    if kind == "image":
        frames = np.concatenate([items[i].T for i in idx])
    elif kind == "sequence":
        frames = np.concatenate([items[i] for i in idx])
    else:
        frames = np.stack([items[i] for i in idx])
    return frames.mean(axis=0), frames.std(axis=0)


def check_model(settings: TrainSettings, data: FeatureTable) -> None:
    """Build the model once on CPU with the real input size and classes and run two utterances.

    A bad ``arch`` value (a string for a size, a dropout above 1, more conv blocks than the
    bands allow) then fails on the driver as one line, before any Ray Train worker starts.
    """
    import torch

    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            n_classes = len(data.classes)
            items, in_dim, kind = data.items[:2], data.in_dim, data.kind
            if nets.reads_text(kind):  # word ids of a vocabulary of these two rows (folds learn their own)
                vocab = nets.fit_vocabulary(texts_of(items, kind), min_count=1)
                items = with_vocabulary(items, kind, vocab)
                in_dim = len(vocab) if kind == "text" else [in_dim[0], len(vocab)]
            model = nets.build(settings.model, in_dim, n_classes, **settings.arch).eval()
            model(*nets.collate(items, data.kind))
    except (TypeError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        arch = json.dumps(settings.arch, default=str)
        raise ConfigError(
            f"train.arch: {settings.model} with arch {arch} does not work on {_dims(data.in_dim)} "
            f"{data.kind} features and {len(data.classes)} classes: {first}"
        ) from None


def _dims(in_dim: int | list[int]) -> str:
    return f"{in_dim}-dim" if isinstance(in_dim, int) else f"{in_dim[0]}-dim audio and text"


@dataclass(frozen=True)
class NetInputs:
    """The rows as a net reads them (normalised, transcripts as word ids): what every Ray Train worker
    of a fit reads, sent once through the object store."""

    items: list[Any]
    labels: np.ndarray  # class indices
    classes: list[str]
    kind: str  # ``nets.KINDS``
    in_dim: int | list[int]
    vocab: list[str] | None = None  # a text or fusion net's vocabulary, learnt from the fit rows
    vectors: dict[str, np.ndarray] | None = None  # pretrained vectors of the vocabulary's words

    def rows(self, idx: np.ndarray) -> NetInputs:
        """These inputs for rows ``idx`` alone (in that order)."""
        return replace(self, items=[self.items[i] for i in idx], labels=self.labels[idx])


def model_view(data: FeatureTable, settings: TrainSettings, fitted_rows: np.ndarray,
               vectors: dict[str, np.ndarray] | None = None, n_orig: int | None = None) -> NetInputs:  # fmt: skip
    """The data as the net sees it: ``settings.normalise`` fitted on ``fitted_rows``, and transcripts as
    word ids of a vocabulary learnt from ``fitted_rows`` alone. ``data`` may hold augmented copies after
    its ``n_orig`` original rows (each with its source's group and corpus); the vocabulary reads original
    rows only (an augmented copy repeats its source's words, which would halve ``min_count``)."""
    kind = data.kind
    n_orig = len(data.items) if n_orig is None else n_orig
    items = normalisation.normalise_audio(data.items, kind, settings.normalise, data.groups, data.corpus,
                                          fitted_rows)  # fmt: skip
    view = NetInputs(items=items, labels=data.labels, classes=data.classes, kind=kind, in_dim=data.in_dim)
    if nets.reads_text(kind):
        texts = texts_of(data.items, kind)
        vocab = nets.fit_vocabulary([texts[i] for i in fitted_rows if i < n_orig], settings.text.min_count,
                                    settings.text.max_words)  # fmt: skip
        known = set(vocab)
        view = replace(view, items=with_vocabulary(items, kind, vocab), vocab=vocab,
                       in_dim=len(vocab) if kind == "text" else [data.in_dim[0], len(vocab)],
                       vectors={w: v for w, v in (vectors or {}).items() if w in known})  # fmt: skip
    return view


def fit_one(name: str, data: NetInputs, data_ref: Any, train_idx: np.ndarray, val_idx: np.ndarray,
            settings: TrainSettings, ray_storage: str, callbacks: list | None = None,
            resources_per_worker: dict[str, float] | None = None, norm: tuple | None = None,
            keep_model: bool = True) -> dict[str, Any] | None:  # fmt: skip
    """One TorchTrainer run; returns the best model (by validation UAR) and the curves.

    ``callbacks`` go to the run (a Tune trial passes ``TuneReportCallback``, so every epoch's
    report reaches its scheduler); ``resources_per_worker`` can ask for a fraction of a GPU; ``norm``
    the input statistics when ``data`` holds no items; ``keep_model=False`` returns None (a trial's model
    stays in its checkpoint)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    trainer = TorchTrainer(
        train_loop,
        # A rank whose peer died fails its collective after this long instead of torch's 30 min,
        # so FailureConfig can restart the group from the last checkpoint.
        torch_config=TorchConfig(timeout_s=settings.collective_timeout_s),
        train_loop_config={
            "data_ref": data_ref,
            "settings": settings.model_dump(),
            "train_idx": train_idx.tolist(),
            "val_idx": val_idx.tolist(),
            "norm": norm if norm is not None else norm_stats(data.items, train_idx, data.kind),
        },
        scaling_config=ScalingConfig(num_workers=settings.workers, use_gpu=settings.gpu,
                                     resources_per_worker=resources_per_worker),  # fmt: skip
        run_config=RunConfig(
            storage_path=ray_storage,
            name=name,
            failure_config=FailureConfig(max_failures=settings.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=callbacks,
        ),
    )
    started = time.perf_counter()
    result = trainer.fit()
    wall = time.perf_counter() - started
    if result.checkpoint is None:
        raise SeremoError(f"training {name} produced no checkpoint: {result.error}")
    if not keep_model:
        return None
    return {**best_model(result.checkpoint, settings, data), "wall_s": wall}


def best_model(checkpoint: Any, settings: TrainSettings, data: NetInputs) -> dict[str, Any]:
    """The best model (by validation UAR) a training checkpoint holds, and the curves up to it."""
    import torch

    with checkpoint.as_directory() as d:
        state = torch.load(Path(d) / "state.pt", weights_only=True)
    model = nets.build(settings.model, data.in_dim, len(data.classes), **settings.arch)
    model.load_state_dict(state["best_model"])
    if nets.reads_text(data.kind):
        model.vocab = data.vocab
    return {"model": model.eval(), "history": json.loads(state["history"])}


def release_trial_resources() -> Any:
    """A Tune callback that removes an ended trial's Ray Train placement group.

    A trial's TorchTrainer reserves its workers' CPUs (GPU shares) in a placement group of its
    own. When the trial function ends, or ASHA stops it, Tune ends the trial's actor, but that
    placement group outlived it here (Ray 2.60, a local cluster without the dashboard, whose
    state API Ray Train's own cleaner needs) and kept its CPUs, so the next trials waited for
    ever. The workers report their placement group; once Tune has ended the trial, nothing
    of it still runs in there, and the driver removes it.
    """
    from ray.tune import Callback

    class ReleaseTrialResources(Callback):
        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            _remove_placement_group((trial.last_result or {}).get("placement_group"))

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            _remove_placement_group((trial.last_result or {}).get("placement_group"))

    return ReleaseTrialResources()


def _remove_placement_group(pg_hex: str | None) -> None:
    if not pg_hex:
        return
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import (
        PlacementGroup,
        placement_group_table,
        remove_placement_group,
    )

    pg = PlacementGroup(PlacementGroupID(bytes.fromhex(pg_hex)))
    try:
        if placement_group_table(pg).get("state") not in (None, "REMOVED"):
            remove_placement_group(pg)
            log.debug("removed the placement group %s of an ended trial", pg_hex)
    except Exception as exc:  # it went in the meantime: nothing to release
        log.debug("placement group %s: %s", pg_hex, exc)
