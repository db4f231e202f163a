"""SSL feature extraction throughput: a base-size WavLM (randomly initialised from its config, the same
compute as the real microsoft/wavlm-base-plus, nothing downloaded) through ``seremo extract`` on a
manifest, beside the hand-crafted ``seremo`` set in the same run.

    python benchmarks/ssl_extract.py [--manifest runs/emodb/manifest.parquet] [--gpus-per-actor 0.5]

Prints, per set: utterances, audio minutes, wall seconds, x real time for the job and per core (or per GPU).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from seremo import features
from seremo.corpora import prepare_corpus
from seremo.extract import extract
from seremo.outcome import format_table
from seremo.runtime import ensure_ray
from seremo.settings import ExtractSettings

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def base_wavlm(folder: Path, model_type: str = "wavlm") -> Path:
    """A base-size model of ``model_type`` with random weights, saved as a local folder (as a download)."""
    import torch
    import transformers

    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    config, model = {"wavlm": ("WavLMConfig", "WavLMModel"), "hubert": ("HubertConfig", "HubertModel"),
                     "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model")}[model_type]  # fmt: skip
    getattr(transformers, model)(getattr(transformers, config)()).eval().save_pretrained(folder)
    return folder


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", default=None, help="default: EmoDB from ../shared/corpora/emodb")
    p.add_argument("--model-dir", default=str(Path(tempfile.gettempdir()) / "seremo-wavlm-base-random"))
    p.add_argument("--model-type", default="wavlm", choices=["wavlm", "hubert", "wav2vec2"])
    p.add_argument("--layer", default="last")
    p.add_argument("--gpus-per-actor", type=float, default=0.0)
    p.add_argument("--actors", type=int, default=None)
    p.add_argument("--compare", default="seremo", help="a hand-crafted set run beside it ('' for none)")
    p.add_argument("--out", default=None, help="where the feature folders go (default: a temp dir)")
    args = p.parse_args()

    import pyarrow.parquet as pq
    import ray

    table = (pq.read_table(args.manifest) if args.manifest else
             prepare_corpus("emodb", str(SHARED / "corpora/emodb")).table)  # fmt: skip
    folder = base_wavlm(Path(args.model_dir), args.model_type)
    ensure_ray()
    cpus = int(ray.cluster_resources().get("CPU", 1))
    gpus = ray.cluster_resources().get("GPU", 0)
    root = Path(args.out or tempfile.mkdtemp(prefix="ssl-bench-"))
    sets = [("ssl", features.get("ssl", model=str(folder), layer=args.layer))]
    if args.compare:
        sets.append((args.compare, features.get(args.compare)))
    rows = []
    for name, fs in sets:
        out = root / name
        started = time.perf_counter()
        kw = {"gpus_per_actor": args.gpus_per_actor, "actors": args.actors} if fs.batched else {}
        result = extract(table, fs, str(out), ExtractSettings(**kw), overwrite=True)
        s = result.summary
        total = time.perf_counter() - started
        audio_s = s["audio_hours"] * 3600
        on_gpu = fs.batched and args.gpus_per_actor
        units = gpus if on_gpu else cpus
        rows.append([name, s["rows"], s["errors"], round(audio_s / 60, 1), round(s["wall_s"], 1), round(total, 1),
                     round(audio_s / s["wall_s"], 1), round(audio_s / s["wall_s"] / units, 2),
                     f"{units:g} {'GPU' if on_gpu else 'CPU'}"])  # fmt: skip
        print(json.dumps({"set": name, **{k: s.get(k) for k in ("rows", "errors", "wall_s", "x_realtime", "actors")}}))
    print(format_table(["set", "rows", "errors", "audio min", "job s", "end to end s", "x real time",
                        "x real time per unit", "units"], rows))  # fmt: skip
    if len(rows) == 2:
        print(f"ssl per unit / {rows[1][0]} per core: {rows[0][7] / rows[1][7]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
