"""bundle.json is covered by the integrity check, and its classes are checked against the model.

Small bundles of every kind are built without Ray; each damaged one must fail with
one ``BundleError`` line, never a torch listing, a Ray traceback or XGBoost's C++ stack.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from seremo import bundle, classical, features, nets
from seremo.bundle import BundleError
from seremo.cli import main

CLASSES = ["angry", "happy", "neutral"]
KINDS = ["sklearn", "xgboost", "torch"]
WEIGHTS = {"sklearn": "model.skops", "xgboost": "model.ubj", "torch": "model.safetensors"}


def _data() -> tuple[np.ndarray, np.ndarray]:
    """60 vectors of compact8's 8 dimensions, each class lifting its own feature (separable)."""
    rng = np.random.default_rng(0)
    y = np.array(CLASSES * 20)
    X = rng.normal(size=(60, 8))
    X[np.arange(60), np.searchsorted(CLASSES, y)] += 3.0
    return X.astype(np.float32), y


def _meta(kind: str, name: str, params: dict) -> dict:
    return bundle.base_meta(model_kind=kind, model_name=name, params=params,
                            feature_set=features.get("compact8").describe(), classes=CLASSES,
                            training={"corpora": ["synthetic"]}, metrics={})  # fmt: skip


def _build(kind: str, out: Path) -> Path:
    X, y = _data()
    if kind == "sklearn":
        model = classical.fit("logreg", {"C": 1.0}, X, y)
        return bundle.save_classical(out, model, _meta(kind, "logreg", {"C": 1.0}))
    if kind == "xgboost":
        params = {"n_estimators": 10, "max_depth": 2, "learning_rate": 0.3}
        model = classical.fit("xgboost", params, X, y)
        return bundle.save_classical(out, model, _meta(kind, "xgboost", params))
    out.mkdir(parents=True)
    model = nets.build("mlp", X.shape[1], len(CLASSES)).eval()
    nets.save_module(out, model)
    bundle.write_meta(out, _meta("torch", "mlp", {"in_dim": X.shape[1], "arch": {}}))
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    return {kind: _build(kind, root / kind) for kind in KINDS}


@pytest.fixture(params=KINDS)
def copy(request, built, tmp_path) -> tuple[str, Path]:
    """A fresh copy of one kind's bundle, free to damage."""
    return request.param, Path(shutil.copytree(built[request.param], tmp_path / request.param))


def _read(d: Path) -> dict:
    return json.loads((d / "bundle.json").read_text())


def _edit(d: Path, change: Callable[[dict], None]) -> None:
    """Edit bundle.json as a person would: its checksum no longer fits."""
    meta = _read(d)
    change(meta)
    (d / "bundle.json").write_text(json.dumps(meta, indent=2))


def _reseal(d: Path, change: Callable[[dict], None]) -> None:
    """Edit bundle.json and recompute every checksum: only the model itself can tell it is wrong."""
    meta = _read(d)
    change(meta)
    bundle.write_meta(d, meta)


def _swap(meta: dict) -> None:
    meta["classes"][0], meta["classes"][1] = meta["classes"][1], meta["classes"][0]


def _drop(meta: dict) -> None:
    meta["classes"].pop()


def _fails(d: Path, *needles: str) -> str:
    with pytest.raises(BundleError) as info:
        bundle.load(d)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1, msg
    assert "Stack trace" not in msg and "[bt]" not in msg and "Traceback" not in msg, msg
    for needle in needles:
        assert needle in msg, msg
    return msg


def test_round_trip_loads_and_predicts(built):
    X, y = _data()
    for kind, d in built.items():
        b = bundle.load(d)
        meta = _read(d)
        assert b.meta.format_version == bundle.FORMAT_VERSION == 2 and b.meta.model_kind == kind
        assert meta["bundle_sha256"] == bundle.meta_digest(meta) and b.classes == CLASSES
        p = b.predict_proba(X)
        assert p.shape == (60, 3) and np.allclose(p.sum(axis=1), 1, atol=1e-5), kind
        if kind != "torch":  # the untrained net is random; the classical models learnt the data
            assert (b.predict(X) == y).mean() > 0.8, kind
        assert b.feature_set.name == "compact8"


def test_model_id_is_stable_and_follows_every_change(copy):
    kind, d = copy
    first = bundle.load(d).model_id
    assert first == bundle.load(d).model_id == f"{_read(d)['model_name']}:{_read(d)['bundle_sha256'][:12]}"
    # The same content written again (other whitespace) keeps its identity.
    (d / "bundle.json").write_text(json.dumps(_read(d)))
    assert bundle.load(d).model_id == first
    _reseal(d, lambda m: m["metrics"].update(note="retouched"))
    second = bundle.load(d).model_id
    assert second != first and second.split(":")[0] == first.split(":")[0]


def test_swapped_class_names_fail(copy):
    kind, d = copy
    _edit(d, _swap)
    _fails(d, "bundle.json", "does not match its own checksum")


def test_removed_class_fails(copy):
    kind, d = copy
    _edit(d, _drop)
    _fails(d, "bundle.json", "does not match its own checksum")


def test_changed_model_kind_fails(copy):
    kind, d = copy
    other = {"sklearn": "xgboost", "xgboost": "torch", "torch": "sklearn"}[kind]
    _edit(d, lambda m: m.update(model_kind=other))
    _fails(d, "does not match its own checksum")


def test_changed_weights_fail(copy):
    kind, d = copy
    w = d / WEIGHTS[kind]
    w.write_bytes(w.read_bytes()[:-10] + b"0" * 10)
    _fails(d, WEIGHTS[kind], "does not match its checksum")


def test_format_1_bundle_fails(copy):
    kind, d = copy
    _edit(d, lambda m: (m.update(format_version=1), m.pop("bundle_sha256")))
    _fails(d, "format_version", "re-export")


def test_resealed_class_list_is_checked_against_the_model(copy):
    """Even with every checksum right, classes that do not fit the model are refused."""
    kind, d = copy
    _reseal(d, _drop)
    _fails(d, "bundle.json", "2 classes (angry, happy)", "the model has 3")


def test_resealed_swapped_names_fail_for_sklearn(built, tmp_path):
    d = Path(shutil.copytree(built["sklearn"], tmp_path / "b"))
    _reseal(d, _swap)
    _fails(d, "bundle.json", "happy, angry, neutral", "angry, happy, neutral")


def test_resealed_extra_class_fails(copy):
    kind, d = copy
    _reseal(d, lambda m: m["classes"].append("sad"))
    _fails(d, "bundle.json", "4 classes")


def test_resealed_model_kind_fails_without_a_stack(copy):
    kind, d = copy
    other = {"sklearn": "xgboost", "xgboost": "torch", "torch": "sklearn"}[kind]
    _reseal(d, lambda m: m.update(model_kind=other))
    _fails(d, "bundle.json", f"model_kind {other!r}")


def test_undecodable_weights_are_one_line(copy):
    """Weights that pass their (resealed) checksums yet do not decode: the first line only."""
    kind, d = copy
    (d / WEIGHTS[kind]).write_bytes(b"garbage" * 20)
    _reseal(d, lambda m: None)
    _fails(d, "weights do not load")


def test_score_cli_refuses_a_bad_bundle_in_one_line(built, tmp_path, capsys):
    d = Path(shutil.copytree(built["sklearn"], tmp_path / "model"))
    _edit(d, _swap)
    audio = tmp_path / "calls"
    audio.mkdir()
    sf.write(audio / "call.wav", np.zeros(8000, np.float32), 8000)
    capsys.readouterr()
    assert main(["score", str(audio), "--model", str(d), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not match its own checksum" in err, err


def test_a_classical_bundle_loads_without_torch_and_skops_trusts_the_same_types(built):
    """skops lists scikit-learn's estimators on import, and that walk would import torch (3.6 s,
    210 MiB in every scoring worker); seremo hides torch from it. The list must not change."""
    names = "import skops.io._trusted_types as t; print(len(t.SKLEARN_ESTIMATOR_TYPE_NAMES), hash(tuple(t.SKLEARN_ESTIMATOR_TYPE_NAMES)))"
    via_seremo = (
        "import sys; from seremo import bundle; b = bundle.load(sys.argv[1]); assert b.meta.model_kind == 'sklearn';"
        f"assert 'torch' not in sys.modules, 'torch imported'; {names};"
        "import torch; assert torch.zeros(2).sum().item() == 0"  # hidden from skops only, not afterwards
    )
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = [subprocess.run([sys.executable, "-c", code, str(built["sklearn"])], capture_output=True, text=True,
                          check=True, env=env).stdout.split()
           for code in (via_seremo, names)]  # fmt: skip
    assert out[0] == out[1] and int(out[0][0]) > 100, out
