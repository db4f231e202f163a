"""Torch models: BiLSTM with attention pooling, CNN, CNN-LSTM, an MLP, a text BiLSTM, and audio + text fusion.

Every model takes ``(x, lengths)``: ``x`` is (batch, time, dim) for sequences,
(batch, bands, time) for images, (batch, dim) for vectors, (batch, words) of word
ids for text; ``lengths`` are the real frame (word) counts. A fusion model's kind is
``<audio kind>+text``: its items are (audio, words) pairs, and ``x`` and ``lengths``
are each an (audio, text) pair of tensors. Padding never reaches a prediction: LSTMs run on packed
sequences, CNN activations are re-masked to zero after every block (so a conv
at the edge sees the same zeros a lone utterance's own padding gives), and
attention/average/max pooling ignore padded frames.

Input normalisation (per-dimension mean/std of the training set) lives inside
the model as buffers, so a bundle needs nothing else to predict.

Why one module of about 550 lines: the models, the batching that feeds them
(collate, length buckets, SpecAugment masks) and their save/load all follow the
item conventions above; apart, each would restate them. The torch-free part
(names, kinds, arch arguments) is :mod:`seremo.deep_models`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seremo.deep_models import KINDS, audio_kind, reads_text  # noqa: F401  (the torch-free registry; re-exported)

MIN_FRAMES = 8  # the CNNs halve time three times


def time_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """(batch, frames) True on real frames."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


class Standardize(nn.Module):
    """(x - mean) / std along the feature axis, with the training statistics as buffers."""

    def __init__(self, dim: int, axis: int = -1):
        super().__init__()
        self.axis = axis
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def set(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(np.maximum(std, 1e-5), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[self.axis] = -1
        return (x - self.mean.view(shape)) / self.std.view(shape)


class AttentionPool(nn.Module):
    """Softmax attention over time that gives padded frames exactly zero weight."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, dim // 2), nn.Tanh(), nn.Linear(dim // 2, 1))

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        s = self.score(h).squeeze(-1).masked_fill(~mask, float("-inf"))
        w = torch.softmax(s.float(), dim=1).to(h.dtype)
        return torch.bmm(w.unsqueeze(1), h).squeeze(1)


def _lstm(x: torch.Tensor, lengths: torch.Tensor, lstm: nn.LSTM) -> torch.Tensor:
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, _ = lstm(packed)
    h, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return h


def stack_frames(x: torch.Tensor, lengths: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate every ``k`` consecutive frames into one step: (B, T, D) -> (B, ceil(T/k), k*D).

    Padded frames must already be zero; a lone utterance's last partial step is
    zero-filled the same way, so stacking never mixes padding into real steps.
    """
    if k == 1:
        return x, lengths
    b, t, d = x.shape
    pad = (-t) % k
    if pad:
        x = torch.nn.functional.pad(x, (0, 0, 0, pad))
    return x.reshape(b, (t + pad) // k, k * d), (lengths + k - 1) // k


class BiLSTMAttention(nn.Module):
    """2-layer bidirectional LSTM over frame sequences (``stack`` frames per step), attention-pooled."""

    kind = "sequence"

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 96, layers: int = 2, dropout: float = 0.3,
                 stack: int = 3):  # fmt: skip
        super().__init__()
        self.stack = stack
        self.norm = Standardize(in_dim)
        self.lstm = nn.LSTM(in_dim * stack, hidden, num_layers=layers, batch_first=True, bidirectional=True,
                            dropout=dropout if layers > 1 else 0.0)  # fmt: skip
        self.pool = AttentionPool(2 * hidden)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, n_classes))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.norm(x) * time_mask(lengths, x.shape[1])[:, :, None].to(x.dtype)
        x, lengths = stack_frames(x, lengths, self.stack)
        h = _lstm(x, lengths, self.lstm)
        return self.head(self.pool(h, time_mask(lengths, h.shape[1])))


# --------------------------------------------------------------------------- text

TOKEN = re.compile(r"\w+|[!?]")
PAD, UNK = 0, 1


def tokens(text: str) -> list[str]:
    """Lower-cased words, and "!" and "?" (they carry emotion), as the TF-IDF word block reads them."""
    return TOKEN.findall(text.lower())


def fit_vocabulary(texts: Sequence[str], min_count: int = 2, max_size: int = 20000) -> list[str]:
    """The vocabulary of ``texts`` (a fold's training rows only): id 0 pads, id 1 is any unseen word."""
    counts = Counter(t for text in texts for t in tokens(text))
    kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))[:max_size]
    return ["<pad>", "<unk>", *kept]


def encode(texts: Sequence[str], vocab: Sequence[str]) -> list[np.ndarray]:
    """Token ids per text; an empty text is one unknown token (a model needs one step)."""
    index = {w: i for i, w in enumerate(vocab)}
    return [np.asarray([index.get(t, UNK) for t in tokens(x)] or [UNK], np.int64) for x in texts]


def read_vectors(path: str, words: set[str], dim: int) -> dict[str, np.ndarray]:
    """Pretrained word vectors for ``words`` from a local text file (``word v1 ... vd`` per line, GloVe's
    format; a word2vec header line is skipped). A vector of another size is one line naming the file."""
    from seremo.errors import ConfigError

    found: dict[str, np.ndarray] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip().split(" ")
            if n == 1 and len(parts) == 2:
                continue  # word2vec text header: "<count> <dim>"
            if parts[0].lower() not in words or parts[0].lower() in found:
                continue
            if len(parts) - 1 != dim:
                raise ConfigError(f"{path}: line {n} has a {len(parts) - 1}-dim vector; arch embed is {dim}: "
                                  "set train.arch.embed to the file's size")  # fmt: skip
            found[parts[0].lower()] = np.asarray(parts[1:], np.float32)
    return found


class TextBiLSTM(nn.Module):
    """Words -> learned embeddings (optionally started from pretrained vectors) -> BiLSTM with
    self-attention pooling -> classes. ``in_dim`` is the vocabulary size; ``vocab`` (the words,
    by id) travels with the bundle as ``vocab.json``, so the model reads raw transcripts."""

    kind = "text"

    def __init__(self, in_dim: int, n_classes: int, embed: int = 100, hidden: int = 96, layers: int = 1,
                 dropout: float = 0.3):  # fmt: skip
        super().__init__()
        self.norm = Standardize(1)  # the training loop's frame statistics do not apply to word ids
        self.embed = nn.Embedding(in_dim, embed, padding_idx=PAD)
        self.drop = nn.Dropout(dropout)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True, bidirectional=True,
                            dropout=dropout if layers > 1 else 0.0)  # fmt: skip
        self.pool = AttentionPool(2 * hidden)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, n_classes))
        self.vocab: list[str] | None = None

    def set_vectors(self, vectors: dict[str, np.ndarray]) -> int:
        """Start the embeddings of the words ``vectors`` has from them; how many were found."""
        rows = [(i, vectors[w]) for i, w in enumerate(self.vocab or []) if w in vectors]
        with torch.no_grad():
            for i, v in rows:
                self.embed.weight[i] = torch.as_tensor(v)
        return len(rows)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = _lstm(self.drop(self.embed(x)), lengths, self.lstm)
        return self.head(self.pool(h, time_mask(lengths, h.shape[1])))


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.body(x)
        lengths = torch.clamp(lengths // 2, min=1)
        return x * time_mask(lengths, x.shape[-1])[:, None, None, :].to(x.dtype), lengths


class CNN(nn.Module):
    """Three conv blocks over (bands, time), then masked mean+max pooling over time."""

    kind = "image"

    def __init__(self, n_mels: int, n_classes: int, channels: Sequence[int] = (16, 32, 64), dropout: float = 0.3):
        super().__init__()
        self.norm = Standardize(n_mels, axis=1)
        chans = [1, *channels]
        self.blocks = nn.ModuleList(ConvBlock(a, b) for a, b in zip(chans[:-1], chans[1:], strict=True))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * chans[-1], n_classes))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.norm(x) * time_mask(lengths, x.shape[-1])[:, None, :].to(x.dtype)
        x = x.unsqueeze(1)
        for block in self.blocks:
            x, lengths = block(x, lengths)
        h = x.mean(dim=2)  # over bands: (batch, channels, time)
        mask = time_mask(lengths, h.shape[-1])[:, None, :]
        mean = (h * mask).sum(-1) / lengths[:, None].to(h.dtype)
        peak = h.masked_fill(~mask, float("-inf")).amax(-1)
        return self.head(torch.cat([mean, peak], dim=1))


class CNNLSTM(nn.Module):
    """Two conv blocks as a front end, a BiLSTM over the remaining time steps, attention pooling."""

    kind = "image"

    def __init__(self, n_mels: int, n_classes: int, channels: Sequence[int] = (16, 32), hidden: int = 96,
                 dropout: float = 0.3):  # fmt: skip
        super().__init__()
        self.norm = Standardize(n_mels, axis=1)
        chans = [1, *channels]
        self.blocks = nn.ModuleList(ConvBlock(a, b) for a, b in zip(chans[:-1], chans[1:], strict=True))
        feat = chans[-1] * (n_mels // 2 ** len(channels))
        self.lstm = nn.LSTM(feat, hidden, batch_first=True, bidirectional=True)
        self.pool = AttentionPool(2 * hidden)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, n_classes))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.norm(x) * time_mask(lengths, x.shape[-1])[:, None, :].to(x.dtype)
        x = x.unsqueeze(1)
        for block in self.blocks:
            x, lengths = block(x, lengths)
        b, c, f, t = x.shape
        seq = x.permute(0, 3, 1, 2).reshape(b, t, c * f)
        h = _lstm(seq, lengths, self.lstm)
        return self.head(self.pool(h, time_mask(lengths, t)))


class MLP(nn.Module):
    """Two hidden layers over functional vectors."""

    kind = "vector"

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 256, dropout: float = 0.3):
        super().__init__()
        self.norm = Standardize(in_dim)
        self.body = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden // 2), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden // 2, n_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.body(self.norm(x))


class AudioText(nn.Module):
    """Feature-level fusion: an audio branch and a text branch, each pooled over its own time axis, their
    vectors joined before one classifier. The branches are the single-modality models without their
    output layers, so each pools exactly as it does alone (padding of either never reaches the other).

    ``in_dim`` is (audio frame dim or mel bands, vocabulary size). ``norm`` (the audio statistics) and
    ``vocab`` (the text words) are the branches' own, so training and bundles treat a fusion model as
    they treat its branches.
    """

    kind = ""

    def _join(self, audio: nn.Module, audio_dim: int, text: TextBiLSTM, n_classes: int, dropout: float) -> None:
        audio.head, text.head = nn.Identity(), nn.Identity()
        self.audio, self.text = audio, text
        text_dim = 2 * text.lstm.hidden_size
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(audio_dim + text_dim, n_classes))

    @property
    def norm(self) -> Standardize:
        return self.audio.norm

    @property
    def vocab(self) -> list[str] | None:
        return self.text.vocab

    @vocab.setter
    def vocab(self, words: list[str] | None) -> None:
        self.text.vocab = words

    def set_vectors(self, vectors: dict[str, np.ndarray]) -> int:
        return self.text.set_vectors(vectors)

    def forward(self, x: tuple[torch.Tensor, torch.Tensor], lengths: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.head(torch.cat([self.audio(x[0], lengths[0]), self.text(x[1], lengths[1])], dim=1))


class FusionBiLSTM(AudioText):
    """Frame sequences through the attention BiLSTM, transcripts through the text BiLSTM, one classifier."""

    kind = "sequence+text"

    def __init__(self, in_dim: Sequence[int], n_classes: int, hidden: int = 96, layers: int = 2, stack: int = 3,
                 embed: int = 100, text_hidden: int = 96, dropout: float = 0.3):  # fmt: skip
        super().__init__()
        audio = BiLSTMAttention(int(in_dim[0]), n_classes, hidden=hidden, layers=layers, dropout=dropout, stack=stack)
        text = TextBiLSTM(int(in_dim[1]), n_classes, embed=embed, hidden=text_hidden, dropout=dropout)
        self._join(audio, 2 * hidden, text, n_classes, dropout)


class FusionCNN(AudioText):
    """Log-mel images through the CNN, transcripts through the text BiLSTM, one classifier."""

    kind = "image+text"

    def __init__(self, in_dim: Sequence[int], n_classes: int, channels: Sequence[int] = (16, 32, 64),
                 embed: int = 100, text_hidden: int = 96, dropout: float = 0.3):  # fmt: skip
        super().__init__()
        audio = CNN(int(in_dim[0]), n_classes, channels=channels, dropout=dropout)
        text = TextBiLSTM(int(in_dim[1]), n_classes, embed=embed, hidden=text_hidden, dropout=dropout)
        self._join(audio, 2 * list(channels)[-1], text, n_classes, dropout)


MODELS: dict[str, type[nn.Module]] = {  # the classes of seremo.deep_models.MODELS' names
    "bilstm": BiLSTMAttention, "cnn": CNN, "cnn_lstm": CNNLSTM, "mlp": MLP, "text_bilstm": TextBiLSTM,
    "fusion_bilstm": FusionBiLSTM, "fusion_cnn": FusionCNN,
}  # fmt: skip


def build(name: str, in_dim: int | Sequence[int], n_classes: int, **arch: Any) -> nn.Module:
    """A model by name; ``in_dim`` is the frame dim (bilstm, mlp), the mel bands (cnn, cnn_lstm), the
    vocabulary size (text_bilstm), or (audio dim, vocabulary size) for a fusion model."""
    return MODELS[name](in_dim, n_classes, **arch)


# --------------------------------------------------------------------------- data


def frames_of(x: Any, kind: str) -> int:
    """An item's length along time (a fusion pair's: its audio's, which dominates a batch's cost)."""
    if kind.endswith("+text"):
        return frames_of(x[0], audio_kind(kind))
    return x.shape[0] if kind in ("sequence", "text") else (x.shape[-1] if kind == "image" else 1)


def split_items(items: Sequence[Any], kind: str) -> tuple[list[Any], list[Any]]:
    """(audio parts, text parts) of fusion pairs."""
    return [a for a, _ in items], [t for _, t in items]


def collate(items: Sequence[Any], kind: str) -> tuple[Any, Any]:
    """Zero-pad a list of arrays along time: (x, lengths); for fusion pairs, each an (audio, text) pair."""
    if kind.endswith("+text"):
        audio, text = split_items(items, kind)
        (xa, la), (xt, lt) = collate(audio, audio_kind(kind)), collate(text, "text")
        return (xa, xt), (la, lt)
    if kind == "vector":
        return torch.as_tensor(np.stack(items)), torch.ones(len(items), dtype=torch.long)
    lengths = [frames_of(a, kind) for a in items]
    t = max(max(lengths), MIN_FRAMES)
    if kind == "text":  # word ids, padded with PAD
        ids = np.full((len(items), max(lengths)), PAD, np.int64)
        for i, a in enumerate(items):
            ids[i, : len(a)] = a
        return torch.from_numpy(ids), torch.as_tensor(lengths, dtype=torch.long)
    if kind == "sequence":
        out = np.zeros((len(items), t, items[0].shape[1]), np.float32)
        for i, a in enumerate(items):
            out[i, : len(a)] = a
    else:
        out = np.zeros((len(items), items[0].shape[0], t), np.float32)
        for i, a in enumerate(items):
            out[i, :, : a.shape[1]] = a
    return torch.from_numpy(out), torch.as_tensor(lengths, dtype=torch.long)


def bucket_batches(lengths: Sequence[int], batch_size: int, shuffle: bool, seed: int) -> list[list[int]]:
    """Batches of similar length: sort by length, cut into batches, shuffle the batch order.

    Within equal lengths the order is shuffled too, so epochs differ.
    """
    rng = np.random.default_rng(seed)
    lengths = np.asarray(lengths)
    tiebreak = rng.random(len(lengths)) if shuffle else np.arange(len(lengths))
    order = np.lexsort((tiebreak, lengths))
    batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    if shuffle:
        rng.shuffle(batches)
    return batches


def shard_batches(batches: list[list[int]], rank: int, world: int) -> list[list[int]]:
    """This rank's slice of every batch: a batch is one optimiser step across all ranks.

    ``batch_size`` is thus the global batch and the number of steps per epoch does not
    depend on the worker count, so a run on 2 CPU workers and one on 8 GPUs follow the
    same schedule. Every rank gets a slice of every batch (DDP steps in lockstep); a
    batch with fewer items than ranks (at most the last one) is left out.
    """
    if world == 1:
        return batches
    return [np.array_split(np.asarray(b), world)[rank].tolist() for b in batches if len(b) >= world]


def to_device(x: Any, device: Any) -> Any:
    """A batch tensor, or a fusion batch's (audio, text) pair of them, on ``device``."""
    return tuple(t.to(device) for t in x) if isinstance(x, tuple) else x.to(device)


def spec_mask(x: Any, lengths: Any, kind: str, fill: np.ndarray, rng: np.random.Generator,
              time_masks: int = 2, time_width: int = 20, freq_masks: int = 2, freq_width: int = 8) -> Any:  # fmt: skip
    """SpecAugment-style masking for training batches: random time spans and feature bands of each
    utterance are set to ``fill`` (the training mean, so they read as zero after standardisation).

    Spans start inside each utterance's real frames; padding is re-masked by the models anyway.
    A fusion batch has its audio masked and its words left as they are.
    """
    if kind.endswith("+text"):
        masked = spec_mask(x[0], lengths[0], audio_kind(kind), fill, rng, time_masks, time_width, freq_masks,
                           freq_width)  # fmt: skip
        return masked, x[1]
    if kind in ("vector", "text"):
        return x
    b = x.shape[0]
    t_axis, f_axis = (1, 2) if kind == "sequence" else (2, 1)
    frames, dims = x.shape[t_axis], x.shape[f_axis]
    real = lengths.numpy()

    def spans(n: int, width: int, size: int, limit: np.ndarray) -> torch.Tensor:
        hit = np.zeros((b, size), bool)
        pos = np.arange(size)[None, :]
        for _ in range(n):
            w = rng.integers(0, width + 1, size=b)
            start = np.floor(rng.random(b) * np.maximum(limit - w, 1)).astype(int)
            hit |= (pos >= start[:, None]) & (pos < (start + w)[:, None])
        return torch.from_numpy(hit)

    in_time = spans(time_masks, time_width, frames, real)
    in_band = spans(freq_masks, freq_width, dims, np.full(b, dims))
    fill_t = torch.as_tensor(fill, dtype=x.dtype)
    if kind == "sequence":
        return torch.where(in_time[:, :, None] | in_band[:, None, :], fill_t[None, None, :], x)
    return torch.where(in_band[:, :, None] | in_time[:, None, :], fill_t[None, :, None], x)


@torch.no_grad()
def predict_proba(model: nn.Module, X: Any, batch_size: int = 64, device: str | None = None) -> np.ndarray:
    """Class probabilities for a list of arrays (or a matrix of vectors), in input order."""
    model.eval()
    kind = model.kind
    items = model_items(model, X)
    dev = torch.device(device) if device else next(model.parameters()).device
    out = np.zeros((len(items), model_classes(model)), np.float32)
    for batch in bucket_batches([frames_of(a, kind) for a in items], batch_size, False, 0):
        x, lengths = collate([items[i] for i in batch], kind)
        logits = model(to_device(x, dev), to_device(lengths, dev))
        out[batch] = torch.softmax(logits.float(), dim=1).cpu().numpy()
    return out


def model_items(model: nn.Module, X: Any) -> list[Any]:
    """``X`` as the model's items: audio arrays as float32 (a matrix iterates as its rows), transcripts
    as word ids of the model's vocabulary (ids pass through), fusion pairs each part so."""

    def words(texts: list[Any]) -> list[np.ndarray]:
        if texts and isinstance(texts[0], str):
            return encode(texts, model.vocab)
        return [np.asarray(a, np.int64) for a in texts]

    if model.kind == "text":
        return words(list(X))
    if model.kind.endswith("+text"):
        audio, text = split_items(list(X), model.kind)
        return list(zip([np.asarray(a, np.float32) for a in audio], words(text), strict=True))
    return [np.asarray(a, np.float32) for a in X]


def model_classes(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return last.out_features


# --------------------------------------------------------------------------- bundles


VOCAB = "vocab.json"


def save_module(out: Path, model: nn.Module) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    if getattr(model, "vocab", None) is not None:  # a text model reads transcripts through its own words
        (out / VOCAB).write_text(json.dumps(model.vocab, ensure_ascii=False))


def load_module(root: Path, meta: Any) -> nn.Module:
    """Rebuild the architecture from bundle.json and load its safetensors weights.

    The output layer is sized from the weights, not from bundle.json's class list, so
    a class list that does not fit the weights is reported by the caller as a class
    mismatch (``model_classes``) rather than as torch's long shape-mismatch listing.
    """
    from safetensors.torch import load_file

    arch = dict(meta.params.get("arch", {}))
    state = load_file(str(root / "model.safetensors"))
    n_classes = len(meta.classes)
    raw = meta.params["in_dim"]
    in_dim = [int(d) for d in raw] if isinstance(raw, list) else int(raw)
    model = build(meta.model_name, in_dim, n_classes, **arch)
    head = f"{_last_linear_name(model)}.weight"
    if head in state and state[head].ndim == 2 and state[head].shape[0] != n_classes:
        model = build(meta.model_name, in_dim, int(state[head].shape[0]), **arch)
    model.load_state_dict(state)
    if reads_text(model.kind):  # errors become one BundleError line in bundle.load
        if VOCAB not in meta.files:
            raise ValueError(f"a {meta.model_name} bundle needs its {VOCAB}, which it does not hold")
        vocab = json.loads((root / VOCAB).read_text())
        size = next(m for m in model.modules() if isinstance(m, nn.Embedding)).num_embeddings
        if not isinstance(vocab, list) or len(vocab) != size:
            raise ValueError(f"{VOCAB} does not fit the model's {size} embeddings")
        model.vocab = vocab
    model.eval()
    return model


def _last_linear_name(model: nn.Module) -> str:
    """The state-dict prefix of the output layer (the last ``nn.Linear``, as ``model_classes`` reads)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)][-1]

