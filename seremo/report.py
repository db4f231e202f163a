"""Markdown reports for run directories: what was run, the figures, and how to read them."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from seremo.outcome import held_out

if TYPE_CHECKING:
    from seremo.dataset import FeatureTable


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _per_class(metrics: dict[str, Any]) -> str:
    return md_table(
        ["class", "recall", "precision", "F1", "support"],
        [[c, v["recall"], v["precision"], v["f1"], v["support"]] for c, v in metrics["per_class"].items()],
    )


def outer_protocol(metrics: dict[str, Any]) -> str:
    """The outer fold scheme with its fold count, as it ran: "leave-one-group-out (10 folds)"."""
    outer = metrics["protocol"]["outer"]
    if not any(ch.isdigit() for ch in outer):
        outer = f"{outer} ({len(metrics['per_fold'])} folds)"
    return outer


def _ensemble_lines(metrics: dict[str, Any]) -> list[str]:
    """Decision-level ensembles of the tuned families beside the best single configuration (nested)."""
    ens = metrics.get("ensembles")
    if not ens:
        return []
    rows = [[rule.replace("_", " "), v["uar"], v["wa"], v["macro_f1"]] for rule, v in ens.items()]
    rows.append(["single best configuration", metrics["single_best_uar"], "", ""])
    return [
        "Decision-level ensembles of each family's best configuration (chosen per outer fold by inner UAR; "
        "weights = inner UAR above chance, from the training folds only):",
        "",
        md_table(["combination", "UAR", "WA", "macro-F1"], rows),
        "",
    ]


def tune_report(metrics: dict[str, Any], data: FeatureTable) -> str:
    """``seremo tune``'s report.md: the nested headline, then each section from ``metrics.json``."""
    sections = (_tune_headline(metrics, len(data.y)), _tune_families(metrics), _tune_shipped(metrics),
                _tune_per_fold(metrics), _tune_normalised(metrics), _tune_test_sets(metrics))  # fmt: skip
    parts = [line for section in sections for line in section]
    if metrics.get("excluded_labels"):
        parts += ["", f"Rows left out by the class set: {json.dumps(metrics['excluded_labels'])}."]
    return "\n".join(parts) + "\n"


def _tune_headline(metrics: dict[str, Any], n: int) -> list[str]:
    """What was searched on what, how, and the nested figures (no held-out group influenced a choice)."""
    fs, proto = metrics["feature_set"], metrics["protocol"]
    return [
        "# seremo tune report",
        "",
        f"Features: `{fs['name']}` v{fs['version']} ({n} utterances, "
        f"{len(metrics['groups'])} groups, classes: {', '.join(metrics['classes'])}).",
        f"Protocol: outer {outer_protocol(metrics)}; hyperparameters chosen by {proto['inner']}; "
        f"{proto['search']} search. No held-out group influences any choice.",
        "",
        "## Headline (nested: family and hyperparameters chosen inside each outer fold)",
        "",
        f"Selection: {proto['selection']}.",
        "",
        md_table(["UAR", "WA", "macro-F1", "single best config's UAR"],
                 [[metrics["uar"], metrics["wa"], metrics["macro_f1"], metrics["single_best_uar"]]]),  # fmt: skip
        "",
        *_ensemble_lines(metrics),
        *_per_corpus_lines(metrics, "Per corpus (nested predictions; cross-corpus figures are per held-out corpus)"),
    ]


def _tune_families(metrics: dict[str, Any]) -> list[str]:
    """Each family's nested figures and its best configuration by plain CV (labelled optimistic)."""
    fams = metrics["families"]
    best_family = max(fams, key=lambda f: fams[f]["uar"])
    return [
        "## Per model family (nested: hyperparameters chosen inside each outer fold)",
        "",
        md_table(
            ["family", "UAR", "WA", "macro-F1", "configs", "trials s", "best config (plain CV)", "plain-CV UAR*"],
            [
                [f, v["uar"], v["wa"], v["macro_f1"], v["configs"], round(v["trial_s"]) if "trial_s" in v else "-",
                 json.dumps(v["best_config_plain_cv"]["params"]), v["best_config_plain_cv"]["uar"]]
                for f, v in sorted(fams.items(), key=lambda kv: -kv[1]["uar"])
            ],
        ),  # fmt: skip
        "",
        f"Best family: **{best_family}** (nested UAR {fams[best_family]['uar']:.3f}).",
        "\\* plain-CV UAR: the best configuration's score when it is chosen by the same folds it is "
        "scored on; optimistic, shown only because it picks the shipped model. trials s: the family's "
        "trials' own seconds (all outer and inner fits), where the search's time went.",
        "",
    ]


def _tune_shipped(metrics: dict[str, Any]) -> list[str]:
    """The shipped model, then the nested predictions per class."""
    return [
        "## Shipped model (`model/`)",
        "",
        _shipped(metrics["final_model"], metrics["protocol"].get("selection_rule", "best")),
        "",
        "## Per class (nested predictions)",
        "",
        _per_class(metrics),
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
    ]


def _tune_per_fold(metrics: dict[str, Any]) -> list[str]:
    """Each outer fold: who was held out and what the inner search chose for it."""
    return [
        "## Per fold",
        "",
        md_table(
            ["held out", "n", "UAR", "WA", "chosen families", "chosen params", "best inner UAR"],
            [
                [held_out(f["held_out"]), f["n"], f["uar"], f["wa"],
                 " + ".join(m["family"] for m in f["chosen"]["members"]),
                 "; ".join(json.dumps(m["params"]) for m in f["chosen"]["members"]),
                 f["chosen"]["members"][0]["inner_uar"]]
                for f in metrics["per_fold"]
            ],
        ),  # fmt: skip
    ]


def _tune_normalised(metrics: dict[str, Any]) -> list[str]:
    """The per-speaker and per-corpus normalised variants: separate protocols, never pooled with the headline."""
    parts: list[str] = []
    for key, title in (("speaker_normalised", "per-speaker"), ("corpus_normalised", "per-corpus")):
        if key not in metrics:
            continue
        sn = metrics[key]
        parts += [
            "",
            f"## With {title} normalisation (a separate protocol)",
            "",
            sn["note"] + ".",
            "",
            md_table(["UAR", "WA", "macro-F1", "single best config's UAR"],
                     [[sn["uar"], sn["wa"], sn["macro_f1"], sn["single_best_uar"]]]),  # fmt: skip
            "",
            *_per_corpus_lines(sn, "Per corpus"),
            md_table(
                ["family", "UAR", "WA", "macro-F1"],
                [[f, v["uar"], v["wa"], v["macro_f1"]] for f, v in sorted(sn["families"].items(), key=lambda kv: -kv[1]["uar"])],
            ),
        ]
    return parts


def _tune_test_sets(metrics: dict[str, Any]) -> list[str]:
    """Each ``test:`` set, scored by each variant's shipped model and reported apart."""
    parts: list[str] = []
    for name, test in metrics.get("test", {}).items():
        parts += [
            "",
            f"## Test set `{name}` (never seen in training or model choice; reported apart)",
            "",
            f"{test['n']} utterances from {', '.join(test['corpora'])}; each variant's shipped model"
            + (f"; rows whose label the model cannot predict, left out: {json.dumps(test['excluded_labels'])}"
               if test["excluded_labels"] else "") + ".",
            "",
            md_table(["variant", "corpus", "n", "UAR", "WA", "macro-F1"],
                     [[v, c, r["n"], r["uar"], r["wa"], r["macro_f1"]]
                      for v, t in test.items() if isinstance(t, dict) and "per_corpus" in t
                      for c, r in t["per_corpus"].items()]),
        ]  # fmt: skip
    return parts


def _per_corpus_lines(metrics: dict[str, Any], title: str) -> list[str]:
    rows = metrics.get("per_corpus") or {}
    if len(rows) < 2:
        return []
    return [f"{title}:", "", md_table(["corpus", "n", "UAR", "WA", "macro-F1"],
                                      [[c, r["n"], r["uar"], r["wa"], r["macro_f1"]] for c, r in rows.items()]), ""]  # fmt: skip


def _shipped(final: dict[str, Any], rule: str = "best") -> str:
    members = final.get("members") or [final]
    what = ("; ".join(f"`{m['family']}` `{json.dumps(m['params'])}`" for m in members) if len(members) > 1
            else f"`{final['family']}` with `{json.dumps(final['params'])}`")  # fmt: skip
    chosen = "each family's best by plain CV" if rule == "family_vote" else f"the {len(members)} best by plain CV"
    kind = f"a soft vote of {len(members)} configurations ({chosen}): " if len(members) > 1 else ""
    variant = final.get("variant", "raw")
    norm = "" if variant == "raw" else f" Input is normalised as in the `{variant}` variant."
    return f"{kind}{what}, refitted on all data (its expected accuracy is the nested figure of its variant).{norm}"


def evaluate_report(metrics: dict[str, Any]) -> str:
    fs = metrics["feature_set"]
    trained = metrics.get("trained_on") or {}
    parts = [
        f"# seremo evaluate report: `{metrics['model_id']}`",
        "",
        f"Bundle `{metrics['model']}` (trained on {', '.join(trained.get('corpora', [])) or 'unknown corpora'}, "
        f"{trained.get('utterances', '?')} utterances), judged on `{metrics['data']}`: "
        f"{_unseen_text(metrics)}. Features `{fs['name']}` v{fs['version']}; "
        f"classes {', '.join(metrics['classes'])}"
        + (f" (labels mapped through class set `{metrics['class_set']}`)" if metrics.get("class_set") else "") + ".",
        f"Normalisation: {metrics['normalisation']}"
        + (" (each speaker, or corpus, z-scored with its own unlabelled audio, as the bundle was evaluated)"
           if metrics["normalisation"] != "none" else "") + ".",
        "",
        md_table(["UAR", "WA", "macro-F1", "weighted-F1"],
                 [[metrics["uar"], metrics["wa"], metrics["macro_f1"], metrics["weighted_f1"]]]),
        "",
        *_per_corpus_lines(metrics, "Per corpus"),
        _per_class(metrics),
        "",
        "![confusion matrix](confusion_matrix.png)",
    ]  # fmt: skip
    if metrics.get("excluded_labels"):
        parts += ["", "Rows left out because the bundle cannot predict their label (counted, not scored): "
                      f"{json.dumps(metrics['excluded_labels'])}."]  # fmt: skip
    return "\n".join(parts) + "\n"


def _unseen_text(metrics: dict[str, Any]) -> str:
    """How many utterances the figures are on, and whether any training row was left out (or nobody knows)."""
    overlap = metrics.get("overlap") or {"rows": None}
    if overlap["rows"] is None:
        return (f"{metrics['n']} utterances; its training rows are unknown (the bundle predates training_ids.json), "
                "so some may be rows it was trained on")
    left = f" ({overlap['rows']} of {overlap['of']} rows were training rows of the bundle: left out)" if overlap["rows"] else ""
    return f"{metrics['n']} utterances it never saw{left}"


def _held_out_lines(metrics: dict[str, Any]) -> list[str]:
    """The pooled held-out figures of a grouped-fold run (train, deep search): overall, per corpus, per class."""
    return [
        "## Held-out speakers (pooled over folds)" if metrics["protocol"].get("groups", "speaker") == "speaker"
        else "## Held-out corpora (each fold holds out whole corpora)",
        "",
        md_table(["UAR", "WA", "macro-F1"], [[metrics["uar"], metrics["wa"], metrics["macro_f1"]]]),
        "",
        *_per_corpus_lines(metrics, "Per corpus"),
        _per_class(metrics),
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
    ]  # fmt: skip


def train_report(metrics: dict[str, Any]) -> str:
    fs = metrics["feature_set"]
    s = metrics["settings"]
    parts = [
        f"# seremo train report: {metrics['model']}",
        "",
        f"Features: `{fs['name']}` v{fs['version']}; classes: {', '.join(metrics['classes'])}.",
        f"Protocol: {outer_protocol(metrics)} holding out whole speakers; early stopping on "
        f"{metrics['protocol']['early_stopping']} (never the test speakers)."
        + {"speaker": " Each speaker's frames z-scored with that speaker's own statistics (a named protocol).",
           "corpus": " Each corpus's frames z-scored with its training rows' statistics; a held-out corpus with its "
                     "own (a named protocol)."}.get(metrics["protocol"].get("normalise", "none"), ""),
        f"Ray Train: {metrics['workers']} worker(s), {'GPU (bf16 autocast)' if metrics['gpu'] else 'CPU (gloo)'}; "
        f"median {metrics['samples_per_s']:.1f} training samples/s; {metrics['wall_s']:.0f} s in all.",
        f"Settings: epochs <= {s['epochs']}, patience {s['patience']} (from epoch {s.get('min_epochs', 1)}), "
        f"batch {s['batch_size']}, peak lr {s['lr']} ({s.get('schedule', 'constant')}), "
        f"masking {json.dumps(s.get('masking'))}, arch {json.dumps(s['arch'])}.",
        "",
        *_held_out_lines(metrics),
        "## Per fold",
        "",
        md_table(
            ["held out", "n", "test UAR", "epochs", "best epoch", "best val UAR", "samples/s", "wall s", "restarts"],
            [
                [held_out(f["held_out"]), f["n"], f["uar"], f["epochs"], f["best_epoch"], f["best_val_uar"],
                 f["samples_per_s"], f["wall_s"], f["restarts"]]
                for f in metrics["per_fold"]
            ],
        ),  # fmt: skip
        "",
        "![training curves](curves.png)",
    ]
    for name, test in metrics.get("test", {}).items():
        parts += ["", f"## Test set `{name}` (the final model; never seen in training or early stopping)", "",
                  md_table(["corpus", "n", "UAR", "WA", "macro-F1"],
                           [[c, r["n"], r["uar"], r["wa"], r["macro_f1"]] for c, r in test["per_corpus"].items()])]
        if test["excluded_labels"]:
            parts.append(f"\nRows left out (labels the model cannot predict): {json.dumps(test['excluded_labels'])}.")
    return "\n".join(parts) + "\n"


def variants_lines(metrics: dict[str, Any]) -> list[str]:
    """Per-corpus, normalised and test-set figures, each on its own line: never pooled with the headline."""
    lines = []
    per_corpus = metrics.get("per_corpus", {})
    if len(per_corpus) > 1:
        lines += [f"  {c}: UAR {r['uar']:.3f} (n={r['n']})" for c, r in per_corpus.items()]
    for key, title in (("speaker_normalised", "per-speaker"), ("corpus_normalised", "per-corpus")):
        if key in metrics:
            m = metrics[key]
            by = ", ".join(f"{c} {r['uar']:.3f}" for c, r in m.get("per_corpus", {}).items()) if len(
                m.get("per_corpus", {})) > 1 else ""  # fmt: skip
            lines.append(f"with {title} normalisation (separate protocol): UAR {m['uar']:.3f}" + (f" ({by})" if by else ""))
    for name, test in metrics.get("test", {}).items():
        if "uar" in test:  # train: the final model
            lines.append(f"test {name}: UAR {test['uar']:.3f}  WA {test['wa']:.3f}  macro-F1 {test['macro_f1']:.3f} (n={test['n']})")
        for variant, t in test.items():
            if isinstance(t, dict) and "uar" in t:
                lines.append(f"test {name} [{variant}]: UAR {t['uar']:.3f}  WA {t['wa']:.3f}  macro-F1 {t['macro_f1']:.3f} (n={t['n']})")
    return lines


def search_report(metrics: dict[str, Any]) -> str:
    """``seremo tune --model``: the nested (or labelled optimistic) figures, the chosen configurations, ASHA."""
    s, fs, t = metrics["search"], metrics["feature_set"], metrics["trials"]
    nested = metrics["protocol"]["search"] == "nested"
    protocol = (f"Nested: outer {metrics['protocol']['outer']} of speakers; inside each outer training set "
                "the search saw only training speakers, validation speakers drove ASHA and early stopping, and the "
                "best trial's model was scored on the held-out speakers." if nested else
                "**Optimistic**: one search over all speakers chose the configuration, then grouped folds evaluated "
                "it on the same speakers that chose it (`protocol: search_once`); prefer the nested protocol for a "
                "figure to report.")  # fmt: skip
    stopped = t["asha_stopped_at_epochs"]
    parts = [
        f"# seremo tune report: {metrics['model']} (deep search)",
        "",
        f"Features: `{fs['name']}` v{fs['version']}; classes: {', '.join(metrics['classes'])}.",
        protocol,
        f"Search: {s['search']}, {s['num_samples']} trials per search, scheduler {s['scheduler']} (grace "
        f"{s['grace_period']} epochs, reduction {s['reduction_factor']}), at most {s['train']['epochs']} epochs "
        f"per trial; {metrics['wall_s']:.0f} s in all.",
        f"Trials: {t['total']} ({t['ok']} finished without error); {t['asha_stopped']} stopped by ASHA"
        + (f" (after {min(stopped)}-{max(stopped)} epochs)" if stopped else "")
        + (f"; {t['budget_stopped']} ended by the time budget" if t.get("budget_stopped") else "")
        + f". Throughput: {metrics['trials_per_hour']:.0f} trials per hour, {metrics['samples_per_s']:.0f} "
        "training samples per second (trial start-up included).",
        "",
        *_held_out_lines(metrics),
    ]
    if metrics["per_fold"]:
        parts += [
            "## Chosen configuration per outer fold",
            "",
            md_table(["fold", "held out", "test UAR", "validation UAR", "configuration", "trials", "ASHA stopped"],
                     [[f["fold"], ", ".join(f["held_out"]), f["uar"], f["best_val_uar"],
                       "`" + _config_json(f["best_config"]) + "`", f["trials"], f["asha_stopped"]]
                      for f in metrics["per_fold"]]),  # fmt: skip
            "",
        ]
    parts += [
        f"`model/`: `{_config_json(metrics['final_config'])}` (the best trial by validation UAR), "
        "trained on all speakers less the validation speakers it stops on.",
        "",
        "Every trial: `trials.parquet`; each hyperparameter against validation UAR:",
        "",
        "![hyperparameters](hyperparameters.png)",
        "",
        "Search space:",
        "",
        md_table(["setting", "domain"], [[k, "`" + json.dumps(v) + "`"] for k, v in sorted(metrics["space"].items())]),
        "",
    ]
    return "\n".join(parts)


def _config_json(config: dict[str, Any]) -> str:
    """A trial's configuration, floats to 3 significant digits (the full values are in metrics.json)."""
    return json.dumps({k: float(f"{v:.3g}") if isinstance(v, float) else v for k, v in sorted(config.items())})
