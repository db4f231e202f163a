"""Self-supervised speech embeddings (wav2vec 2.0, HuBERT, WavLM, data2vec-audio) from Hugging Face
``transformers``: ``ssl`` (mean and standard deviation over time of one layer, or of the average of a
range of layers) and ``ssl_seq`` (the frame embeddings, for the sequence models).

Why: frozen SSL encoders with a light classifier are far ahead of hand-crafted features on
speaker-independent benchmarks (EmoBox, 2024). The encoder is loaded once per process (per actor in
``seremo extract`` and ``seremo score``) and runs on batches of utterances sorted by length.

Nothing is downloaded: ``model`` is a local folder or a Hugging Face id already in the local cache
(``huggingface-cli download ID``); anything else is one line that says how to fetch it. The weights'
SHA-256 (and the cache's commit for an id) are part of the set's description, so shards and every bundle
trained on them name the exact model, and scoring with other weights is refused.

Padding: models whose first convolution normalises over time (``feat_extract_norm: group``, the base
wav2vec 2.0 / HuBERT / WavLM) see the padding, so they run one utterance at a time; the others
(``layer``) run padded batches with an attention mask, which leaves each utterance's frames as they are
alone (to float rounding).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from seremo.errors import ConfigError
from seremo.features.base import FeatureSet

log = logging.getLogger(__name__)

MODEL_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")
WEIGHT_FILES = ("*.safetensors", "*.bin")
INSTALL = "pip install -e '.[ssl]'"


def resolve(model: str, revision: str = "") -> tuple[Path, str]:
    """(local folder, revision) of ``model``: a folder as it is, or a Hugging Face id found in the local
    cache (its snapshot's commit as the revision). Never downloads."""
    if not model:
        raise ConfigError("feature set ssl needs a model: --param model=ID_OR_DIR (e.g. microsoft/wavlm-base-plus, "
                          "fetched first with `huggingface-cli download microsoft/wavlm-base-plus`)")  # fmt: skip
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"ssl: {path} has no config.json; give a folder written by save_pretrained or a "
                              "Hugging Face snapshot")  # fmt: skip
        return path.resolve(), revision
    if model.count("/") > 1 or model.startswith((".", "/", "~")):
        raise ConfigError(f"ssl: model folder {model} does not exist")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        raise ConfigError(f"feature set ssl needs transformers: {INSTALL}") from None
    try:
        found = Path(snapshot_download(model, revision=revision or None, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        raise ConfigError(f"ssl: model {model}{'@' + revision if revision else ''} is not in the local Hugging Face "
                          f"cache and seremo never downloads; fetch it with `huggingface-cli download {model}"
                          f"{' --revision ' + revision if revision else ''}` or give a local folder: "
                          "--param model=/path/to/model") from None  # fmt: skip
    return found, found.name


@functools.lru_cache(maxsize=8)
def _weights_sha256(folder: str, stamp: tuple) -> str:
    digest = hashlib.sha256()
    for f in sorted(p for pattern in WEIGHT_FILES for p in Path(folder).glob(pattern)):
        digest.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def weights_sha256(folder: Path) -> str:
    """The SHA-256 over the folder's weight files (cached while they are unchanged)."""
    files = sorted(p for pattern in WEIGHT_FILES for p in folder.glob(pattern))
    if not files:
        raise ConfigError(f"ssl: {folder} holds no weights (*.safetensors or *.bin)")
    return _weights_sha256(str(folder), tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files))


def parse_layers(spec: str) -> tuple[int, ...] | None:
    """``last`` (None), ``N`` or ``A-B`` (hidden-state indices: 0 is the transformer's input, then one per
    layer); one line for anything else."""
    spec = str(spec).strip()
    if spec == "last":
        return None
    try:
        if "-" in spec[1:]:
            a, b = (int(x) for x in spec.split("-", 1))
            if a > b or a < 0:
                raise ValueError
            return tuple(range(a, b + 1))
        return (int(spec),)
    except ValueError:
        raise ConfigError(f"ssl: layer={spec!r}: give last, a hidden-state index (6) or a range (4-9)") from None


class Encoder:
    """A loaded SSL model on one device; ``frames(ys)`` gives each waveform's embeddings (frames, dim)."""

    def __init__(self, fs: SSLFeatures, device: str = "cpu"):
        try:
            import torch
            from transformers import AutoConfig, AutoModel
            from transformers.utils import logging as hf_logging
        except ImportError:
            raise ConfigError(f"feature set ssl needs transformers: {INSTALL}") from None
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        folder = fs.pinned()[0]
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        if config.model_type not in MODEL_TYPES:
            raise ConfigError(f"ssl: {fs.model} is a {config.model_type} model; the ssl set takes "
                              f"{', '.join(MODEL_TYPES)}")  # fmt: skip
        self.torch, self.device = torch, torch.device(device)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).to(self.device).eval()
        n_states = config.num_hidden_layers + 1
        layers = parse_layers(fs.layer)
        if layers and max(layers) >= n_states:
            raise ConfigError(f"ssl: layer={fs.layer} but {fs.model} has hidden states 0-{n_states - 1}")
        self.layers = layers
        self.batched = getattr(config, "feat_extract_norm", "group") == "layer"  # padding leaves frames alone
        self.normalise = _normalises_input(folder, config)
        self.chunk = int(fs.chunk_s * fs.sample_rate)
        self.batch_samples = int((64 if self.device.type == "cuda" else 16) * fs.sample_rate)
        self.dim = config.hidden_size

    def frames(self, ys: list[np.ndarray]) -> list[np.ndarray]:
        """Each waveform's frame embeddings; long ones run as ``chunk_s`` pieces whose frames are joined."""
        pieces = [(i, y[s : s + self.chunk]) for i, y in enumerate(ys) for s in range(0, max(len(y), 1), self.chunk)]
        pieces = [(i, p) for i, p in pieces if len(p) >= 400 or len(ys[i]) < 400]  # a tail shorter than one frame
        order = sorted(range(len(pieces)), key=lambda j: -len(pieces[j][1]))  # longest first: least padding
        out: list[np.ndarray | None] = [None] * len(pieces)
        start = 0
        while start < len(order):
            longest = len(pieces[order[start]][1])
            end = start + 1
            while (end < len(order) and (end - start + 1) * longest <= self.batch_samples
                   and (self.batched or len(pieces[order[end]][1]) == longest)):  # fmt: skip
                end += 1
            batch = [pieces[j][1] for j in order[start:end]]
            for j, f in zip(order[start:end], self._forward(batch), strict=True):
                out[j] = f
            start = end
        joined: list[list[np.ndarray]] = [[] for _ in ys]
        for (i, _), f in zip(pieces, out, strict=True):
            joined[i].append(f)
        return [np.concatenate(f) if f else np.zeros((0, self.dim), np.float32) for f in joined]

    def _forward(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        torch = self.torch
        lengths = [len(y) for y in batch]
        x = np.zeros((len(batch), max(lengths)), np.float32)
        mask = np.zeros_like(x, dtype=np.int64)
        for k, y in enumerate(batch):
            if self.normalise:
                y = (y - y.mean()) / np.sqrt(y.var() + 1e-7)
            x[k, : len(y)], mask[k, : len(y)] = y, 1
        inputs = {"input_values": torch.from_numpy(x).to(self.device)}
        if len(batch) > 1:
            inputs["attention_mask"] = torch.from_numpy(mask).to(self.device)
        cuda = self.device.type == "cuda"
        with (torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda),
              warnings.catch_warnings()):  # fmt: skip
            warnings.filterwarnings("ignore", message=".*mismatched key_padding_mask")
            out = self.model(**inputs, output_hidden_states=self.layers is not None)
            h = (out.last_hidden_state if self.layers is None else
                 torch.stack([out.hidden_states[i] for i in self.layers]).mean(0))  # fmt: skip
            h = h.float().cpu().numpy()
        n_frames = self.model._get_feat_extract_output_lengths(torch.tensor(lengths)).tolist()
        return [h[k, : int(n)].astype(np.float32) for k, n in enumerate(n_frames)]


def _normalises_input(folder: Path, config: Any) -> bool:
    """Whether the model expects each waveform z-normalised (its feature extractor's ``do_normalize``)."""
    import json

    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        return bool(json.loads(pre.read_text()).get("do_normalize", True))
    return getattr(config, "feat_extract_norm", "group") == "layer"


_ENCODERS: dict[tuple, Encoder] = {}  # per process: a model is loaded once, whichever task asks


@dataclasses.dataclass(frozen=True)
class SSLFeatures(FeatureSet):
    """Mean and standard deviation over time of an SSL model's layer (or layer range average)."""

    name: ClassVar[str] = "ssl"
    kind: ClassVar[str] = "vector"
    version: ClassVar[str] = "1"
    batched: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ("transformers", "huggingface_hub")
    install: ClassVar[str] = INSTALL

    model: str = ""
    revision: str = ""
    layer: str = "last"
    chunk_s: float = 20.0
    weights_sha256: str = ""

    def __post_init__(self) -> None:
        parse_layers(self.layer)
        if self.sample_rate != 16000:
            raise ConfigError("ssl: the models take 16 kHz audio; leave sample_rate at 16000")
        if self.chunk_s < 1:
            raise ConfigError(f"ssl: chunk_s={self.chunk_s}: give at least 1 second")

    def pinned(self) -> tuple[Path, SSLFeatures]:
        """(local folder, this set with the weights' SHA-256 and, for a cached id, the snapshot's commit).
        A set that names weights (from shards or a bundle) and finds others is one line, before any work."""
        folder, revision = resolve(self.model, self.revision)
        found = weights_sha256(folder)
        if self.weights_sha256 and found != self.weights_sha256:
            raise ConfigError(f"ssl: the weights in {folder} (sha256 {found[:12]}) are not the ones these features "
                              f"were made with ({self.weights_sha256[:12]}); fetch that model (revision "
                              f"{self.revision or 'main'}) or re-extract with these weights")  # fmt: skip
        return folder, dataclasses.replace(self, revision=revision, weights_sha256=found)

    def describe(self) -> dict[str, Any]:
        """With the model pinned (``pinned``)."""
        pinned = self.pinned()[1]
        return {"name": self.name, "kind": self.kind, "version": self.version, "params": pinned.params}

    def load(self, device: str = "cpu", threads: int | None = None) -> Encoder:
        if threads and device == "cpu":  # the actor's CPUs: torch's intra-op threads in this process
            import torch

            torch.set_num_threads(threads)
        key = (self.model, self.revision, self.weights_sha256, self.layer, self.chunk_s, device)
        if key not in _ENCODERS:
            log.info("loading %s on %s", self.model, device)
            _ENCODERS[key] = Encoder(self, device)
        return _ENCODERS[key]

    def compute(self, y: np.ndarray, sr: int) -> np.ndarray:
        return self.summarise(self.load().frames([y])[0])

    def compute_many(self, ys: list[np.ndarray], runner: Any) -> list[np.ndarray]:
        return [self.summarise(f) for f in (runner or self.load()).frames(ys)]

    def summarise(self, frames: np.ndarray) -> np.ndarray:
        if len(frames) == 0:
            return np.zeros(2 * frames.shape[1], np.float32)
        return np.concatenate([frames.mean(0), frames.std(0)]).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class SSLSequence(SSLFeatures):
    """The frame embeddings (frames, dim) of an SSL model's layer, for the BiLSTM."""

    name: ClassVar[str] = "ssl_seq"
    kind: ClassVar[str] = "sequence"
    version: ClassVar[str] = "1"

    def summarise(self, frames: np.ndarray) -> np.ndarray:
        return frames.astype(np.float32)
