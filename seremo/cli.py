"""The ``seremo`` command line: one verb per stage, the same flags everywhere.

A user's mistake (a missing file, a bad option, a malformed corpus) ends as one
line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from seremo import __version__
from seremo.deep_models import NAMES as TRAIN_MODELS  # torch-free: --help imports no torch
from seremo.errors import ConfigError, SeremoError, storage_error

# seremo.features.DEFAULT, spelled out: importing the feature sets here would load librosa for every verb
# (tests/test_cli.py keeps the two equal)
DEFAULT_FEATURES = "whisper"

log = logging.getLogger("seremo")


class _Parser(argparse.ArgumentParser):
    """argparse's usage mistakes as one line too (by default it prints the usage block first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parse_options(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--opt expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


# --------------------------------------------------------------------------- prepare


def cmd_prepare(args: argparse.Namespace) -> int:
    pairs = args.corpus_root
    if len(pairs) % 2:
        raise ConfigError(f"prepare takes CORPUS ROOT pairs; got {len(pairs)} word(s): {' '.join(pairs)}")
    corpora = [pairs[i] for i in range(0, len(pairs), 2)]
    entries = [(c, pairs[i + 1], corpus_options(_parse_options(args.opt), c, corpora))
               for i, c in zip(range(0, len(pairs), 2), corpora, strict=True)]  # fmt: skip
    from seremo.prepare import run_stage

    print(run_stage(entries, args.out, args.class_set).text)
    return 0


def corpus_options(options: dict[str, str], corpus: str, corpora: Sequence[str]) -> dict[str, str]:
    """The ``--opt`` options for one loader: ``KEY=V`` goes to every corpus, ``CORPUS.KEY=V`` to that one."""
    out = {}
    for key, value in options.items():
        name, dot, inner = key.partition(".")
        if not dot:
            out[key] = value
        elif name not in corpora:
            raise ConfigError(f"--opt {key}: {name!r} is not a corpus of this prepare ({', '.join(corpora)})")
        elif name == corpus:
            out[inner] = value
    return out


# --------------------------------------------------------------------------- extract


def cmd_extract(args: argparse.Namespace) -> int:
    from seremo.settings import check_extract

    settings = check_extract(batch_size=args.batch_size, actors=args.actors, gpus_per_actor=args.gpus_per_actor,
                             channel=args.channel, failure_budget=args.failure_budget)  # before Ray or the manifest
    from seremo.extract import run_stage

    print(run_stage(args.manifest, args.features, _parse_options(args.param), args.out, settings, args.address,
                    args.overwrite, args.out_is_shared).text)  # fmt: skip
    return 0


# --------------------------------------------------------------------------- tune


def cmd_tune(args: argparse.Namespace) -> int:
    if args.model:  # a deep model: Ray Tune over Ray Train runs
        from seremo.deep_search import run_stage as search_stage
        from seremo.settings import load_deep_search

        if args.inputs:
            raise ConfigError("--inputs is for the classical search; a deep model reads what --model takes")
        deep = load_deep_search(args.config, args.model, class_set=args.class_set)
        print(search_stage(args.features_dir, args.out, deep, args.address).text)
        return 0
    from seremo.settings import load_tune
    from seremo.tune import run_stage

    settings = load_tune(args.config)
    if args.class_set:
        settings = settings.model_copy(update={"class_set": args.class_set})
    if args.inputs:
        settings = settings.model_copy(update={"inputs": args.inputs})
    print(run_stage(args.features_dir, args.out, settings, args.address).text)
    return 0


# --------------------------------------------------------------------------- ensemble


def cmd_ensemble(args: argparse.Namespace) -> int:
    from seremo.ensemble import run_stage

    print(run_stage(args.runs, args.out, args.rule).text)
    return 0


# --------------------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> int:
    from seremo.settings import load_train
    from seremo.train import run_stage

    settings = load_train(
        args.config, model=args.model, workers=args.workers, gpu=True if args.gpu else None,
        class_set=args.class_set, epochs=args.epochs,
    )  # fmt: skip
    print(run_stage(args.features_dir, args.out, settings, args.address).text)
    return 0


# --------------------------------------------------------------------------- score


def cmd_evaluate(args: argparse.Namespace) -> int:
    from seremo.evaluate import run_stage

    print(run_stage(args.bundle, args.data, args.out, args.class_set, args.address).text)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from seremo import config
    from seremo.score import run_stage
    from seremo.segment import SegmentSettings
    from seremo.settings import ScoreSettings

    segment = {"mode": args.segment}
    for key in ("min_s", "max_s", "window_s", "hop_s"):
        value = getattr(args, key)
        if value is not None:
            segment[key] = value
    flags = {"channels": args.channels, "gpu": args.gpu, "files_per_task": args.files_per_task,
             "actors": args.actors, "failure_budget": args.failure_budget}  # fmt: skip
    settings = config.validate(ScoreSettings, {**flags, "segment": segment}, "seremo score", flags=flags)
    SegmentSettings(**segment)  # a bad --min-s (...) is one line before the bundle loads
    print(run_stage(args.input, args.model, args.out, settings, args.address, args.out_is_shared).text)
    return 0


# --------------------------------------------------------------------------- run, submit, download


def _stage_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def cmd_run(args: argparse.Namespace) -> int:
    from seremo import pipeline

    cfg = pipeline.load(args.config, args.data_root, args.out)
    rows = pipeline.run(cfg, args.config, args.address, _stage_list(args.stages))
    pipeline.print_rows(rows, cfg)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    import os

    from seremo import pipeline
    from seremo.submit import submit

    address = args.address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ConfigError("seremo submit needs --address http://HEAD:8265 (or RAY_API_SERVER_ADDRESS)")
    cfg = pipeline.load(args.config, args.data_root, args.out)
    only = _stage_list(args.stages)
    pipeline.select_stages(cfg, only, args.config)  # a bad --stages fails here, not in the job
    return submit(cfg, args.config, address, only, wait=not args.no_wait)


def cmd_download(args: argparse.Namespace) -> int:
    from seremo.download import download

    done = download(args.corpus, args.out, url=args.url, sha256=args.sha256, keep=args.keep_archive)
    if done.get("skipped"):
        print(f"{args.out}: already downloaded and verified; nothing to do")
    else:
        print(f"{args.corpus}: {done['files_verified']} files verified against the pinned checksums "
              f"(archive sha256 {done['archive_sha256']})")  # fmt: skip
    print(f"corpus: {args.out}   (seremo prepare {args.corpus} {args.out} --out MANIFEST)")
    return 0


# --------------------------------------------------------------------------- parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (default: RAY_ADDRESS, else a local embedded Ray)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _failure_budget(p: argparse.ArgumentParser) -> None:
    p.add_argument("--failure-budget", type=float, default=0.05, metavar="SHARE",
                   help="share of inputs that may fail for reasons not their own (a bug, a lost worker) "
                        "before the run exits non-zero (default 0.05); it always does when every input fails")  # fmt: skip


def _out_is_shared(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out-is-shared", action="store_true",
                   help="a local --out that every node of a multi-node cluster mounts (NFS); else use a URI")  # fmt: skip


def _config_args(p: argparse.ArgumentParser, seen_from: str) -> None:
    p.add_argument("config", help="experiment config YAML (configs/*.yaml)")
    p.add_argument("--data-root", default=None, help=f"where corpora are read{seen_from}; overrides data_root")
    p.add_argument("--out", default=None, help=f"output root{seen_from}; overrides out")
    p.add_argument("--stages", default=None, help="comma-separated subset of the config's stages")


def _prepare_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="read one or more corpora into one manifest (Parquet)")
    p.add_argument(
        "corpus_root", nargs="+", metavar="CORPUS ROOT",
        help="pairs of a loader (emodb, emovo, nemo, urdu, ravdess, cremad, savee, tess, iemocap, "
             "csv/parquet/table, folder) and its folder (for csv/parquet, the manifest file)",
    )  # fmt: skip
    p.add_argument("--out", required=True, help="manifest Parquet file to write")
    p.add_argument("--class-set", default=None, help="keep and merge labels into a named class set")
    p.add_argument(
        "--opt", action="append", default=[], metavar="KEY=VALUE",
        help="loader option (repeatable); CORPUS.KEY=VALUE for one corpus of several",
    )
    _common(p)
    p.set_defaults(handler=cmd_prepare)


def _extract_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="extract a feature set for a manifest with Ray Data")
    p.add_argument("manifest", help="manifest Parquet file (from `seremo prepare`)")
    p.add_argument("--features", default=DEFAULT_FEATURES, help=f"feature set (default: {DEFAULT_FEATURES})")
    p.add_argument("--out", required=True, help="features directory to write")
    p.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="feature-set parameter"
    )
    p.add_argument("--batch-size", type=int, default=None,
                   help="utterances per Ray task (default: about 8 tasks per CPU, at most 64 each)")
    p.add_argument("--gpus-per-actor", type=float, default=0.0, metavar="SHARE",
                   help="model-backed sets (whisper, ssl): run the encoder on GPU actors of this GPU share each "
                   "(0.5: two actors per GPU; float16). Default 0: on the CPUs, in the same stateless tasks as "
                   "every set, each worker process loading the model once")  # fmt: skip
    p.add_argument("--actors", type=int, default=None,
                   help="model-backed sets (whisper, ssl): run the encoder on this many actors (default: none on "
                   "CPU; one per GPU share with --gpus-per-actor)")  # fmt: skip
    p.add_argument("--channel", default="as-is", metavar="as-is|telephone",
                   help="telephone: extract every row as a simulated phone line delivers it (8 kHz, 300-3400 Hz, "
                   "G.711, line noise), to train for call archives (default: as-is)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="redo a finished extraction")
    _out_is_shared(p)
    _failure_budget(p)
    _common(p)
    p.set_defaults(handler=cmd_extract)


def _tune_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="nested speaker-independent search over classical models, or with --model "
                       "a deep model's (Ray Tune; each deep trial a Ray Train run)")  # fmt: skip
    p.add_argument("features_dir", help="features directory (from `seremo extract`): a vector or text set; with "
                   "--model, the set the model reads (as `seremo train`)")  # fmt: skip
    p.add_argument("--model", choices=TRAIN_MODELS, default=None,
                   help="search this deep model's space (nested, ASHA) instead of the classical grids")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--config", default=None, help="YAML with tune settings (flat or under `tune:`)")
    p.add_argument("--class-set", default=None, help="class set to train on (overrides the config)")
    p.add_argument("--inputs", choices=("audio", "text", "audio+text"), default=None,
                   help="what the models see (overrides the config): the vectors, the transcripts (TF-IDF), or "
                        "both fused; default: text for the text set, else audio")
    _common(p)
    p.set_defaults(handler=cmd_tune)


def _ensemble_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ensemble", help="a decision-level ensemble of finished tune/train runs, evaluated on their folds")
    p.add_argument("runs", nargs="+", help="run directories (tune or train) with the same data, classes and folds")
    p.add_argument("--out", required=True, help="run directory to write (metrics, report, predictions, model/)")
    p.add_argument("--rule", default="weighted", choices=("average", "weighted", "max_confidence"),
                   help="the rule the bundle ships (all three are evaluated and reported)")
    _common(p)  # every verb takes --address (DESIGN.md); an ensemble refits nothing, so it starts no Ray work
    p.set_defaults(handler=cmd_ensemble)


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a deep model data-parallel with Ray Train")
    p.add_argument("features_dir", help="features directory: mfcc_seq for bilstm and fusion_bilstm, logmel for "
                   "cnn/cnn_lstm/fusion_cnn, a vector set for mlp, text for text_bilstm")  # fmt: skip
    p.add_argument("--model", choices=TRAIN_MODELS, default=None,
                   help="fusion_* read the audio and the shards' transcripts (default bilstm)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--workers", type=int, default=None, help="Ray Train workers (default 2)")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker, bf16 autocast")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs (default 60)")
    p.add_argument("--config", default=None, help="YAML with train settings (flat or under `train:`)")
    p.add_argument("--class-set", default=None, help="class set to train on")
    _common(p)
    p.set_defaults(handler=cmd_train)


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="a trained bundle on labelled data it never saw")
    p.add_argument("bundle", help="a model bundle (a run's model/ directory)")
    p.add_argument("data", help="a features dir made with the bundle's feature set, or a manifest (.parquet)")
    p.add_argument("--out", required=True, help="run directory to write (metrics.json, report.md, ...)")
    p.add_argument("--class-set", default=None,
                   help="map labels onto the bundle's classes (default: the class set it was trained with)")  # fmt: skip
    _common(p)
    p.set_defaults(handler=cmd_evaluate)


def _score_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="label every segment of an audio archive (streaming Ray Data job)")
    p.add_argument("input", help="a directory or s3://bucket/prefix/ (recursive), a glob, or a manifest with a "
                   "`path` column")  # fmt: skip
    p.add_argument("--model", required=True, help="a model bundle directory (a run's model/)")
    p.add_argument("--out", required=True, help="output directory or URI (re-running into it resumes)")
    p.add_argument("--channels", choices=["split", "mix"], default="split", help="score channels apart or mixed")
    p.add_argument("--segment", choices=["vad", "silero", "fixed"], default="vad",
                   help="energy VAD, Silero VAD (a neural model: slower, ignores music and noise) or fixed windows")
    p.add_argument("--min-s", type=float, default=None, dest="min_s", help="shortest segment (s)")
    p.add_argument("--max-s", type=float, default=None, dest="max_s", help="longest segment (s)")
    p.add_argument("--window-s", type=float, default=None, dest="window_s", help="fixed window length (s)")
    p.add_argument("--hop-s", type=float, default=None, dest="hop_s", help="fixed window hop (s)")
    p.add_argument("--files-per-task", type=int, default=None,
                   help="files per Ray task (default: about 8 tasks per CPU, at most 16 files each)")
    p.add_argument("--actors", type=int, default=None,
                   help="predict on a pool of N actors (default: inside the CPU tasks; with --gpu, one per GPU)")
    p.add_argument("--gpu", action="store_true", help="predict on GPU actors (torch bundles)")
    _out_is_shared(p)
    _failure_budget(p)
    _common(p)
    p.set_defaults(handler=cmd_score)


def _run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the stages an experiment config lists, skipping finished ones")
    _config_args(p, "")
    _common(p)
    p.set_defaults(handler=cmd_run)


def _submit_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="run a config's pipeline as a job on a Ray cluster")
    _config_args(p, " as the cluster sees it (absolute or URI)")
    p.add_argument("--no-wait", action="store_true", help="submit and return; do not stream logs")
    p.add_argument("--address", default=None,
                   help="the cluster's dashboard, http://HEAD:8265 (default: RAY_API_SERVER_ADDRESS, RAY_ADDRESS)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(handler=cmd_submit)


def _download_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="fetch a public corpus, verify its checksums, unpack it")
    p.add_argument("corpus", help="emodb")
    p.add_argument("--out", required=True, help="folder to unpack into")
    p.add_argument("--url", default=None, help="another address for the archive (a mirror, file:///...)")
    p.add_argument("--sha256", default=None, help="also check the archive file's own sha256")
    p.add_argument("--keep-archive", action="store_true", help="keep the zip beside the unpacked files")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(handler=cmd_download)


VERB_PARSERS = (_prepare_parser, _extract_parser, _tune_parser, _ensemble_parser, _train_parser,  # --help's order
                _evaluate_parser, _score_parser, _run_parser, _submit_parser, _download_parser)


def build_parser() -> argparse.ArgumentParser:
    """``seremo VERB ...``: each verb's arguments are built by its own ``_<verb>_parser``."""
    parser = _Parser(
        prog="seremo", description="Speech emotion recognition at cluster scale on Ray."
    )
    parser.add_argument("--version", action="version", version=f"seremo {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for add in VERB_PARSERS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from seremo import runtime

    runtime.ERROR_PREFIX = f"seremo {args.verb}: error: "
    try:
        if getattr(args, "address", None) and args.verb != "submit":
            from seremo.runtime import check_reachable

            check_reachable(args.address)  # every verb, before it reads or writes anything (submit: a dashboard URL)
        return int(args.handler(args) or 0)
    except SeremoError as exc:
        print(f"seremo {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # storage the user pointed at: an unreachable bucket, a full disk, a permission
        print(f"seremo {args.verb}: error: {storage_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"seremo {args.verb}: interrupted", file=sys.stderr)
        return 130


def console() -> int:
    """The ``seremo`` command: ``main`` with Ray's native stderr noise filtered out."""
    from seremo.runtime import filter_native_stderr

    filter_native_stderr()
    return main()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(console())
