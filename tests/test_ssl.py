"""Self-supervised speech embeddings (``ssl``, ``ssl_seq``) on tiny randomly initialised models that the
tests build with ``transformers`` and ``save_pretrained`` (nothing is downloaded), on real EmoDB audio."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

transformers = pytest.importorskip("transformers")

from conftest import a_users_folder, every_nth_row, logreg_bundle, score_in_tasks_and_on_actors  # noqa: E402

from seremo import audio, bundle, features, manifest  # noqa: E402
from seremo.cli import main  # noqa: E402
from seremo.errors import ConfigError  # noqa: E402
from seremo.shards import read_features  # noqa: E402

SR = 16000
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(32,) * 7,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)  # fmt: skip


def _save(cls_config: str, cls_model: str, folder: Path, **extra) -> Path:
    import torch

    torch.manual_seed(0)
    config = getattr(transformers, cls_config)(**TINY, **extra)
    getattr(transformers, cls_model)(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """WavLM as the base models are (the first convolution normalises over time: ``group``), and wav2vec 2.0
    and HuBERT as the large ones are (``layer`` norm, attention masks), each a few hundred kB."""
    root = tmp_path_factory.mktemp("ssl")
    return {
        "wavlm": _save("WavLMConfig", "WavLMModel", root / "wavlm"),
        "wav2vec2": _save("Wav2Vec2Config", "Wav2Vec2Model", root / "wav2vec2", feat_extract_norm="layer",
                          do_stable_layer_norm=True),  # fmt: skip
        "hubert": _save("HubertConfig", "HubertModel", root / "hubert", feat_extract_norm="layer",
                        do_stable_layer_norm=True),  # fmt: skip
    }


@pytest.fixture(scope="module")
def signals(emodb_wavs) -> list[np.ndarray]:
    """Five real utterances of different lengths, and a clip shorter than one frame."""
    ys = [audio.load(str(p), sr=SR)[0] for p in emodb_wavs[:5]]
    return [*ys, ys[0][:200]]


@pytest.mark.parametrize("name", ["wavlm", "wav2vec2", "hubert"])
def test_shapes_determinism_and_padding(tiny, signals, name):
    """Vectors are mean and std of the layer (2 x hidden); sequences one row per 20 ms frame; the same audio
    gives the same numbers twice; an utterance in a padded batch gets what it gets alone."""
    vec, seq = features.get("ssl", model=str(tiny[name])), features.get("ssl_seq", model=str(tiny[name]))
    batched = vec.extract_many(signals, SR)
    alone = [vec.extract(y, SR) for y in signals]
    frames = seq.extract_many(signals, SR)
    for y, b, a, f in zip(signals, batched, alone, frames, strict=True):
        assert b.shape == (64,) and b.dtype == np.float32 and np.isfinite(b).all()
        n = max(len(y), int(0.05 * SR))  # a clip is padded to 50 ms first
        expected = (n - 400) // 320 + 1  # wav2vec 2.0's convolutions: 25 ms windows, 20 ms hop
        assert f.shape == (expected, 32)
        np.testing.assert_allclose(b, a, atol=2e-5)  # padding never changes an utterance's embedding
        np.testing.assert_allclose(b, np.concatenate([f.mean(0), f.std(0)]), atol=1e-5)
    again = vec.extract_many(signals, SR)
    assert all(np.array_equal(a, b) for a, b in zip(batched, again, strict=True))
    runner = vec.load()
    assert runner is vec.load()  # one model per process
    assert runner.batched == (name != "wavlm")


def test_a_group_norm_model_runs_alone_because_padding_would_change_it(tiny, signals):
    """Why base-size models are not batched: their first convolution normalises over the whole input, so
    zero padding moves every frame. Run padded by hand, the frames differ; seremo's batches match alone."""
    import torch

    model = transformers.AutoModel.from_pretrained(tiny["wavlm"]).eval()
    y = signals[1]
    padded = np.concatenate([y, np.zeros(SR, np.float32)])
    with torch.inference_mode():
        alone = model(torch.from_numpy(y)[None]).last_hidden_state[0].numpy()
        inside = model(torch.from_numpy(padded)[None]).last_hidden_state[0, : len(alone)].numpy()
    assert np.abs(alone - inside).max() > 1e-3
    fs = features.get("ssl_seq", model=str(tiny["wavlm"]))
    got = fs.extract_many([padded, y], SR)[1]
    np.testing.assert_allclose(got, fs.extract(y, SR), atol=1e-6)


def test_layers_identity_and_one_line_errors(tiny, signals, tmp_path):
    folder = tiny["wav2vec2"]
    last = features.get("ssl", model=str(folder)).extract(signals[0], SR)
    avg = features.get("ssl", model=str(folder), layer="0-2").extract(signals[0], SR)
    first = features.get("ssl", model=str(folder), layer="0").extract(signals[0], SR)
    assert not np.allclose(last, avg) and not np.allclose(avg, first)
    desc = features.get("ssl", model=str(folder), layer="1-2").describe()
    weights = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")):
        weights.update(f.name.encode())
        weights.update(f.read_bytes())
    assert desc["params"]["weights_sha256"] == weights.hexdigest() and desc["params"]["layer"] == "1-2"
    assert features.from_description(desc).describe() == desc

    def one_line(match: str, **params) -> None:
        with pytest.raises(ConfigError, match=match) as info:
            features.get("ssl", **params).load()
        assert len(str(info.value).splitlines()) == 1

    one_line("--param model=ID_OR_DIR")
    one_line("huggingface-cli download seremo-tests/no-such-model", model="seremo-tests/no-such-model")
    one_line("does not exist", model=str(tmp_path / "nowhere"))
    one_line("hidden states 0-2", model=str(folder), layer="3")
    one_line("give last, a hidden-state index", model=str(folder), layer="x")
    one_line("not the ones these features were made with", model=str(folder), weights_sha256="0" * 64)
    bert = tmp_path / "bert"
    transformers.BertModel(transformers.BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                                                   intermediate_size=8)).save_pretrained(bert)  # fmt: skip
    one_line("is a bert model", model=str(bert))


@pytest.mark.slow
def test_extract_train_and_score_with_an_ssl_bundle(tiny, emodb_manifest, emodb_wavs, ray_session, tmp_path):
    """``seremo extract`` on a CPU actor (it loads the model once; CPU tasks decode) into a folder that already holds other
    things, twice; a model trained on the shards; its bundle names the SSL model and scores real audio, in
    the CPU tasks and on an actor pool (segments cut by CPU tasks, the embedding run on the actor), alike."""
    subset = tmp_path / "subset.parquet"
    rows = every_nth_row(emodb_manifest, 12, subset)  # 45 utterances
    out = a_users_folder(tmp_path / "shared_out")
    model = str(tiny["wav2vec2"])
    for _ in range(2):
        assert main(["extract", str(subset), "--features", "ssl", "--param", f"model={model}", "--out", str(out),
                     "--actors", "1", "--batch-size", "8"]) == 0  # fmt: skip
    assert (out / "notes.txt").read_text() == "someone else's"
    summary = json.loads((out / "extract.json").read_text())
    assert summary["rows"] == rows and summary["errors"] == 0 and summary["actors"] == 1
    feats = read_features(str(out))
    assert feats.feature_set["params"]["weights_sha256"] and feats.matrix().shape == (rows, 64)
    row = feats.table.slice(3, 1).to_pylist()[0]
    y, _ = audio.load(row["path"], sr=SR)
    np.testing.assert_allclose(feats.matrix()[3], features.get("ssl", model=model).extract(y, SR), atol=2e-5)

    saved = logreg_bundle(feats, tmp_path / "model")
    loaded = bundle.load(saved)
    assert loaded.meta.feature_set.params == feats.feature_set["params"]  # the bundle names the exact model
    tasks, actors = score_in_tasks_and_on_actors(emodb_wavs, saved, tmp_path)
    assert tasks.num_rows == actors.num_rows > 0
    assert tasks.column("label").to_pylist() == actors.column("label").to_pylist()
    proba = [c for c in tasks.column_names if c.startswith("p_")]
    for c in proba:
        np.testing.assert_allclose(tasks.column(c).to_numpy(), actors.column(c).to_numpy(), atol=1e-4)

    swapped = loaded.meta.feature_set.params | {"model": str(tiny["hubert"])}  # other weights: refused
    with pytest.raises(ConfigError, match="not the ones"):
        features.get("ssl", **swapped).load()
    with pytest.raises(ConfigError, match="not the ones"):
        features.get("ssl", **swapped).describe()  # before any work: extract, evaluate and score describe first


def test_unknown_params_are_refused_in_one_line(tiny):
    with pytest.raises(ConfigError, match="no parameter"):
        features.get("ssl", model=str(tiny["wavlm"]), layers="1")


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU")
def test_extract_and_score_on_gpu_actors(tiny, emodb_manifest, emodb_wavs, ray_session, tmp_path):
    """Two actors share one GPU (bf16): the same rows as on CPU, embeddings that agree with the CPU's to bf16
    precision; a bundle on them scores on GPU actors."""
    t = manifest.read(emodb_manifest)
    subset = tmp_path / "subset.parquet"
    manifest.write(t.slice(0, 24), str(subset))
    model = str(tiny["wav2vec2"])
    outs = {}
    for name, argv in (("cpu", []), ("gpu", ["--gpus-per-actor", "0.5"])):
        outs[name] = tmp_path / name
        assert main(["extract", str(subset), "--features", "ssl", "--param", f"model={model}", "--out",
                     str(outs[name]), *argv]) == 0  # fmt: skip
    gpu_summary = json.loads((outs["gpu"] / "extract.json").read_text())
    assert gpu_summary["gpus_per_actor"] == 0.5 and gpu_summary["rows"] == 24
    cpu, gpu = (read_features(str(outs[n])) for n in ("cpu", "gpu"))
    by_id = {u: i for i, u in enumerate(cpu.table.column("utterance_id").to_pylist())}
    order = [by_id[u] for u in gpu.table.column("utterance_id").to_pylist()]
    a, b = cpu.matrix()[order], gpu.matrix()
    for x, y in zip(a, b, strict=True):
        assert np.corrcoef(x, y)[0, 1] > 0.99
    saved = logreg_bundle(gpu, tmp_path / "model")
    calls = tmp_path / "calls"
    calls.mkdir()
    for p in emodb_wavs[:4]:
        shutil.copy(p, calls / p.name)
    scored = tmp_path / "scored"
    assert main(["score", str(calls), "--model", str(saved), "--out", str(scored), "--segment", "fixed", "--gpu"]) == 0
    assert pq.read_table(scored / "segments").num_rows > 0 and pq.read_table(scored / "errors.parquet").num_rows == 0
