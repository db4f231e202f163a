"""Shared fixtures: real EmoDB audio from ../shared and one Ray instance per session.

Two ways to run the suite (2 cores):

- ``pytest -m "not slow"``: the fast loop, under 3 minutes. It leaves out the tests marked
  ``@pytest.mark.slow``: the end-to-end runs (a whole pipeline, Ray Train and Ray Tune runs, runs killed
  and resumed, a local two-node cluster, a bucket on a local S3 server), each of which takes ten seconds
  to a minute and a half on its own.
- ``pytest``: everything, slow tests included, as CI runs it (``.ci/run``), under 15 minutes.

Mark a test ``slow`` when it takes more than about ten seconds, setup included. The session fixtures
below (Ray, the EmoDB manifest, ``emodb_features``, ``small_run``) are paid by whichever test first asks
for one; a fast test should not be the only one pulling an expensive fixture, and a new fixture should
build only the rows its tests need.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("SEREMO_TEST_DATA", REPO.parent / "shared" / "corpora"))
EMODB = DATA_ROOT / "emodb"


try:
    import opensmile  # noqa: F401

    HAVE_OPENSMILE = True
except ImportError:
    HAVE_OPENSMILE = False


def feature_set_params(names):
    """pytest params for feature-set names; egemaps skips with the reason where openSMILE is absent."""
    return [
        pytest.param(n, marks=pytest.mark.skipif(
            n == "egemaps" and not HAVE_OPENSMILE, reason="openSMILE not installed: pip install -e '.[opensmile]'"
        ))
        for n in names
    ]  # fmt: skip


@pytest.fixture(scope="session")
def emodb_root() -> Path:
    """The real EmoDB corpus; tests that need it skip with the reason when it is absent."""
    if not (EMODB / "wav").is_dir():
        pytest.skip(f"EmoDB not found at {EMODB} (set SEREMO_TEST_DATA to the corpora folder)")
    return EMODB


@pytest.fixture(scope="session")
def emodb_wavs(emodb_root: Path) -> list[Path]:
    return sorted((emodb_root / "wav").glob("*.wav"))


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session, with 2 CPUs."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def emodb_manifest(emodb_root, tmp_path_factory) -> str:
    """The EmoDB manifest, prepared once per session."""
    from seremo import manifest
    from seremo.corpora import prepare_corpus

    path = tmp_path_factory.mktemp("manifest") / "emodb.parquet"
    manifest.write(prepare_corpus("emodb", emodb_root).table, str(path))
    return str(path)


@pytest.fixture(scope="session")
def emodb_features(emodb_manifest, ray_session, tmp_path_factory) -> str:
    """The functionals (``seremo``, the fast set) for all of EmoDB, extracted once through the CLI."""
    from seremo.cli import main

    out = tmp_path_factory.mktemp("features") / "seremo"
    assert main(["extract", emodb_manifest, "--features", "seremo", "--out", str(out)]) == 0
    return str(out)


@pytest.fixture(scope="session")
def small_run(emodb_features, ray_session, tmp_path_factory) -> Path:
    """A finished nested tune of all of EmoDB (two families, three configurations), run once per session."""
    from seremo.tune import TuneSettings, tune_run

    out = tmp_path_factory.mktemp("tune") / "run"
    settings = TuneSettings(
        models={"logreg": {"C": [0.03, 0.3]}, "naive_bayes": {"alpha": [1.0]}}, inner_folds=2, selection="best"
    )
    tune_run(emodb_features, str(out), settings)
    return out


EMOVO = DATA_ROOT / "emovo"
MELD = DATA_ROOT / "meld"


@pytest.fixture(scope="session")
def meld_root() -> Path:
    """The real MELD transcripts (train and dev CSVs, no audio); tests that need them skip when absent."""
    if not (MELD / "train_sent_emo.csv").is_file():
        pytest.skip(f"MELD not found at {MELD} (set SEREMO_TEST_DATA to the corpora folder)")
    return MELD


@pytest.fixture(scope="session")
def emovo_root() -> Path:
    """The real EMOVO corpus (16 kHz mono copies); tests that need it skip with the reason when absent."""
    if not (EMOVO / "EMOVO").is_dir():
        pytest.skip(f"EMOVO not found at {EMOVO} (set SEREMO_TEST_DATA to the corpora folder)")
    return EMOVO


def kill_tree(proc, keep=None, whole_group: bool = False) -> None:
    """Kill a run and every process under it (but ``keep``), as a lost job or machine would; wait for them.

    ``whole_group`` also signals the run's process group (a run started with ``start_new_session``).
    """
    import contextlib
    import signal

    import psutil

    tree = [p for p in psutil.Process(proc.pid).children(recursive=True) if keep is None or p.pid != keep.pid]
    if whole_group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.kill()
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    proc.wait()
    psutil.wait_procs(tree, timeout=30)


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` by its SHA-256, and every folder (so an emptied one is noticed)."""
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}  # fmt: skip


def assert_failed_reruns_keep(run: Path, argv: list[str], typo_at: int, monkeypatch, capsys,
                              interrupt: tuple[object, str] | None = None) -> None:  # fmt: skip
    """Re-run ``argv`` (which finished into ``run``) three ways that fail, and find ``run`` byte-identical each time.

    A typo in the input at ``argv[typo_at]`` and an unreachable ``--address`` end as one line, exit 2;
    an interrupt as the run starts (Ctrl-C where it connects to Ray, or at ``interrupt``: an object and
    the name of a callable on it) ends with exit 130.
    """
    import ray

    from seremo.cli import main

    before = tree_digest(run)
    capsys.readouterr()
    typo = [*argv]
    typo[typo_at] = str(typo[typo_at]).rstrip("/") + "-typo"
    assert main(typo) == 2, "a typo'd input must be a user's mistake"
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert tree_digest(run) == before, "a re-run with a typo'd input changed the finished run"
    assert main([*argv, "--address", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot reach the Ray cluster" in err, err
    assert tree_digest(run) == before, "a re-run with an unreachable --address changed the finished run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(*(interrupt or (ray, "is_initialized")), interrupted)
        assert main(argv) == 130
    assert "interrupted" in capsys.readouterr().err
    assert tree_digest(run) == before, "an interrupted re-run changed the finished run"


@pytest.fixture(autouse=True)
def _no_placement_group_outlives_its_test():
    """A run a test interrupts in-process (Ctrl-C injected, a typo'd re-run) leaves its Ray Train placement
    group behind: a user's process would exit and Ray would free it, but the test session's driver lives
    on, and the leaked CPUs starve the next Train run (its worker group then waits forever). Remove what a
    finished test left."""
    yield
    import ray

    if not ray.is_initialized():
        return
    from ray._raylet import PlacementGroupID
    from ray.util import placement_group_table, remove_placement_group
    from ray.util.placement_group import PlacementGroup

    for pg_id, info in placement_group_table().items():
        if info.get("state") in ("CREATED", "PENDING", "RESCHEDULING"):
            remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(pg_id)))


def logreg_bundle(feats, out: Path) -> Path:
    """A logistic regression on a features folder's rows (``shards.read_features``), saved as a bundle: the
    feature set (and so any model weights) is named in it, as tune's bundles name it."""
    import numpy as np

    from seremo import bundle, classical

    labels = np.asarray(feats.table.column("label").to_pylist())
    fitted = classical.fit("logreg", {"C": 1.0}, feats.matrix(), labels)
    meta = bundle.base_meta(model_kind="sklearn", model_name="logreg", params={"C": 1.0},
                            feature_set=feats.feature_set, classes=list(fitted.classes_),
                            training={"corpora": ["emodb"], "utterances": len(labels), "groups": 10}, metrics={})  # fmt: skip
    return bundle.save_classical(out, fitted, meta)


def score_in_tasks_and_on_actors(wavs, model: Path, tmp_path: Path):
    """``seremo score`` of three real files with ``model``, in the CPU tasks and on an actor pool: the two
    segment tables, sorted alike."""
    import shutil

    import pyarrow.parquet as pq

    from seremo.cli import main

    calls = tmp_path / "calls"
    calls.mkdir()
    for p in wavs[:3]:
        shutil.copy(p, calls / p.name)
    runs = []
    for name, argv in (("tasks", []), ("actors", ["--actors", "1"])):
        scored = tmp_path / f"scored_{name}"
        assert main(["score", str(calls), "--model", str(model), "--out", str(scored), "--segment", "fixed"] + argv) == 0
        runs.append(pq.read_table(scored / "segments").sort_by([("path", "ascending"), ("start_s", "ascending")]))
    return tuple(runs)


def every_nth_row(manifest_path: str, step: int, out: Path) -> int:
    """A manifest of every ``step``-th row of ``manifest_path`` written to ``out``; its row count."""
    from seremo import manifest

    table = manifest.read(manifest_path)
    subset = table.take(list(range(0, table.num_rows, step)))
    manifest.write(subset, str(out))
    return subset.num_rows


def a_users_folder(path: Path) -> Path:
    """A folder that already holds a file of someone else's (``notes.txt``), for output paths to respect."""
    path.mkdir()
    (path / "notes.txt").write_text("someone else's")
    return path
